#!/usr/bin/env bash
# A GPU session's work in one command (the device tool runs it in the repository root):
#
#   bash benchmarks/gpu_session.sh          # results under $OUT (set by the device tool) or gpu_out/
#
# Builds the CUDA extension against the machine's torch (no downloads), runs the whole test
# suite there (the CUDA parametrizations, the CUDA-graph capture/replay tests, CUDA resume and
# mixed CPU+CUDA groups un-skip), then the optimizer-step benchmark on the GPU. Writes into $OUT:
# nvidia-smi.txt, build.log, backend.json, pytest.log, junit.xml, gpu_vs_emulation.md (the GPU
# kernels against the CPU-emulated ones on the same inputs), bench/ (bench_optim's JSON and CSV)
# and bench_optim_cuda.log, and appends the dated figures to benchmarks/RESULTS.md (commit it).
# Exit status: the test suite's. PYTEST_ARGS narrows the run.
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

echo "== GPU kernels against the CPU-emulated kernels on the same inputs"
"$PY" benchmarks/gpu_vs_emulation.py --out "$OUT/gpu_vs_emulation.md" > "$OUT/gpu_vs_emulation.log" 2>&1 \
    || echo "gpu_vs_emulation failed (see gpu_vs_emulation.log)"
tail -50 "$OUT/gpu_vs_emulation.log"

echo "== optimizer-step benchmark on the GPU"
"$PY" benchmarks/bench_optim.py --device cuda --out "$OUT/bench" > "$OUT/bench_optim_cuda.log" 2>&1 \
    || echo "bench_optim failed (see bench_optim_cuda.log)"
tail -40 "$OUT/bench_optim_cuda.log"

echo "== recording into benchmarks/RESULTS.md"
{
    echo
    echo "## GPU session $(date -u +%Y-%m-%d): $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
    echo
    echo "Test suite: $(tail -1 "$OUT/pytest.log")"
    echo
    echo "GPU kernels against the CPU-emulated kernels (benchmarks/gpu_vs_emulation.py):"
    echo
    cat "$OUT/gpu_vs_emulation.md" 2>/dev/null || echo "(not measured: see gpu_vs_emulation.log)"
    echo
    echo "Optimizer step on the GPU (benchmarks/bench_optim.py --device cuda):"
    echo
    echo '```'
    tail -30 "$OUT/bench_optim_cuda.log"
    echo '```'
} >> benchmarks/RESULTS.md
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
exit $rc
