"""The layout of a suite directory (one owner of its file names)::

<dir>/suite.json                 the suite (runs, budget, evaluation schedule; union of calls)
<dir>/runs/<run name>/           a normal run directory (config.json, checkpoint.pt, ...)
    random.json                  the random policy's returns on the run's evaluation seeds
    attempts.jsonl               one line per start and per completed call (wall-clock)
    finished.json                written when the run reached its budget (summary, wall-clock,
                                 CPU model, planetrl commit)
    attribution.json             the held-out open-loop reward error (``--attribute``)
    reused.json                  only this, for a run reused from another suite (``--reuse``):
                                 ``{"path": its run directory, "suite": ..., "run": ...}``;
                                 the run is read and trained there (:func:`run_dir`)
    reused_from.json             in an export: where a reused run came from (not followed)
<dir>/ceiling/<task>__<planner>.json   the planner's ceiling with the true simulator
<dir>/results.csv, results.md, curves.csv, curves.png   the report
"""

from __future__ import annotations

import json
from pathlib import Path

SUITE_FILE = "suite.json"
RUNS_DIR = "runs"
FINISHED_FILE = "finished.json"
RANDOM_FILE = "random.json"
ATTEMPTS_FILE = "attempts.jsonl"
ATTRIBUTION_FILE = "attribution.json"
REUSED_FILE = "reused.json"
REUSED_FROM_FILE = "reused_from.json"
CEILING_DIR = "ceiling"


def run_dir(directory: str | Path, run_name: str) -> Path:
    """The run directory of ``run_name`` in the suite ``directory``: ``<dir>/runs/<name>``, or,
    when that holds a ``reused.json`` naming a run directory of another suite, that directory
    (one run, trained once, read by both suites)."""
    own = Path(directory) / RUNS_DIR / run_name
    reused = reused_from(own)
    return Path(reused["path"]) if reused is not None else own


def reused_from(own: Path) -> dict | None:
    """The ``reused.json`` of the run directory ``own`` (None: not a reused run, or unreadable)."""
    path = own / REUSED_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("path"), str) else None
    except json.JSONDecodeError:
        return None


def ceiling_path(
    directory: str | Path, task: str, horizon: int, iterations: int, candidates: int, top_k: int
) -> Path:
    """Where a suite keeps the planner ceiling of ``task`` for the planner (H, I, J, K)."""
    name = f"{task.replace(':', '-')}__H{horizon}-I{iterations}-J{candidates}-K{top_k}"
    return Path(directory) / CEILING_DIR / f"{name}.json"


def is_finished(path: Path, env_steps: int) -> bool:
    """Whether the run directory ``path`` was trained to a budget of ``env_steps`` (its
    ``finished.json`` says so: the budget it was trained to, else the env steps it used)."""
    path = path / FINISHED_FILE
    if not path.exists():
        return False
    try:
        data = json.loads(path.read_text())
        return int(data.get("budget_env_steps") or data["env_steps"]) >= env_steps
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
