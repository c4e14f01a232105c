# The README's two commands: `make demo` and `make test`. Both work on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
NAS     = $(VENV)/bin/nas
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_DIR ?= campaigns/demo

# System packages some features and tests use: a headless browser (report rendering test) and the
# aarch64 cross compiler (TVM libraries for Arm profiles). Installed once if missing; without them the
# tests that need them skip and say why.
SYSDEPS = chromium gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install sysdeps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(NAS) search --out $(DEMO_DIR)

test: $(STAMP) sysdeps
	$(PY) -m pytest -q $(PYTEST_ARGS)

sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v aarch64-linux-gnu-g++ >/dev/null; then \
	  echo "installing system packages: $(SYSDEPS)"; \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSDEPS) >/dev/null ) \
	    || echo "warning: could not install $(SYSDEPS); tests that need them will skip"; \
	fi

clean:
	rm -rf $(VENV) campaigns
