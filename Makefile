# Set-up and test entry points. Each target installs what it needs first,
# into a virtual environment in .venv so the system Python stays untouched.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install tools demo test

$(BIN)/yicrouter: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@
	@echo "yicrouter is installed in $(VENV): run $(BIN)/yicrouter, or activate $(VENV) with '. $(BIN)/activate'"

install: $(BIN)/yicrouter

# DCMTK and Orthanc are the real peers, workstations and destinations of the tests.
tools:
	@if [ -x /usr/bin/findscu ] && [ -x /usr/bin/dcmqrscp ] && [ -x /usr/sbin/Orthanc ]; then \
		echo "dcmtk and orthanc are installed"; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dcmtk orthanc; \
	fi

demo: install
	$(BIN)/yicrouter demo

test: tools install
	$(BIN)/python -m mypy yicrouter
	$(BIN)/python -m pytest -q
