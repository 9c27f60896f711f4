#!/usr/bin/env bash
# The GPU check: one command, at most TOTAL_S (540 s = 9 minutes) of wall-clock, on a GPU node
# with no internet (a Python with a CUDA build of torch and numpy; nothing else needed):
#   bash scripts/wheelhouse.sh wheelhouse/     # here, with package access (see README)
#   bash benchmarks/gpu_check.sh               # there, in a copy of this tree with wheelhouse/
# Steps, each under its own `timeout` (caps in seconds, env-tunable) with its time printed:
#   environment  nvidia-smi, torch, CUDA, CPU, load
#   install      scripts/install.sh --offline $WHEELHOUSE (default ./wheelhouse) into $PYTHON
#                (default python3); skipped when there is no wheelhouse and planetrl's
#                requirements already import (INSTALL_CAP 90)
#   render       MUJOCO_GL=egl: a cartpole frame, the GL renderer's name, frames/s; the EGL loader
#                .debs of $WHEELHOUSE/gl are unpacked first when libEGL.so.1 is missing (root)
#                (RENDER_CAP 45)
#   cuda-tests   tests/test_speed.py with the slow ones and tests/test_update.py's CUDA tests (the
#                captured update against the eager one, a run with it), on CUDA (TESTS_CAP 150)
#   bench-paper, bench-small   benchmarks/bench_all.py --device cuda --quick: plan with 1 and 10
#                envs, update B×L of the preset; reference, eager and fast (BENCH_SPEED, default
#                bf16,channels_last,cuda_graphs,update_graph) side by side with the max |diff|
#                column; the training loop's update with the preset's whole loss, eager against
#                captured; the projected 1M-env-step model time from those costs; each row is
#                printed as soon as it is measured (BENCH_PAPER_CAP 110, BENCH_SMALL_CAP 70)
#   worldmodels  `planetrl train --agent worldmodels` on the same device, the small preset's sizes
#                on a cut budget (16 random episodes, 2 VAE epochs, 300 MDN updates, 8 generations
#                of 64 x 16 in the dream): the World Models path on CUDA, and its costs (WM_CAP 75)
#   train        benchmarks/learning.py --preset paper on dmc:cartpole-swingup for the time left
#                (at least what the caps above leave; typically 3-4 minutes), MUJOCO_GL=egl,
#                COLLECT_ENVS (5) episodes collected in parallel env worker processes, evaluation
#                every 5 episodes on 5, bf16, CUDA graphs and the captured update on; when that
#                fails within 150 s, again on the eager path for the time left (train-eager)
# Without CUDA (how it is tested on a CPU machine) cuda-tests is skipped with a message, the
# speed table runs the small preset on the CPU and training the small preset, so every other
# step still runs; TOTAL_S=240 makes that a 4-minute run.
# Writes into $OUT (default ./gpu_check_out) 8 files: check.log (everything printed), env.txt,
# tests.txt, bench.txt, train.txt (both agents), curve.csv, curve.png, summary.json (each step's seconds and
# status, the training summary); the run directory itself stays in $GPU_CHECK_WORK.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
TOTAL_S="${TOTAL_S:-540}"
DEADLINE=$((START + TOTAL_S))
FINAL_S=15  # kept for summary.json at the end
OUTDIR="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
rm -f "$OUTDIR"/{check.log,env.txt,tests.txt,bench.txt,train.txt,curve.csv,curve.png,summary.json}
exec > >(tee -a "$OUTDIR/check.log") 2>&1
PY="${PYTHON:-python3}"
WH="${WHEELHOUSE:-$PWD/wheelhouse}"
WORK="${GPU_CHECK_WORK:-/tmp/planetrl-gpu-check}"
rm -rf "$WORK" && mkdir -p "$WORK"
STEPS="$WORK/steps.tsv"
: > "$STEPS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"

# run_step NAME CAP FILE CMD...: CMD under `timeout` (CAP, or less when the deadline is nearer),
# its output also appended to $OUTDIR/FILE, its seconds and status in steps.tsv.
run_step() {
  local name=$1 cap=$2 file=$3 left limit t0 t1 rc status
  shift 3
  left=$((DEADLINE - FINAL_S - $(date +%s)))
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 5 ]; then
    echo "== $name: skipped, no time left"
    printf '%s\t0\tskipped (no time left)\n' "$name" >> "$STEPS"
    return 0
  fi
  echo "== $name (at most ${limit} s; $(( $(date +%s) - START )) s used so far)" | tee -a "$OUTDIR/$file"
  t0=$(date +%s.%N)
  # SIGINT first: Python stops with KeyboardInterrupt (learning.py still writes its curve)
  timeout -s INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$OUTDIR/$file"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124|130|137) status="timed out after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  secs=$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")
  echo "== $name: $status, ${secs} s" | tee -a "$OUTDIR/$file"
  printf '%s\t%s\t%s\n' "$name" "$secs" "$status" >> "$STEPS"
  return "$rc"
}
skip_step() {
  echo "== $1: SKIPPED: $2" | tee -a "$OUTDIR/$3"
  printf '%s\t0\tskipped: %s\n' "$1" "$2" >> "$STEPS"
}

environment() {
  date -u; uptime
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  echo "cpus: $(nproc); python: $(command -v "$PY")"
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'numpy', numpy.__version__); \
torch.cuda.is_available() and print('device', torch.cuda.get_device_name(0))"
}
export PY
export -f environment
run_step environment 30 env.txt bash -c environment
CUDA=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && CUDA=1
[ $CUDA = 1 ] || echo "== NO CUDA: CPU mode: the CUDA-only steps are skipped, the others run small"

# install
if [ -d "$WH" ] && ls "$WH"/planetrl-*.whl >/dev/null 2>&1; then
  run_step install "${INSTALL_CAP:-90}" env.txt env PYTHON="$PY" bash scripts/install.sh --offline "$WH"
elif "$PY" -c "import planetrl, mujoco, dm_control, gymnasium, tyro" 2>/dev/null; then
  skip_step install "no wheelhouse at $WH; planetrl's requirements import already" env.txt
else
  skip_step install "no wheelhouse at $WH and planetrl's requirements are missing" env.txt
  echo "build one with: bash scripts/wheelhouse.sh wheelhouse/ (on a machine with package access)"
  exit 2
fi

# render (EGL on the GPU)
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1' && ls "$WH"/gl/*.deb >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  echo "== libEGL.so.1 missing: unpacking the EGL/GL loaders of $WH/gl"
  for f in "$WH"/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
VENDOR=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ] && [ -f "$VENDOR" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$VENDOR
export MUJOCO_GL="${MUJOCO_GL:-egl}"
render() {
  "$PY" - <<'EOF'
import os, time
from dm_control import suite
env = suite.load("cartpole", "swingup")
env.reset()
physics = env.physics
physics.render(64, 64, camera_id=0)
try:
    from OpenGL import GL
    with physics.contexts.gl.make_current() as ctx:
        name = ctx.call(lambda: (GL.glGetString(GL.GL_VENDOR), GL.glGetString(GL.GL_RENDERER)))
    print("GL:", *(s.decode() if isinstance(s, bytes) else s for s in name))
except Exception as err:  # noqa: BLE001
    print("GL renderer name not read:", type(err).__name__, err)
start = time.perf_counter()
for _ in range(200):
    physics.render(64, 64, camera_id=0)
print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}: {200 / (time.perf_counter() - start):.0f} "
      f"frames/s (64x64, one process)")
EOF
}
export -f render
if ! run_step render "${RENDER_CAP:-45}" env.txt bash -c render; then
  echo "== EGL rendering failed: MUJOCO_GL unset, planetrl tries egl then osmesa itself"
  unset MUJOCO_GL
fi

# CUDA tests
if [ $CUDA = 1 ]; then
  run_step cuda-tests "${TESTS_CAP:-150}" tests.txt \
    "$PY" -m pytest tests/test_speed.py \
    tests/test_update.py::test_the_captured_update_matches_the_eager_one_on_cuda \
    tests/test_update.py::test_a_run_with_the_captured_update_on_cuda -m "" -q -rs -p no:cacheprovider \
    -o addopts=  # one process on the GPU (pyproject's addopts ask for 2 xdist workers)
else
  skip_step cuda-tests "no CUDA device: tests/test_speed.py's CUDA tests need one" tests.txt
fi

# the speed table
SPEED="${BENCH_SPEED:-bf16,channels_last,cuda_graphs,update_graph}"
if [ $CUDA = 1 ]; then
  run_step bench-paper "${BENCH_PAPER_CAP:-110}" bench.txt "$PY" benchmarks/bench_all.py \
    --presets paper --device cuda --quick --skip-envs --skip-replay --speed "$SPEED"
  run_step bench-small "${BENCH_SMALL_CAP:-70}" bench.txt "$PY" benchmarks/bench_all.py \
    --presets small --device cuda --quick --skip-envs --skip-replay --speed "$SPEED"
else
  skip_step bench-paper "no CUDA device: the CUDA speed table needs one" bench.txt
  run_step bench-small-cpu "${BENCH_SMALL_CAP:-70}" bench.txt "$PY" benchmarks/bench_all.py \
    --presets small --device cpu --quick --skip-envs --skip-replay --speed channels_last \
    --plan-envs 1
fi

# World Models on the same device: V, M and the controller evolved in M's dream, the whole
# population x rollouts one batched tensor rollout (its sizes are the small preset's; the budget
# is cut to fit WM_CAP: a handful of random episodes, a few epochs and generations)
if [ $CUDA = 1 ]; then
  WM_DEVICE=cuda WM_GENS="${WM_GENERATIONS:-8}" WM_EPISODES=16 WM_UPDATES=300
else
  WM_DEVICE=cpu WM_GENS=2 WM_EPISODES=4 WM_UPDATES=20
fi
run_step worldmodels "${WM_CAP:-75}" train.txt "$PY" -m planetrl train --agent worldmodels \
  --preset small --task dmc:cartpole-swingup --logdir "$WORK/wm" --no-progress \
  --device "$WM_DEVICE" --collect.episodes "$WM_EPISODES" --collect.envs 8 --vae.epochs 2 \
  --mdn.updates "$WM_UPDATES" --controller.mode dream --controller.population 64 \
  --controller.rollouts 16 --controller.generations "$WM_GENS" --eval.every 0 \
  --eval.episodes 4 --eval.no-video
"$PY" - "$WORK/wm" <<'EOF' 2>&1 | tee -a "$OUTDIR/train.txt"
import sys
from pathlib import Path
from planetrl.run.logger import read_metrics
path = Path(sys.argv[1]) / "metrics.jsonl"
rows = read_metrics(path) if path.exists() else []
keys = sorted({k for r in rows for k in r if k.split("/")[0] in ("vae", "mdn", "es", "eval")})
for k in keys:
    vals = [r[k] for r in rows if k in r]
    print(f"  worldmodels {k}: last {vals[-1]:.4g} ({len(vals)} rows)")
EOF

# training for the time left
if [ $CUDA = 1 ]; then
  PRESET=paper DEVICE=cuda ENVS="${COLLECT_ENVS:-5}"
  EXTRA=(speed.bf16=on speed.cuda_graphs=on speed.update_graph=on)
  OVERHEAD="${TRAIN_OVERHEAD_S:-60}"  # start, random baseline, final evaluation, curve
else
  PRESET=small DEVICE=cpu ENVS="${COLLECT_ENVS:-2}"
  EXTRA=(train.seed_episodes=2 train.collect_interval=5 planner.candidates=100)
  OVERHEAD="${TRAIN_OVERHEAD_S:-100}"  # the same on a CPU: its evaluations plan slowly
fi
# train STEP LOGDIR SETTINGS...: benchmarks/learning.py into LOGDIR for the minutes left
train() {
  local step=$1 left minutes
  LOGDIR=$2
  shift 2
  left=$((DEADLINE - FINAL_S - $(date +%s)))
  minutes=$(awk "BEGIN {m = ($left - $OVERHEAD) / 60; printf \"%.2f\", (m < 0.25 ? 0.25 : m)}")
  echo "== $step: --preset $PRESET on dmc:cartpole-swingup for $minutes min of training" \
    "($left s left), $ENVS parallel env workers, MUJOCO_GL=${MUJOCO_GL:-auto}, $*" \
    | tee -a "$OUTDIR/train.txt"
  run_step "$step" "$left" train.txt "$PY" benchmarks/learning.py --task dmc:cartpole-swingup \
    --preset "$PRESET" --device "$DEVICE" --minutes "$minutes" --eval-every 5 \
    --eval-episodes 5 --target 400 --logdir "$LOGDIR" --no-progress \
    --set "train.collect_envs=$ENVS" "$@"
}
train_t0=$(date +%s)
train train "$WORK/train" "${EXTRA[@]}"
train_rc=$?
# A fast path that breaks within the first minutes must not cost the learning record: train
# again on the eager path (bf16, CUDA graphs and the captured update off) for what is left.
if [ $CUDA = 1 ] && [ $train_rc != 0 ] && [ $(( $(date +%s) - train_t0 )) -lt 150 ]; then
  echo "== train failed early (exit $train_rc): again on the eager path" | tee -a "$OUTDIR/train.txt"
  train train-eager "$WORK/train-eager" speed.bf16=off speed.cuda_graphs=off speed.update_graph=off
fi

# the record
"$PY" - "$LOGDIR" "$OUTDIR" "$STEPS" "$START" "$CUDA" <<'EOF' 2>&1 | tee -a "$OUTDIR/train.txt"
import csv, json, shutil, sys, time
from pathlib import Path
logdir, out, steps, start, cuda = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
rows = []
if (logdir / "metrics.jsonl").exists():
    from planetrl.run.logger import read_metrics
    rows = read_metrics(logdir / "metrics.jsonl")
t0 = rows[0]["time"] if rows else 0
print("\nepisodes (train/return; ms per plan; env steps/s):")
for r in rows:
    if "train/episodes" in r:
        print(f"  ep {int(r['train/episodes']):3d}  {r['step']:7d} steps  {(r['time'] - t0) / 60:5.2f} min"
              f"  return {r.get('train/return', float('nan')):7.1f}  plan {r.get('train/ms_per_plan', float('nan')):7.1f} ms"
              f"  {r.get('train/env_steps_per_s', float('nan')):7.0f} env steps/s")
updates = [r["train/ms_per_update"] for r in rows if "train/ms_per_update" in r]
evals = [r for r in rows if "eval/return" in r]
for r in evals:
    print(f"  eval at {r['step']} steps: {r['eval/return']:.1f} ± {r['eval/return_std']:.1f}")
if updates:
    print(f"  ms per update: first {updates[0]:.1f}, last {updates[-1]:.1f}")
if not (logdir / "curve.csv").exists() and evals:  # cut off before learning.py wrote it
    with open(logdir / "curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "minutes", "return_mean", "return_std"])
        for r in evals:
            w.writerow([r["step"], (r["time"] - t0) / 60, r["eval/return"], r["eval/return_std"]])
for name in ("curve.csv", "curve.png"):
    if (logdir / name).exists():
        shutil.copy(logdir / name, out / name)
training = json.loads((logdir / "summary.json").read_text()) if (logdir / "summary.json").exists() else None
step_rows = [dict(zip(("step", "seconds", "status"), line.rstrip("\n").split("\t")))
             for line in open(steps) if line.strip()]
for s in step_rows:
    s["seconds"] = float(s["seconds"])
speed = logdir / "speed.json"
summary = {
    "cuda": cuda, "total_seconds": round(time.time() - start, 1), "steps": step_rows,
    "training": training, "ms_per_update_last": updates[-1] if updates else None,
    "speed": json.loads(speed.read_text()) if speed.exists() else None,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print("\n== steps")
for s in step_rows:
    print(f"  {s['step']:<16} {s['seconds']:7.1f} s  {s['status']}")
print(f"  {'total':<16} {summary['total_seconds']:7.1f} s")
EOF
echo "== gpu_check: files in $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
