#!/usr/bin/env bash
# Set up planetrl on a fresh Debian/Ubuntu machine: system libraries for headless MuJoCo
# rendering (EGL, with OSMesa as the fallback) when missing, then a venv in .venv with the package.
#   TORCH_SPEC  the torch requirement (default torch==2.13.0: the CPU wheel on the development
#               machines). With a GPU: TORCH_SPEC="torch==2.13.0" and
#               PIP_EXTRA_INDEX_URL=<the PyTorch CUDA wheel index> for a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

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
.venv/bin/python -m pip install -q -e ".[test,video,suite]"
echo "install.sh: ready (.venv/bin/planetrl)"
