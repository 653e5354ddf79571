# Jobsprint — the two commands a new machine needs:
#   make up     bring the whole local system up and run a sample workflow
#   make test   run the test suite (starts Kafka and Postgres itself)
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS ?= never
UV ?= uv
RUN := $(UV) run --all-packages --frozen

.PHONY: install up down status test test-unit test-faults lint format bench clean

install:
	@command -v $(UV) >/dev/null || python3 -m pip install -q uv
	$(UV) sync --all-packages --frozen

up: install
	$(RUN) python scripts/stack.py up
	$(RUN) python scripts/demo.py

down:
	@$(RUN) python scripts/stack.py down

status:
	@$(RUN) python scripts/stack.py status

test: install
	$(RUN) pytest -m "not faults"

test-unit: install
	$(RUN) pytest -m unit

test-faults: install
	$(RUN) pytest -m faults

LINT_PATHS := libs services tests scripts $(wildcard bench)

lint: install
	$(RUN) ruff check $(LINT_PATHS)
	$(RUN) ruff format --check $(LINT_PATHS)
	$(RUN) mypy -p jobsprint.events -p jobsprint.runtime -p jobsprint.workflows \
		-p jobsprint.gateway -p jobsprint.executor -p jobsprint.projector -p jobsprint.metrics

format:
	$(RUN) ruff format libs services tests scripts bench
	$(RUN) ruff check --fix libs services tests scripts bench

bench: install
	$(RUN) python bench/run.py

clean: down
	rm -rf .local
