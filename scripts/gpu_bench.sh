#!/usr/bin/env bash
# GPU checks and timings of hsnet-lite against the authors'-style baseline (docs/performance.md).
# Usage: OUT=results/gpu bash scripts/gpu_bench.sh   (needs a CUDA GPU; no install: runs from the checkout)
# Step 6's bf16 agreement on the shipped trained model needs the EfficientNet-Lite0 weights (see scripts/gpu_env.sh);
# without them that line says skipped.
# Ordered by importance, each step under its own time limit, so that a run cut short keeps the first ones.
set -u
. "$(dirname "$0")/gpu_env.sh"
STEPS=${STEPS:-all}  # the steps below to run: all, or e.g. STEPS=7,8 to redo only those
step() {  # step N SECONDS FILE COMMAND...: if N is in $STEPS, run COMMAND into $OUT/FILE, noting a failure or a time-out there
    local n=$1 limit=$2 file=$3; shift 3
    [[ $STEPS == all || ",$STEPS," == *",$n,"* ]] || return 0
    timeout "$limit" "$@" > "$OUT/$file" 2>&1 || echo "[$* ended with $?]" >> "$OUT/$file"
    echo "$file done (${SECONDS}s)"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; git log -1 --format='commit %h' 2>/dev/null
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  echo "steps $STEPS"; } > "$OUT/gpu_machine.txt" 2>&1
# 1. ResNet101, the paper's efficiency backbone: 1-shot episode, training step, 5-shot, memory
step 1 120 bench_resnet101.txt $PY -m hsnet_lite.bench --device cuda --backbone resnet101 --sections 1shot,train,5shot,memory
# 2. the tests that take the `device` fixture, on CUDA (CI has no GPU and skips them)
step 2 120 device_tests.txt $PY -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_metrics.py tests/test_training_viz.py tests/test_cuda_graphs.py -k "cuda or graph"
# 3. ResNet50 (the CPU benchmark's backbone) with the center-pivot layers
step 3 120 bench_resnet50.txt $PY -m hsnet_lite.bench --device cuda --backbone resnet50 --sections layers,1shot,train,5shot,memory
# 4. where a training step's time goes (torch.profiler), ours against the baseline
step 4 90 train_step_profile_resnet101.txt $PY scripts/gpu_train_profile.py cuda resnet101
# 5. each stage's GPU time (replayed as CUDA graphs), fp32 and TF32
step 5 90 stage_times_resnet101.txt $PY scripts/gpu_stage_times.py resnet101
# 6. optional modes on ResNet101: TF32, bf16 autocast, the episode as one CUDA graph, torch.compile of the learner
step 6 240 bench_resnet101_modes.txt $PY -m hsnet_lite.bench --device cuda --backbone resnet101 --sections modes --modes tf32,bf16,cudagraphs,compile
# 7-8. ResNet50: each stage's GPU time, and the episode replayed as one CUDA graph
step 7 90 stage_times_resnet50.txt $PY scripts/gpu_stage_times.py resnet50
step 8 90 bench_resnet50_cudagraphs.txt $PY -m hsnet_lite.bench --device cuda --backbone resnet50 --sections modes --modes cudagraphs
