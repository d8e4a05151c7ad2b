"""The documentation site (mkdocs.yml) builds with ``--strict`` (no broken
link, no docstring mkdocstrings cannot render) and carries the API reference."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require_or_skip

ROOT = Path(__file__).resolve().parent.parent


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a dotted name whose parent is missing
        return False


def test_docs_build_strict(tmp_path):
    if not (ROOT / "mkdocs.yml").is_file():
        pytest.skip("no mkdocs.yml here (an unpacked sdist does not carry it)")
    have = all(
        _importable(m)
        for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    )
    require_or_skip(have, "mkdocs, mkdocs-material and mkdocstrings[python] (the docs extra)")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr

    client = (site / "api" / "client" / "index.html").read_text()
    assert 'id="greencoap.client.Client"' in client
    assert "A CoAP client: blocking calls, concurrent across greenlets." in client
    for page, name in [
        ("server", "greencoap.server.Server"),
        ("router", "greencoap.router.Router"),
        ("response", "greencoap.response.Request"),
        ("observation", "greencoap.observation.Observation"),
        ("hub", "greencoap.hub.spawn"),
        ("hub", "greencoap.sync.Queue"),
        ("errors", "greencoap.errors.CoapError"),
        ("codes", "greencoap.codes.Code"),
        ("fleet", "greencoap.fleet.fleet.Fleet"),
        ("locust", "greencoap.contrib.locust.CoapUser"),
        ("coapthon", "greencoap.compat.coapthon.install"),
    ]:
        html = (site / "api" / page / "index.html").read_text()
        assert f'id="{name}"' in html, (page, name)
    for guide in (
        "client",
        "server",
        "observe",
        "blockwise",
        "dtls",
        "multicast",
        "locust",
        "fleet",
        "cli",
        "migration",
        "architecture",
        "coapthon",
    ):
        assert (site / guide / "index.html").is_file(), guide
    # a repository file linked from a page is served (scripts/mkdocs_hooks.py)
    assert (site / "repo" / "examples" / "coapthon_legacy.py").is_file()
    # the docstrings' reST roles render as code, linked where the target is
    # documented (scripts/griffe_rest_roles.py), never as ":class:`X`" text
    for page in (site / "api").glob("*/index.html"):
        text = page.read_text()
        assert not any(f":{role}:" in text for role in ("class", "meth", "func", "attr")), page
    server = (site / "api" / "server" / "index.html").read_text()
    assert 'href="#greencoap.server.Server.stop"><code>stop</code></a>' in server
