# Set-up and test entry points; each target installs what it needs first.
PYTHON ?= python3

.PHONY: install tools demo test

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'

# DCMTK and Orthanc are the real peers, workstations and destinations of the tests.
tools:
	@if [ -x /usr/bin/findscu ] && [ -x /usr/bin/dcmqrscp ] && [ -x /usr/sbin/Orthanc ]; then \
		echo "dcmtk and orthanc are installed"; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dcmtk orthanc; \
	fi

demo: install
	$(PYTHON) -m yicrouter demo

test: tools install
	$(PYTHON) -m mypy yicrouter
	$(PYTHON) -m pytest -q
