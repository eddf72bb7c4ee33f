#!/usr/bin/env bash
# fastbook ch. 14, step 5 on a GPU: the bottleneck ResNet-50 (xresnet50) at 224 px crops of
# 320 px presized images, fit_one_cycle(20, 3e-3), batch 128 (`--budget book-r50`).
#
# The device tool carries at most 64 MiB per call and the two Imagenette archives are 132 MB,
# so they travel in three calls, as parts under the git-ignored data/imagenette-parts/ (a warm
# machine keeps ignored files between calls; it is released after 30 s idle, so make the calls
# back to back). See docs/gpu-pending.md for the calls.
#
#   bash benchmarks/fastbook_gpu.sh split          # here: cut the archives into parts
#   bash benchmarks/fastbook_gpu.sh run [SEEDS]    # on the GPU machine, after the parts arrived
#
# `run` joins the parts (reslab checks both archives against their pinned sha256 before it
# extracts them), trains SEEDS seeds (default 1; running again with more seeds skips the
# finished ones) and copies the small result files (no weights) to $OUT/fastbook-r50/.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=data/imagenette-parts
SHARED=${RESLAB_SHARED_DATA:-../shared/data}

case "${1:-run}" in
split)
    mkdir -p "$PARTS"
    rm -f "$PARTS"/train.part.* "$PARTS"/val.tar.gz
    split -b 45M -d "$SHARED/imagenette2-224sq-train.tar.gz" "$PARTS/train.part."
    cat "$SHARED/imagenette2-224sq-val.tar.gz" > "$PARTS/val.tar.gz"
    ls -l "$PARTS"
    ;;
run)
    SEEDS=${2:-1}
    OUT=${OUT:-/tmp/out}
    mkdir -p data/imagenette "$OUT/fastbook-r50"
    cat "$PARTS"/train.part.* > data/imagenette/imagenette2-224sq-train.tar.gz
    cat "$PARTS/val.tar.gz" > data/imagenette/imagenette2-224sq-val.tar.gz
    export PYTHONPATH=$PWD/src RESLAB_CACHE=$PWD/data/cache
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
    python3 -c "import torch, torchvision, safetensors, PIL; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"
    git log -1 --format='commit %H' 2>/dev/null | tee -a "$OUT/gpu.txt" || true
    start=$(date +%s)
    python3 -m reslab experiment fastbook --budget book-r50 --data-dir data/imagenette \
        --seeds "$SEEDS" --device cuda --threads 8 --no-progress --no-report \
        --out data/fastbook-r50 2>&1 | tee "$OUT/fastbook-r50/log.txt"
    echo "wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/fastbook-r50/log.txt"
    cp data/fastbook-r50/results.json data/fastbook-r50/results.md "$OUT/fastbook-r50/"
    for run in data/fastbook-r50/runs/*/; do
        name=$(basename "$run")
        mkdir -p "$OUT/fastbook-r50/runs/$name"
        cp "$run"/{config,metrics,history}.json "$OUT/fastbook-r50/runs/$name/"
    done
    ;;
*)
    echo "usage: $0 split | run [SEEDS]" >&2
    exit 2
    ;;
esac
