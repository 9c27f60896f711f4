"""Atomic file writes: a process killed at any moment leaves either the old or the new file at
``path``, never a half-written one.

Every writer of the run directory goes through :func:`atomic_write` (episodes, checkpoints,
``config.json``, ``speed.json``, videos): the data goes to a hidden temporary file in the same
folder (``.<name>.<random>.tmp``, so ``os.replace`` stays on one file system), is flushed and
fsynced, then ``os.replace``\\ d onto ``path``; the folder is fsynced so that the rename itself
survives a power loss. A leftover ``.*.tmp`` file is what an interrupted write leaves behind.

This module is the bottom of planetrl's import graph: it imports nothing from planetrl, and
torch only inside :func:`atomic_torch_save`.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

__all__ = [
    "TMP_SUFFIX",
    "atomic_path",
    "atomic_savez",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "is_temporary",
    "remove_temporary",
]

#: Suffix of the temporary files (hidden: their names start with a dot).
TMP_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of an atomic write (``.<name>.<random>.tmp``, maybe
    followed by the suffix given to :func:`atomic_path`)."""
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or f"{TMP_SUFFIX}." in name)


def remove_temporary(directory: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted writes left in ``directory`` (not recursive);
    returns them. Only for the one process that writes there (at its start): another writer's
    temporary file would vanish under it."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        if is_temporary(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path``.

    For writers that need a file name rather than a handle (e.g. an ffmpeg subprocess);
    ``suffix`` is added after :data:`TMP_SUFFIX` (an encoder may pick its format from it). On
    an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary handle; on a clean exit its bytes replace ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (one trailing newline) atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_savez(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """``np.savez_compressed`` (or ``np.savez``) of ``arrays`` to ``path`` atomically."""
    save: Callable[..., None] = np.savez_compressed if compressed else np.savez
    with atomic_write(path) as handle:
        save(handle, **arrays)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch  # noqa: PLC0415  (only checkpoint writers need it)

    with atomic_write(path) as handle:
        torch.save(obj, handle)
