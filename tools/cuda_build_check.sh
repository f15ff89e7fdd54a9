#!/usr/bin/env bash
# The README's CUDA build, exactly as a user runs it, on a machine with the CUDA toolkit and no GPU:
# a virtualenv with the CUDA build of torch, then `SPARSEOPT_USE_CUDA=1 pip install
# --no-build-isolation -e .` with CUDA_HOME, CPATH and TORCH_CUDA_ARCH_LIST set as README
# "Building against CUDA" says. torch's CUDAExtension compiles every .cu with its own nvcc flags
# (-D__CUDA_NO_HALF_CONVERSIONS__ and friends), which a hand-written nvcc line would not.
# Then: import it (backend_info() must list cuda and the architectures) and run the CPU kernel
# tests against this build.
#
# The build happens in a copy of the tree (tracked and untracked, not ignored, files) under
# $WORK, so the CPU build of the checkout (.venv, sparseopt/_C*.so) is left alone.
#
#   tools/cuda_build_check.sh            # VENV_CUDA, TORCH_CUDA, CUDA_ARCHS, WORK overridable
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV_CUDA=${VENV_CUDA:-$ROOT/.venv-cuda}
TORCH_CUDA=${TORCH_CUDA:-torch==2.14.1}
CUDA_ARCHS=${CUDA_ARCHS:-8.0;9.0}
WORK=${WORK:-$ROOT/build/cuda-check}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "cuda_build_check: no nvcc at $CUDA_HOME/bin/nvcc" >&2
    exit 1
fi
if [ ! -f "$VENV_CUDA/.deps" ]; then
    echo "== virtualenv with the CUDA build of torch ($TORCH_CUDA) in $VENV_CUDA"
    rm -rf "$VENV_CUDA"
    "$PYTHON" -m venv "$VENV_CUDA"
    "$VENV_CUDA/bin/python" -m pip install -q --upgrade pip
    "$VENV_CUDA/bin/python" -m pip install -q "$TORCH_CUDA" numpy "setuptools>=64" wheel ninja \
        pytest hypothesis
    touch "$VENV_CUDA/.deps"
fi
PY="$VENV_CUDA/bin/python"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

echo "== copy of the tree in $WORK"
rm -rf "$WORK"
mkdir -p "$WORK"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"

echo "== README build: SPARSEOPT_USE_CUDA=1 TORCH_CUDA_ARCH_LIST=\"$CUDA_ARCHS\" pip install --no-build-isolation -e ."
export CPATH="$SITE/nvidia/cu13/include${CPATH:+:$CPATH}"
export TORCH_CUDA_ARCH_LIST="$CUDA_ARCHS"
export VIRTUAL_ENV="$VENV_CUDA"
start=$(date +%s)
SPARSEOPT_USE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$PY" -m pip install -v --no-build-isolation --no-deps -e . > build.log 2>&1 || {
    tail -60 build.log
    echo "cuda_build_check: the README's CUDA build FAILED" >&2
    exit 1
}
echo "built in $(( $(date +%s) - start )) s"
# The nvcc command lines must carry torch's flags: that is what this check is for.
grep -q -- "nvcc.*-D__CUDA_NO_HALF_CONVERSIONS__" build.log || {
    echo "cuda_build_check: nvcc did not get torch's -D__CUDA_NO_HALF_CONVERSIONS__" >&2
    exit 1
}

echo "== import"
"$PY" - <<'PYEOF'
import json, os
import sparseopt
info = sparseopt.backend_info()
print(json.dumps(info))
assert info["native"] and "cuda" in info["backends"], f"no CUDA kernels in this build: {info}"
assert info["cuda_arch_list"] == os.environ["TORCH_CUDA_ARCH_LIST"], info
PYEOF

echo "== CPU kernel tests against the CUDA build"
"$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_ops.py tests/test_formulas.py ${CUDA_CHECK_PYTEST_ARGS:-}
