#!/usr/bin/env bash
# The offline bundle for a GPU node without internet access, built on a machine with package
# access (any OS/Python with pip; the wheels are chosen for the target, not for this machine):
#   bash scripts/wheelhouse.sh [DIR]          # default DIR: wheelhouse/ (git-ignored)
# then, on the node, from a copy of this tree with DIR in it:
#   bash scripts/install.sh --offline DIR     # pip install --no-index --find-links DIR
#   bash benchmarks/gpu_check.sh              # installs from ./wheelhouse itself
#
# DIR gets cp312 manylinux x86_64 wheels of what planetrl needs beyond torch and numpy (which the
# node has), plus planetrl itself as a wheel:
#   - dm_control 1.0.50 repacked without dm_control/locomotion/, dm_control/suite/dog_assets/ and
#     dm_control/mujoco/testing/ (56 MB -> ~2.5 MB; scripts/slim_wheel.py): every Control Suite task
#     but dog still loads;
#   - left out: torch, numpy and the NVIDIA/triton wheels; imageio-ffmpeg (68 MB: without it
#     videos go to TensorBoard only) and ray (80 MB: only `planetrl suite` needs it) unless
#     EXTRAS names them (default EXTRAS=test: pytest, hypothesis; EXTRAS=test,video,suite); large wheels of packages the node image already has
#     (scripts/gpu_node_packages.txt, e.g. scipy, matplotlib, tensorboard), listed with the
#     versions resolved here in DIR/preinstalled.txt;
#   - gl/: the EGL/GL loader .debs (libegl1, libglvnd0, ...; ~1 MB) that gpu_check.sh unpacks when
#     the node lacks libEGL.so.1 (GL_DEBS=0 skips them; needs apt-get here).
# Environment: PYVER (3.12), PYTHON (python3, the pip that downloads), WHEELHOUSE_FULL=1 (keep
# every wheel: a bare Python with only torch and numpy), KEEP_BELOW_KB (1024), EXTRAS, GL_DEBS.
# Prints, and writes to DIR/SIZES.txt, the size of each wheel, of the tree and of the bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR="${1:-wheelhouse}"
PYVER="${PYVER:-3.12}"
PY="${PYTHON:-python3}"
KEEP_BELOW_KB="${KEEP_BELOW_KB:-1024}"
EXTRAS="${EXTRAS-test}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
rm -rf "$DIR/.dl" "$DIR/gl"
rm -f "$DIR"/*.whl "$DIR/preinstalled.txt" "$DIR/SIZES.txt"
mkdir -p "$DIR/.dl"

# planetrl's requirements (and those of EXTRAS) from pyproject.toml, torch and numpy left out.
mapfile -t REQS < <("$PY" - "$EXTRAS" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += project["optional-dependencies"][extra]
for r in reqs:
    name = re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower()
    if name not in ("torch", "numpy"):
        print(r)
EOF
)
echo "wheelhouse: cp${PYVER/./} manylinux x86_64 wheels for: ${REQS[*]}"
PLATFORMS=()
for p in manylinux1 manylinux2014 manylinux_2_5 manylinux_2_17 manylinux_2_24 manylinux_2_27 \
         manylinux_2_28; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR/.dl" "${REQS[@]}"
# Whatever pulled in torch, numpy or the CUDA wheels: the node has its own.
rm -f "$DIR"/.dl/{torch,numpy,triton,nvidia_,cuda_}*.whl

# dm_control without locomotion, the dog's assets and MuJoCo's test models.
for w in "$DIR"/.dl/dm_control-*.whl; do
  "$PY" scripts/slim_wheel.py "$w" --drop dm_control/locomotion/ dm_control/suite/dog_assets/ \
    dm_control/mujoco/testing/
done

# Large wheels of packages the node image has: out, but listed.
"$PY" - "$DIR" "${WHEELHOUSE_FULL:-0}" "$KEEP_BELOW_KB" <<'EOF'
import re, sys
from pathlib import Path
out, full, keep_kb = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
node = {norm(w) for line in open("scripts/gpu_node_packages.txt")
        if not line.startswith("#") for w in line.split()}
listed = []
for wheel in sorted((out / ".dl").glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    if not full and norm(name) in node and wheel.stat().st_size > keep_kb * 1024:
        listed.append(f"{norm(name)}=={version}  # {wheel.stat().st_size / 1e6:.1f} MB\n")
        wheel.unlink()
    else:
        wheel.rename(out / wheel.name)
(out / "preinstalled.txt").write_text(
    "# Left out of this wheelhouse: the node's image has them (scripts/gpu_node_packages.txt).\n"
    "# The versions resolved when it was built; any version satisfying planetrl's needs will do.\n"
    + "".join(listed))
EOF
rmdir "$DIR/.dl"

# planetrl itself, built from a copy of the tracked files (no build/ or egg-info left here).
SRC="$(mktemp -d)"
git ls-files -z | xargs -0 cp --parents -t "$SRC"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "$SRC" 2>&1 | grep -v "^$" || true
rm -rf "$SRC"
ls "$DIR"/planetrl-*.whl >/dev/null

# EGL/GL loaders for nodes without libEGL.so.1 (unpacked by benchmarks/gpu_check.sh).
if [ "${GL_DEBS:-1}" = 1 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    mkdir -p "$DIR/gl" /tmp/planetrl-apt-amd64/lists/partial
    o=(-o APT::Architecture=amd64 -o APT::Architectures=amd64
       -o Dir::State::Lists=/tmp/planetrl-apt-amd64/lists)
    if apt-get "${o[@]}" update -qq >/dev/null 2>&1 && (cd "$DIR/gl" && apt-get "${o[@]}" download \
        libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1); then
      echo "wheelhouse: EGL/GL loader .debs in $DIR/gl"
    else
      echo "wheelhouse: apt-get download of the EGL/GL loaders failed; gl/ left out"
      rm -rf "$DIR/gl"
    fi
  else
    echo "wheelhouse: no apt-get here; gl/ (EGL loaders for the node) left out"
  fi
fi

# Sizes: each wheel, the wheels, the tree (what git tracks), the bundle.
"$PY" - "$DIR" "$ROOT" <<'EOF' | tee "$DIR/SIZES.txt"
import subprocess, sys
from pathlib import Path
out, root = Path(sys.argv[1]), Path(sys.argv[2])
mb = lambda n: f"{n / 1e6:6.1f} MB"  # noqa: E731
files = sorted((p for p in out.rglob("*") if p.is_file() and p.name != "SIZES.txt"),
               key=lambda p: -p.stat().st_size)
total = 0
for p in files:
    total += p.stat().st_size
    print(f"{mb(p.stat().st_size)}  {p.relative_to(out)}")
tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True).stdout
tree = sum((root / f).stat().st_size for f in tracked.decode().split("\0") if f and
           (root / f).is_file())
print(f"{mb(total)}  wheelhouse ({len(files)} files)")
print(f"{mb(tree)}  project tree (git ls-files)")
print(f"{mb(total + tree)}  bundle in all")
EOF
