# Fresh-machine entry points. Each target sets up what it needs (a virtualenv in .venv with
# the CPU torch wheel, the test/demo dependencies and the compiled extension) and is a no-op
# for the steps already done.
#
#   make demo    # train on the digits data with each optimizer, print the comparison table
#   make test    # run the test suite
#   make test-all     # the suite, then make test-emu (what CI runs, with the builds below)
#   make bench   # every benchmark under pytest-benchmark (optimizer steps, sparse convs, sparse
#                # inference vs engines) -> bench_out/benchmarks.json and the markdown tables;
#                # ARGS=--bench-quick for a couple of minutes, any pytest(-benchmark) option
#   make bench-inference  # only the sparse MobileNetV1 against ONNX Runtime/DeepSparse/eager;
#                         # ARGS=--quick for batch 1 and 16 (about a minute)
#   make test-emu     # every CUDA kernel executed on the CPU (host emulation), ASan+UBSan and TSan
#   make cuda-check   # the README's CUDA build (CUDA torch in .venv-cuda, torch's nvcc flags)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: all setup build demo demo-quick test test-all test-fast test-emu bench bench-inference cmake-check \
        cuda-check clean

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

# The suite (about 8 minutes on the 2-core CI machine, after the build). The CUDA kernels under
# emulation with sanitizers take longer (make test-emu, about 20 minutes with their build); CI
# (.ci/run) runs both, and make test-all does too.
test: build
	$(PY) -m pytest -q tests --ignore=tests/emulation $(ARGS)

test-all: test test-emu

test-fast: build
	$(PY) -m pytest -q tests --ignore=tests/emulation -m "not slow" $(ARGS)

# The CUDA kernels (csrc/cuda/*.cu, unchanged) compiled as C++ and executed on the CPU
# (tests/emulation/): under AddressSanitizer + UndefinedBehaviorSanitizer through the ops, and
# the shared-memory kernel under ThreadSanitizer (tests/emulation/race_check.cpp). --capture=sys:
# a sanitizer report (written to fd 2 by the runtime) reaches the log instead of pytest's capture.
# libstdc++ is preloaded with the ASan runtime: python does not link it, and ASan's __cxa_throw
# interceptor must find it at start-up (else the first C++ exception aborts the process).
ASAN_PRELOAD = $(shell g++ -print-file-name=libasan.so) $(shell g++ -print-file-name=libstdc++.so)
EMU_FLAGS = -std=c++17 -O1 -g -ffp-contract=off -Wno-unknown-pragmas -DSPARSEOPT_CUDA_EMULATION \
            -Icsrc/emulation/include -Icsrc
build/tsan/race_check: tests/emulation/race_check.cpp $(wildcard csrc/cuda/* csrc/emulation/* csrc/emulation/include/*)
	mkdir -p build/tsan
	g++ $(EMU_FLAGS) -fsanitize=thread tests/emulation/race_check.cpp -x c++ csrc/cuda/sparse_conv.cu \
	    -o $@ -lpthread

test-emu: build build/tsan/race_check
	TSAN_OPTIONS=halt_on_error=1 setarch $$(uname -m) -R build/tsan/race_check
	SPARSEOPT_REQUIRE_EMULATION=1 LD_PRELOAD="$(ASAN_PRELOAD)" \
	ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0:new_delete_type_mismatch=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(PY) -m pytest -q -p no:cacheprovider --capture=sys tests/emulation $(EMU_ARGS)

# The [bench] extra of setup.py (without reinstalling sparseopt); if it cannot be installed the
# inference benchmark says so and skips ONNX Runtime.
$(VENV)/.bench: setup.py
	-$(PY) -m pip install -q onnxruntime onnx
	touch $@

# pytest-benchmark over benchmarks/test_bench_*.py (the scripts' rows), then the scripts' markdown
# writers on its JSON (bench_out/optim_cpu.md, conv.md, inference.md, summary.md).
BENCH_JSON ?= bench_out/benchmarks.json
bench: build $(VENV)/.bench
	mkdir -p $(dir $(BENCH_JSON))
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-json=$(BENCH_JSON) $(ARGS)
	$(PY) benchmarks/write_results.py $(BENCH_JSON) --out $(dir $(BENCH_JSON))

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

# The README's CUDA build as a user runs it: a virtualenv with torch's CUDA build (.venv-cuda),
# SPARSEOPT_USE_CUDA=1 pip install --no-build-isolation -e . (torch's CUDAExtension, so nvcc gets
# torch's own flags) for sm_80 and sm_90, import, and the CPU kernel tests against that build.
cuda-check:
	tools/cuda_build_check.sh

clean:
	rm -rf build cmake-build sparseopt/*.so *.egg-info bench_out demo_out
