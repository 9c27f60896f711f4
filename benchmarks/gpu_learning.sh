#!/usr/bin/env bash
# The paper's configuration on real hardware: train the `paper` preset on dmc:cartpole-swingup on a
# CUDA machine for MINUTES (default 8) of wall-clock, evaluating every 5 episodes on 5 episodes,
# and write the curve (curve.csv, curve.png, summary.json) into $OUT (or runs/gpu-swingup).
#   bash benchmarks/gpu_learning.sh [MINUTES]
# Needs a CUDA build of torch and planetrl's requirements installed (see README). Rendering stays
# on the CPU (EGL); with a GPU the EGL device renders when the driver provides it.
set -eu
MINUTES="${1:-8}"
LOGDIR="${OUT:-runs}/gpu-swingup"
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA: stop"; exit 2; }
"$PY" benchmarks/learning.py --task dmc:cartpole-swingup --preset paper --device cuda \
  --minutes "$MINUTES" --eval-every 5 --target 400 --logdir "$LOGDIR" --set speed.bf16=on speed.cuda_graphs=on
