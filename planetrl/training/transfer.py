"""Transfer: start a PlaNet run's world model from another run's (``init_from``), keep some parts
and freeze some (``init_keep``, ``init_freeze``).

In the Control Suite the tasks of one domain share its physics and differ in their reward
(:data:`planetrl.envs.dmc.SIBLING_TASKS`). The encoder, the transition model p(s_t | s_{t-1},
a_{t-1}) and the decoder p(o_t | s_t) of a walker-walk run describe the walker whatever it is
asked to do, so a walker-run run can start from them and learn only what is new: the reward
p(r_t | s_t) of its task, and the states the new task visits. When the source learned the new
task's reward too (``sibling_rewards``: a reward head per sibling task, fitted on rewards
relabelled from the same physics), that head is taken as well, and the planner acts well from
the first episode (``planetrl eval --task`` measures it with zero env steps).

What is taken is the model's parameters at the source's last checkpoint. The optimiser starts
fresh (Adam's moments belong to the source's loss), as do the counters, the replay (this run
collects its own episodes, S random ones first, as PlaNet does) and every random stream. The
source run's identity and age are written to ``init.json`` in the new run directory, so that a
curve can say what it started from. Nothing here changes a run without ``init_from``: PlaNet.

Not in the paper, which trains every task from scratch (and one agent on all six, section 5);
the transfer of a learned model to new rewards is the motivation of model-based RL that the
paper names in its introduction, and what Plan2Explore (Sekar et al. 2020) measures zero-shot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from planetrl.atomic import atomic_write_json
from planetrl.config import Config, ConfigError, load_config, to_dict
from planetrl.models import WorldModel
from planetrl.run import directory as rundir
from planetrl.run.checkpoint import CheckpointError, load_checkpoint

INIT_FILE = "init.json"
"""Where a run started with ``init_from`` records its source (in its run directory)."""


def part_modules(world_model: WorldModel, part: str) -> dict[str, nn.Module]:
    """The modules of ``part`` (a name of :data:`planetrl.config.WORLD_MODEL_PARTS`) by their
    name in the world model's ``state_dict``: ``reward`` is every reward head (the task's and
    each sibling's in ``task_rewards``)."""
    if part == "reward":
        heads: dict[str, nn.Module] = {"reward": world_model.reward}
        heads.update({f"task_rewards.{t}": h for t, h in world_model.task_rewards.items()})
        return heads
    module = getattr(world_model, part, None)
    return {part: module} if isinstance(module, nn.Module) else {}


def reward_head_of(task: str, source_task: str, state: dict[str, torch.Tensor]) -> str | None:
    """The name of the source model's reward head for ``task`` in its ``state`` dict: ``reward``
    for the source's own task, ``task_rewards.<task>`` for a sibling it learned, or None."""
    if task == source_task:
        return "reward"
    head = f"task_rewards.{task}"
    return head if any(k.startswith(head + ".") for k in state) else None


def check_model_match(config: Config, source: Config, source_dir: Path) -> None:
    """The source's world-model settings must be this run's: a :class:`ConfigError` naming every
    field that differs."""
    mine, theirs = to_dict(config)["model"], to_dict(source)["model"]
    differ = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if differ:
        lines = ", ".join(
            f"model.{k}: source {a!r} != this run {b!r}" for k, (a, b) in differ.items()
        )
        raise ConfigError(
            f"init_from {source_dir}: the source's world model differs from this run's ({lines}); "
            f"use the source's settings (its preset was {source.preset!r})"
        )


def _copy(target: nn.Module, state: dict[str, torch.Tensor], prefix: str, what: str) -> None:
    """Load the entries of ``state`` under ``prefix`` into ``target``; a missing entry or another
    shape is a :class:`ConfigError` naming it."""
    own = target.state_dict()
    taken = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for key, value in own.items():
        if key not in taken:
            raise ConfigError(f"{what}: the source checkpoint has no {prefix}{key}")
        if taken[key].shape != value.shape:
            raise ConfigError(
                f"{what}: {prefix}{key} has shape {tuple(taken[key].shape)} in the source and "
                f"{tuple(value.shape)} here (another action size? the transition model takes the "
                "action a_{t-1})"
            )
    target.load_state_dict({k: taken[k] for k in own})


def initialise(world_model: WorldModel, config: Config, logdir: Path) -> dict[str, Any]:
    """Load the kept parts of ``config.init_from``'s world model into ``world_model`` (this
    run's, freshly built) and write ``init.json`` in ``logdir``; returns what it wrote:
    the source (directory, task, episodes, env steps, updates) and, per kept part, where each
    of its modules came from (a reward head the source lacks stays fresh: None)."""
    source_dir = Path(config.init_from)
    if source_dir.resolve() == Path(logdir).resolve():
        raise ConfigError(f"init_from is this run's own directory ({source_dir}); name another run")
    config_path = source_dir / rundir.CONFIG_FILE
    try:
        source = load_config(config_path)
    except ConfigError as err:
        raise ConfigError(f"init_from {source_dir}: not a PlaNet run directory ({err})") from None
    check_model_match(config, source, source_dir)
    try:
        payload = load_checkpoint(source_dir / rundir.CHECKPOINT_FILE)
    except CheckpointError as err:
        raise ConfigError(f"init_from {source_dir}: {err} (has the source run started?)") from None
    state = payload["model"]
    keep, frozen = config.init_parts()
    taken: dict[str, dict[str, str | None]] = {}
    for part in keep:
        origin: dict[str, str | None] = {}
        for name, module in part_modules(world_model, part).items():
            if part != "reward":
                _copy(module, state, f"{name}.", f"init_from {source_dir}")
                origin[name] = name
                continue
            task = config.task if name == "reward" else name.removeprefix("task_rewards.")
            head = reward_head_of(task, source.task, state)
            if head is not None:
                _copy(module, state, f"{head}.", f"init_from {source_dir}")
            origin[name] = head
        taken[part] = origin
    fresh = [n for p in frozen for n, origin in taken.get(p, {}).items() if origin is None]
    if fresh:
        raise ConfigError(
            f"init_freeze would freeze {', '.join(fresh)} at its random start: the source "
            f"{source_dir} ({source.task}) has no reward head for it; leave reward out of "
            "init_freeze, or start from a run that learned that head (sibling_rewards)"
        )
    record = {
        "init_from": str(source_dir.resolve()),
        "source_task": source.task,
        "source_seed": source.seed,
        "source_preset": source.preset,
        "source_episodes": payload.get("episodes"),
        "source_env_steps": payload.get("env_steps"),
        "source_updates": payload.get("updates"),
        "kept": taken,
        "frozen": list(frozen),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(Path(logdir) / INIT_FILE, record)
    return record


def freeze(world_model: WorldModel, config: Config) -> list[str]:
    """Set ``requires_grad = False`` on the parts ``config.init_freeze`` names (none without
    ``init_from``); returns their names. The optimiser is then built over the parameters that
    still require gradients, so a frozen part never moves."""
    if not config.init_from:
        return []
    _, frozen = config.init_parts()
    for part in frozen:
        for module in part_modules(world_model, part).values():
            module.requires_grad_(False)
    return list(frozen)


def describe(record: dict[str, Any]) -> str:
    """One line on what a run took from its source."""
    kept = []
    for part, origin in record["kept"].items():
        if part == "reward":
            for name, head in origin.items():
                kept.append(f"{name} <- {head}" if head else f"{name} (fresh: no source head)")
        else:
            kept.append(part)
    frozen = f"; frozen: {', '.join(record['frozen'])}" if record["frozen"] else ""
    return (
        f"init from {record['init_from']} ({record['source_task']}, "
        f"{record['source_env_steps']} env steps): {', '.join(kept)}{frozen}"
    )
