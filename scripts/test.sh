#!/usr/bin/env bash
# make test's pytest part: the bulk of the suite three tests at a time
# (pytest-xdist), then the tests marked ``serial`` (timing, load, machine-wide
# counters; see SERIAL in tests/conftest.py) alone.  Arguments go to both runs
# (make test PYTEST_ARGS='-k fleet').  GREENCOAP_TEST_JOBS sets the parallel
# part's processes (default 3: most tests wait on timers, not the CPU; 0 runs
# everything in one process).
set -uo pipefail
PY=${PY:-.venv/bin/python}
JOBS=${GREENCOAP_TEST_JOBS:-3}
if [ "$JOBS" = 0 ]; then
    exec "$PY" -m pytest -q "$@"
fi
"$PY" -m pytest -q -n "$JOBS" --dist load -m "not serial" "$@"
parallel=$?
"$PY" -m pytest -q -m serial "$@"
serial=$?
# 5: "no tests collected" (an argument that selects tests of one part only)
[ "$parallel" = 5 ] && [ "$serial" != 5 ] && parallel=0
[ "$serial" = 5 ] && [ "$parallel" != 5 ] && serial=0
[ "$parallel" != 0 ] && exit "$parallel"
exit "$serial"
