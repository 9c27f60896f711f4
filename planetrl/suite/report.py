"""A suite's report: learning curves and the results table beside the published figures.

Per run, the evaluation rows of ``metrics.jsonl`` (the mean return of the M evaluation episodes
at each evaluation step) and the random policy's returns on the same seeds (``random.json``).
Per (task, variant) and evaluation step, the mean ± std over seeds; with one seed, the std is the
one over that seed's evaluation episodes, and the table says so.

Files written into the suite directory (atomically):

- ``curves.csv``: task, variant, env_steps, seeds, mean, std, std_over (``seeds`` / ``episodes``).
- ``results.csv`` / ``results.md``: at each run's last evaluation, beside the random policy and
  the published figures at the suite's budget (``published.csv``), with wall-clock, CPU and commit.
- ``curves.png``: one panel per task, a line per variant, the random policy and the published
  PlaNet figure as references.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planetrl.suite import layout
from planetrl.suite.published import Published, load_published, published_at
from planetrl.suite.spec import Suite

# The published agents shown beside a suite's results, in this order (rows of published.csv).
COMPARED = ("PlaNet", "PlaNet (DrQ table)", "Dreamer", "CURL", "DrQ", "DreamerV3")


@dataclass
class RunResult:
    name: str
    task: str
    variant: str
    seed: int
    curve: dict[int, tuple[float, float]] = field(default_factory=dict)
    """env steps -> (mean, std over the evaluation episodes)."""
    random: list[float] | None = None
    finished: dict | None = None
    attribution: dict | None = None
    replay_open_loop_mse: float | None = None
    """The last evaluation's open-loop reward MSE over H on replay chunks (training data)."""


def read_run(directory: Path, run) -> RunResult:
    from planetrl.training.logger import read_metrics

    run_dir = layout.run_dir(directory, run.name)
    result = RunResult(run.name, run.task, run.variant, run.seed)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for row in read_metrics(metrics):
            if "eval/return" in row:
                result.curve[int(row["step"])] = (float(row["eval/return"]),
                                                  float(row.get("eval/return_std", math.nan)))
                if "eval/open_loop_reward_mse_H" in row:
                    result.replay_open_loop_mse = float(row["eval/open_loop_reward_mse_H"])
    for name, attr in ((layout.RANDOM_FILE, "random"), (layout.FINISHED_FILE, "finished"),
                       (layout.ATTRIBUTION_FILE, "attribution")):
        path = run_dir / name
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            setattr(result, attr, data["returns"] if attr == "random" else data)
    return result


def _ceiling(directory: Path, suite: Suite, task: str) -> dict | None:
    from planetrl.suite.layout import ceiling_path
    from planetrl.suite.spec import run_config

    run = next((r for r in suite.runs if r.task == task and r.agent == "planet"), None)
    if run is None:
        return None  # the planner's ceiling is PlaNet's
    p = run_config(suite, run, directory).planner
    path = ceiling_path(directory, task, p.horizon, p.iterations, p.candidates, p.top_k)
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
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
            rows.append(dict(task=task, variant="random policy", env_steps=0, seeds=len(randoms),
                             mean=mean, std=std, std_over=over))
        steps = sorted({s for r in runs for s in r.curve})
        for step in steps:
            values = [r.curve[step] for r in runs if step in r.curve]
            mean, std, over = _stats([v[0] for v in values], values[0][1])
            rows.append(dict(task=task, variant=variant, env_steps=step, seeds=len(values),
                             mean=mean, std=std, std_over=over))
    return rows


def final_table(suite: Suite, results: list[RunResult], published: list[Published],
                directory: Path | None = None) -> list[dict]:
    rows = []
    for task in suite.tasks():
        for variant in suite.variants():
            runs = [r for r in results if r.task == task and r.variant == variant]
            if not runs:
                continue
            finals = [(max(r.curve), r.curve[max(r.curve)]) for r in runs if r.curve]
            done = [r for r in runs if r.finished]
            row: dict = dict(task=task, variant=variant, runs=len(runs), finished=len(done))
            if finals:
                mean, std, over = _stats([v[0] for _, v in finals], finals[0][1][1])
                row.update(env_steps=min(s for s, _ in finals), mean=mean, std=std, std_over=over)
            randoms = [float(np.mean(r.random)) for r in runs if r.random]
            if randoms:
                episodes = [x for r in runs if r.random for x in r.random]
                row["random_mean"], row["random_std"], _ = _stats(randoms,
                                                                   float(np.std(episodes)))
            if done:
                row["wall_clock_min"] = float(np.mean([r.finished["wall_clock_s"] for r in done])
                                              / 60)
                row["cpu"] = "; ".join(sorted({r.finished.get("cpu", "?") for r in done}))
                row["commit"] = "; ".join(sorted({_short(r.finished.get("commit", "?"))
                                                  for r in done}))
            for p in published_at(task, suite.env_steps, published):
                if p.agent in COMPARED:
                    row[f"{p.agent} mean"], row[f"{p.agent} std"] = p.mean, p.std
            ceiling = _ceiling(directory, suite, task) if directory is not None else None
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


def _markdown(suite: Suite, table: list[dict]) -> str:
    agents = [a for a in COMPARED if any(f"{a} mean" in row for row in table)]
    lines = [
        f"# Suite {suite.name} ({suite.preset} preset, {suite.env_steps:,} env steps)",
        "",
        f"{suite.description}. Evaluation every {suite.eval_every_env_steps:,} env steps on "
        f"{suite.eval_episodes} episodes without exploration noise. planetrl: mean ± std over "
        "seeds at each run's last evaluation (with one seed: ± the std over its evaluation "
        "episodes, marked ¹); random: the uniform policy on the same evaluation seeds. Published "
        f"figures at {suite.env_steps:,} env steps from `planetrl/suite/published.csv` (sources "
        "there).",
        "",
        "| " + " | ".join(["task", "variant", "planetrl", "at env steps", "runs (finished)",
                           "random", *agents, "wall-clock per run", "CPU", "commit"]) + " |",
        "|" + "---|" * (9 + len(agents)),
    ]
    for row in table:
        ours = _fmt(row.get("mean"), row.get("std")) + ("¹" if row.get("std_over") == "episodes"
                                                         else "")
        cells = [row["task"], row["variant"], ours, f"{row['env_steps']:,}" if "env_steps" in row else "–",
                 f"{row['runs']} ({row['finished']})",
                 _fmt(row.get("random_mean"), row.get("random_std"))]
        cells += [_fmt(row.get(f"{a} mean"), row.get(f"{a} std")) for a in agents]
        wall = row.get("wall_clock_min")
        cells += [f"{wall:.0f} min" if wall else "–", row.get("cpu", "–"), row.get("commit", "–")]
        lines.append("| " + " | ".join(cells) + " |")
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
            def num(key: str) -> str:
                return f"{row[key]:.3g}" if key in row else "–"
            lines.append("| " + " | ".join([
                row["task"], row["variant"], _fmt(row.get("mean"), row.get("std")),
                _fmt(row.get("ceiling_mean"), row.get("ceiling_std")),
                num("heldout_reward_mse_H"), num("heldout_reward_var"), num("replay_reward_mse_H"),
            ]) + " |")
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


def plot(suite: Suite, rows: list[dict], published: list[Published], path: Path,
         directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = suite.tasks()
    cols = min(3, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for variant in suite.variants():
            pts = [r for r in rows if r["task"] == task and r["variant"] == variant]
            if not pts:
                continue
            x = np.array([r["env_steps"] for r in pts])
            y = np.array([r["mean"] for r in pts])
            s = np.nan_to_num(np.array([r["std"] for r in pts]))
            ax.plot(x, y, marker="o", ms=3, label=variant)
            ax.fill_between(x, y - s, y + s, alpha=0.2)
        randoms = [r for r in rows if r["task"] == task and r["variant"] == "random policy"]
        if randoms:
            ax.axhline(np.mean([r["mean"] for r in randoms]), color="gray", ls="--", lw=1,
                       label="random policy")
        for p in published_at(task, suite.env_steps, published):
            if p.agent == "PlaNet":
                ax.errorbar([suite.env_steps], [p.mean], yerr=[p.std or 0], fmt="s", color="k",
                            ms=4, capsize=3, label="PlaNet (published)")
        ceiling = _ceiling(directory, suite, task)
        if ceiling:
            ax.axhline(ceiling["mean"], color="tab:green", ls=":", lw=1,
                       label="planner with the true model")
        ax.set_title(task.split(":", 1)[-1])
        ax.set_xlabel("env steps")
        ax.set_ylabel("return")
        ax.set_xlim(0, suite.env_steps * 1.05)
        if task.startswith("dmc:"):
            ax.set_ylim(0, 1000)  # DMC returns lie in [0, 1000]
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{suite.name} ({suite.preset} preset)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    from planetrl.atomic import atomic_write_bytes

    atomic_write_bytes(path, buffer.getvalue())


def write_report(directory: str | Path) -> list[Path]:
    """Read every run of the suite in ``directory`` and write its report; returns the paths."""
    from planetrl.atomic import atomic_write_text

    directory = Path(directory)
    suite = Suite.from_dict(json.loads((directory / layout.SUITE_FILE).read_text()))
    published = load_published()
    results = [read_run(directory, run) for run in suite.runs]
    rows = curves(results)
    table = final_table(suite, results, published, directory)
    paths = [directory / "curves.csv", directory / "results.csv", directory / "results.md"]
    atomic_write_text(paths[0], csv_text(rows))
    atomic_write_text(paths[1], csv_text(table))
    atomic_write_text(paths[2], _markdown(suite, table))
    if rows:
        paths.append(directory / "curves.png")
        plot(suite, rows, published, paths[-1], directory)
    return paths
