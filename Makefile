# The README's two commands: `make run` and `make test`. Everything else is here for CI and operators.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format bench migrations-check check-deploy install clean-data

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

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
