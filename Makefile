# The README's two commands: `make run` and `make test`. Everything else is here for CI and operators.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck format bench migrations-check check-deploy install clean-data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

.env:
	cp .env.example .env

# Installs, migrates, loads demo data and its KPI snapshots into an empty database, then serves web and task cluster
# until Ctrl-C (the cluster stops with the server).
run: $(STAMP) .env
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py setup_schedules
	$(BIN)/python manage.py demo_data --if-empty
	$(BIN)/python manage.py compute_kpis --backfill --if-empty
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# The suite on every core (pytest-xdist), each worker on its own test database (<name>_gw0, ...).
# --dist loadscope keeps a module's tests (a class's, for TestCase classes) on one worker and in
# order, so setUpTestData runs once per class as in a serial run.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# mypy's Django plugin imports the settings: a named server (never contacted) keeps it from
# starting the embedded one.
typecheck: $(STAMP) .env
	DATABASE_URL=$${DATABASE_URL:-postgres://unused@127.0.0.1:1/unused} $(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrations-check: $(STAMP) .env
	$(BIN)/python manage.py makemigrations --check --dry-run

# Benchmarks print their figures; they are not tests (see benchmarks/README.md).
bench: $(STAMP) .env
	$(BIN)/python benchmarks/run.py

clean-data:
	rm -rf .data media
