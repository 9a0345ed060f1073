# The two commands: `make demo` and `make test`. Both create or reuse .venv from the
# pinned requirements.lock, so a fresh machine needs only Python 3.11 and Java 17.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# The fast tier, the loop for editing: no JVM, no Airflow, no child processes, nothing slow
# (markers in pyproject.toml; under 2 minutes on 2 cores). make test runs every tier.
FAST := not spark and not airflow and not subprocess and not slow

.PHONY: venv test test-fast demo lock check-java clean help

help:
	@echo "make demo       - run the whole pipeline on generated sample data"
	@echo "make test       - run the whole test suite (what CI runs)"
	@echo "make test-fast  - the loop for editing: no JVM, Airflow, subprocess or slow test (under 2 minutes)"
	@echo "make lock       - re-pin requirements.lock from the current .venv"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "error: longseq needs Python 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Set PYTHON=/path/to/python3.11." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@touch $(STAMP)

check-java:
	@if [ -n "$$JAVA_HOME" ] && [ -x "$$JAVA_HOME/bin/java" ]; then exit 0; fi; \
	 command -v java >/dev/null 2>&1 || { echo "error: Java was not found. Spark needs Java 17: install it (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2; exit 1; }

# Two workers, each test file on one of them (module fixtures are built once): with JVMs
# starting from a class archive (tests/jvm_startup.py) the suite leaves a core idle a third
# of the time in one process. tests/conftest.py gives each worker its share of the cores.
TEST_WORKERS ?= 2

test: venv check-java
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "$(FAST)" $(PYTEST_ARGS)

demo: venv check-java
	$(BIN)/longseq demo

lock: venv
	@{ echo "# Pinned environment for longseq (Python 3.11). Regenerate with 'make lock' from a venv that"; \
	   echo "# passed 'pip check'; installed by 'make venv'. docs/STACK.md says why these versions."; \
	   $(BIN)/pip freeze --all --exclude-editable | grep -vE '^(pip|longseq)==' | sed -E 's/^(torch==[0-9.]+)\+cpu$$/\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf demo-run .pytest_cache
