# recsys: `make demo` runs the whole pipeline on generated data; `make test` runs the tests.
# Both set everything up first (idempotent; quick the second time).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.setup-done
CONFIG  ?= conf/local.yaml
ARGS    ?=
PYTHON  ?= python3.11
UV      := $(PYTHON) -m uv

.PHONY: setup demo test test-system test-fast clean bench-quality
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
test-system: setup
	$(PY) -m pytest -q -p no:cacheprovider -m system --durations=10 $(ARGS) tests/system

test-fast: setup
	$(PY) -m pytest -q -m "not e2e and not system" $(ARGS)

bench-quality: setup
	$(PY) bench/quality.py $(ARGS)

clean:
	rm -rf lakehouse .pytest_cache
