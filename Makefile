# recsys: `make demo` runs the whole pipeline on generated data; `make test` runs the tests.
# Both set everything up first (idempotent; quick the second time).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.setup-done
CONFIG  ?= conf/local.yaml
ARGS    ?=
PYTHON  ?= python3.11
UV      := $(PYTHON) -m uv

.PHONY: setup demo test test-system test-fast clean bench-quality browser cluster-test
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(PY) -r requirements.lock
	@# petastorm declares setuptools<70, torch setuptools>=77: install it without its declared deps
	@# (its real runtime deps are in requirements.lock).
	$(UV) pip install --quiet --python $(PY) --no-deps petastorm==0.13.1
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	@# Resolve the Delta Lake jars from Maven Central once (Ivy caches them) and check Delta works.
	@$(PY) -m recsys.spark > $(VENV)/spark-check.log 2>&1 || (tail -30 $(VENV)/spark-check.log; echo "Spark/Delta check failed (log: $(VENV)/spark-check.log)"; exit 1)
	@grep OK $(VENV)/spark-check.log
	@touch $@

demo: setup
	$(VENV)/bin/recsys demo --config $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not system" --durations=15 $(ARGS)

# The system tests (tests/system): the notebook, `mlflow models serve` over HTTP, killed and
# resumed training. Their own pipeline run; CI runs them after `make test`.
test-system: setup browser
	$(PY) -m pytest -q -p no:cacheprovider -m system --durations=10 $(ARGS) tests/system

# Headless Chromium (Debian's package) for the report's browser test (tests/system/test_report.py).
browser:
	@if [ -x /usr/bin/chromium ]; then echo "browser: /usr/bin/chromium is installed"; else \
	  echo "browser: installing Debian's chromium (apt-get install -y --no-install-recommends chromium)"; \
	  apt-get install -y --no-install-recommends chromium || \
	  { echo "browser: updating the package lists first (apt-get update)"; apt-get update && \
	    apt-get install -y --no-install-recommends chromium; }; fi

# A Spark standalone cluster on this machine (a master and two one-core workers), the project's
# wheel in a node environment (.cluster/venv), every pipeline stage through spark-submit, compared
# with a spark-submit --master local[2] run; one worker is killed during build-profiles
# (tests/cluster/runner.py, docs/cluster.md). CLUSTER_SCOPE=small: ingest and
# build-profiles only (what CI runs). The cluster is always stopped afterwards.
CLUSTER_SCOPE ?= full
cluster-test: setup
	$(PY) tests/cluster/runner.py --scope $(CLUSTER_SCOPE) --uv "$(UV)" $(ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not e2e and not system" $(ARGS)

bench-quality: setup
	$(PY) bench/quality.py $(ARGS)

clean:
	rm -rf lakehouse .pytest_cache
