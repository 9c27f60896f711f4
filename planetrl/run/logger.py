"""Scalars to TensorBoard and ``metrics.jsonl`` (the same rows), videos to mp4 and TensorBoard.

mp4 files need imageio-ffmpeg (the ``video`` extra, a 68 MB wheel left out of the offline bundle
of ``scripts/wheelhouse.sh``). Without it a run says so once and goes on: its videos go to
TensorBoard (as animated GIFs) and no mp4 is written.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import imageio.v3 as iio
import numpy as np

from planetrl.atomic import atomic_path


class Logger:
    """Writes each row of scalars to TensorBoard (``<logdir>/tb``) and to ``metrics.jsonl``.

    Every row carries ``step`` (env steps, after action repeat) and the wall-clock ``time``.
    """

    def __init__(self, logdir: str | Path, *, tensorboard: bool = True):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        path = self.logdir / "metrics.jsonl"
        torn = path.exists() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
        self._jsonl = open(path, "a", buffering=1)
        if torn:  # a row cut by a kill: end it, so that it cannot swallow the next row
            self._jsonl.write("\n")
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # ~1 s: only a Logger that logs

            self._writer = SummaryWriter(str(self.logdir / "tb"), flush_secs=10)
        (self.logdir / "videos").mkdir(exist_ok=True)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        row: dict[str, Any] = {"step": int(step), "time": time.time()}
        for key, value in values.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else str(value)
            if self._writer is not None:
                self._writer.add_scalar(key, value, step)
        self._jsonl.write(json.dumps(row) + "\n")

    def video(self, step: int, name: str, frames: np.ndarray, fps: int = 20) -> Path | None:
        """Write ``frames`` (T, H, W, 3) uint8 as ``videos/<name>-<step>.mp4`` and to TensorBoard.

        Returns the mp4's path, or None where imageio-ffmpeg is missing (TensorBoard only)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"video frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        path = None
        if mp4_available():
            path = self.logdir / "videos" / f"{name.replace('/', '_')}-{step:09d}.mp4"
            write_mp4(path, frames, fps=fps)
        else:
            note_no_mp4(
                "TensorBoard GIFs only" if self._writer is not None else "no video is written"
            )
        if self._writer is not None:
            self._add_gif(name, frames, step, fps)
        return path

    def _add_gif(self, tag: str, frames: np.ndarray, step: int, fps: int) -> None:
        # torch's add_video needs moviepy<2; encode the GIF with imageio and add it as an image
        # summary, which TensorBoard shows animated.
        from tensorboard.compat.proto.summary_pb2 import Summary  # as SummaryWriter

        data = iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)
        image = Summary.Image(
            height=frames.shape[1], width=frames.shape[2], colorspace=3, encoded_image_string=data
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        assert self._writer is not None  # video() calls it only with a writer
        self._writer._get_file_writer().add_summary(summary, step)

    def flush(self) -> None:
        self._jsonl.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()


_NO_MP4_NOTED = False


def mp4_available() -> bool:
    """Whether mp4 files can be written: imageio-ffmpeg importable and its ffmpeg found."""
    try:
        import imageio_ffmpeg  # the video extra, only when a video is written

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):
        return False
    return True


def note_no_mp4(instead: str) -> None:
    """Say once per process that mp4 videos are off, and what is done instead."""
    global _NO_MP4_NOTED
    if not _NO_MP4_NOTED:
        _NO_MP4_NOTED = True
        print(
            f"planetrl: imageio-ffmpeg is not installed, so no mp4 videos are written "
            f"({instead}); `pip install imageio-ffmpeg` (the `video` extra) for them",
            file=sys.stderr,
            flush=True,
        )


def write_gif(path: Path, frames: np.ndarray, fps: int = 20) -> None:
    """An animated GIF through Pillow (no ffmpeg needed)."""
    tmp = path.with_name(f".{path.name}.tmp.gif")
    iio.imwrite(tmp, np.asarray(frames), extension=".gif", duration=1000 / fps, loop=0)
    tmp.replace(path)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 20) -> None:
    """H.264 mp4 through imageio-ffmpeg, written atomically; frames are padded to even sizes
    (yuv420p needs them)."""
    t, h, w, _ = frames.shape
    pad = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))
    frames = np.pad(frames, pad) if h % 2 or w % 2 else frames
    with atomic_path(path, suffix=".mp4") as tmp:
        _ffmpeg(tmp, frames, fps)


def _ffmpeg(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio  # the video extra, only when a video is written

    with imageio.get_writer(
        path, fps=fps, codec="libx264", macro_block_size=1, format="FFMPEG"
    ) as w:
        for frame in frames:
            # imageio's stubs type __enter__ as the base class, which lacks append_data.
            w.append_data(frame)  # type: ignore[attr-defined]


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a line cut by a crash is skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
