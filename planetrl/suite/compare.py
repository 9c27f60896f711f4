"""``planetrl compare``: PlaNet and World Models on the same task, budget and seeds, measured.

The runs are a suite (:func:`compare_suite`, one variant per agent, trained by the suite runner
on Ray); :func:`write_compare_report` then writes, into the suite directory (atomically):

- ``compare_curves.csv`` / ``compare_curves.png``: the evaluation return of every run against
  env steps and against wall-clock (seconds of the run's attempts, ``attempts.jsonl``, up to
  the evaluation's metrics row). PlaNet evaluates every ``eval_every_env_steps``; World Models
  after each of its iterations (or every few generations in real mode), see
  :meth:`planetrl.worldmodels.kind.WorldModelsKind.budget`.
- ``parameters.csv``: the parameters of each part, counted from the models built from each
  agent's saved config (PlaNet: encoder, transition, decoder, reward model; World Models: V's
  encoder and decoder, M, C).
- ``stages.csv``: the env steps each stage used, from the episode files (the source of truth)
  and the metrics: random seed episodes, episodes of the agent (with exploration noise), World
  Models' real-mode fitness rollouts, and the evaluation episodes (outside the budget).
- ``open_loop.csv`` / ``open_loop.png``: the two dynamics models on the same held-out
  episodes, open loop: per step d = 1..H ahead, the MSE per pixel of the decoded frame against
  the true frame (both in [0, 1]) and the squared error of the predicted reward. The held-out
  episodes are uniformly random episodes on their own seeds (``heldout/``), data neither agent
  trained on and both saw the like of. PlaNet: the RSSM filters ``context`` frames, then
  imagines H steps under the true actions from its prior, sampled (the planner's rollout), the
  decoder's and the reward model's means. World Models: V encodes the context frames (posterior
  means), M reads them, then runs open loop feeding back its predicted z, either sampled at the
  run's temperature τ (``sample``: a dream) or the mixture mean (``mean``)
  (:mod:`planetrl.worldmodels.diagnostics`). The reward variance of the predicted steps (the
  error of predicting their mean) is shown beside them.
- ``compare.md``: the tables.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl.agents import common_presets, kind, names
from planetrl.atomic import atomic_write_bytes, atomic_write_text
from planetrl.config import ConfigError, check_preset
from planetrl.driver import make_pool, resolve_action_repeat, run_episodes, uniform_policy
from planetrl.envs import parse_task
from planetrl.episodes import list_episode_files, load_episode, save_episode
from planetrl.run.logger import read_metrics
from planetrl.suite import layout
from planetrl.suite.report import csv_text
from planetrl.suite.spec import RunSpec, Suite, episode_env_steps, run_config

HELDOUT_DIR = "heldout"
OPEN_LOOP_FILE = "open_loop.json"
HELDOUT_SEED = 2_000_000


def compare_suite(
    task: str,
    agents: tuple[str, ...] | list[str] = ("planet", "worldmodels"),
    *,
    env_steps: int = 100_000,
    seeds: int = 1,
    preset: str = "small",
    eval_every_env_steps: int = 10_000,
    eval_episodes: int = 10,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Suite:
    """The comparison as a suite: one run per agent and seed on ``task``, variant = the agent.
    ``overrides``: per agent, dotted fields of its own config."""

    agents = list(dict.fromkeys(agents))
    unknown = [a for a in agents if a not in names()]
    if unknown or not agents:
        raise ConfigError(f"unknown agents {unknown}; accepted: {', '.join(names())}")
    check_preset(preset, common_presets(agents))
    for name, value in (
        ("--seeds", seeds),
        ("--env-steps", env_steps),
        ("--eval-episodes", eval_episodes),
        ("--eval-every-env-steps", eval_every_env_steps),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if parse_task(task).suite == "multi":
        raise ConfigError(
            f"{task}: compare sets the agents side by side on one task; a multi-task run is "
            "PlaNet's alone (planetrl suite multitask)"
        )
    overrides = overrides or {}
    runs = [
        RunSpec(task, seed, agent, tuple(overrides.get(agent, {}).items()), agent)
        for agent in agents
        for seed in range(seeds)
    ]
    return Suite(
        "compare",
        preset,
        env_steps,
        eval_every_env_steps,
        eval_episodes,
        runs,
        description=f"{' against '.join(agents)} on {task}",
    )


# ------------------------------------------------------------------------------ reading runs
def _attempt_spans(run_dir: Path) -> list[tuple[float, float]]:
    """(start, seconds) of each attempt of a run (a killed one: until its last metrics row)."""

    path = run_dir / layout.ATTEMPTS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    ended = {row["start"]: row["seconds"] for row in rows if "seconds" in row}
    starts = sorted({row["start"] for row in rows})
    metrics = run_dir / "metrics.jsonl"
    times = [row["time"] for row in read_metrics(metrics)] if metrics.exists() else []
    spans = []
    for start, following in zip(starts, [*starts[1:], math.inf]):
        logged = [t for t in times if start <= t < following]
        spans.append((start, ended.get(start, (max(logged) - start) if logged else 0.0)))
    return spans


def elapsed(spans: list[tuple[float, float]], t: float) -> float:
    """Seconds of the run's attempts up to time ``t``."""
    total = 0.0
    for start, seconds in spans:
        if t >= start + seconds:
            total += seconds
        elif t >= start:
            return total + t - start
    return total


def curve_rows(directory: Path, suite: Suite) -> list[dict[str, Any]]:
    """One row per evaluation of every run: agent, seed, env steps, wall-clock, return (the
    last evaluation logged at an env-step count, for an agent that evaluates more than once
    there)."""

    rows: list[dict[str, Any]] = []
    for run in suite.runs:
        run_dir = layout.run_dir(directory, run.name)
        metrics = run_dir / "metrics.jsonl"
        if not metrics.exists():
            continue
        spans = _attempt_spans(run_dir)
        at: dict[int, dict[str, Any]] = {}
        for row in read_metrics(metrics):
            if "eval/return" in row:
                at[int(row["step"])] = dict(
                    agent=run.agent,
                    seed=run.seed,
                    env_steps=int(row["step"]),
                    wall_clock_s=round(elapsed(spans, float(row["time"])), 1),
                    mean=float(row["eval/return"]),
                    std=float(row.get("eval/return_std", math.nan)),
                )
        rows.extend(at[s] for s in sorted(at))
    return rows


def _load_models(run: RunSpec, run_dir: Path, device: str = "cpu"):
    """(config, models) of a run with a checkpoint (its agent's
    :meth:`~planetrl.agents.AgentKind.load_models`); None without a checkpoint."""
    return kind(run.agent).load_models(run_dir, device)


def parameter_rows(agent: str, loaded) -> list[dict[str, Any]]:
    """The parameters of each part of an agent, counted from its models."""
    parts = kind(agent).parameters(loaded)
    rows = [dict(agent=agent, part=name, parameters=int(n)) for name, n in parts]
    rows.append(dict(agent=agent, part="total", parameters=int(sum(n for _, n in parts))))
    return rows


def stage_rows(directory: Path, run: RunSpec, loaded) -> list[dict[str, Any]]:
    """Env steps per stage of a run (see the module docstring)."""

    run_dir = layout.run_dir(directory, run.name)
    repeat = resolve_action_repeat(loaded[0])
    files = list_episode_files(run_dir / "episodes")
    steps = [(f.index, (f.length - 1) * repeat) for f in files]
    metrics = run_dir / "metrics.jsonl"
    rows_m = read_metrics(metrics) if metrics.exists() else []
    evaluations = sum(int(r.get("eval/episodes", 0)) for r in rows_m if "eval/return" in r)
    stages = kind(run.agent).stages(loaded, steps)
    rows = [
        dict(agent=run.agent, seed=run.seed, stage=name, env_steps=int(n)) for name, n in stages
    ]
    rows.append(
        dict(
            agent=run.agent,
            seed=run.seed,
            stage="total (the budget)",
            env_steps=int(sum(n for _, n in stages)),
        )
    )
    rows.append(
        dict(
            agent=run.agent,
            seed=run.seed,
            stage="evaluation (outside the budget)",
            env_steps=evaluations * episode_env_steps(run.task),
        )
    )
    return rows


# ------------------------------------------------------------------------- held-out episodes
def heldout_episodes(
    directory: Path, config, episodes: int, log: Callable[[str], None] = print
) -> list[dict[str, np.ndarray]]:
    """``episodes`` uniformly random episodes on seeds of their own, recorded once under
    ``<dir>/heldout/`` (episode files) and shared by every run of the comparison."""

    folder = directory / HELDOUT_DIR
    files = list_episode_files(folder) if folder.exists() else []
    if len(files) < episodes:
        log(f"compare: recording {episodes} held-out random episodes")
        folder.mkdir(parents=True, exist_ok=True)
        with make_pool(config, episodes, False) as pool:
            seeds = [HELDOUT_SEED + i for i in range(episodes)]
            act = uniform_policy(pool.single_action_space.shape[0], seeds)
            out = run_episodes(pool, act, seeds, keep=True)
        for f in files:
            f.path.unlink()
        assert out.episodes is not None  # keep=True
        for i, episode in enumerate(out.episodes):
            save_episode(folder, i, episode)
        files = list_episode_files(folder)
    return [load_episode(f.path) for f in files[:episodes]]


def chunks(
    episodes: list[dict[str, np.ndarray]], context: int, horizon: int
) -> dict[str, np.ndarray]:
    """Chunks of ``context + horizon`` steps, one every ``horizon`` steps of each episode."""
    length = context + horizon
    out: dict[str, list] = {k: [] for k in ("image", "action", "reward")}
    for episode in episodes:
        for start in range(0, len(episode["reward"]) - length + 1, horizon):
            for key in out:
                out[key].append(episode[key][start : start + length])
    if not out["reward"]:
        raise ValueError(
            f"no held-out episode has {length} steps (context {context} + horizon {horizon})"
        )
    return {k: np.stack(v) for k, v in out.items()}


def _errors(
    frames: torch.Tensor, reward: torch.Tensor, data: dict[str, np.ndarray], context: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per step ahead: (MSE per pixel of the frames in [0, 1], squared reward error), averaged
    over the chunks."""
    truth = torch.as_tensor(data["image"][:, context:]).movedim(-1, -3).float() / 255.0
    frame = (frames.detach().cpu().float().clamp(0, 1) - truth).square().mean((0, 2, 3, 4))
    target = torch.as_tensor(data["reward"][:, context:]).float()
    rew = (reward.detach().cpu().float() - target).square().mean(0)
    return frame.numpy(), rew.numpy()


def open_loop_rows(
    run: RunSpec, loaded, data: dict[str, np.ndarray], context: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Per way the run's agent predicts (:meth:`~planetrl.agents.AgentKind.open_loop`) and step
    ahead d: the frame and reward errors on the held-out chunks."""
    rows = []
    for prediction, frames, reward in kind(run.agent).open_loop(loaded, data, context, seed):
        frame, rew = _errors(frames, reward, data, context)
        for d in range(len(frame)):
            rows.append(
                dict(
                    agent=run.agent,
                    seed=run.seed,
                    prediction=prediction,
                    d=d + 1,
                    frame_mse=float(frame[d]),
                    reward_mse=float(rew[d]),
                    chunks=len(data["reward"]),
                )
            )
    return rows


# ------------------------------------------------------------------------------------ report
def _png(fig) -> bytes:
    # matplotlib: ~1 s to import, only when a figure is drawn
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _plot_curves(suite: Suite, rows: list[dict], randoms: dict[str, float]) -> bytes:
    # matplotlib: ~1 s to import, only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = {agent: f"C{i}" for i, agent in enumerate(names())}
    for agent in dict.fromkeys(r["agent"] for r in rows):
        mine = [r for r in rows if r["agent"] == agent]
        steps = sorted({r["env_steps"] for r in mine})
        mean = [np.mean([r["mean"] for r in mine if r["env_steps"] == s]) for s in steps]
        a.plot(steps, mean, marker="o", ms=3, color=colours[agent], label=agent)
        for seed in sorted({r["seed"] for r in mine}):
            pts = [r for r in mine if r["seed"] == seed]
            b.plot(
                [r["wall_clock_s"] / 60 for r in pts],
                [r["mean"] for r in pts],
                marker="o",
                ms=3,
                color=colours[agent],
                label=agent if seed == min(r["seed"] for r in mine) else None,
            )
    for ax in (a, b):
        if randoms:
            ax.axhline(
                np.mean(list(randoms.values())), color="gray", ls="--", lw=1, label="random policy"
            )
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
    a.set_xlabel("env steps")
    a.set_xlim(0, suite.env_steps * 1.05)
    b.set_xlabel("wall-clock (minutes)")
    a.legend(fontsize=7)
    task = suite.tasks()[0]
    a.set_title(f"{task}: return against env steps (mean over seeds)", fontsize=9)
    b.set_title("against wall-clock (each seed)", fontsize=9)
    return _png(fig)


def _plot_open_loop(rows: list[dict], reward_var: float) -> bytes:
    # matplotlib: ~1 s to import, only when a figure is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for prediction in dict.fromkeys(r["prediction"] for r in rows):
        mine = [r for r in rows if r["prediction"] == prediction]
        ds = sorted({r["d"] for r in mine})
        for ax, key in ((a, "frame_mse"), (b, "reward_mse")):
            ax.plot(
                ds,
                [np.mean([r[key] for r in mine if r["d"] == d]) for d in ds],
                marker="o",
                ms=3,
                label=f"{mine[0]['agent']}: {prediction}",
            )
    b.axhline(reward_var, color="gray", ls="--", lw=1, label="predicting the mean reward")
    a.set_ylabel("frame MSE per pixel ([0, 1] scale)")
    b.set_ylabel("reward squared error")
    for ax in (a, b):
        ax.set_xlabel("steps ahead d (agent steps)")
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    a.set_title("open-loop frame error on held-out episodes", fontsize=9)
    b.set_title("open-loop reward error on held-out episodes", fontsize=9)
    return _png(fig)


def _mean_by(rows: list[dict], keys: tuple[str, ...], values: tuple[str, ...]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return [
        {
            **dict(zip(keys, g)),
            "seeds": len(rs),
            **{v: float(np.mean([r[v] for r in rs])) for v in values},
        }
        for g, rs in groups.items()
    ]


def write_compare_report(
    directory: str | Path,
    *,
    heldout: int = 3,
    context: int = 5,
    horizon: int = 15,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Read the comparison suite in ``directory`` and write its report (module docstring);
    returns the paths written. The open-loop errors of a finished run are kept in its
    ``open_loop.json`` (recomputed when the settings change)."""

    directory = Path(directory)
    suite = Suite.from_dict(json.loads((directory / layout.SUITE_FILE).read_text()))
    paths: list[Path] = []

    def write(name: str, text: str | bytes) -> None:
        path = directory / name
        if isinstance(text, bytes):
            atomic_write_bytes(path, text)
        else:
            atomic_write_text(path, text)
        paths.append(path)

    curves = curve_rows(directory, suite)
    randoms: dict[str, float] = {}
    for run in suite.runs:
        path = layout.run_dir(directory, run.name) / layout.RANDOM_FILE
        if path.exists():
            randoms[run.name] = float(np.mean(json.loads(path.read_text())["returns"]))
    write("compare_curves.csv", csv_text(curves) if curves else "agent,seed,env_steps\n")
    if curves:
        write("compare_curves.png", _plot_curves(suite, curves, randoms))

    params: list[dict] = []
    stages: list[dict] = []
    open_loop: list[dict] = []
    reward_var = math.nan
    data = None
    settings = {"heldout": heldout, "context": context, "horizon": horizon}
    repeats: dict[str, int] = {}
    for run in suite.runs:
        run_dir = layout.run_dir(directory, run.name)
        loaded = _load_models(run, run_dir, device)
        if loaded is None:
            continue

        repeats[run.name] = resolve_action_repeat(loaded[0])
        if len(set(repeats.values())) > 1:
            raise ValueError(
                f"the runs of {directory} use different action repeats ({repeats}); "
                "their returns and dynamics models are not comparable"
            )
        if not any(p["agent"] == run.agent for p in params):
            params.extend(parameter_rows(run.agent, loaded))
        stages.extend(stage_rows(directory, run, loaded))
        if not layout.is_finished(run_dir, suite.env_steps):
            continue
        cache = run_dir / OPEN_LOOP_FILE
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        if cached.get("settings") == settings:
            rows = cached["rows"]
        else:
            if data is None:
                data = chunks(
                    heldout_episodes(directory, loaded[0], heldout, log), context, horizon
                )
            log(f"compare: open-loop errors of {run.name}")
            rows = open_loop_rows(run, loaded, data, context)
            atomic_write_text(cache, json.dumps({"settings": settings, "rows": rows}) + "\n")
        open_loop.extend(rows)
    if open_loop:
        if data is None:
            config = run_config(suite, suite.runs[0], directory)
            data = chunks(heldout_episodes(directory, config, heldout, log), context, horizon)
        reward_var = float(np.var(data["reward"][:, context:]))
    write("parameters.csv", csv_text(params) if params else "agent,part,parameters\n")
    write("stages.csv", csv_text(stages) if stages else "agent,seed,stage,env_steps\n")
    write("open_loop.csv", csv_text(open_loop) if open_loop else "agent,seed,prediction,d\n")
    if open_loop:
        write("open_loop.png", _plot_open_loop(open_loop, reward_var))
    write(
        "compare.md",
        _markdown(suite, curves, randoms, params, stages, open_loop, reward_var, settings),
    )
    return paths


def _markdown(
    suite: Suite, curves, randoms, params, stages, open_loop, reward_var, settings
) -> str:
    task = suite.tasks()[0]
    # The title names the agents of the runs (a suite merged over two invocations holds both,
    # whatever the first one's description said).
    order = names()
    present = [a for a in order if any(r.agent == a for r in suite.runs)]
    # Every table in the agents' order (stable: each agent's rows keep theirs).
    params, stages, open_loop = (
        sorted(rows, key=lambda r: order.index(r["agent"])) for rows in (params, stages, open_loop)
    )
    agents = " against ".join(present)
    seeds = len({r.seed for r in suite.runs})
    lines = [
        f"# {agents} on {task} ({suite.preset} preset, {suite.env_steps:,} env steps, "
        f"{seeds} seed{'s' if seeds != 1 else ''})",
        "",
    ]
    lines += [
        "## Return",
        "",
        f"Evaluation: {suite.eval_episodes} episodes without exploration noise on the "
        "run's evaluation seeds (the same for both agents). PlaNet evaluates every "
        f"{suite.eval_every_env_steps:,} env steps; World Models evaluates its controller "
        "(the CMA-ES mean) at the end of each iteration, at the env steps consumed so far "
        "(in real mode also every few generations). Wall-clock: the run's own seconds, "
        "random baseline included. Mean over seeds at each run's last evaluation.",
        "",
        "| agent | return | at env steps | wall-clock | random policy |",
        "|---|---|---|---|---|",
    ]
    for agent in present:
        mine = [r for r in curves if r["agent"] == agent]
        last = {}
        for r in mine:
            last[r["seed"]] = r
        rand = [v for k, v in randoms.items() if f"__{agent}__" in k]
        if last:
            values = [r["mean"] for r in last.values()]
            ret = (
                f"{np.mean(values):.1f} ± {np.std(values):.1f}"
                if len(values) > 1
                else f"{values[0]:.1f} ± {list(last.values())[0]['std']:.1f} (episodes)"
            )
            steps = min(r["env_steps"] for r in last.values())
            wall = np.mean([r["wall_clock_s"] for r in last.values()]) / 60
            lines.append(
                f"| {agent} | {ret} | {steps:,} | {wall:.1f} min | {np.mean(rand):.1f} |"
                if rand
                else f"| {agent} | {ret} | {steps:,} | {wall:.1f} min | – |"
            )
        else:
            lines.append(f"| {agent} | – | – | – | – |")
    lines += [
        "",
        "Curves: `compare_curves.csv`, `compare_curves.png`.",
        "",
        "## Parameters of each part",
        "",
        "| agent | part | parameters |",
        "|---|---|---|",
    ]
    lines += [f"| {p['agent']} | {p['part']} | {p['parameters']:,} |" for p in params]
    lines += [
        "",
        "## Env steps of each stage (mean over seeds)",
        "",
        "| agent | stage | env steps |",
        "|---|---|---|",
    ]
    for r in _mean_by(stages, ("agent", "stage"), ("env_steps",)):
        lines.append(f"| {r['agent']} | {r['stage']} | {r['env_steps']:,.0f} |")
    lines += ["", "## Dynamics models, open loop on held-out episodes", ""]
    if open_loop:
        chunks_ = open_loop[0]["chunks"]
        lines += [
            f"{settings['heldout']} uniformly random held-out episodes (seeds of their own, "
            f"`heldout/`), {chunks_} chunks of {settings['context']} context + "
            f"{settings['horizon']} predicted steps. Frame: MSE per pixel in [0, 1]; "
            "reward: squared error per step (the reward of an agent step, summed over "
            f"the action repeat). Predicting the mean reward: {reward_var:.3g}. PlaNet's "
            "RSSM filters the context and imagines from its prior (sampled); World "
            "Models' M reads V's posterior means of the context, then feeds back its own "
            "z, sampled at τ (as in its dream) or the mixture mean. Mean over seeds.",
            "",
        ]
        ds = sorted({r["d"] for r in open_loop})
        show = [d for d in ds if d in (1, 2, 3, 5, 10, 15, 20, 30, 50) or d == ds[-1]]
        header = " | ".join(f"d={d}" for d in show)
        table = _mean_by(open_loop, ("agent", "prediction", "d"), ("frame_mse", "reward_mse"))
        for key, title in (
            ("frame_mse", "frame MSE per pixel"),
            ("reward_mse", "reward squared error"),
        ):
            lines += [
                f"{title}:",
                "",
                f"| agent | prediction | {header} |",
                "|---|---|" + "---|" * len(show),
            ]
            for agent, prediction in dict.fromkeys((r["agent"], r["prediction"]) for r in table):
                cells = [
                    next(
                        (
                            f"{r[key]:.4g}"
                            for r in table
                            if r["agent"] == agent and r["prediction"] == prediction and r["d"] == d
                        ),
                        "–",
                    )
                    for d in show
                ]
                lines.append(f"| {agent} | {prediction} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Per step: `open_loop.csv`, `open_loop.png`."]
    else:
        lines += ["No finished run yet."]
    lines += [
        "",
        f"Task {task}; the suite's runs under `runs/`, the suite report beside this "
        "(`results.md`).",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "compare_suite",
    "curve_rows",
    "heldout_episodes",
    "open_loop_rows",
    "parameter_rows",
    "stage_rows",
    "write_compare_report",
]
