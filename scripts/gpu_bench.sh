#!/usr/bin/env bash
# GPU timings of hsnet-lite against the authors'-style baseline (README "Performance" section).
# Usage: OUT=results/gpu bash scripts/gpu_bench.sh   (needs a CUDA GPU; no install: runs from the checkout)
set -u
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } > "$OUT/gpu_machine.txt" 2>&1
# 1. ResNet101, the paper's efficiency backbone: 1-shot episode, training step, 5-shot, memory
timeout 120 $PY -m hsnet_lite.bench --device cuda --backbone resnet101 --sections 1shot,train,5shot,memory \
    > "$OUT/bench_resnet101.txt" 2>&1 || echo "resnet101 run ended with $?" >> "$OUT/bench_resnet101.txt"
# 2. ResNet50 (the CPU benchmark's backbone) with the center-pivot layers
timeout 120 $PY -m hsnet_lite.bench --device cuda --backbone resnet50 --sections layers,1shot,train,5shot,memory \
    > "$OUT/bench_resnet50.txt" 2>&1 || echo "resnet50 run ended with $?" >> "$OUT/bench_resnet50.txt"
# 3. optional modes on ResNet101: TF32, bf16 autocast, torch.compile of the learner (without and with CUDA graphs)
timeout 240 $PY -m hsnet_lite.bench --device cuda --backbone resnet101 --sections modes --modes tf32,bf16,compile \
    > "$OUT/bench_resnet101_modes.txt" 2>&1 || echo "modes run ended with $?" >> "$OUT/bench_resnet101_modes.txt"
timeout 180 $PY -m hsnet_lite.bench --device cuda --backbone resnet101 --sections modes --modes cudagraphs \
    > "$OUT/bench_resnet101_cudagraphs.txt" 2>&1 || echo "cudagraphs run ended with $?" >> "$OUT/bench_resnet101_cudagraphs.txt"
