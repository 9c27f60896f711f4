"""The transfer section of a suite's report: for each run that starts from another run's world
model (:attr:`~planetrl.suite.spec.RunSpec.init_from_run`, the ``transfer-*`` suites), its
zero-shot return (the evaluation at 0 env steps, before any step of its task), its last
evaluation, and the same task's runs from scratch at the same budget, with 95% intervals over
seeds and the probability that a transferred run beats one from scratch (rliable)."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from planetrl.suite import stats
from planetrl.suite.spec import Suite


class RunResult(Protocol):
    """What this section reads of a run (:class:`planetrl.suite.report.RunResult`, which
    imports this module)."""

    name: str
    task: str
    curve: dict[int, tuple[float, float]]
    finished: dict | None

    @property
    def final(self) -> float | None: ...


def transfer_rows(suite: Suite, results: Sequence[RunResult]) -> list[dict]:
    """One row per (target task, transferred variant) of ``suite``: the source's task, the
    zero-shot return (runs evaluated at 0 env steps), the last evaluation of the finished
    transferred runs and of the finished runs of the same task that start from no other run
    (``scratch``), each the mean over seeds with its 95% interval, and P(transfer > scratch) on
    that task. Empty for a suite without transferred runs."""
    specs = {r.name: r for r in suite.runs}
    sources = {r.name: specs[r.init_from_run] for r in suite.runs if r.init_from_run in specs}
    rows = []
    pairs = dict.fromkeys((specs[n].task, specs[n].variant) for n in sources)
    for task, variant in pairs:
        moved = [r for r in results if r.name in sources and _spec(specs, r) == (task, variant)]
        scratch = [
            r
            for r in results
            if r.name in specs and specs[r.name].task == task and not specs[r.name].init_from_run
        ]
        row: dict = dict(
            task=task,
            variant=variant,
            source=", ".join(sorted({sources[r.name].task for r in moved})),
            baseline=", ".join(sorted({specs[r.name].variant for r in scratch})),
        )
        zero = [r.curve[0][0] for r in moved if 0 in r.curve]
        _put(row, "zero_shot", zero)
        final = [r.final for r in moved if r.finished and r.final is not None]
        _put(row, "transfer", final)
        baseline = [r.final for r in scratch if r.finished and r.final is not None]
        _put(row, "scratch", baseline)
        steps = [max(r.curve) for r in moved if r.finished and r.curve]
        if steps:
            row["env_steps"] = min(steps)
        if final and baseline:
            p = stats.improvement(np.array(final)[:, None], np.array(baseline)[:, None])
            row.update(p_transfer_better=p.point, p_lo=p.lo, p_hi=p.hi)
        rows.append(row)
    return rows


def _spec(specs: dict, result: RunResult) -> tuple[str, str]:
    """(task, variant) of a result's run as the suite names them (a report's label may add the
    preset)."""
    spec = specs[result.name]
    return spec.task, spec.variant


def _put(row: dict, key: str, scores: list[float]) -> None:
    """``row[key]``, ``key_lo``, ``key_hi`` and ``key_seeds`` from ``scores`` (nothing without
    any)."""
    if not scores:
        return
    interval = stats.mean_interval(scores)
    row.update(
        {
            key: interval.point,
            f"{key}_lo": interval.lo,
            f"{key}_hi": interval.hi,
            f"{key}_seeds": len(scores),
        }
    )


def transfer_markdown(rows: list[dict]) -> list[str]:
    """The report's section on ``rows`` of :func:`transfer_rows` (none without rows)."""
    if not rows:
        return []

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "–"
        text = stats.Interval(row[key], row[f"{key}_lo"], row[f"{key}_hi"], row[f"{key}_seeds"])
        return f"{text.fmt()} ({row[f'{key}_seeds']})"

    lines = [
        "",
        "## Transfer: a learned world model on a sibling task",
        "",
        "Zero-shot: the transferred run's evaluation at 0 env steps, before any step of its task "
        "(the source's model, planning with the reward head it learned from rewards relabelled "
        "from the same physics). Then its last evaluation after fine-tuning, against the runs "
        "of the same task from scratch at the same budget of the task's env steps (the source's "
        "env steps are on top). Mean over seeds [95% stratified-bootstrap interval] (seeds); "
        "P(transfer > scratch): the probability that a transferred run scores above a run from "
        "scratch (rliable), above 0.5 with its whole interval where transfer helps.",
        "",
        "| task | source | zero-shot | transferred | from scratch | P(transfer > scratch) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = (
            stats.Interval(row["p_transfer_better"], row["p_lo"], row["p_hi"], 2).fmt(2)
            if "p_transfer_better" in row
            else "–"
        )
        lines.append(
            f"| {row['task']} ({row['variant']}) | {row['source']} | {cell(row, 'zero_shot')} | "
            f"{cell(row, 'transfer')} | {cell(row, 'scratch')} | {p} |"
        )
    return lines
