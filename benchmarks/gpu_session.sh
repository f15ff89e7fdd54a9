#!/usr/bin/env bash
# A GPU session's work in one command (the device tool runs it in the repository root):
#
#   bash benchmarks/gpu_session.sh          # results under $OUT (set by the device tool) or gpu_out/
#
# Builds the CUDA extension against the machine's torch (no downloads), runs the whole test
# suite there (the CUDA parametrizations, the CUDA-graph capture/replay tests, CUDA resume and
# mixed CPU+CUDA groups un-skip), then the optimizer-step benchmark on the GPU. Writes into $OUT:
# nvidia-smi.txt, build.log, backend.json, pytest.log, junit.xml, bench/ (bench_optim's JSON and
# CSV) and bench_optim_cuda.log. Exit status: the test suite's. PYTEST_ARGS narrows the run.
set -uo pipefail
OUT=${OUT:-gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

echo "== build (SPARSEOPT_USE_CUDA=${SPARSEOPT_USE_CUDA:-1})"
if ! SPARSEOPT_USE_CUDA=${SPARSEOPT_USE_CUDA:-1} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$PY" -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    exit 1
fi
"$PY" -c "import sparseopt, json; print(json.dumps(sparseopt.backend_info()))" \
    | tee "$OUT/backend.json"

echo "== tests"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
"$PY" -m pytest -q tests --junitxml "$OUT/junit.xml" ${PYTEST_ARGS:-} > "$OUT/pytest.log" 2>&1
rc=$?
tail -15 "$OUT/pytest.log"

echo "== optimizer-step benchmark on the GPU"
"$PY" benchmarks/bench_optim.py --device cuda --out "$OUT/bench" > "$OUT/bench_optim_cuda.log" 2>&1 \
    || echo "bench_optim failed (see bench_optim_cuda.log)"
tail -40 "$OUT/bench_optim_cuda.log"
exit $rc
