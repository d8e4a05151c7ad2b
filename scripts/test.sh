#!/usr/bin/env bash
# make test's pytest part: the bulk of the suite three tests at a time
# (pytest-xdist), then the tests marked ``serial`` (timing, load, machine-wide
# counters; see SERIAL in tests/conftest.py) alone, then the codec and engine
# tests once more on the pure Python codec (GREENCOAP_NO_EXTENSIONS=1; the
# first two runs use the C codec when it is built).  Arguments go to every run
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
PURE_TESTS=(tests/test_message.py tests/test_codec_aiocoap.py tests/test_messaging.py
    tests/test_dedup.py tests/test_timers.py tests/test_observe_engine.py
    tests/test_notification_engine.py tests/test_blockwise_engine.py
    tests/test_blockwise_server_engine.py tests/test_registration_engine.py
    tests/test_pipeline.py)
GREENCOAP_NO_EXTENSIONS=1 "$PY" -m pytest -q -n "$JOBS" -m "not serial" "${PURE_TESTS[@]}" "$@"
pure=$?
[ "$pure" = 5 ] && pure=0
# 5: "no tests collected" (an argument that selects tests of one part only)
[ "$parallel" = 5 ] && [ "$serial" != 5 ] && parallel=0
[ "$serial" = 5 ] && [ "$parallel" != 5 ] && serial=0
[ "$parallel" != 0 ] && exit "$parallel"
[ "$serial" != 0 ] && exit "$serial"
exit "$pure"
