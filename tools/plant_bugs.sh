#!/usr/bin/env bash
# Plants known kernel bugs one at a time in a copy of the tree and checks that the emulated
# kernel tests (make test-emu's tests, without sanitizers for speed; the barrier bug under
# ThreadSanitizer) catch each of them. Exit status 0 when every planted bug is caught.
#
#   tools/plant_bugs.sh            # PY=.venv/bin/python by default
#   IN_PLACE=1 tools/plant_bugs.sh # plant in this tree (reuses its emulation build; each file is
#                                  # restored after its bug, and on exit)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
if [ "${IN_PLACE:-0}" = 1 ]; then
  ORIG=$ROOT/build/plant-bugs-originals
  mkdir -p "$ORIG/csrc/cuda"
  cp csrc/cuda/multi_tensor_apply.cuh csrc/cuda/sparse_conv.cu "$ORIG/csrc/cuda/"
  trap 'cp "$ORIG"/csrc/cuda/* csrc/cuda/' EXIT
  SRC=$ORIG
else
  WORK=$ROOT/build/plant-bugs
  rm -rf "$WORK" && mkdir -p "$WORK"
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$WORK"
  cd "$WORK"
  SRC=$ROOT
fi
mkdir -p build
EMU="-std=c++17 -O1 -g -ffp-contract=off -Wno-unknown-pragmas -DSPARSEOPT_CUDA_EMULATION -Icsrc/emulation/include -Icsrc"

# name | file | sed expression | how to test
BUGS=(
  "tail loop starts one element late|csrc/cuda/multi_tensor_apply.cuh|s/int64_t i = vec_end + threadIdx.x; i < n;/int64_t i = vec_end + threadIdx.x + 1; i < n;/|pytest:test_every_op_and_dtype and prox_sgd"
  "chunk one element short|csrc/cuda/multi_tensor_apply.cuh|s/remaining < kChunkSize ? remaining : kChunkSize;/remaining < kChunkSize ? remaining : kChunkSize - 1;/|pytest:test_every_op_and_dtype and prox_sgd"
  "depthwise bound off by one|csrc/cuda/sparse_conv.cu|s/iy >= 0 \&\& iy < H/iy >= 0 \&\& iy <= H/|pytest:test_sparse_depthwise"
  "missing __syncthreads in the pointwise staging|csrc/cuda/sparse_conv.cu|0,/__syncthreads();/{/__syncthreads();/d}|tsan"
  "step pointer not carried to the next launch|csrc/cuda/multi_tensor_apply.cuh|/meta.steps\[0\] = meta.steps\[loc_tensor - 1\];/d|pytest:test_tensor_carried_between_launches"
)

caught=0
for bug in "${BUGS[@]}"; do
  IFS='|' read -r name file expr how <<< "$bug"
  cp "$SRC/$file" "$file"
  sed -i "$expr" "$file"
  if cmp -s "$SRC/$file" "$file"; then
    echo "PLANT FAILED ($name): the sed expression changed nothing in $file"
    exit 2
  fi
  if [ "$how" = tsan ]; then
    g++ $EMU -fsanitize=thread tests/emulation/race_check.cpp -x c++ csrc/cuda/sparse_conv.cu \
        -o build/race_check_planted -lpthread &&
      TSAN_OPTIONS=halt_on_error=1 setarch "$(uname -m)" -R build/race_check_planted > build/planted.log 2>&1
  else
    "$PY" -m pytest -q -x -p no:cacheprovider tests/emulation -k "${how#pytest:}" > build/planted.log 2>&1
  fi
  if [ $? -ne 0 ]; then
    echo "caught:   $name ($(grep -m1 -oE 'FAILED [^ ]+|ThreadSanitizer: data race' build/planted.log))"
    caught=$((caught + 1))
  else
    echo "MISSED:   $name"
  fi
  cp "$SRC/$file" "$file"
done
echo "plant_bugs: $caught of ${#BUGS[@]} planted bugs caught"
[ "$caught" -eq "${#BUGS[@]}" ]
