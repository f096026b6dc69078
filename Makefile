# TokenSite: `make run` serves the embedded default (SQLite, in-process tasks); `make test` runs every test,
# `make test-fast` all but the slow ones.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
export LITELLM_LOCAL_MODEL_COST_MAP := True
# Bytecode caches (gitignored) are written whatever the environment says: with PYTHONDONTWRITEBYTECODE
# set, every test run, server and worker compiled every module again, and pytest rewrote the
# assertions of ~500 modules again (17 s of every test collection). Empty is unset to Python.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install run test test-fast migrate seed bench-quick worker beat clean agents

$(VENV)/.installed: requirements.txt sdk/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
	$(PIP) install --quiet --disable-pip-version-check --no-deps -e ./sdk
	$(PY) manage.py compile_kernels
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py seed_demo

run: seed
	$(PY) manage.py runserver $(HOST):$(PORT)

# The real coding-agent tests need the pinned agent CLIs: installed here when npm is there, skipped
# with a reason by the tests when it is not.
test: install
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory agents || echo "agent CLIs not installed: the real-agent tests will be skipped"; else echo "npm not found: the real-agent tests will be skipped"; fi
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but tests marked slow (model-map sweeps, browsers, real agents, servers in subprocesses,
# Schemathesis), with property tests at a tenth of their examples (tests/conftest.py), in two
# processes (pytest-xdist; tokensite/settings/test.py keeps them apart). `make test` stays serial:
# its slow tests run real workers, agents and servers whose timings a second process would share.
test-fast: install
	HYPOTHESIS_PROFILE=fast $(PY) -m pytest -m "not slow" -n 2 $(PYTEST_ARGS)

# The coding-agent CLIs the OTLP end-to-end tests run, at the versions agents/package-lock.json pins.
# `npm install` from the lock rather than `npm ci`: the lock lists optional platform packages the
# registry mirror lacks (other platforms' clipboard builds), which `npm ci` refuses.
agents: agents/node_modules/.installed

agents/node_modules/.installed: agents/package.json agents/package-lock.json
	npm install --prefix agents --no-save --no-audit --no-fund
	touch $@

# Background workers for a deployment with REDIS_URL set.
worker: install
	$(VENV)/bin/celery -A tokensite worker --loglevel=INFO

beat: install
	$(VENV)/bin/celery -A tokensite beat --loglevel=INFO

bench-quick: install
	for script in benchmarks/*.py; do $(PY) $$script --quick || exit 1; done

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles
