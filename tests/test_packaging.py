"""Packaging: the sdist carries everything a build needs, and a wheel built from
that sdist in a fresh venv installs what it claims -- the io_uring core when a
compiler and liburing-dev are there, epoll with a warning naming the real
reason when they are not.

The fresh venvs need a package index for pip (the build dependencies and
greencoap's own); without one these tests skip, unless
``GREENCOAP_REQUIRE_PEERS=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from greencoap import backends

from .conftest import Proc, free_port, require_or_skip

REPO = Path(__file__).resolve().parent.parent
BUILD_DEPS = ("setuptools>=77", "cffi>=1.15")

#: Run in the fresh venv, from outside the checkout: which greencoap, which
#: backend, and a GET /hello against the demo server at argv[1].
PROBE = r"""
import json, sys
import greencoap
from greencoap import _build_info
backend = greencoap.get_hub().backend
r = greencoap.get(sys.argv[1] + "/hello", timeout=5)
print(json.dumps({"backend": backend, "file": greencoap.__file__,
                  "uring_core": _build_info.uring_core,
                  "code": str(r.code), "payload": r.payload.decode()}))
"""

#: Deprecation warnings about our own packaging metadata (pyproject.toml,
#: setup.cfg, setup.py), not about the tools' own internals.
OUR_METADATA = re.compile(
    r"project\.|license|classifier|tool\.setuptools|pyproject|setup\.cfg", re.IGNORECASE
)


def clean_env(**env: str) -> dict[str, str]:
    """os.environ without GREENCOAP_* (CI sets GREENCOAP_REQUIRE_URING) or
    anything that could put the checkout on a child's sys.path, plus ``env``."""
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GREENCOAP_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    full.update(env)
    return full


def run(args: list, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    return subprocess.run(
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        **kw,
    )


def check(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"{r.args} failed:\n{r.stdout}"
    return r.stdout


def metadata_deprecations(output: str) -> list[str]:
    lines = output.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "deprecat" in line.lower():
            context = " ".join(lines[i : i + 4])  # the warning's title and its text
            if OUR_METADATA.search(context):
                found.append(line.strip())
    return found


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The build dependencies, downloaded once: proves pip reaches an index,
    and lets every fresh venv install them without asking it again."""
    out = tmp_path_factory.mktemp("wheelhouse")
    r = run([sys.executable, "-m", "pip", "download", "-q", "-d", out, *BUILD_DEPS], timeout=180)
    require_or_skip(r.returncode == 0, f"a package index for pip ({r.stdout.strip()[-300:]})")
    return out


@pytest.fixture(scope="module")
def sdist(wheelhouse, tmp_path_factory) -> tuple[Path, str]:
    """``python -m build --sdist`` of the checkout: (the tarball, the build's output)."""
    import importlib.util

    require_or_skip(
        importlib.util.find_spec("build") is not None, "the build package (pip install '.[test]')"
    )
    out = tmp_path_factory.mktemp("dist")
    log = check(run([sys.executable, "-m", "build", "--sdist", "--outdir", out, REPO]))
    (tarball,) = out.glob("greencoap-*.tar.gz")
    return tarball, log


def fresh_venv(path: Path, wheelhouse: Path) -> Path:
    """A new venv with only the build dependencies in it; returns its python."""
    check(run([sys.executable, "-m", "venv", path], timeout=120))
    py = path / "bin" / "python"
    pip = [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheelhouse]
    check(run([*pip, *BUILD_DEPS], timeout=120))
    return py


def build_and_install(py: Path, tarball: Path, out: Path, env: dict) -> tuple[Path, str]:
    """Build a wheel from the sdist in ``py``'s venv (no isolation: the venv has
    the build deps; no cache: every build really compiles), then install it."""
    log = check(
        run(
            [py, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-cache-dir"]
            + ["-w", out, tarball],
            env=env,
        )
    )
    (wheel,) = out.glob("greencoap-*.whl")
    check(run([py, "-m", "pip", "install", "-q", wheel]))
    return wheel, log


def serve_and_probe(py: Path, venv: Path, cwd: Path) -> tuple[dict, str, str]:
    """Start the installed demo server, GET /hello with the installed client.

    Both run from ``cwd`` (outside the checkout) with a clean environment, so
    only the venv's greencoap can be imported.  Returns (probe result, probe
    stderr, demo output)."""
    port = free_port()
    server = Proc(
        [str(py), "-m", "greencoap.demo", "--host", "127.0.0.1", "--port", str(port)],
        port,
        cwd=cwd,
        env=clean_env(),
    )
    try:
        r = subprocess.run(
            [str(py), "-c", PROBE, server.uri],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env=clean_env(),
        )
    finally:
        demo_out = server.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(venv.resolve()), result["file"]
    assert result["code"].startswith("2.05"), result
    assert result["payload"] == "Hello, world!"
    return result, r.stderr, demo_out


def test_sdist_carries_everything_a_build_needs(sdist):
    tarball, log = sdist
    with tarfile.open(tarball) as tf:
        names = {n.partition("/")[2] for n in tf.getnames()}
    for path in (
        "greencoap/uring_core.h",
        "greencoap/_uring_build.py",
        "greencoap/_speedups.c",
        "greencoap/_ccm.c",
        "greencoap/protocol/dtls/__init__.py",
        "greencoap/contrib/locust.py",
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "MANIFEST.in",
        "Makefile",
        "README.md",
        "CHANGELOG.md",
        ".ci/run",
        "scripts/demo.sh",
        "scripts/sysdeps.sh",
        "examples/tour.py",
        "loadtest/locustfile.py",
        "bench/server.py",
        "tests/conftest.py",
        "tests/test_packaging.py",
        "tests/helpers/noring.c",
    ):
        assert path in names, f"{path} missing from {tarball.name}"
    for c_source in REPO.glob("bench/*.c"):
        assert f"bench/{c_source.name}" in names
    if (REPO / "docs").is_dir():
        for f in (REPO / "docs").rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                assert str(f.relative_to(REPO)) in names, f"{f} missing from the sdist"
    assert "greencoap/_build_info.py" not in names  # generated per build
    assert not [n for n in names if n.endswith((".so", ".pyc", ".o"))]
    assert metadata_deprecations(log) == []


@pytest.mark.timeout(300)
def test_wheel_from_sdist_runs_on_io_uring(sdist, wheelhouse, tmp_path):
    have_cc = shutil.which("cc") or shutil.which("gcc")
    have_headers = os.path.exists("/usr/include/liburing.h") and os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h")
    )
    require_or_skip(
        bool(have_cc and have_headers),
        "a C compiler, liburing-dev and Python headers",
        "GREENCOAP_REQUIRE_URING",
    )
    tarball, _ = sdist
    venv = tmp_path / "venv"
    py = fresh_venv(venv, wheelhouse)
    # a build that cannot compile the core fails here instead of passing on epoll
    wheel, log = build_and_install(
        py, tarball, tmp_path / "wheels", clean_env(GREENCOAP_REQUIRE_URING="1")
    )
    assert metadata_deprecations(log) == []
    names = zipfile.ZipFile(wheel).namelist()
    assert "greencoap/uring_core.h" in names and "greencoap/_build_info.py" in names
    assert "greencoap/protocol/dtls/session.py" in names
    assert "greencoap/compat/coapthon/client/helperclient.py" in names
    assert "greencoap/compat/coapthon/messages/request.py" in names
    assert [n for n in names if re.fullmatch(r"greencoap/_uring\..*\.so", n)], names
    for ext in ("_speedups", "_ccm"):  # optional, but built where the headers are (CI)
        assert [n for n in names if re.fullmatch(rf"greencoap/{ext}\..*\.so", n)], names

    result, stderr, demo_out = serve_and_probe(py, venv, tmp_path)
    assert result["uring_core"] == "built", result
    # a kernel or seccomp profile without io_uring is this machine's, not the package's
    refused = "the kernel refused io_uring_setup" in stderr
    require_or_skip(not refused, f"io_uring ({stderr.strip()})", "GREENCOAP_REQUIRE_URING")
    assert result["backend"] == "uring", (result, stderr)
    assert stderr.strip() == "", stderr
    assert "(uring hub)" in demo_out, demo_out


@pytest.mark.timeout(300)
def test_wheel_built_without_a_compiler_falls_back_to_epoll_naming_why(sdist, wheelhouse, tmp_path):
    tarball, _ = sdist
    venv = tmp_path / "venv"
    py = fresh_venv(venv, wheelhouse)
    no_cc = clean_env(CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false")
    wheel, _ = build_and_install(py, tarball, tmp_path / "wheels", no_cc)
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("greencoap/_uring.")], names
    assert "greencoap/_build_info.py" in names

    result, stderr, demo_out = serve_and_probe(py, venv, tmp_path)
    assert result["backend"] == "epoll", result
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    if os.path.exists("/usr/include/liburing.h"):
        failed = "command '/bin/false' failed with exit"  # "code 1" or "status 1"
        assert result["uring_core"].startswith(f"compile failed: {failed}"), result
        assert f"compiling it failed at build time ({failed}" in lines[0]
    else:
        assert result["uring_core"] == "no liburing-dev at build time"
        assert "built without liburing-dev" in lines[0]
    assert lines[0].startswith("greencoap: io_uring unavailable, using the epoll backend: ")
    assert "(epoll hub)" in demo_out, demo_out


@pytest.mark.parametrize(
    "status, expected",
    [
        (None, "installed without its compiled io_uring core (built without liburing-dev or "),
        ("no liburing-dev at build time", "built without liburing-dev (liburing.h was missing"),
        ("compile failed: command 'gcc' failed", "compiling it failed at build time (command"),
        ("built", "was built but is missing from this install"),
    ],
)
def test_reason_without_a_compiled_core(monkeypatch, status, expected):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(backends, "build_status", lambda: status)
    assert expected in backends.uring_unavailable_reason(ImportError("no _uring"))


def test_reason_when_the_kernel_refuses(monkeypatch):
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: object())
    e = OSError(errno.EPERM, "io_uring_setup failed: EPERM: io_uring is forbidden here")
    assert backends.uring_unavailable_reason(e) == (
        "the kernel refused io_uring_setup: EPERM: io_uring is forbidden here"
    )
    e = OSError(errno.EINVAL, "io_uring_setup failed: Invalid argument")
    assert backends.uring_unavailable_reason(e) == (
        "the kernel refused io_uring_setup: EINVAL (Invalid argument)"
    )
    e = ImportError("liburing.so.2: cannot open shared object file")
    assert "does not load: liburing.so.2" in backends.uring_unavailable_reason(e)
