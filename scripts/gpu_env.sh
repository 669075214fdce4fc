# Set-up shared by the GPU scripts (sourced by scripts/gpu_bench.sh and scripts/gpu_train_smoke.sh):
# the output folder $OUT (default results/gpu), the checkout importable without an install, the
# interpreter $PY (default python3).
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
