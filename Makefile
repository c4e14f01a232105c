# The README's two commands: `make demo` and `make test`. Both work on a fresh machine with only Python.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
NAS     = $(VENV)/bin/nas
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
DEMO_DIR ?= campaigns/demo

# System packages some features and tests use: a headless browser (report rendering test), the
# aarch64 cross compiler (TVM libraries for Arm profiles) and PostgreSQL (tests/test_postgres.py runs its
# own server with initdb + pg_ctl in a temporary folder; the package's own cluster is not started or used).
# Installed once if missing; without them the tests that need them skip and say why.
SYSDEPS = chromium gcc-aarch64-linux-gnu g++-aarch64-linux-gnu postgresql
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install sysdeps clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(NAS) search --out $(DEMO_DIR)

# pytest-xdist: one worker per CPU (at most 4: Ray and MetaSchedule tests start processes of their own);
# --dist loadgroup keeps the tests marked xdist_group("…") on one worker (docs/testing.md says which and why).
# TEST_WORKERS=0 runs in this process; PYTEST_ARGS adds options (a file, -k, -x).
TEST_WORKERS ?= auto
test: $(STAMP) sysdeps
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 4 --dist loadgroup $(PYTEST_ARGS)

# `make bench`: re-run the benchmarks that take minutes rather than hours, at the settings their tables in
# docs/benchmarks.md were made with; each rewrites its benchmarks/results/<script>.json (and, for scripts that
# keep one, its block of docs/benchmarks.md). Expected times on the 2-vCPU reference machine, shared:
#   scaling.py             ~3-20 min   --parts campaigns,ray: a 6-trial campaign in-process, then on 2 Ray workers,
#                                      and Ray's overhead (sample task; 20 min at load 12-17, ~2 min quiet)
#   inheritance.py         ~10-15 min  6 SST-2 students x 300 steps (+~12 min if its teacher is not cached)
# Not run here (the command that made each table is in its section of docs/benchmarks.md):
#   search_efficiency.py ~1-1.5 h (3 samplers x 3 seeds x 20 cheap trials); scaling.py --parts storage ~16 min; compression.py ~35 min; predictor_accuracy.py ~7 min (quiet cores); latency_backends.py ~30 min of MetaSchedule tuning;
#   commands.py ~12 min (a fresh clone: make install, demo, test; the README's wall times); tuning_reuse.py 30-50 min; supernet_fidelity.py ~1 h; sst2_campaign.py 1-2 h (its --quick is a ~20 min
#   smoke run that writes only under campaigns/, not the committed figures).
BENCH_QUICK ?= scaling inheritance
BENCH_ARGS_scaling = --parts campaigns,ray --trials 6 --workers 2
BENCH_ARGS_inheritance = --steps 300

define bench_one
	@echo "== benchmarks/$(1).py $(BENCH_ARGS_$(1))  (load $$(cut -d' ' -f1-3 /proc/loadavg))"
	@start=$$(date +%s); $(PY) benchmarks/$(1).py $(BENCH_ARGS_$(1)) && echo "== $(1): $$(( $$(date +%s) - start )) s"

endef

bench: $(STAMP)
	$(foreach b,$(BENCH_QUICK),$(call bench_one,$(b)))

sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v aarch64-linux-gnu-g++ >/dev/null \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing system packages: $(SYSDEPS)"; \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSDEPS) >/dev/null ) \
	    || echo "warning: could not install $(SYSDEPS); tests that need them will skip"; \
	fi

clean:
	rm -rf $(VENV) campaigns
