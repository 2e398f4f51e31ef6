# Two commands: `make run` serves the portal on SQLite, `make test` runs the suite (`make coverage`
# runs it with coverage of every process and the floor).
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
VENV := .venv
# uv from PATH when the machine has it, else installed into the project's own tools env.
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
export UV_PROJECT_ENVIRONMENT := $(VENV)
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO ?= 1
PORTAL_PLUGIN_DIRS ?= $(CURDIR)/examples/plugins
export PORTAL_PLUGIN_DIRS

.PHONY: run cluster test coverage test-quick env bytecode torch-env lint audit typecheck requirements check-requirements clean

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

# Compiled once here: this machine class sets PYTHONDONTWRITEBYTECODE, so without .pyc files
# every Python process (each manage.py, worker, sandbox host) compiled its imports again.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

env: $(VENV)/.synced

run: env
	$(VENV)/bin/python manage.py migrate --noinput
	@# The examples show every state, so some end FAILED or UNAVAILABLE on purpose: loadplugins
	@# exits 1 for that, which is expected here; 2 (misuse, or many plugins vanished) stops.
	$(VENV)/bin/python manage.py loadplugins || [ $$? -eq 1 ]
ifeq ($(DEMO),1)
	@# One run of the hostile examples, so the admin shows a crash, memory and a timeout too;
	@# their failing is the point, so it is said first and its exit code stops nothing.
	@echo "Demo: rerunning segfault, memory_hog and forever, which fail on purpose (a crash, memory, a timeout) so the admin shows failures too (DEMO=0 skips this):"
	@$(VENV)/bin/python manage.py rerunplugins segfault memory_hog forever; case $$? in \
	  0|1) echo "Demo: done; those failures were the point.";; \
	  *) echo "Demo: skipped, the examples are not loaded here; the portal starts anyway.";; esac
endif
	$(VENV)/bin/python manage.py ensureadmin
	@echo "Portal: http://$(HOST):$(PORT)/admin/  health: http://$(HOST):$(PORT)/v1/plugins"
	@# Plain HTTP on this machine: Secure cookies would not come back over it in every browser.
	SESSION_COOKIE_SECURE=0 CSRF_COOKIE_SECURE=0 \
	  $(VENV)/bin/python manage.py runserver --noreload $(HOST):$(PORT)

# The fleet's shape on one machine: PostgreSQL, RabbitMQ, gunicorn with 2 workers and 2 worker
# nodes on the queues 'default' and 'gpu' (docs/scale-out.md).
cluster: env
	HOST=$(HOST) PORT=$(PORT) bash deploy/cluster/run.sh

# Test processes (pytest-xdist): two per core, since most tests wait on processes they start
# (4 on 2 cores: 4 min 26 s with coverage, against about 6 min with 2); TEST_WORKERS=0 runs in
# this one process.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))
# Every test, without the coverage tracer (it doubles the suite's CPU time: make coverage).
test: env torch-env bytecode
	$(VENV)/bin/pytest --numprocesses=$(TEST_WORKERS) --dist=loadgroup $(PYTEST_ARGS)

# Every test again with branch coverage of every process, sandbox hosts and their forked
# calls included; below the floor fails (fail_under in pyproject.toml, repeated here so a
# narrowed config cannot drop it). CI runs it on PostgreSQL (docs/contributing.md).
COVERAGE_FLOOR ?= 90
coverage: env torch-env bytecode
	$(VENV)/bin/pytest --numprocesses=$(TEST_WORKERS) --dist=loadgroup --cov --cov-report=term --cov-report=xml --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

# What the pre-commit hook runs: every test but those that need an outside part (a browser,
# portal processes of their own, promtool, a private PostgreSQL cluster, a broker, the torch
# environment); CI runs them all with `make test` (docs/contributing.md).
test-quick: env bytecode
	$(VENV)/bin/pytest -q --numprocesses=$(TEST_WORKERS) --dist=loadgroup -m "not browser and not portal_processes and not promtool and not postgres_cluster and not broker and not redis and not torch" $(PYTEST_ARGS)

# The project's own modules compiled too (the processes tests start import them); a module
# edited since is compiled again on import, as always.
bytecode: env
	@$(VENV)/bin/python -m compileall -q sandbox plugin_contract plugins_app portal tools >/dev/null

# The torch plugin environment the `torch` tests and examples/torch use: a venv of its own
# (never .venv) with the CPU build of torch 2.13.0 that pip finds on this machine's disk.
TORCH_ENV ?= var/envs/torch
torch-env:
	@tools/envs/torch_env.sh $(TORCH_ENV)

# House rules checked on the source (docs/contributing.md lists what each rule protects).
audit: env
	$(VENV)/bin/python -m tools.audit

# Types with the django-stubs and DRF plugins, over every package of the project.
TYPED := $(wildcard sandbox) plugin_contract plugins_app portal tools
typecheck: env
	$(VENV)/bin/mypy $(TYPED)

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

requirements: | $(UV)
	$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt -o requirements.txt --quiet
	$(UV) export --frozen --only-dev --no-emit-project --format requirements-txt -o requirements-dev.txt --quiet

check-requirements: | $(UV)
	@diff <($(UV) export --frozen --no-dev --no-emit-project --format requirements-txt --quiet --no-header) \
	      <(grep -v '^#' requirements.txt) \
	  && diff <($(UV) export --frozen --only-dev --no-emit-project --format requirements-txt --quiet --no-header) \
	      <(grep -v '^#' requirements-dev.txt) \
	  || { echo "requirements*.txt drifted from uv.lock: run 'make requirements' and commit"; exit 1; }

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .coverage coverage.xml htmlcov
