"""The layout of a suite directory (one owner of its file names)::

<dir>/suite.json                 the suite (runs, budget, evaluation schedule; union of calls)
<dir>/runs/<run name>/           a normal run directory (config.json, checkpoint.pt, ...)
    random.json                  the random policy's returns on the run's evaluation seeds
    attempts.jsonl               one line per start and per completed call (wall-clock)
    finished.json                written when the run reached its budget (summary, wall-clock,
                                 CPU model, planetrl commit)
    attribution.json             the held-out open-loop reward error (``--attribute``)
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
CEILING_DIR = "ceiling"


def run_dir(directory: str | Path, run_name: str) -> Path:
    return Path(directory) / RUNS_DIR / run_name


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
