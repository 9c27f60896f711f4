"""A suite's report: learning curves, the results table beside the published figures, and the
statistics over seeds (:mod:`planetrl.suite.stats`, with rliable).

Per run, the evaluation rows of ``metrics.jsonl`` (the mean return of the M evaluation episodes
at each evaluation step) and the random policy's returns on the same seeds (``random.json``).
Per (task, variant) and evaluation step, the mean ± std over seeds; with one seed, the std is the
one over that seed's evaluation episodes, and the table says so.

A report may read several suite directories of one suite (``--merge``): a suite spread over
machines. A run found in several is read from the first directory where it finished (else the
first where it has evaluations). Where the merged directories ran different presets, each
variant is labelled with its preset (``small``, ``small/ssm``, ...).

Files written into the suite directory (atomically):

- ``curves.csv``: task, variant, env_steps, seeds, mean, std, std_over (``seeds`` / ``episodes``),
  and with two seeds or more the 95% bootstrap interval of the mean (ci_lo, ci_hi).
- ``results.csv`` / ``results.md``: the finished seeds' last evaluations (while none has
  finished, every seed at the largest env-step count all have reached: one budget per row, see
  ``_scored``), beside the random policy and
  the published figures at the suite's budget (``published.csv``), with wall-clock, CPU and
  commit; then the statistics over seeds (finished runs only).
- ``seeds.csv``: per (task, variant) the mean over finished seeds, its interval and the verdict
  against each published figure; ``aggregates.csv``: IQM / median / mean of normalised scores
  with intervals; ``improvement.csv``: P(X > Y) between variants; ``profile.csv``: performance
  profiles.
- ``curves.png``: one panel per task, a line per variant, the random policy and the published
  PlaNet figure as references; ``aggregates.png``: the aggregate intervals and the performance
  profile (with at least one finished run on a normalisable task).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from planetrl.agents import kind
from planetrl.atomic import atomic_write_bytes, atomic_write_text
from planetrl.envs.multitask import is_multitask, returns_by_task, split_tasks
from planetrl.run.fast_paths import widest_vector_extension
from planetrl.run.logger import read_metrics
from planetrl.suite import layout, stats
from planetrl.suite.layout import ceiling_path
from planetrl.suite.published import Published, load_published, published_at
from planetrl.suite.spec import RunSpec, Suite, merge_suite, run_config
from planetrl.suite.transfer import transfer_markdown, transfer_rows

# The published agents shown beside a suite's results, in this order (rows of published.csv).
COMPARED = ("PlaNet", "PlaNet (DrQ table)", "Dreamer", "CURL", "DrQ", "DreamerV3")
# Of those, the ones a verdict (above / within noise / below) is given against in results.md.
VERDICTS = ("PlaNet", "PlaNet (DrQ table)", "Dreamer")
# A run directory's files that ``--export`` copies (small text files: no episodes, checkpoints,
# TensorBoard logs or videos).
EXPORTED = (
    "config.json",
    "metrics.jsonl",
    layout.FINISHED_FILE,
    layout.RANDOM_FILE,
    layout.ATTEMPTS_FILE,
    layout.ATTRIBUTION_FILE,
    "speed.json",
)


@dataclass
class RunResult:
    name: str
    task: str
    variant: str
    """The variant's label in the report (the run's variant; prefixed by its preset where merged
    suites ran different presets)."""
    seed: int
    curve: dict[int, tuple[float, float]] = field(default_factory=dict)
    """env steps -> (mean, std over the evaluation episodes)."""
    random: list[float] | None = None
    finished: dict | None = None
    attribution: dict | None = None
    replay_open_loop_mse: float | None = None
    """The last evaluation's open-loop reward MSE over H on replay chunks (training data)."""
    directory: Path | None = None
    """The suite directory the run was read from."""

    @property
    def final(self) -> float | None:
        """The last evaluation's mean return (the run's score), or None without one."""
        return self.curve[max(self.curve)][0] if self.curve else None


@dataclass(frozen=True)
class Source:
    """A suite directory that a report reads."""

    directory: Path
    suite: Suite


def load_sources(directory: str | Path, merge: tuple[str | Path, ...] | list = ()) -> list[Source]:
    """The suite in ``directory`` and those of ``merge``: one suite (same name, budget and
    evaluation schedule), possibly spread over directories or run with different presets."""
    sources = []
    for path in [directory, *merge]:
        path = Path(path)
        file = path / layout.SUITE_FILE
        if not file.exists():
            raise FileNotFoundError(f"{file} does not exist: {path} is not a suite directory")
        try:
            suite = Suite.from_dict(json.loads(file.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{file} is corrupt: {err}") from None
        sources.append(Source(path, suite))
    first = sources[0].suite
    for source in sources[1:]:
        other = source.suite
        for key in ("name", "env_steps", "eval_every_env_steps", "eval_episodes"):
            if getattr(other, key) != getattr(first, key):
                raise ValueError(
                    f"--merge {source.directory}: its {key} is {getattr(other, key)!r}, "
                    f"{sources[0].directory}'s is {getattr(first, key)!r}; a report merges "
                    "directories of one suite with one budget and evaluation schedule"
                )
    return sources


def read_run(directory: Path, run: RunSpec, label: str | None = None) -> RunResult:

    run_dir = layout.run_dir(directory, run.name)
    result = RunResult(run.name, run.task, label or run.variant, run.seed, directory=directory)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for row in read_metrics(metrics):
            if "eval/return" in row:
                result.curve[int(row["step"])] = (
                    float(row["eval/return"]),
                    float(row.get("eval/return_std", math.nan)),
                )
                if "eval/open_loop_reward_mse_H" in row:
                    result.replay_open_loop_mse = float(row["eval/open_loop_reward_mse_H"])
    for name, attr in (
        (layout.RANDOM_FILE, "random"),
        (layout.FINISHED_FILE, "finished"),
        (layout.ATTRIBUTION_FILE, "attribution"),
    ):
        path = run_dir / name
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            setattr(result, attr, data["returns"] if attr == "random" else data)
    if result.finished and "(" not in str(result.finished.get("cpu", "(")):
        result.finished = {
            **result.finished,
            "cpu": _cpu_with_flags(result.finished["cpu"], run_dir),
        }
    return result


def _cpu_with_flags(cpu: str, run_dir: Path) -> str:
    """A bare CPU name recorded by older runs (``AMD EPYC``) with the widest vector extension
    from the run's ``speed.json`` (``AMD EPYC (AVX2)``), so that the table tells an AVX2 Zen 3
    from an AVX-512 Zen 5 under the same name. Newer runs record the family, model and
    extension themselves (``planetrl.suite.runner.cpu_model``)."""
    try:
        flags = json.loads((run_dir / "speed.json").read_text())["hardware"]["cpu_flags"]
    except (OSError, ValueError, KeyError, TypeError):
        return cpu
    widest = widest_vector_extension(flags)
    return f"{cpu} ({widest})" if widest else cpu


def read_runs(directory: Path, run: RunSpec, label: str | None = None) -> list[RunResult]:
    """:func:`read_run`, and for a multi-task run (:mod:`planetrl.envs.multitask`) one result
    per task instead: its curve from ``eval/return/<task>`` at the task's own env steps (the
    run's over n: its n tasks take turns, and every evaluation falls after whole turns), the
    random policy's returns on the task's evaluation episodes, the run's record."""
    whole = read_run(directory, run, label)
    if not is_multitask(run.task):
        return [whole]
    tasks = split_tasks(run.task)
    rows = []
    metrics = layout.run_dir(directory, run.name) / "metrics.jsonl"
    if metrics.exists():
        rows = [r for r in read_metrics(metrics) if "eval/return" in r]
    random_by_task: dict[str, list[float]] = {}
    random_path = layout.run_dir(directory, run.name) / layout.RANDOM_FILE
    if whole.random is not None and random_path.exists():
        seed = int(json.loads(random_path.read_text())["seed"])
        random_by_task = returns_by_task(tasks, seed, whole.random)
    results = []
    for task in tasks:
        result = RunResult(
            run.name,
            task,
            whole.variant,
            run.seed,
            random=random_by_task.get(task),
            finished=whole.finished,
            replay_open_loop_mse=whole.replay_open_loop_mse,
            directory=directory,
        )
        for row in rows:
            if f"eval/return/{task}" in row:
                result.curve[int(row["step"]) // len(tasks)] = (
                    float(row[f"eval/return/{task}"]),
                    float(row.get(f"eval/return_std/{task}", math.nan)),
                )
        results.append(result)
    return results


def _label(run: RunSpec, preset: str, several_presets: bool) -> str:
    if not several_presets:
        return run.variant
    return preset if run.variant == "default" else f"{preset}/{run.variant}"


def read_results(sources: list[Source]) -> list[RunResult]:
    """Every run of every source, each once (module docstring: which copy is read)."""
    several = len({s.suite.preset for s in sources}) > 1
    chosen: dict[tuple[str, str], list[RunResult]] = {}
    for source in sources:
        for run in source.suite.runs:
            key = (source.suite.preset if several else "", run.name)
            found = read_runs(source.directory, run, _label(run, source.suite.preset, several))
            result, held = found[0], chosen.get(key, [None])[0]
            if (
                held is None
                or (not held.finished and result.finished)
                or (not held.finished and not held.curve and result.curve)
            ):
                chosen[key] = found
    return [result for found in chosen.values() for result in found]


def _ceiling(sources: list[Source], task: str) -> dict | None:

    for source in sources:
        for run in (r for r in source.suite.runs if r.task == task):
            p = kind(run.agent).planner(run_config(source.suite, run, source.directory))
            if p is not None:
                break  # the planner's ceiling is that of an agent that plans with CEM
        else:
            continue
        path = ceiling_path(source.directory, task, p.horizon, p.iterations, p.candidates, p.top_k)
        try:
            if path.exists():
                return json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
    return None


def _stats(values: list[float], episode_std: float) -> tuple[float, float, str]:
    if len(values) == 1:
        return values[0], episode_std, "episodes"
    return float(np.mean(values)), float(np.std(values)), "seeds"


def _short(commit: str) -> str:
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.0f}" if std is None or math.isnan(std) else f"{mean:.0f} ± {std:.0f}"


def _tasks(results: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.task for r in results))


def _variants(results: list[RunResult]) -> list[str]:
    return list(dict.fromkeys(r.variant for r in results))


def curves(results: list[RunResult]) -> list[dict]:
    rows = []
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.task, r.variant), []).append(r)
    for (task, variant), runs in groups.items():
        randoms = [float(np.mean(r.random)) for r in runs if r.random]
        if randoms:
            episodes = [x for r in runs if r.random for x in r.random]
            mean, std, over = _stats(randoms, float(np.std(episodes)))
            rows.append(
                dict(
                    task=task,
                    variant="random policy",
                    env_steps=0,
                    seeds=len(randoms),
                    mean=mean,
                    std=std,
                    std_over=over,
                )
            )
        steps = sorted({s for r in runs for s in r.curve})
        intervals = _curve_intervals(runs, steps)
        for step in steps:
            values = [r.curve[step] for r in runs if step in r.curve]
            mean, std, over = _stats([v[0] for v in values], values[0][1])
            row = dict(
                task=task,
                variant=variant,
                env_steps=step,
                seeds=len(values),
                mean=mean,
                std=std,
                std_over=over,
            )
            if step in intervals:
                row.update(ci_lo=intervals[step].lo, ci_hi=intervals[step].hi)
            rows.append(row)
    return rows


def _curve_intervals(runs: list[RunResult], steps: list[int]) -> dict[int, stats.Interval]:
    """The 95% interval of the mean over seeds at each step with two seeds or more: one rliable
    call per set of steps that the same runs reached."""
    by_runs: dict[tuple[int, ...], list[int]] = {}
    for step in steps:
        have = tuple(i for i, r in enumerate(runs) if step in r.curve)
        if len(have) >= 2:
            by_runs.setdefault(have, []).append(step)
    out: dict[int, stats.Interval] = {}
    for have, group in by_runs.items():
        matrix = np.array([[runs[i].curve[s][0] for s in group] for i in have])
        out.update(zip(group, stats.column_intervals(matrix, reps=stats.CURVE_REPS)))
    return out


def _scored(runs: list[RunResult]) -> tuple[int | None, list[tuple[float, float]]]:
    """The evaluations a table row averages, all at one budget: (env steps, [(mean, std over the
    evaluation episodes)] per seed).

    The finished runs' last evaluations; while none has finished, every run's evaluation at the
    largest env-step count that all of them have evaluated. A row never mixes budgets: a seed at
    20k beside seeds at 100k would pull the mean toward an earlier, lower point of the curve."""
    done = [r for r in runs if r.finished and r.curve]
    if done:
        return min(max(r.curve) for r in done), [r.curve[max(r.curve)] for r in done]
    started = [r for r in runs if r.curve]
    if not started:
        return None, []
    common = min(max(r.curve) for r in started)
    return common, [r.curve[common] for r in started if common in r.curve]


def final_table(
    sources: list[Source], results: list[RunResult], published: list[Published]
) -> list[dict]:
    rows = []
    env_steps = sources[0].suite.env_steps
    for task in _tasks(results):
        for variant in _variants(results):
            runs = [r for r in results if r.task == task and r.variant == variant]
            if not runs:
                continue
            done = [r for r in runs if r.finished]
            row: dict = dict(task=task, variant=variant, runs=len(runs), finished=len(done))
            at, scores = _scored(runs)
            if scores:
                mean, std, over = _stats([m for m, _ in scores], scores[0][1])
                row.update(env_steps=at, seeds=len(scores), mean=mean, std=std, std_over=over)
            randoms = [float(np.mean(r.random)) for r in runs if r.random]
            if randoms:
                episodes = [x for r in runs if r.random for x in r.random]
                row["random_mean"], row["random_std"], _ = _stats(randoms, float(np.std(episodes)))
            if done:
                records = [cast(dict, r.finished) for r in done]  # done: each has its record
                row["wall_clock_min"] = float(np.mean([f["wall_clock_s"] for f in records]) / 60)
                row["cpu"] = "; ".join(sorted({f.get("cpu", "?") for f in records}))
                row["commit"] = "; ".join(sorted({_short(f.get("commit", "?")) for f in records}))
            for p in published_at(task, env_steps, published):
                if p.agent in COMPARED:
                    row[f"{p.agent} mean"], row[f"{p.agent} std"] = p.mean, p.std
            ceiling = _ceiling(sources, task)
            if ceiling:
                row["ceiling_mean"], row["ceiling_std"] = ceiling["mean"], ceiling["std"]
            heldout = [r.attribution["heldout_open_loop"] for r in runs if r.attribution]
            if heldout:
                row["heldout_reward_mse_H"] = float(np.mean([h["mse"] for h in heldout]))
                row["heldout_reward_var"] = float(np.mean([h["reward_var"] for h in heldout]))
            replay = [r.replay_open_loop_mse for r in runs if r.replay_open_loop_mse is not None]
            if replay:
                row["replay_reward_mse_H"] = float(np.mean(replay))
            rows.append(row)
    return rows


# ------------------------------------------------------------------ statistics over seeds
def _finished_scores(results: list[RunResult], task: str, variant: str) -> dict[int, float]:
    """seed -> the last evaluation's return, for the finished runs of (task, variant)."""
    return {
        r.seed: r.final
        for r in results
        if r.task == task and r.variant == variant and r.finished and r.final is not None
    }


def seed_table(results: list[RunResult], published: list[Published], env_steps: int) -> list[dict]:
    """Per (task, variant) with a finished run: the mean over seeds, its 95% interval, and the
    verdict against each published figure (:func:`planetrl.suite.stats.verdict`). One rliable
    call per variant and set of finished seeds (tasks as the bootstrap's strata)."""
    found: dict[tuple[str, str], dict[int, float]] = {}
    for task in _tasks(results):
        for variant in _variants(results):
            scores = _finished_scores(results, task, variant)
            if scores:
                found[(task, variant)] = scores
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for (task, variant), scores in found.items():
        groups.setdefault((variant, tuple(sorted(scores))), []).append(task)
    intervals: dict[tuple[str, str], stats.Interval] = {}
    for (variant, seeds), tasks in groups.items():
        matrix = np.array([[found[(t, variant)][s] for t in tasks] for s in seeds])
        intervals.update(((t, variant), i) for t, i in zip(tasks, stats.column_intervals(matrix)))
    rows = []
    for (task, variant), scores in found.items():
        interval = intervals[(task, variant)]
        row: dict = dict(
            task=task,
            variant=variant,
            seeds=len(scores),
            seed_list=" ".join(str(s) for s in sorted(scores)),
            mean=interval.point,
            ci_lo=interval.lo,
            ci_hi=interval.hi,
        )
        for p in published_at(task, env_steps, published):
            if p.agent in COMPARED:
                row[f"{p.agent} mean"], row[f"{p.agent} std"] = p.mean, p.std
                row[f"{p.agent} seeds"] = p.seeds
                row[f"vs {p.agent}"] = stats.verdict(interval, p.mean, p.std, p.seeds)
        rows.append(row)
    return rows


@dataclass
class Matrix:
    """One variant's (runs × tasks) normalised scores: the seeds finished on every task."""

    variant: str
    tasks: list[str]
    seeds: list[int]
    scores: np.ndarray


def score_matrices(results: list[RunResult]) -> list[Matrix]:
    """Per variant, the normalised final scores of the seeds finished on every one of its tasks
    with a normaliser (tasks without a finished run are left out, and so named)."""
    out = []
    for variant in _variants(results):
        per_task = {}
        for task in _tasks(results):
            scale = stats.normaliser(task)
            scores = _finished_scores(results, task, variant)
            if scale and scores:
                per_task[task] = {s: v / scale for s, v in scores.items()}
        if not per_task:
            continue
        seeds = sorted(set.intersection(*(set(v) for v in per_task.values())))
        if not seeds:
            continue
        tasks = list(per_task)
        out.append(
            Matrix(
                variant, tasks, seeds, np.array([[per_task[t][s] for t in tasks] for s in seeds])
            )
        )
    return out


def aggregate_rows(matrices: list[Matrix]) -> list[dict]:
    rows = []
    for m in matrices:
        for name, interval in stats.aggregate_intervals(m.scores).items():
            rows.append(
                dict(
                    variant=m.variant,
                    metric=name,
                    tasks=len(m.tasks),
                    runs_per_task=len(m.seeds),
                    value=interval.point,
                    ci_lo=interval.lo,
                    ci_hi=interval.hi,
                )
            )
    return rows


def improvement_rows(matrices: list[Matrix]) -> list[dict]:
    """P(X > Y) for every ordered pair of variants, on the tasks they share (computed once per
    pair: P(Y > X) = 1 − P(X > Y))."""
    rows = []
    for i, x in enumerate(matrices):
        for y in matrices[i + 1 :]:
            tasks = [t for t in x.tasks if t in y.tasks]
            if not tasks:
                continue
            sx = x.scores[:, [x.tasks.index(t) for t in tasks]]
            sy = y.scores[:, [y.tasks.index(t) for t in tasks]]
            p = stats.improvement(sx, sy)
            common = dict(tasks=len(tasks), runs_x=len(x.seeds), runs_y=len(y.seeds))
            rows.append(
                dict(
                    x=x.variant, y=y.variant, **common, probability=p.point, ci_lo=p.lo, ci_hi=p.hi
                )
            )
            rows.append(
                dict(
                    x=y.variant,
                    y=x.variant,
                    **{**common, "runs_x": len(y.seeds), "runs_y": len(x.seeds)},
                    probability=1 - p.point,
                    ci_lo=1 - p.hi,
                    ci_hi=1 - p.lo,
                )
            )
    return rows


def profile_rows(matrices: list[Matrix]) -> list[dict]:
    rows = []
    for m in matrices:
        profile, ci = stats.performance_profile(m.scores)
        for i, tau in enumerate(stats.TAUS):
            rows.append(
                dict(
                    variant=m.variant,
                    tau=float(tau),
                    fraction=float(profile[i]),
                    ci_lo=float(ci[0, i]),
                    ci_hi=float(ci[1, i]),
                )
            )
    return rows


def _interval(point: float, lo: float, hi: float, n: int, digits: int = 0) -> str:
    return stats.Interval(point, lo, hi, n).fmt(digits)


def _stats_markdown(
    seeds: list[dict], aggregates: list[dict], improvements: list[dict], matrices: list[Matrix]
) -> list[str]:
    if not seeds:
        return []
    agents = [a for a in VERDICTS if any(f"vs {a}" in row for row in seeds)]
    lines = [
        "",
        "## Over seeds (rliable)",
        "",
        "Finished runs only, each scored by its last evaluation. Mean over seeds with its 95% "
        f"stratified-bootstrap interval ({stats.REPS:,} resamples; one seed: no interval). "
        "Verdict against a published figure: *above* / *below* where the interval lies wholly "
        "above / below the published figure's 95% interval (mean ± 1.96 std / √n, n its seeds; "
        "n = 1 where the source does not state it), else *within noise* "
        "(`planetrl/suite/stats.py`). The published figure is shown as mean ± std.",
        "",
        "| "
        + " | ".join(["task", "variant", "seeds", "mean [95% CI]", *[f"vs {a}" for a in agents]])
        + " |",
        "|" + "---|" * (4 + len(agents)),
    ]
    for row in seeds:
        cells = [
            row["task"],
            row["variant"],
            str(row["seeds"]),
            _interval(row["mean"], row["ci_lo"], row["ci_hi"], row["seeds"]),
        ]
        for a in agents:
            if f"vs {a}" in row:
                one = " (1 seed)" if row["seeds"] < 2 else ""
                cells.append(f"{row[f'vs {a}']}{one}: {_fmt(row[f'{a} mean'], row[f'{a} std'])}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    if aggregates:
        lines += [
            "",
            "Across tasks: scores normalised by the task's maximum (DMC: return / 1000); "
            "interquartile mean (IQM), median and mean over all runs of all tasks with 95% "
            "stratified-bootstrap intervals (runs resampled within each task); only the seeds "
            "finished on every task of the variant.",
            "",
            "| variant | tasks | runs per task | IQM | median | mean |",
            "|---|---|---|---|---|---|",
        ]
        for m in matrices:
            cells = [
                m.variant,
                str(len(m.tasks)),
                f"{len(m.seeds)} (seeds {' '.join(map(str, m.seeds))})",
            ]
            for metric in stats.AGGREGATES:
                row = next(
                    r for r in aggregates if r["variant"] == m.variant and r["metric"] == metric
                )
                cells.append(
                    _interval(row["value"], row["ci_lo"], row["ci_hi"], row["runs_per_task"], 3)
                )
            lines.append("| " + " | ".join(cells) + " |")
    if improvements:
        lines += [
            "",
            "Probability of improvement P(X > Y): the chance that a run of X scores above a run "
            "of Y on the same task, averaged over the tasks both have; above 0.5 with the whole "
            "interval is a significant improvement.",
            "",
            "| X | Y | tasks | P(X > Y) [95% CI] |",
            "|---|---|---|---|",
        ]
        for row in improvements:
            lines.append(
                f"| {row['x']} | {row['y']} | {row['tasks']} | "
                f"{_interval(row['probability'], row['ci_lo'], row['ci_hi'], 2, 2)} |"
            )
    if matrices:
        lines += [
            "",
            "Performance profile and aggregate intervals: `aggregates.png`, "
            "`profile.csv`, `aggregates.csv`.",
        ]
    return lines


def _reused_markdown(results: list[RunResult]) -> str:
    """A section naming the runs this suite shares with another suite (trained once)."""
    rows = []
    for result in results:
        assert result.directory is not None
        own = result.directory / layout.RUNS_DIR / result.name
        origin = layout.reused_from(own)
        if origin is None and (own / layout.REUSED_FROM_FILE).exists():  # an export
            try:
                origin = json.loads((own / layout.REUSED_FROM_FILE).read_text())
            except json.JSONDecodeError:
                origin = None
        if origin is not None:
            rows.append(f"- `{result.name}` is suite `{origin['suite']}`'s `{origin['run']}`")
    if not rows:
        return ""
    return (
        "\n## Runs shared with other suites\n\nThe same configuration, budget and evaluation "
        "schedule, field by field: trained once, read by both (`--reuse`).\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _markdown(suite: Suite, table: list[dict], stats_lines: list[str]) -> str:
    agents = [a for a in COMPARED if any(f"{a} mean" in row for row in table)]
    lines = [
        f"# Suite {suite.name} ({suite.preset} preset, {suite.env_steps:,} env steps)",
        "",
        f"{suite.description}. Evaluation every {suite.eval_every_env_steps:,} env steps on "
        f"{suite.eval_episodes} episodes without exploration noise. planetrl: mean ± std over "
        "the finished seeds' last evaluations; while no seed of a row has finished, over every "
        "seed at the largest env-step count all of them have evaluated, so that a row never mixes "
        "budgets (with one seed: ± the std over its evaluation episodes, marked ¹); random: the "
        "uniform policy on the same evaluation seeds. Published "
        f"figures at {suite.env_steps:,} env steps from `planetrl/suite/published.csv` (sources "
        "there; the DreamerV3 column is read from its authors' scores file, not a published "
        "table).",
        "",
        "| "
        + " | ".join(
            [
                "task",
                "variant",
                "planetrl",
                "at env steps",
                "seeds",
                "runs (finished)",
                "random",
                *agents,
                "wall-clock per run",
                "CPU",
                "commit",
            ]
        )
        + " |",
        "|" + "---|" * (10 + len(agents)),
    ]
    for row in table:
        ours = _fmt(row.get("mean"), row.get("std")) + (
            "¹" if row.get("std_over") == "episodes" else ""
        )
        cells = [
            row["task"],
            row["variant"],
            ours,
            f"{row['env_steps']:,}" if "env_steps" in row else "–",
            str(row.get("seeds", "–")),
            f"{row['runs']} ({row['finished']})",
            _fmt(row.get("random_mean"), row.get("random_std")),
        ]
        cells += [_fmt(row.get(f"{a} mean"), row.get(f"{a} std")) for a in agents]
        wall = row.get("wall_clock_min")
        cells += [f"{wall:.0f} min" if wall else "–", row.get("cpu", "–"), row.get("commit", "–")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += stats_lines
    attributed = [row for row in table if "ceiling_mean" in row or "heldout_reward_mse_H" in row]
    if attributed:
        lines += [
            "",
            "## Attribution: the planner or the model",
            "",
            "Planner ceiling: the same CEM (H, I, J, K, R) with the true simulator as its model "
            "(physics state restored for every candidate). Open-loop reward MSE over H: filter 5 "
            "steps, imagine H under the true actions; held-out = fresh episodes of the trained "
            "agent, replay = training chunks at the last evaluation; the reward variance of the "
            "held-out chunks is the MSE of predicting their mean.",
            "",
            "| task | variant | planetrl | planner ceiling | open-loop reward MSE over H, held-out"
            " | reward variance (held-out) | open-loop reward MSE over H, replay |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in attributed:

            def num(key: str, row: dict = row) -> str:
                return f"{row[key]:.3g}" if key in row else "–"

            lines.append(
                "| "
                + " | ".join(
                    [
                        row["task"],
                        row["variant"],
                        _fmt(row.get("mean"), row.get("std")),
                        _fmt(row.get("ceiling_mean"), row.get("ceiling_std")),
                        num("heldout_reward_mse_H"),
                        num("heldout_reward_var"),
                        num("replay_reward_mse_H"),
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    """``rows`` as CSV text: a header of every key in order of first appearance, then one line
    per row (a key a row lacks is an empty cell). The format of every CSV a report writes."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _png(fig) -> bytes:
    # matplotlib: ~1 s to import, only when a figure is drawn
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    # matplotlib: ~1 s to import, only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(
    suite: Suite,
    sources: list[Source],
    results: list[RunResult],
    rows: list[dict],
    published: list[Published],
    path: Path,
) -> None:
    plt = _pyplot()
    tasks = _tasks(results)
    cols = min(3, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for variant in _variants(results):
            pts = [r for r in rows if r["task"] == task and r["variant"] == variant]
            if not pts:
                continue
            x = np.array([r["env_steps"] for r in pts])
            y = np.array([r["mean"] for r in pts])
            # the 95% interval over seeds where there is one, else ± the std (over episodes)
            s = np.nan_to_num(np.array([r["std"] for r in pts]))
            lo = np.array([r.get("ci_lo", y[i] - s[i]) for i, r in enumerate(pts)])
            hi = np.array([r.get("ci_hi", y[i] + s[i]) for i, r in enumerate(pts)])
            ax.plot(x, y, marker="o", ms=3, label=variant)
            ax.fill_between(x, lo, hi, alpha=0.2)
        randoms = [r for r in rows if r["task"] == task and r["variant"] == "random policy"]
        if randoms:
            ax.axhline(
                np.mean([r["mean"] for r in randoms]),
                color="gray",
                ls="--",
                lw=1,
                label="random policy",
            )
        for p in published_at(task, suite.env_steps, published):
            if p.agent == "PlaNet":
                ax.errorbar(
                    [suite.env_steps],
                    [p.mean],
                    yerr=[p.std or 0],
                    fmt="s",
                    color="k",
                    ms=4,
                    capsize=3,
                    label="PlaNet (published)",
                )
        ceiling = _ceiling(sources, task)
        if ceiling:
            ax.axhline(
                ceiling["mean"],
                color="tab:green",
                ls=":",
                lw=1,
                label="planner with the true model",
            )
        ax.set_title(task.split(":", 1)[-1])
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_xlim(0, suite.env_steps * 1.05)
        if task.startswith("dmc:"):
            ax.set_ylim(0, 1000)  # DMC returns lie in [0, 1000]
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    shade = "95% interval over seeds (± std over episodes with one seed)"
    fig.suptitle(f"{suite.name} ({suite.preset} preset); shaded: {shade}", fontsize=9)
    fig.tight_layout()

    atomic_write_bytes(path, _png(fig))


def plot_aggregates(
    suite: Suite, matrices: list[Matrix], aggregates: list[dict], profiles: list[dict], path: Path
) -> None:
    """The aggregate intervals (IQM, median, mean) and the performance profile, in the layout of
    rliable's own figures."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2 + 0.25 * len(matrices)))
    ax = axes[0]
    names = [m.variant for m in matrices]
    for j, metric in enumerate(stats.AGGREGATES):
        for i, variant in enumerate(names):
            row = next(r for r in aggregates if r["variant"] == variant and r["metric"] == metric)
            y = i + 0.25 * (j - 1)
            ax.plot(
                [row["ci_lo"], row["ci_hi"]],
                [y, y],
                lw=6,
                alpha=0.5,
                color=f"C{j}",
                solid_capstyle="butt",
                label=metric if i == 0 else None,
            )
            ax.plot([row["value"]], [y], "|", ms=12, color="k")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("normalised score (return / 1000)")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("aggregates with 95% intervals", fontsize=9)
    ax = axes[1]
    for i, variant in enumerate(names):
        pts = [r for r in profiles if r["variant"] == variant]
        tau = np.array([r["tau"] for r in pts])
        ax.plot(tau, [r["fraction"] for r in pts], color=f"C{i}", label=variant)
        ax.fill_between(
            tau, [r["ci_lo"] for r in pts], [r["ci_hi"] for r in pts], color=f"C{i}", alpha=0.2
        )
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("performance profile", fontsize=9)
    fig.suptitle(
        f"{suite.name} ({suite.preset} preset), finished runs, last evaluation", fontsize=9
    )
    fig.tight_layout()

    atomic_write_bytes(path, _png(fig))


def export(sources: list[Source], destination: str | Path) -> Path:
    """Copy the small files of every run in ``sources`` (:data:`EXPORTED`), their ceilings and
    one ``suite.json`` into ``destination``: a suite directory without episodes, checkpoints or
    logs, from which the same report is regenerated (``--report-only --dir DESTINATION``). The
    merged directories must share a preset (run names do not carry it)."""

    if len({s.suite.preset for s in sources}) > 1:
        raise ValueError(
            "--export copies runs of one preset into one suite directory; these "
            "directories ran presets " + ", ".join(sorted({s.suite.preset for s in sources}))
        )
    destination = Path(destination)
    if any(destination.resolve() == s.directory.resolve() for s in sources):
        raise ValueError(f"--export {destination} is one of the directories read")
    for source in sources:
        merge_suite(destination, source.suite)
    for result in read_results(sources):
        assert result.directory is not None
        origin = layout.run_dir(result.directory, result.name)
        target = layout.run_dir(destination, result.name)
        for name in EXPORTED:
            if (origin / name).exists():
                target.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target / name, (origin / name).read_bytes())
        reused = layout.reused_from(result.directory / layout.RUNS_DIR / result.name)
        if reused is not None:  # provenance, under a name the export does not follow
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / layout.REUSED_FROM_FILE, json.dumps(reused, indent=1))
    for source in sources:
        ceilings = source.directory / layout.CEILING_DIR
        if ceilings.is_dir():
            (destination / layout.CEILING_DIR).mkdir(parents=True, exist_ok=True)
            for path in sorted(ceilings.glob("*.json")):
                shutil.copyfile(path, destination / layout.CEILING_DIR / path.name)
    return destination


def write_report(directory: str | Path, merge: tuple[str | Path, ...] | list = ()) -> list[Path]:
    """Read every run of the suite in ``directory`` (and the directories of ``merge``: one
    suite spread over several) and write its report into ``directory``; returns the paths."""

    sources = load_sources(directory, merge)
    directory = sources[0].directory
    suite = sources[0].suite
    published = load_published()
    results = read_results(sources)
    rows = curves(results)
    table = final_table(sources, results, published)
    seeds = seed_table(results, published, suite.env_steps)
    matrices = score_matrices(results)
    aggregates = aggregate_rows(matrices)
    improvements = improvement_rows(matrices)
    profiles = profile_rows(matrices)
    transfers = transfer_rows(suite, results)
    paths = [directory / "curves.csv", directory / "results.csv", directory / "results.md"]
    atomic_write_text(paths[0], csv_text(rows))
    atomic_write_text(paths[1], csv_text(table))
    stats_lines = _stats_markdown(seeds, aggregates, improvements, matrices)
    atomic_write_text(
        paths[2],
        _markdown(suite, table, stats_lines + transfer_markdown(transfers))
        + _reused_markdown(results),
    )
    for name, data in (
        ("seeds.csv", seeds),
        ("aggregates.csv", aggregates),
        ("improvement.csv", improvements),
        ("profile.csv", profiles),
        ("transfer.csv", transfers),
    ):
        if data:
            paths.append(directory / name)
            atomic_write_text(paths[-1], csv_text(data))
    if rows:
        paths.append(directory / "curves.png")
        plot(suite, sources, results, rows, published, paths[-1])
    if matrices:
        paths.append(directory / "aggregates.png")
        plot_aggregates(suite, matrices, aggregates, profiles, paths[-1])
    return paths
