# The README's two commands: `make demo` and `make test`. Both work on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
NAS     = $(VENV)/bin/nas
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_DIR ?= campaigns/demo

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(NAS) search --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) campaigns
