#!/usr/bin/env bash
# The offline install of scripts/wheelhouse.sh, proven on this machine end to end:
#   1. a simulated GPU node: a venv (NODE_IMAGE, cached) of the node's Python version holding torch
#      (TORCH_SPEC), numpy and the packages DIR/preinstalled.txt says the node has (installed
#      online: the node's image is made elsewhere);
#   2. a fresh venv on top of it (a .pth to the image's site-packages: pip sees that torch as
#      installed, as on the node, and installs next to it);
#   3. `scripts/install.sh --offline DIR` with the network cut (`unshare -n`: a network namespace
#      with no interface up; pip's config and index variables ignored), checking that pip looked
#      at no index;
#   4. with the network still cut: dm_control.suite loads every task but dog (the slimmed wheel),
#      and the tests named (default tests/test_envs.py tests/test_models.py; '-' for none) pass.
#   bash scripts/offline_install_check.sh DIR [TEST...]
# Environment: PYTHON (the node's interpreter, default pyenv's 3.12), TORCH_SPEC (default
# torch==2.11.0), TORCH_NO_DEPS=1 (install torch without its CUDA wheels: then torch cannot be
# imported here, only its metadata is there, and tests that import torch cannot run), NODE_IMAGE.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(cd "${1:?usage: offline_install_check.sh WHEELHOUSE [TEST...]}" && pwd)"
shift
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(tests/test_envs.py tests/test_models.py)
PY="${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python}"
VER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
TORCH_SPEC="${TORCH_SPEC:-torch==2.11.0}"
IMAGE="${NODE_IMAGE:-/tmp/planetrl-node-image-$VER}"
FRESH="$(mktemp -d /tmp/planetrl-offline-XXXXXX)"
trap 'rm -rf "$FRESH"' EXIT
t0=$(date +%s)

if [ ! -f "$IMAGE/.complete" ] || [ "$(cat "$IMAGE/.complete")" != "$TORCH_SPEC ${TORCH_NO_DEPS:-0}" ]; then
  echo "== 1. the simulated node image ($IMAGE: Python $VER, $TORCH_SPEC, numpy, preinstalled.txt)"
  rm -rf "$IMAGE"
  "$PY" -m venv "$IMAGE"
  "$IMAGE/bin/python" -m pip install -q --upgrade pip
  if [ "${TORCH_NO_DEPS:-0}" = 1 ]; then
    "$IMAGE/bin/python" -m pip install -q --no-deps "$TORCH_SPEC"
  else
    "$IMAGE/bin/python" -m pip install -q "$TORCH_SPEC"
  fi
  mapfile -t PRE < <(grep -v '^#' "$DIR/preinstalled.txt" | sed 's/ *#.*//' | grep .)
  "$IMAGE/bin/python" -m pip install -q numpy "${PRE[@]}"
  echo "$TORCH_SPEC ${TORCH_NO_DEPS:-0}" > "$IMAGE/.complete"
else
  echo "== 1. the simulated node image: $IMAGE (cached)"
fi
du -sh "$IMAGE" | sed 's/^/   image size: /'

echo "== 2. a fresh venv on the image: $FRESH"
"$PY" -m venv "$FRESH/venv"
SITE=$("$FRESH/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$IMAGE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SITE/_node_image.pth"
"$FRESH/venv/bin/python" -c "import importlib.metadata as m; print('   torch', m.version('torch'), 'numpy', m.version('numpy'))"

NET=(unshare -n)
if ! unshare -n true 2>/dev/null; then
  echo "   (unshare -n unavailable: network 'cut' by proxies to 127.0.0.1:9 instead)"
  NET=(env http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9)
fi
"${NET[@]}" python3 -c "
import socket
try:
    socket.create_connection(('pypi.org', 443), timeout=5); print('   NETWORK REACHABLE'); raise SystemExit(1)
except OSError as e:
    print('   network cut:', type(e).__name__, e)"

echo "== 3. scripts/install.sh --offline $DIR (network cut)"
"${NET[@]}" env PYTHON="$FRESH/venv/bin/python" bash scripts/install.sh --offline "$DIR" 2>&1 | tee "$FRESH/install.log"
if grep -Ei "Looking in indexes|https?://|Downloading" "$FRESH/install.log"; then
  echo "FAIL: pip reached for an index or a URL"; exit 1
fi
echo "   pip looked at no index (install log checked)"

echo "== 4. dm_control.suite: every task but dog loads (network cut)"
"${NET[@]}" env MUJOCO_GL="${MUJOCO_GL:-egl}" "$FRESH/venv/bin/python" - <<'PY'
import importlib.metadata as m
from dm_control import suite
slimmed = any(str(f).endswith("SLIMMED") for f in m.distribution("dm_control").files)
loaded, failed = [], []
for domain, task in suite.ALL_TASKS:
    try:
        suite.load(domain, task).reset()
        loaded.append(f"{domain}-{task}")
    except Exception as err:  # noqa: BLE001
        failed.append((f"{domain}-{task}", f"{type(err).__name__}: {err}"[:120]))
print(f"   slimmed dm_control: {slimmed}; {len(loaded)} tasks load; not: {failed}")
assert all(name.startswith("dog-") for name, _ in failed), failed
assert not slimmed or {n for n, _ in failed} == {f"dog-{t}" for d, t in suite.ALL_TASKS if d == "dog"}
PY
echo "== 4. planetrl's pixel envs: one env and a pool of 2 worker processes step (network cut)"
cat > "$FRESH/smoke.py" <<'PY'
import numpy as np
from planetrl.envs import EnvPool, GL_BACKEND, make_env
if __name__ == "__main__":
  env = make_env("dmc:cartpole-swingup", seed=0)
  obs, _ = env.reset(seed=0)
  for _ in range(5):
      obs, reward, *_ = env.step(env.action_space.sample())
  assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 0
  pool = EnvPool("dmc:cartpole-swingup", 2, seeds=[1, 2])
  try:
      obs, _ = pool.reset()
      out = pool.step(np.zeros((2, 1), np.float32))
      assert out[0].shape == (2, 64, 64, 3)
  finally:
      pool.close()
  print(f"   envs step ({GL_BACKEND}): one env, a pool of 2 workers, obs {obs.shape} uint8")
PY
"${NET[@]}" env MUJOCO_GL="${MUJOCO_GL:-egl}" "$FRESH/venv/bin/python" "$FRESH/smoke.py"
if [ "${TESTS[*]}" = "-" ]; then
  echo "== 4. pytest: not run (TESTS '-')"
else
  echo "== 4. pytest ${TESTS[*]} (network cut)"
  "${NET[@]}" env MUJOCO_GL="${MUJOCO_GL:-egl}" "$FRESH/venv/bin/python" -m pytest -q -p no:cacheprovider \
    -o "addopts=-m 'not slow'" "${TESTS[@]}"  # one process: without pyproject's xdist workers
fi
echo "== offline install check: passed in $(( $(date +%s) - t0 )) s (Python $VER, $TORCH_SPEC)"
