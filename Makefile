# Two commands do all setup on a fresh Debian machine:
#   make demo   - install greencoap, run the demo server and the tour against it
#   make test   - install greencoap with its test extras, run ruff and the test suite
# and `make docs` builds the documentation site into build/site.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.greencoap-installed-demo
TEST_STAMP := $(VENV)/.greencoap-installed-test
DOCS_STAMP := $(VENV)/.greencoap-installed-docs
SYSDEPS := $(VENV)/.greencoap-sysdeps

.PHONY: demo test lint bench install clean docs

demo: $(DEMO_STAMP)
	PY=$(PY) scripts/demo.sh

test: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check greencoap tests
	PY=$(PY) scripts/test.sh $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check greencoap tests

install: $(TEST_STAMP)

$(SYSDEPS):
	PYTHON=$(PYTHON) scripts/sysdeps.sh
	$(PYTHON) -m venv $(VENV)
	touch $@

# Reinstall only when the packaging, the cffi build script or the C core changed.
# The demo needs greencoap alone; the tests and benchmarks also need the test
# extras (aiocoap, gevent, locust, ruff, build, ...).
INSTALL_DEPS := $(SYSDEPS) pyproject.toml setup.cfg $(wildcard setup.py greencoap/_uring_build.py greencoap/uring_core.h greencoap/_speedups.c)

$(DEMO_STAMP): $(INSTALL_DEPS)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(TEST_STAMP): $(INSTALL_DEPS)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

bench: $(TEST_STAMP)
	$(PY) bench/server.py

# The documentation site (mkdocs.yml: mkdocs-material, mkdocstrings), strict:
# a warning (a broken link, a docstring mkdocstrings cannot render) fails it.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

$(DOCS_STAMP): $(INSTALL_DEPS)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,docs]'
	touch $@

# Hostile input at scale: 1,000,000 mutated datagrams at a live demo server on
# each hub, with a good client alongside (scripts/fuzz.py; tests/test_fuzz.py is
# the short version).  Server on CPU 1, fuzzer on CPU 0 when there are two.
# Findings are saved in tests/fuzz_corpus; FUZZ_ARGS adds options (--seed N, ...).
.PHONY: fuzz
fuzz: $(TEST_STAMP)
	$(PY) scripts/fuzz.py --count 1000000 --hub uring --pin $(FUZZ_ARGS)
	$(PY) scripts/fuzz.py --count 1000000 --hub epoll --pin $(FUZZ_ARGS)

# The project's own C benchmark tools (bench/coapload.c, bench/coapecho.c,
# bench/dtlsload.c, which needs libssl-dev), built into build/.
.PHONY: tools
bench: tools
tools: build/coapload build/coapecho build/dtlsload

build/coapload: bench/coapload.c
	@mkdir -p build
	cc -O2 -Wall -Wextra -o $@ bench/coapload.c

build/coapecho: bench/coapecho.c
	@mkdir -p build
	cc -O2 -Wall -Wextra -o $@ bench/coapecho.c

build/dtlsload: bench/dtlsload.c
	@mkdir -p build
	cc -O2 -Wall -Wextra -o $@ bench/dtlsload.c -lssl -lcrypto

clean:
	rm -rf $(VENV) build *.egg-info greencoap/_uring*.so greencoap/_uring*.c
