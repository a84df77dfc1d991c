# ecotone-django developer tasks (GNU make).
#   make venv       create .venv (if missing) and install the package with all extras
#   make test       run the suite against SQLite, PostgreSQL and MariaDB (PYTEST_ARGS=... passes through)
#   make lint       ruff check + mypy
#   make demo       run the demo (embedded SQLite by default)
#   make services   make sure PostgreSQL, MariaDB, Redis and RabbitMQ are up on loopback
#   make bench      measure against raw baselines and the peers, write BENCHMARKS.md (BENCH_ARGS=--quick ...)
#   make chaos      the fault suite at full size: 2,000 orders on PostgreSQL + RabbitMQ, every fault
#                   (CHAOS_ARGS="--orders 10000 --seed 3 --faults=-postgres_restart" passes to tests/chaos/driver.py)
#   make clean      remove caches and build output;  make distclean  also removes .venv

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXTRAS := test,postgres,mysql,redis,example

# Databases `make test` runs the suite against (tests/settings.py reads ECOTONE_TEST_DB).
TEST_DBS    ?= sqlite postgres mariadb
PYTEST_ARGS ?=

.PHONY: help venv demo test lint services bench chaos clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# Re-install whenever pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		if [ -z "$(PYTHON)" ]; then echo "make: neither python3.11 nor python3 found" >&2; exit 1; fi; \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: venv
	$(BIN)/python manage.py demo

# Run every database even when one fails, then report all of them; exit 5 (no tests) is a failure too.
test: venv
	@failed=0; summary=""; \
	for db in $(TEST_DBS); do \
		echo "===== pytest, ECOTONE_TEST_DB=$$db ====="; \
		rc=0; ECOTONE_TEST_DB=$$db $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
		case $$rc in \
			0) result="passed" ;; \
			5) result="FAILED (exit 5: no tests collected)"; failed=1 ;; \
			*) result="FAILED (exit $$rc)"; failed=1 ;; \
		esac; \
		summary="$$summary  $$db: $$result"$$'\n'; \
	done; \
	echo "===== summary ====="; printf '%s' "$$summary"; \
	exit $$failed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy ecotone_django

services:
	bash .ci/services.sh

# The benchmarks (bench/run.py) need the bench extra (matplotlib, pyinstrument, py-spy, and the peers
# compared with: procrastinate, django-tasks-db, DBOS, dramatiq) on top of the venv.
BENCH_ARGS  ?=
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: venv $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The fault suite (tests/chaos/): SIGKILL/SIGSTOP of workers and the relay, RabbitMQ and PostgreSQL restarts,
# dropped connections, poison messages — then lost = 0 and doubled = 0, read from the databases. It restarts
# the local PostgreSQL and RabbitMQ: on a machine others test on, add CHAOS_ARGS=--polite.
CHAOS_ARGS ?=
chaos: venv
	ECOTONE_TEST_DB=postgres ECOTONE_CHAOS_ARGS="--orders 2000 --rate 40 --timeout 1200 $(CHAOS_ARGS)" \
		$(BIN)/pytest tests/chaos -ra -s $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
