#!/usr/bin/env bash
# Set up planetrl on a fresh Debian/Ubuntu machine: system libraries for headless MuJoCo
# rendering (EGL, with OSMesa as the fallback) when missing, then a venv in .venv with the package.
#   TORCH_SPEC  the torch requirement (default torch==2.13.0: the CPU wheel on the development
#               machines). With a GPU: TORCH_SPEC="torch==2.13.0" and
#               PIP_EXTRA_INDEX_URL=<the PyTorch CUDA wheel index> for a CUDA build.
#
#   bash scripts/install.sh --offline DIR
# A machine without internet (a GPU node with its own Python, torch and numpy): installs planetrl
# and its requirements from DIR, a folder made by scripts/wheelhouse.sh, into that Python
# (PYTHON, default python3) with `pip install --no-index --find-links DIR`: no venv, no apt, no
# index (pip's config and PIP_*INDEX*/FIND_LINKS variables are ignored), torch and numpy untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--offline" ]; then
  DIR="${2:?usage: scripts/install.sh --offline DIR (a folder made by scripts/wheelhouse.sh)}"
  PY="${PYTHON:-python3}"
  ls "$DIR"/planetrl-*.whl >/dev/null 2>&1 || {
    echo "install.sh: no planetrl wheel in $DIR: build it with scripts/wheelhouse.sh $DIR" >&2; exit 2; }
  "$PY" -c "import importlib.metadata as m; m.version('torch'); m.version('numpy')" 2>/dev/null || {
    echo "install.sh: $PY has no torch or no numpy; the offline install goes next to them" >&2
    exit 2; }
  extras=""
  for pair in pytest:test imageio_ffmpeg:video ray:suite; do
    ls "$DIR/${pair%%:*}"-*.whl >/dev/null 2>&1 && extras="$extras,${pair#*:}"
  done
  offline_pip() {
    env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT \
      PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
      "$PY" -m pip install --no-index --find-links "$DIR" --no-cache-dir "$@"
  }
  echo "install.sh: offline install from $DIR into $("$PY" -c 'import sys; print(sys.prefix)')"
  wheel=$(ls "$DIR"/planetrl-*.whl | head -1)
  offline_pip "$wheel${extras:+[${extras#,}]}" || {
    echo "install.sh: offline install failed; $DIR/preinstalled.txt lists what the bundle" \
         "expects the node to have already" >&2; exit 1; }
  offline_pip --no-deps --force-reinstall -q "$wheel"  # the bundle's planetrl, also over an older one
  "$PY" -c "import planetrl, mujoco, dm_control, dm_env, labmaze, gymnasium, tyro; \
print('install.sh: ready:', planetrl.__file__, 'mujoco', mujoco.__version__)"
  exit 0
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "install.sh: installing EGL/OSMesa libraries for headless rendering (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      libegl1 libgl1 libosmesa6 >/dev/null) || echo "install.sh: apt install failed; rendering may need MUJOCO_GL set by hand"
  else
    echo "install.sh: libEGL/libOSMesa not found; install libegl1 or libosmesa6 for headless rendering"
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[test,video,suite,box2d]"
echo "install.sh: ready (.venv/bin/planetrl)"
