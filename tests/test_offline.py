"""The offline bundle for a GPU node: the wheel repacking (fast), the bundle and the offline
install end to end (slow: needs package access and a few minutes,
`pytest -m slow tests/test_offline.py`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from slim_wheel import check_record, record_hash, slim  # noqa: E402


def make_wheel(directory: Path) -> Path:
    files = {
        "demo/__init__.py": b"VALUE = 1\n",
        "demo/big/__init__.py": b"",
        "demo/big/data.bin": os.urandom(4096),
        "demo/keep/data.txt": b"kept\n",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{n},{record_hash(d)},{len(d)}\n" for n, d in files.items())
    record += "demo-1.0.dist-info/RECORD,,\n"
    path = directory / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("demo-1.0.dist-info/RECORD", record)
    return path


def test_slim_wheel_drops_folders_with_a_record_pip_accepts(tmp_path):
    wheel = make_wheel(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    slimmed = slim(wheel, ["demo/big/"], out)
    assert slimmed.name == wheel.name  # the same name: `demo==1.0` still matches it
    check_record(slimmed)
    names = zipfile.ZipFile(slimmed).namelist()
    assert not any(n.startswith("demo/big/") for n in names)
    assert "demo/keep/data.txt" in names and "demo-1.0.dist-info/SLIMMED" in names
    target = tmp_path / "site"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--no-cache-dir",
            "--target",
            str(target),
            str(slimmed),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )
    assert r.returncode == 0, r.stderr
    assert (target / "demo" / "keep" / "data.txt").read_text() == "kept\n"
    assert not (target / "demo" / "big").exists()
    assert "demo/big/" in (target / "demo-1.0.dist-info" / "SLIMMED").read_text()


def test_slim_wheel_refuses_what_it_cannot_do(tmp_path):
    wheel = make_wheel(tmp_path)
    with pytest.raises(ValueError, match="nothing under"):
        slim(wheel, ["demo/absent/"], tmp_path / "x")
    with pytest.raises(ValueError, match="dist-info"):
        slim(wheel, ["demo-1.0.dist-info/"], tmp_path / "x")
    broken = tmp_path / "broken"
    broken.mkdir()
    bad = broken / wheel.name
    shutil.copy(wheel, bad)
    with zipfile.ZipFile(bad, "a") as z:  # a file RECORD does not list
        z.writestr("demo/extra.py", b"")
    with pytest.raises(ValueError, match="RECORD and files differ"):
        check_record(bad)


def _package_access() -> bool:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            "/tmp/planetrl-pip-probe",
            "farama-notifications==0.0.6",
        ],
        capture_output=True,
        timeout=120,
    )
    return r.returncode == 0


@pytest.mark.slow
def test_offline_bundle_and_install_end_to_end(tmp_path):
    """scripts/wheelhouse.sh, then scripts/offline_install_check.sh: the install from the bundle
    with the network cut into a fresh venv next to a preinstalled torch, then the env and model
    tests in it. The node's Python is 3.12 with torch 2.11 (CUDA); here the check runs for the
    Python version and CPU torch this machine has (OFFLINE_PYTHON, OFFLINE_TORCH_SPEC; default
    pyenv's 3.11 and torch==2.13.0, the CPU wheel of the development machines)."""
    if shutil.which("unshare") is None or not _package_access():
        pytest.skip("needs package access and unshare")
    python = os.environ.get("OFFLINE_PYTHON", "/root/.pyenv/versions/3.11.7/bin/python")
    if not Path(python).exists():
        pytest.skip(f"no {python}")
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    wheelhouse = tmp_path / "wheelhouse"
    r = subprocess.run(
        ["bash", "scripts/wheelhouse.sh", str(wheelhouse)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYVER": version, "GL_DEBS": "0"},
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    names = [p.name for p in wheelhouse.glob("*.whl")]
    for absent in ("torch-", "numpy-", "imageio_ffmpeg-", "ray-"):
        assert not any(n.startswith(absent) for n in names), absent
    dm_control = next(wheelhouse.glob("dm_control-*.whl"))
    assert dm_control.stat().st_size < 5e6
    total = float(r.stdout.strip().splitlines()[-1].split()[0])
    assert total < 60, r.stdout[-500:]  # MB, the tree included
    r = subprocess.run(
        ["bash", "scripts/offline_install_check.sh", str(wheelhouse)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHON": python,
            "TORCH_SPEC": os.environ.get("OFFLINE_TORCH_SPEC", "torch==2.13.0"),
        },
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "offline install check: passed" in r.stdout
