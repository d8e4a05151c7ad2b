#!/usr/bin/env bash
# `make demo`: start the demo server on a free port in the background, run the
# tour against it, stop the server by its PID.
set -euo pipefail
PY=${PY:-.venv/bin/python}
port=$("$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -m greencoap.demo --host 127.0.0.1 --port "$port" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
"$PY" examples/tour.py "coap://127.0.0.1:$port"
