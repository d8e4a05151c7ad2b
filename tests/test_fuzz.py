"""Hostile input at a live server: the short version of ``scripts/fuzz.py``.

Per backend (io_uring, epoll): the regression corpus (tests/fuzz_corpus), the
per-kind probes, the hostile sequences scaled down (2,000 source ports
instead of 3,000, 150 Observe registrations instead of 1,000, ...) and a
flood of 50,000 mutated datagrams at the demo server in a child process,
while a good client asks GET /hello every 20 ms.  The server must survive,
answer every one of the good client's requests with 2.05 (p99 under 200 ms),
log no traceback, count no internal or hub error, keep its tables bounded,
and account for every datagram sent to its port.  ``make fuzz`` runs the
full version (1,000,000 datagrams per backend).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from greencoap.message import decode
from tests.conftest import BACKENDS, require_or_skip, uring_usable

REPO = Path(__file__).resolve().parent.parent


def load_fuzz():
    """scripts/fuzz.py as a module (it is a script, not part of the package)."""
    name = "greencoap_fuzz_tool"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "fuzz.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
    return mod


def test_seed_corpus_covers_the_brief():
    """Every method, CON and NON, tokens of 0-8 bytes, every registered option,
    Block SZX 0-7, unknown critical/elective options, extended delta and
    length forms, payloads with and without marker; all valid."""
    fuzz = load_fuzz()
    corpus = fuzz.seed_corpus(1)
    methods, types, tkls, numbers, szx = set(), set(), set(), set(), {23: set(), 27: set()}
    delta_forms, length_forms, with_payload, without = set(), set(), 0, 0
    for d in corpus:
        m = decode(d)  # raises if a seed is not a valid datagram
        if 1 <= m.code <= 31:
            methods.add(m.code)
            types.add(m.mtype)
            tkls.add(len(m.token))
        prev = 0
        for n, v in m.options:
            numbers.add(n)
            if n in szx and v:
                szx[n].add(v[-1] & 7)
            delta = n - prev
            prev = n
            delta_forms.add(0 if delta < 13 else (13 if delta < 269 else 14))
            length_forms.add(0 if len(v) < 13 else (13 if len(v) < 269 else 14))
        if m.payload:
            with_payload += 1
        else:
            without += 1
    assert methods == set(range(1, 8))
    assert types == {0, 1}
    assert tkls == set(range(9))
    registered = {int(o) for o in fuzz.O}
    assert registered <= numbers, registered - numbers
    assert {9, 2049, 65001, 2048, 65000} <= numbers
    assert szx[23] == szx[27] == set(range(8))
    assert delta_forms == length_forms == {0, 13, 14}
    assert with_payload and without


def test_mutators_make_what_they_say():
    fuzz = load_fuzz()
    mut = fuzz.Mutator(fuzz.seed_corpus(1), 7)
    assert all(len(mut.of_kind("oversize")) > fuzz.MAX_DATAGRAM for _ in range(50))
    assert all(fuzz.is_empty_ack_rst(mut.of_kind("empty_ack_rst")) for _ in range(50))
    assert all(mut.of_kind("tkl_reserved")[0] & 0x0F >= 9 for _ in range(50))
    assert all(mut.of_kind("wrong_version")[0] >> 6 != 1 for _ in range(50))
    assert all(mut.of_kind("reserved_code")[1] >> 5 in (1, 3, 6, 7) for _ in range(50))
    kinds = {mut.next()[0].split("+")[0] for _ in range(20_000)}
    assert set(fuzz.MUTATORS) | {"valid"} <= kinds


def test_regression_corpus_files_parse():
    fuzz = load_fuzz()
    files = fuzz.load_corpus(fuzz.CORPUS_DIR)
    assert files, "tests/fuzz_corpus is empty"
    for path, grams, meta in files:
        assert grams, path
        if path.suffix == ".hex":
            assert meta.get("kind") and meta.get("signature"), path
        assert path.name in (fuzz.CORPUS_DIR / "README.md").read_text(), path


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_short(backend, tmp_path):
    if backend == "uring":
        reason = uring_usable()
        require_or_skip(reason is None, f"io_uring backend ({reason})", "GREENCOAP_REQUIRE_URING")
    fuzz = load_fuzz()
    cfg = fuzz.FuzzConfig(
        hub=backend,
        quick=True,
        count=50_000,
        seed=1,
        findings_dir=tmp_path / "findings",
        log_dir=tmp_path,
        progress=False,
        p99_limit_ms=200.0,
    )
    report = fuzz.run(cfg)
    summary = "\n".join(report.get("failures", [])) + "\n" + report.get("first_traceback", "")
    assert report["server"]["backend"] == backend
    assert report["flood"]["sent"] == 50_000, summary
    # survival
    assert report["final_hello"] == "2.05", summary
    assert report["hub_errors"] == 0, summary
    assert report["stats"].get("internal_errors", 0) == 0, summary
    assert report["stats"].get("handler_errors", 0) == 0, summary
    assert report["log_tracebacks"] == 0, summary
    # the good client
    good = report["good_client"]
    assert good["requests"] > 100
    assert good["failures"] == [], good["failures"][:5]
    assert good["answered"] == good["requests"]
    assert good["p99_ms"] < 200, good
    # accounting: every datagram in one counter, dropped, or a reported gap
    acc = report["accounting"]
    assert acc["unexplained"] == 0, acc
    assert (
        acc["server_counted"] + acc["socket_drops"] + acc["uncounted_empty_ack_rst"]
        == (acc["sent_total"])
    )
    assert acc["sent_total"] > 50_000
    # the regression corpus and everything else
    assert all(v == "ok" for v in report["corpus_replay"].values()), report["corpus_replay"]
    assert report["ok"], summary
