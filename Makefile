# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make run   - venv, install, index the sample corpus, run the main job
#   make test  - venv if needed, lint, type-check, the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch is pinned in pyproject.toml; installing it first, on its own, lets pip
# take the local CPU wheel instead of resolving a CUDA build. A GPU host
# installs its CUDA build of the same version first (see README).
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: run test lint venv clean bench-retrieval system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The device's default reranker is pulled first when the hub answers within 3 s;
# without network the API starts without one, and the banner says how to add it.
run: $(STAMP)
	@echo "starting the Sieve API with the sample corpus (search page and /docs on the address below)"
	$(VENV)/bin/sieve serve --demo --pull-default-reranker

lint: $(STAMP)
	$(VENV)/bin/ruff check search workers api tests bench
	$(VENV)/bin/mypy

# Tests start their own redis-server on a free port and drive the pages with
# Debian's chromium (through Playwright, never a downloaded browser): install
# whichever is missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the test suite:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench-retrieval: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) bench/retrieval.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
