# Quick start: `make demo` and `make test` each set up .venv from scratch when needed.
# `make demo` installs the core only (torch + nnmark); `make test` adds every extra and the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the CPU build of torch is pinned here, where it is installed; the library's metadata only asks
# for a range (torch>=2.5), and a bare `torch` would pull a multi-GB CUDA build. `+cpu` matches
# only the CPU wheel: from pip's local wheels where PIP_FIND_LINKS names them (offline machines),
# else from PyTorch's CPU index (TORCH_INDEX= overrides it)
TORCH := torch==2.13.0+cpu
TORCH_INDEX ?= $(if $(PIP_FIND_LINKS),,--extra-index-url https://download.pytorch.org/whl/cpu)
CORE := $(VENV)/.core
STAMP := $(VENV)/.installed
TEST_WORKERS ?= 8

.PHONY: setup setup-core demo test test-slow lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# --no-compile: byte-compiling all of torch while installing costs more CPU (30 s of 2-core
# time here) than Python compiling, on first import, the part nnmark uses (6 s)
$(CORE): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile $(TORCH_INDEX) '$(TORCH)'
	$(BIN)/pip install -q --no-compile -e .
	touch $(CORE)

# the test suite starts many interpreters: compile everything once, on every core
$(STAMP): $(CORE)
	$(BIN)/pip install -q -e '.[all,dev]'
	@# a file that fails to compile (torch ships Python 3.12-only test helpers) is compiled on import, if ever
	-$(BIN)/python -m compileall -q -j 0 -x 'py312' $(VENV)/lib > /dev/null
	touch $(STAMP)

setup-core: $(CORE)

setup: $(STAMP)

demo: $(CORE)
	$(BIN)/nnmark demo

# the evidence report is rendered in Debian's headless Chromium (tests/test_evidence.py); where it
# cannot be installed (no root, no apt) that one test is skipped and says so
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
		|| echo "chromium not installed: the report rendering test will be skipped"
	$(BIN)/ruff check src tests benchmarks examples
	@# test files run on every core (pytest-xdist, one file to a worker, at most TEST_WORKERS);
	@# schemathesis gives each API operation's fuzz test the same node id, and xdist would run
	@# one of them: the fuzz file runs on its own afterwards
	$(BIN)/pytest -n auto --maxprocesses $(TEST_WORKERS) --dist loadfile --ignore=tests/test_serve_fuzz.py
	$(BIN)/pytest tests/test_serve_fuzz.py

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

bench: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/embed_overhead.py

clean:
	rm -rf $(VENV) nnmark-demo .pytest_cache .mypy_cache .ruff_cache
