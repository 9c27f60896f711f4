"""Published returns that a suite's results stand beside (``published.csv``, one owner).

Each row of ``published.csv`` is one (agent, task, env steps) figure from a paper or a public
scores file: mean and standard deviation over the source's seeds, the number of seeds, and the
source (paper, table, arXiv id or file) so every number can be checked. Lines starting with ``#``
are comments.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from planetrl.envs import parse_task

COLUMNS = ("agent", "task", "env_steps", "mean", "std", "seeds", "source", "verified", "note")
VERIFIED = ("yes", "no", "partial")


class PublishedDataError(ValueError):
    """``published.csv`` is malformed (the message names the line and the field)."""


@dataclass(frozen=True)
class Published:
    agent: str
    task: str
    env_steps: int
    mean: float
    std: float | None
    """None where the source gives none."""
    seeds: int | None
    """None where the source does not state it."""
    source: str
    verified: str
    """``yes``: checked against the source's text; ``no``; ``partial`` (the note says how)."""
    note: str = ""


def default_path() -> Path:
    return Path(str(resources.files("planetrl.suite") / "published.csv"))


def load_published(path: str | Path | None = None) -> list[Published]:
    """Parse and check ``published.csv`` (the package's own by default)."""
    path = Path(path) if path is not None else default_path()
    text = path.read_text()
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise PublishedDataError(f"{path}: no rows")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)))
    header = next(reader)
    if tuple(header) != COLUMNS:
        raise PublishedDataError(f"{path}: header {header} != the expected {list(COLUMNS)}")

    rows: list[Published] = []
    seen: set[tuple[str, str, int]] = set()
    for (number, _), values in zip(lines[1:], reader):
        where = f"{path}:{number}"
        if len(values) != len(COLUMNS):
            raise PublishedDataError(f"{where}: {len(values)} fields, expected {len(COLUMNS)}")
        record = dict(zip(COLUMNS, values))
        try:
            row = Published(
                agent=record["agent"].strip(),
                task=record["task"].strip(),
                env_steps=int(record["env_steps"]),
                mean=float(record["mean"]),
                std=float(record["std"]) if record["std"].strip() else None,
                seeds=int(record["seeds"]) if record["seeds"].strip() else None,
                source=record["source"].strip(),
                verified=record["verified"].strip(),
                note=record["note"].strip(),
            )
        except ValueError as err:
            raise PublishedDataError(f"{where}: {err}") from None
        if not row.agent or not row.source:
            raise PublishedDataError(f"{where}: every row needs an agent and a source")
        try:
            parse_task(row.task)
        except ValueError as err:
            raise PublishedDataError(f"{where}: {err}") from None
        if row.verified not in VERIFIED:
            raise PublishedDataError(
                f"{where}: verified must be one of {VERIFIED}, got {row.verified!r}"
            )
        if (
            row.env_steps <= 0
            or (row.seeds is not None and row.seeds <= 0)
            or (row.std is not None and row.std < 0)
            or not math.isfinite(row.mean)
        ):
            raise PublishedDataError(f"{where}: env_steps and seeds must be positive, std >= 0")
        key = (row.agent, row.task, row.env_steps)
        if key in seen:
            raise PublishedDataError(f"{where}: a second row for {key}")
        seen.add(key)
        rows.append(row)
    return rows


def published_at(task: str, env_steps: int, rows: list[Published] | None = None) -> list[Published]:
    """The rows for ``task`` at ``env_steps``, in file order."""
    rows = load_published() if rows is None else rows
    return [r for r in rows if r.task == task and r.env_steps == env_steps]
