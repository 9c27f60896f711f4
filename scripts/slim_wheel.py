"""Repack a wheel without some of its folders, with a RECORD that matches what is left.

    python scripts/slim_wheel.py WHEEL --drop dm_control/locomotion/ dm_control/suite/dog_assets/ \
        dm_control/mujoco/testing/ [-o OUT_DIR]

The repacked wheel keeps its file name (so ``dm_control==1.0.50`` still matches it) and is written
to OUT_DIR (default: in place). Every entry left is copied byte for byte; RECORD is rewritten from
the files actually in the new wheel (path, sha256, size), so ``pip install`` accepts it; the
dropped paths are listed in ``<name>.dist-info/SLIMMED`` (with its own RECORD line) so that an
installed copy says what it lacks.

scripts/wheelhouse.sh uses it to bring dm_control 1.0.50 from 56 MB to ~3 MB: the Control Suite
(``dm_control.suite``) loads every task but ``dog`` without the three folders above (locomotion,
soccer and the CMU humanoid; the dog's meshes; MuJoCo test models).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def slim(wheel: Path, drop: list[str], out_dir: Path | None = None) -> Path:
    """Write ``wheel`` without the entries under the ``drop`` prefixes; returns the new path."""
    drop = [d if d.endswith("/") else d + "/" for d in drop]
    out = (out_dir or wheel.parent) / wheel.name
    with zipfile.ZipFile(wheel) as src:
        infos = src.infolist()
        records = [i.filename for i in infos if i.filename.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{wheel}: expected one .dist-info/RECORD, found {records}")
        record = records[0]
        dist_info = record[: -len("RECORD")]
        if any(dist_info.startswith(d) or d.startswith(dist_info) for d in drop):
            raise ValueError("refusing to drop the .dist-info folder")
        kept = [
            i
            for i in infos
            if i.filename != record and not any(i.filename.startswith(d) for d in drop)
        ]
        dropped = sorted({d for d in drop for i in infos if i.filename.startswith(d)})
        missing = sorted(set(drop) - set(dropped))
        if missing:
            raise ValueError(f"{wheel}: nothing under {missing}")
        buf = io.BytesIO()
        rows = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in kept:
                data = src.read(info)
                dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
                if not info.is_dir():
                    rows.append((info.filename, record_hash(data), str(len(data))))
            note = (
                "Repacked by planetrl's scripts/slim_wheel.py without:\n"
                + "".join(f"{d}\n" for d in dropped)
            ).encode()
            name = dist_info + "SLIMMED"
            dst.writestr(zipfile.ZipInfo(name, date_time=kept[0].date_time), note)
            rows.append((name, record_hash(note), str(len(note))))
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerows(rows)
            writer.writerow((record, "", ""))
            dst.writestr(zipfile.ZipInfo(record, date_time=kept[0].date_time), text.getvalue())
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return out


def check_record(wheel: Path) -> None:
    """Raise if RECORD does not list exactly the wheel's files with their hashes and sizes."""
    with zipfile.ZipFile(wheel) as z:
        record = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(z.read(record).decode())) if r}
        files = {i.filename for i in z.infolist() if not i.is_dir()}
        if set(rows) != files:
            raise ValueError(f"RECORD and files differ: {sorted(set(rows) ^ files)[:10]}")
        for name, (digest, size) in rows.items():
            if name == record:
                continue
            data = z.read(name)
            if digest != record_hash(data) or int(size) != len(data):
                raise ValueError(f"RECORD hash/size of {name} does not match")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--drop", nargs="+", required=True, metavar="PREFIX/")
    parser.add_argument("-o", "--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    before = args.wheel.stat().st_size
    out = slim(args.wheel, args.drop, args.out_dir)
    check_record(out)
    print(
        f"slim_wheel: {out.name}: {before / 1e6:.1f} MB -> {out.stat().st_size / 1e6:.1f} MB "
        f"(without {', '.join(args.drop)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
