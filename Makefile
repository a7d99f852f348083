# The two commands a newcomer needs (see README): `make quickstart` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DEMO ?= demo
WORK ?= adaptinf-work

.PHONY: install install-dev quickstart test demo-data

# torch first: 2.13.0 is the local CPU build here; an unpinned resolve would pull CUDA wheels.
install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[local]"

install-dev:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[local,test,operator]"
	tools/get-helm.sh >/dev/null

# The whole lifelong loop (Lite-Adapt-∞) on the synthetic stream, locally, logged to MLflow.
quickstart: install
	adaptinf demo-data --out $(DEMO)
	adaptinf run-local $(DEMO) --workdir $(WORK)

test: install-dev
	$(PYTHON) -m pytest -q
