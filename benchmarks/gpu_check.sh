#!/usr/bin/env bash
# The device check for a lent GPU machine, in one call of a few minutes:
#   bash benchmarks/gpu_check.sh            # writes to $OUT (or ./gpu_check_out) as well as stdout
# Needs a CUDA build of torch already installed on that machine (it has no internet); installs
# nothing else: if planetrl's requirements are missing it says so and stops.
# Steps: environment report; the CUDA tests of tests/test_speed.py (CUDA graph planner vs
# uncaptured, bf16 update); bench_all.py on CUDA for both presets (envs skipped: the GPU does not
# render), with a profile of one update and one plan.
set -u
OUTDIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  PY=.venv/bin/python
fi
{
  echo "== environment"; date; uptime; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} 2>&1 | tee "$OUTDIR/env.txt"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA torch: stop"; exit 2; }
"$PY" -c "import planetrl, gymnasium, numpy" 2>/dev/null || {
  echo "planetrl not importable: trying pip install -e . --no-deps (no internet needed)";
  "$PY" -m pip install -e . --no-deps -q 2>&1 | tail -2; }
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
echo "== CUDA tests" | tee "$OUTDIR/tests.txt"
timeout 240 "$PY" -m pytest tests/test_speed.py -q -m "" -p no:cacheprovider -rs 2>&1 | tail -30 | tee -a "$OUTDIR/tests.txt"
echo "== bench_all --device cuda" | tee "$OUTDIR/bench.txt"
timeout 300 "$PY" benchmarks/bench_all.py --device cuda --skip-envs --profile --speed "${SPEED:-compile,bf16,channels_last,cuda_graphs}" ${BENCH_ARGS:-} 2>&1 | tee -a "$OUTDIR/bench.txt"
echo "== done"; date
