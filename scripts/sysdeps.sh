#!/usr/bin/env bash
# Install the Debian packages greencoap uses, when they are missing:
#   liburing-dev (io_uring hub), libssl-dev (the C AES-CCM of DTLS),
#   libcoap3-bin (interop peers), a C compiler, Python headers and venv, iproute2 and util-linux (the multicast tests'
#   network namespaces: ip, unshare, nsenter).  As root it runs apt-get; otherwise it prints
#   the command to run.
set -euo pipefail
need=()
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
[ -f /usr/include/openssl/evp.h ] || need+=(libssl-dev)
command -v coap-client-notls >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
py=${PYTHON:-python3}
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || need+=(python3-dev)
"$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "greencoap needs these Debian packages; run as root:" >&2
    echo "    apt-get update && apt-get install -y ${need[*]}" >&2
    exit 1
fi
