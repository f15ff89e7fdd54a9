# Fresh-machine entry points. Each target sets up what it needs (a virtualenv in .venv with
# the CPU torch wheel, the test/demo dependencies and the compiled extension) and is a no-op
# for the steps already done.
#
#   make demo    # train on the digits data with each optimizer, print the comparison table
#   make test    # run the test suite
#   make bench   # every benchmark (optimizer steps, sparse convs, sparse inference vs engines)
#   make bench-inference  # only the sparse MobileNetV1 against ONNX Runtime/DeepSparse/eager;
#                         # ARGS=--quick for batch 1 and 16 (about a minute)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: all setup build demo demo-quick test test-fast bench bench-inference cmake-check cuda-check clean

all: test

$(VENV)/.deps: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" numpy "setuptools>=64" wheel ninja \
	    pytest hypothesis pytest-benchmark scikit-learn tqdm matplotlib
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	MAX_JOBS=$(JOBS) $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import sparseopt, json; print(json.dumps(sparseopt.backend_info()))"
	touch $@

setup: $(VENV)/.deps
build: $(VENV)/.built

demo: build
	$(PY) -m sparseopt.demo $(ARGS)

demo-quick: build
	$(PY) -m sparseopt.demo --quick $(ARGS)

test: build
	$(PY) -m pytest -q tests $(ARGS)

test-fast: build
	$(PY) -m pytest -q tests -m "not slow" $(ARGS)

# The [bench] extra of setup.py (without reinstalling sparseopt); if it cannot be installed the
# inference benchmark says so and skips ONNX Runtime.
$(VENV)/.bench: setup.py
	-$(PY) -m pip install -q onnxruntime onnx
	touch $@

bench: build $(VENV)/.bench
	$(PY) -m sparseopt.bench $(ARGS)

# DeepSparse runs from its own virtualenv (numpy < 2) when .venv-deepsparse exists:
#   python3.11 -m venv .venv-deepsparse && .venv-deepsparse/bin/pip install deepsparse==1.8.0 'numpy<2'
bench-inference: build $(VENV)/.bench
	$(PY) benchmarks/bench_inference.py $(ARGS)

# C++ embedding: the CMake build of the kernels and its ctest.
cmake-check: $(VENV)/.deps
	cmake -S cmake -B cmake-build -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build cmake-build -j $(JOBS)
	ctest --test-dir cmake-build --output-on-failure

# Every CUDA kernel compiles for sm_80 and sm_90 (the .cu files include no torch headers).
NVCC ?= $(shell command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cuda-check:
	@set -e; for f in $$(find csrc -name '*.cu' | sort); do \
	    echo "nvcc -c $$f"; \
	    $(NVCC) -std=c++17 -O3 --fmad=false --expt-relaxed-constexpr -Icsrc \
	        -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	        -c $$f -o /tmp/sparseopt_$$(basename $$f).o; \
	done

clean:
	rm -rf build cmake-build sparseopt/*.so *.egg-info bench_out demo_out
