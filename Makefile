# ecotone-django developer tasks (GNU make).
#   make demo       create .venv with the demo's needs only (no compiler, no servers) and run the demo on SQLite
#   make test       start the services, then every leg of the supported matrix, lint and the packaging checks
#                   (TEST_LEGS="dj61-sqlite lint" runs some legs; PYTEST_ARGS=... passes through to pytest)
#   make lint       ruff check + mypy + lint-imports, the layers contract (in .venv; make test: the newest leg's venv)
#   make venv       create .venv (if missing) and install the package with every extra, for development
#   make services   make sure PostgreSQL, MariaDB, Redis and RabbitMQ are installed and up on loopback
#   make dist       build the sdist and the wheel into dist/
#   make bench      measure against raw baselines and the peers, write BENCHMARKS.md (BENCH_ARGS=--quick ...)
#   make chaos      the fault suite at full size: 2,000 orders on PostgreSQL + RabbitMQ, every fault
#                   (CHAOS_ARGS="--orders 10000 --seed 3 --faults=-postgres_restart" passes to tests/chaos/driver.py)
#   make clean      remove caches and build output;  make distclean  also removes every venv

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

# The development and demo venv: the newest CPython >= 3.11 found (PYTHON=/path/to/python overrides).
PYTHON ?=
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := test,postgres,mysql,redis,example
# The demo runs on SQLite with database channels: Django, Celery/kombu (pure Python) and django-environ.
DEMO_EXTRAS := example
DEMO_ARGS   ?=

# ---------------------------------------------------------------------------------------------------------------
# The supported matrix. Each Django version is a leg with a venv of its own (.venv-<leg>), made with the
# CPython it names (.ci/find-python finds it, or fails naming what to install).
#  · dj61 Django 6.1 on Python 3.13 (the newest pair): the full suite on SQLite, PostgreSQL and MariaDB
#  · dj60 Django 6.0 on Python 3.12: the unit and integration suites on PostgreSQL
#  · dj52 Django 5.2 LTS on Python 3.11: the unit and integration suites on PostgreSQL
# Supported and declared (pyproject classifiers, README, tox): 5.2 on 3.11-3.13, 6.0 and 6.1 on 3.12-3.13.
# ---------------------------------------------------------------------------------------------------------------
DJANGO_LEGS := dj61 dj60 dj52
NEWEST      := dj61
dj61.python := 3.13
dj61.django := Django>=6.1,<6.2
dj61.suites :=
dj60.python := 3.12
dj60.django := Django>=6.0,<6.1
dj60.suites  = $(PARTIAL_SUITES)
dj52.python := 3.11
dj52.django := Django>=5.2,<5.3
dj52.suites  = $(PARTIAL_SUITES)
# What the older versions run: everything but the example, the bad-input catalogue, the benchmark smoke
# test and the fault suite (those run on the newest pair). The contract suite holds the channel backends'
# shared tests; the unit suite the rollback and transaction-hook tests.
PARTIAL_SUITES := tests/unit tests/integration tests/contract tests/test_readme.py

TEST_LEGS ?= venvs lint package demo-bare dj61-sqlite dj61-postgres dj61-mariadb dj60-postgres dj52-postgres
PYTEST_ARGS ?=

.PHONY: help venv demo test pythons lint services dist bench chaos clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

# --- the development venv and the demo ---------------------------------------------------------------------------

# new_venv DIR PYTHON-SPEC [INTERPRETER]: create DIR, unless it already works, with INTERPRETER if given, else
# with the one .ci/find-python picks for PYTHON-SPEC.
define new_venv
	@if [ ! -x $(1)/bin/python ] || ! $(1)/bin/python -c 'import sys' 2>/dev/null; then \
		py="$(if $(3),$(3),$$(bash .ci/find-python $(2)))"; \
		echo "creating $(1) with $$py ($$("$$py" -V 2>&1))"; \
		rm -rf $(1); "$$py" -m venv $(1); \
	fi
	$(1)/bin/python -m pip install -qq --upgrade pip
endef

venv: $(VENV)/.installed

# Re-install whenever pyproject.toml is newer than the stamp.
.venv/.installed: pyproject.toml
	$(call new_venv,.venv,3.11+,$(PYTHON))
	.venv/bin/python -m pip install -qq -e '.[$(EXTRAS)]'
	touch .venv/.installed-demo $@

.venv/.installed-demo: pyproject.toml
	$(call new_venv,.venv,3.11+,$(PYTHON))
	.venv/bin/python -m pip install -qq -e '.[$(DEMO_EXTRAS)]'
	touch $@

demo: .venv/.installed-demo
	.venv/bin/python manage.py demo $(DEMO_ARGS)

# --- the test legs -----------------------------------------------------------------------------------------------

# A leg's venv: its CPython, its Django, every extra (mysqlclient compiles: make services installs its headers).
.venv-%/.installed: pyproject.toml
	@[ -n "$($*.python)" ] || { echo "make: no test leg named '$*' (legs: $(DJANGO_LEGS))" >&2; exit 2; }
	$(call new_venv,.venv-$*,$($*.python))
	@.venv-$*/bin/python -c 'import sys; v = "%d.%d" % sys.version_info[:2]; \
		sys.exit(0 if v == "$($*.python)" else f".venv-$* runs Python {v}, not $($*.python): make distclean")'
	.venv-$*/bin/python -m pip install -qq -e '.[$(EXTRAS)]' '$($*.django)'
	touch $@

# leg-<django leg>-<database>: one pytest run (ECOTONE_TEST_DB picks the engine of every alias).
$(foreach leg,$(DJANGO_LEGS),$(eval leg-$(leg)-%: .venv-$(leg)/.installed ; \
	ECOTONE_TEST_DB=$$* .venv-$(leg)/bin/python -m pytest $$($(leg).suites) $$(PYTEST_ARGS)))

# Every leg's venv first, so that the legs' times are the tests' own (one after another: the editable installs
# share the source tree's build metadata).
leg-venvs: $(foreach leg,$(DJANGO_LEGS),.venv-$(leg)/.installed)
	@$(foreach leg,$(DJANGO_LEGS),echo "$(leg): $$(.venv-$(leg)/bin/python -V), Django $$(.venv-$(leg)/bin/python -m django --version)";)

leg-lint: .venv-$(NEWEST)/.installed
	$(MAKE) --no-print-directory lint VENV=.venv-$(NEWEST)

leg-package: .venv-$(NEWEST)/.installed
	bash .ci/check-package.sh .venv-$(NEWEST)/bin/python

leg-demo-bare:
	bash .ci/demo-bare.sh $(DEMO_ARGS)

# Every interpreter the matrix needs, checked before anything runs: a missing one fails here, naming what to install.
pythons:
	@status=0; $(foreach leg,$(DJANGO_LEGS),bash .ci/find-python $($(leg).python) >/dev/null || { status=1; \
		echo "make: the test leg $(leg) ($($(leg).django)) needs CPython $($(leg).python): install it (above)" >&2; };) \
	exit $$status

# Services first, then every leg to its end even when one fails; a summary line per leg (.ci/legs.sh).
test: services pythons
	@bash .ci/legs.sh $(TEST_LEGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ecotone_django tests/typing
	$(VENV)/bin/lint-imports

services:
	bash .ci/services.sh

dist: .venv-$(NEWEST)/.installed
	rm -rf dist
	.venv-$(NEWEST)/bin/python -m build --outdir dist

# --- benchmarks and the fault suite --------------------------------------------------------------------------------

# The benchmarks (bench/run.py) need the bench extra (matplotlib, pyinstrument, py-spy, and the peers
# compared with: procrastinate, django-tasks-db, DBOS, dramatiq) on top of the venv.
BENCH_ARGS  ?=
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -qq -e '.[bench]'
	touch $(BENCH_STAMP)

bench: venv $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The fault suite (tests/chaos/): SIGKILL/SIGSTOP of workers and the relay, RabbitMQ and PostgreSQL restarts,
# dropped connections, poison messages — then lost = 0 and doubled = 0, read from the databases. It restarts
# the local PostgreSQL and RabbitMQ: on a machine others test on, add CHAOS_ARGS=--polite.
CHAOS_ARGS ?=
chaos: venv
	ECOTONE_TEST_DB=postgres ECOTONE_LEAK_MESSAGES=200000 \
	ECOTONE_CHAOS_ARGS="--orders 2000 --rate 40 --timeout 1200 $(CHAOS_ARGS)" \
		$(BIN)/pytest tests/chaos -ra -s $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis var/test-logs
	find . -path './.venv*' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(foreach leg,$(DJANGO_LEGS),.venv-$(leg))
