#!/bin/sh
# For the next x86 machine WITHOUT VNNI (AVX2 only: AMD Zen 1-3, Intel Haswell to Comet Lake;
# or AVX-512 without VNNI: Skylake-SP): what BENCHMARKS.md's "int8 on CPUs without VNNI"
# section still lacks, measured for real (speeds included), and the Fashion-MNIST training time
# that "Training at the speed of the machine" lacks for such a CPU.
#
#   sh benchmarks/avx2_machine.sh [PYTHON]      # from the repository root; ~40 min on 2 cores,
#                                               # then about 40 min of training (step 4)
#
# Needs: the test extras installed (pip install -e ".[test]"), ../shared/data (Imagenette) or
# RESLAB_SHARED_DATA, the Keras ResNet-50 (`reslab weights fetch keras-resnet50`), Fashion-MNIST
# (`apt-get install dataset-fashion-mnist`). Results: benchmarks/results/*-avx2.* and
# benchmarks/results/int8-emulated/avx2-native/ (copy them into the commit).
set -eu
PY=${1:-.venv/bin/python}
export PYTHONPATH="$PWD/src"
RESULTS=benchmarks/results
WORK=${TMPDIR:-/tmp}/reslab-int8-avx2
LOCK=/tmp/reslab-heavy.lock
touch "$LOCK"

echo "== the CPU and the int8 arithmetic reslab picks for it"
lscpu | grep -E "Model name|Flags" | cut -c1-400
"$PY" -c 'from reslab.inference import int8_choice; c = int8_choice(); print(c.to_dict())
if not c.cpu.saturates: raise SystemExit("this CPU has VNNI/AMX (or is not x86): not the machine this is for")'

echo "== 1. the suite's int8 checks (slow ones included)"
flock "$LOCK" "$PY" -m pytest -q -m "slow or not slow" tests/test_engines.py tests/test_cpu_int8.py \
    tests/test_ladder.py tests/test_inference_cli.py

echo "== 2. the ResNet-50 ladder: speeds, batch-1 latency and top-1 of every rung (7-bit int8)"
"$PY" benchmarks/ladder.py run resnet50 --tag avx2          # takes the heavy lock itself
"$PY" benchmarks/ladder.py table "$RESULTS/ladder-resnet50-avx2.json"

echo "== 3. int8 top-1 with 8 and 7 bits on this CPU (the fix and what it fixes)"
NETTE=$("$PY" -c 'import sys; sys.path.insert(0, "benchmarks")
from imagenette_data import imagenette_root; print(imagenette_root())')
flock "$LOCK" "$PY" benchmarks/int8_emulated.py prepare "$WORK" --spec resnet50_v1@keras-imagenet \
    --data "$NETTE" --calib "$NETTE" --limit 400 --calib-images 128
flock "$LOCK" "$PY" benchmarks/int8_emulated.py onnx "$WORK" --threads 2 --tag avx2-native
for bits in "--weight-bits 8" "--weight-bits 7" "--activation-bits 7"; do
    flock "$LOCK" "$PY" benchmarks/int8_emulated.py pt2e "$WORK" --threads 2 --tag avx2-native $bits
done
mkdir -p "$RESULTS/int8-emulated/avx2-native"
cp "$WORK"/*.json "$RESULTS/int8-emulated/avx2-native/"
"$PY" benchmarks/int8_emulated.py table "$WORK"

echo "== 4. Fashion-MNIST to 93 % with --recipe fmnist-fast (no native bf16 here: float32 compile"
echo "   + channels-last; about 13 minutes a seed on an AVX2-restricted Xeon, 3-5x that of a native"
echo "   bf16 CPU's 253 s): BENCHMARKS.md, 'An AVX2-only CPU'"
flock "$LOCK" "$PY" benchmarks/train_recipes.py fmnist-fast --runs 3 | tee "$RESULTS/fmnist-fast-avx2.md"
