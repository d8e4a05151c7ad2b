"""The TD × direction × peer table of the plugtest suite.

    .venv/bin/python -m tests.plugtest.matrix            # runs the suite, prints the table
    .venv/bin/python -m tests.plugtest.matrix --junit F  # the table of an earlier run's JUnit XML

The suite runs with ``pytest --junitxml``; each test's TD comes from its name
(``test_TD_COAP_CORE_09``, or a ``TD_COAP_…`` parameter) and its column from
its module (``tds.COLUMNS``).  A cell is ✓ when every run of that TD in that
column passed (both hubs), ✗ when one failed, errored or is an expected
failure (xfail, its reason in a footnote), "skipped" when a peer was
missing, and n/a when there is no test: the footnote says why
(``tds.NOT_APPLICABLE``).  A ✓ with a footnote passed where the peer
departs from the TD, checked as far as it allows
(``tds.PEER_NOTES``).  The exit status is 0 when no cell is ✗.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from .tds import ALL, COLUMNS, NOT_APPLICABLE, PEER_NOTES

ROOT = Path(__file__).resolve().parents[2]
_TD = re.compile(r"TD_COAP_(CORE|LINK|BLOCK|OBS)_\d+")


def run_suite(junit: Path, extra: list[str]) -> int:
    """``pytest tests/plugtest --junitxml=junit``; pytest's exit status."""
    cmd = [sys.executable, "-m", "pytest", "tests/plugtest", "-q", f"--junitxml={junit}", *extra]
    return subprocess.run(cmd, cwd=ROOT).returncode


def outcomes(junit: Path) -> dict[tuple[str, str], list[str]]:
    """(TD, module) -> the outcome of each of its test runs."""
    out: dict[tuple[str, str], list[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        m = _TD.search(case.get("name", ""))
        if m is None or module not in COLUMNS.values():
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            result = "failed"
        elif (skip := case.find("skipped")) is not None:
            xfail = "xfail" in (skip.get("type", "") + skip.get("message", ""))
            result = "xfailed: " + skip.get("message", "") if xfail else "skipped"
        else:
            result = "passed"
        out.setdefault((m.group(0), module), []).append(result)
    return out


def cell(results: list[str]) -> str:
    if any(r == "failed" or r.startswith("xfailed") for r in results):
        return "✗"
    if all(r == "passed" for r in results):
        return "✓"
    return "skipped"


def table(results: dict[tuple[str, str], list[str]]) -> tuple[str, bool]:
    """The markdown table (with its footnotes), and whether no cell is ✗."""
    notes: dict[str, int] = {}

    def note(text: str) -> str:
        n = notes.setdefault(text, len(notes) + 1)
        return f"<sup>{n}</sup>"

    head = "| TD | objective | " + " | ".join(COLUMNS) + " |"
    rows = [head, "|" + " --- |" * (len(COLUMNS) + 2)]
    clean = True
    for td, objective in ALL.items():
        cells = []
        for module in COLUMNS.values():
            key = (td, module)
            if key in results:
                c = cell(results[key])
                clean &= c != "✗"
                if c == "✓" and key in PEER_NOTES:
                    c += note(PEER_NOTES[key])
                xfails = [r for r in results[key] if r.startswith("xfailed")]
                if xfails:  # a known failure (xfail): its reason
                    text = xfails[0].removeprefix("xfailed: ").removeprefix("reason: ")
                    c += note("expected to fail (xfail): " + text)
            elif key in NOT_APPLICABLE:
                c = "n/a" + note(NOT_APPLICABLE[key])
            else:
                c = "?"  # neither a test nor a reason: the suite misses it
                clean = False
            cells.append(c)
        rows.append(f"| {td} | {objective} | " + " | ".join(cells) + " |")
    foot = [f"{n}. {text}" for text, n in notes.items()]
    return "\n".join(rows) + "\n\n" + "\n".join(foot) + "\n", clean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--junit", type=Path, help="read this JUnit XML instead of running the suite")
    ap.add_argument("pytest_args", nargs="*", help="more arguments for pytest")
    args = ap.parse_args(argv)
    if args.junit is not None:
        results = outcomes(args.junit)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            junit = Path(tmp) / "plugtest.xml"
            run_suite(junit, args.pytest_args)
            results = outcomes(junit)
    text, clean = table(results)
    print(text)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
