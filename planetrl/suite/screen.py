"""A cheap screen of world-model variants on a fixed replay, before any long run.

What caps PlaNet on walker, finger and cheetah at 100k env steps is measured to be the reward
model's generalisation: its open-loop reward error over the planner's horizon on fresh episodes
is 3-60x its error on the replay. A variant that narrows that gap is worth an online run; one
that does not is not. The screen measures it without acting:

1. Take a finished or running PlaNet run's episode files, in the order they were collected: the
   first K (``train_episodes``) are the replay, the next M (``heldout_episodes``) are held out.
   The held-out episodes are what the agent met next, so they hold what the replay lacks (on
   walker: getting up after a fall), and they are the same for every variant.
2. For each variant (config overrides over the run's config, e.g. a larger reward head) and
   seed, train a fresh world model on the replay for U updates of Algorithm 1's update
   (B chunks of L steps, the variant's loss and optimiser settings).
3. Score it every ``score_every`` updates and at the end
   (:func:`planetrl.training.open_loop.open_loop_reward_error_on`): the open-loop reward MSE
   over H on every held-out chunk, and on as many chunks of M replay episodes spread over
   the replay. Lower held-out error is better; held-out / replay is the generalisation gap.

Resumable: each (variant, seed) is written to ``results/<variant>__seed<s>.json`` when done
and skipped afterwards; a killed one starts again (minutes). The screen's settings are kept in
``screen.json`` and a later call must use the same ones. The table: ``screen.md``,
``screen.csv``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from planetrl.atomic import atomic_write_text
from planetrl.config import Config, ConfigError, from_dict, load_config, set_field, to_dict
from planetrl.episodes import list_episode_files, load_episode
from planetrl.replay import Replay
from planetrl.run import directory as rundir
from planetrl.run.directory import resolve_device
from planetrl.suite import stats
from planetrl.suite.report import csv_text
from planetrl.suite.runner import code_version, cpu_model
from planetrl.threads import ThreadGovernor
from planetrl.training.loop import build_world_model, task_reward_heads
from planetrl.training.open_loop import open_loop_reward_error_on
from planetrl.training.update import gradient_step

SETTINGS_FILE = "screen.json"
RESULTS_DIR = "results"
REPLAY_DIR = "replay"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Variant:
    """A world-model variant: a name and the dotted config fields it sets over the run's."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """``NAME`` (the run's own config) or ``NAME=JSON`` with a JSON object of dotted config
    fields, e.g. ``wide-reward={"model.reward_hidden": 400}``; a ValueError says what is
    accepted."""
    name, eq, rest = text.partition("=")
    if not _NAME.match(name):
        raise ValueError(
            f"variant {text!r}: the name must be letters, digits and _.+- (then optionally "
            '=JSON), e.g. base or wide-reward={"model.reward_hidden": 400}'
        )
    overrides: Any = {}
    if eq and rest.strip():
        try:
            overrides = json.loads(rest)
        except json.JSONDecodeError as err:
            raise ValueError(f"variant {name!r}: {rest!r} is not JSON ({err})") from None
    if not isinstance(overrides, dict):
        raise ValueError(
            f"variant {name!r}: the overrides must be a JSON object of dotted config fields, "
            f"got {rest!r}"
        )
    return Variant(name, overrides)


def variant_config(run_config: Config, variant: Variant, seed: int) -> Config:
    """The run's config with the variant's fields set and ``seed``, validated; an unknown field
    or a value out of range is a :class:`ConfigError` naming the variant."""
    config = from_dict(to_dict(run_config))  # a copy
    try:
        for name, value in variant.overrides.items():
            set_field(config, name, value)
        config.seed = seed
        config.validate()
    except ConfigError as err:
        raise ConfigError(f"variant {variant.name!r}: {err}") from None
    return config


@dataclass
class ScreenSettings:
    """What defines a screen (kept in ``screen.json``; a later call must match)."""

    run: str
    train_episodes: int
    heldout_episodes: int
    updates: int
    score_every: int
    context: int = 5


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def split_episodes(run: Path, train: int, heldout: int) -> tuple[list[Path], list[Path]]:
    """The first ``train`` and the next ``heldout`` episode files of the run directory ``run``,
    in collection order; too few is a ValueError saying how many there are."""
    files = [f.path for f in list_episode_files(run / rundir.EPISODES_DIR)]
    if len(files) < train + heldout:
        raise ValueError(
            f"{run} has {len(files)} episodes; the screen needs {train} for the replay and "
            f"{heldout} held out after them ({train + heldout}): wait for the run, or ask for "
            "fewer (--train-episodes, --heldout-episodes)"
        )
    return files[:train], files[train : train + heldout]


def _spread(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` items spread evenly over ``items`` (first and last included)."""
    if count >= len(items):
        return list(items)
    return [items[int(round(i))] for i in np.linspace(0, len(items) - 1, count)]


def screen_one(
    config: Config,
    replay_dir: Path,
    heldout: list[dict[str, np.ndarray]],
    replay_sample: list[dict[str, np.ndarray]],
    settings: ScreenSettings,
    *,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one variant's fresh world model on the replay in ``replay_dir`` for
    ``settings.updates`` updates and score it (module docstring); returns the record."""
    dev = resolve_device(device)
    rundir.seed_global_rngs(config.seed)
    threads = ThreadGovernor(config.threads)
    threads.adjust()
    action_size = int(heldout[0]["action"].shape[-1])
    world_model = build_world_model(config, action_size).to(dev)
    optimizer = torch.optim.Adam(
        world_model.parameters(), lr=config.train.learning_rate, eps=config.train.adam_eps
    )
    replay = Replay(
        replay_dir, capacity=None, seed=config.seed, task_rewards=task_reward_heads(config)
    )
    generator = torch.Generator().manual_seed(config.seed + 2)
    t, H = config.train, config.planner.horizon
    heldout_chunks = None
    scores, losses = [], []
    start = time.perf_counter()
    for update in range(1, settings.updates + 1):
        batch = replay.sample(t.batch_size, t.chunk_length, device=dev)
        losses.append(gradient_step(world_model, optimizer, batch, config, generator))
        if update % settings.score_every and update != settings.updates:
            continue
        score_seed = 1_000 + config.seed  # the same chunks and noise at every score
        held = open_loop_reward_error_on(
            world_model, heldout, horizon=H, context=settings.context, seed=score_seed
        )
        heldout_chunks = held["chunks"]
        fitted = open_loop_reward_error_on(
            world_model,
            replay_sample,
            horizon=H,
            context=settings.context,
            seed=score_seed,
            max_chunks=heldout_chunks,
        )
        recent = losses[-settings.score_every :]
        scores.append(
            {
                "updates": update,
                "heldout_mse": held["mse"],
                "replay_mse": fitted["mse"],
                "heldout_reward_var": held["reward_var"],
                "replay_reward_var": fitted["reward_var"],
                **{f"loss/{k}": float(np.mean([x[k] for x in recent])) for k in recent[0]},
            }
        )
        log(
            f"  update {update}: held-out MSE {held['mse']:.4g}, replay MSE "
            f"{fitted['mse']:.4g} ({(time.perf_counter() - start) / 60:.1f} min)"
        )
    last = scores[-1]
    return {
        "seed": config.seed,
        "heldout_mse": last["heldout_mse"],
        "replay_mse": last["replay_mse"],
        "gap": last["heldout_mse"] / last["replay_mse"] if last["replay_mse"] > 0 else math.inf,
        "heldout_reward_var": last["heldout_reward_var"],
        "heldout_chunks": heldout_chunks,
        "scores": scores,
        "minutes": (time.perf_counter() - start) / 60,
        "threads": threads.threads,
    }


def run_screen(
    run: str | Path,
    directory: str | Path,
    variants: Sequence[Variant],
    *,
    train_episodes: int = 40,
    heldout_episodes: int = 10,
    updates: int = 1000,
    score_every: int = 250,
    seeds: int = 1,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Screen ``variants`` on the run directory ``run``'s episodes (module docstring) into
    ``directory``; returns the table's rows and writes ``screen.md`` and ``screen.csv``."""
    run, directory = Path(run), Path(directory)
    for name, value in (
        ("train_episodes", train_episodes),
        ("heldout_episodes", heldout_episodes),
        ("updates", updates),
        ("score_every", score_every),
        ("seeds", seeds),
    ):
        _check_positive(name, value)
    if not variants:
        raise ValueError("no variant to screen; give at least one (e.g. --variants base)")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ, got {names}")
    try:
        base = load_config(run / rundir.CONFIG_FILE)
    except ConfigError as err:
        raise ConfigError(f"{run}: not a PlaNet run directory ({err})") from None
    settings = ScreenSettings(
        str(run.resolve()), train_episodes, heldout_episodes, updates, score_every
    )
    configs = {
        (v.name, s): variant_config(base, v, s) for v in variants for s in range(seeds)
    }  # every variant checked before any is trained
    train_files, heldout_files = split_episodes(run, train_episodes, heldout_episodes)
    _keep_settings(directory, settings)
    replay_dir = directory / REPLAY_DIR
    _link_replay(replay_dir, train_files)
    heldout = [load_episode(p) for p in heldout_files]
    replay_sample = [load_episode(p) for p in _spread(train_files, heldout_episodes)]
    results = directory / RESULTS_DIR
    results.mkdir(parents=True, exist_ok=True)
    for variant in variants:
        for seed in range(seeds):
            path = results / f"{variant.name}__seed{seed}.json"
            if path.exists():
                done = json.loads(path.read_text())
                if done.get("overrides") != variant.overrides:
                    raise ValueError(
                        f"{directory} holds variant {variant.name!r} with overrides "
                        f"{done.get('overrides')!r}, not {variant.overrides!r}; give this one "
                        "another name"
                    )
                log(f"screen: {variant.name} seed {seed} done, skipped")
                continue
            log(f"screen: {variant.name} seed {seed}: {updates} updates on {run.name}")
            record = screen_one(
                configs[(variant.name, seed)],
                replay_dir,
                heldout,
                replay_sample,
                settings,
                device=device,
                log=log,
            )
            record.update(
                variant=variant.name,
                overrides=variant.overrides,
                cpu=cpu_model(),
                commit=code_version(),
                settings=asdict(settings),
            )
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return write_screen_report(directory)


def _keep_settings(directory: Path, settings: ScreenSettings) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SETTINGS_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        differ = {k: (saved.get(k), v) for k, v in asdict(settings).items() if saved.get(k) != v}
        if differ:
            lines = ", ".join(f"{k}: saved {a!r} != new {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"{directory} holds a screen with other settings ({lines}); use the same "
                "options or another --dir"
            )
    atomic_write_text(path, json.dumps(asdict(settings), indent=1) + "\n")


def _link_replay(replay_dir: Path, files: list[Path]) -> None:
    """The replay's episode files as symbolic links to the run's (nothing copied)."""
    replay_dir.mkdir(parents=True, exist_ok=True)
    wanted = {f.name: f.resolve() for f in files}
    for entry in replay_dir.iterdir():
        if entry.name not in wanted:
            entry.unlink()
    for name, target in wanted.items():
        link = replay_dir / name
        if not link.is_symlink():
            tmp = replay_dir / f".{name}.link"
            tmp.unlink(missing_ok=True)
            os.symlink(target, tmp)
            os.replace(tmp, link)


def read_results(directory: str | Path) -> list[dict[str, Any]]:
    """The finished (variant, seed) records of a screen directory."""
    results = Path(directory) / RESULTS_DIR
    if not results.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def screen_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: mean held-out and replay MSE over its seeds (95% interval of the
    held-out MSE by rliable's bootstrap with 2+ seeds), the gap, the reward variance, minutes;
    sorted by held-out MSE (best first)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    rows = []
    for name, group in by_variant.items():
        held = stats.mean_interval([r["heldout_mse"] for r in group])
        replay = float(np.mean([r["replay_mse"] for r in group]))
        rows.append(
            {
                "variant": name,
                "overrides": json.dumps(group[0]["overrides"], sort_keys=True),
                "seeds": len(group),
                "heldout_mse": held.point,
                "heldout_lo": held.lo,
                "heldout_hi": held.hi,
                "replay_mse": replay,
                "gap": held.point / replay if replay > 0 else math.inf,
                "heldout_reward_var": float(np.mean([r["heldout_reward_var"] for r in group])),
                "minutes": float(np.mean([r["minutes"] for r in group])),
                "cpu": "; ".join(sorted({r["cpu"] for r in group})),
                "commit": "; ".join(sorted({r["commit"][:7] for r in group})),
            }
        )
    return sorted(rows, key=lambda r: r["heldout_mse"])


def write_screen_report(directory: str | Path) -> list[dict[str, Any]]:
    """``screen.md`` and ``screen.csv`` from the finished records; returns the rows."""
    directory = Path(directory)
    settings = json.loads((directory / SETTINGS_FILE).read_text())
    rows = screen_rows(read_results(directory))
    lines = [
        f"# Screen on {Path(settings['run']).name}",
        "",
        f"A fresh world model per variant and seed, trained for {settings['updates']:,} updates "
        f"on the run's first {settings['train_episodes']} episodes; scored by the open-loop "
        f"reward MSE over the planner's horizon ({settings['context']} context steps) on every "
        f"chunk of the {settings['heldout_episodes']} episodes the run collected next (held "
        "out), and on as many chunks of replay episodes. Best held-out error first; mean over "
        "seeds [95% bootstrap interval with 2+ seeds]. Gap: held-out / replay. Reward variance: "
        "the held-out MSE of predicting the mean reward. `planetrl/suite/screen.py`.",
        "",
        "| variant | overrides | seeds | held-out MSE | replay MSE | gap | reward variance "
        "| minutes | CPU | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        held = stats.Interval(r["heldout_mse"], r["heldout_lo"], r["heldout_hi"], r["seeds"])
        lines.append(
            f"| {r['variant']} | `{r['overrides']}` | {r['seeds']} | {held.fmt(4)} | "
            f"{r['replay_mse']:.4f} | {r['gap']:.1f} | {r['heldout_reward_var']:.4f} | "
            f"{r['minutes']:.1f} | {r['cpu']} | {r['commit']} |"
        )
    atomic_write_text(directory / "screen.md", "\n".join(lines) + "\n")
    atomic_write_text(directory / "screen.csv", csv_text(rows))
    return rows
