"""PlaNet as an :class:`~planetrl.agents.AgentKind`: what the command line, the suites, the
attribution and the comparison need of it, from its config (:mod:`planetrl.config`) and its
training loop (:mod:`planetrl.training.loop`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from planetrl import config as planet_config
from planetrl import speed
from planetrl.agents import AgentKind, Evaluation
from planetrl.config import Config, PlannerConfig
from planetrl.envs.multitask import is_multitask, returns_by_task, split_tasks
from planetrl.threads import ThreadGovernor
from planetrl.training import loop, update


class PlaNetKind(AgentKind):
    name = "planet"
    title = "PlaNet"
    presets = planet_config.PRESETS
    config_class = Config
    description = (
        "Train PlaNet (Algorithm 1) or resume the run in --logdir. Extra flags: "
        "--allow-config-change (resume with changed hyperparameters), --no-progress "
        "(no progress bar)."
    )
    config_module: ClassVar[Any] = planet_config
    non_finite_error = update.NonFiniteLossError

    def budget(
        self,
        config: Any,
        *,
        env_steps: int,
        episode_env_steps: int,
        eval_every_env_steps: int,
        eval_episodes: int,
    ) -> Config:
        """Algorithm 1 per episode: ``ceil(env_steps / episode)`` episodes capped at
        ``env_steps``, an evaluation every ``round(eval_every_env_steps / episode)`` episodes,
        no wall-clock limit."""
        config.train.max_env_steps = env_steps
        config.train.max_episodes = max(1, -(-env_steps // episode_env_steps))
        config.train.max_minutes = 0.0
        config.eval.every = max(1, round(eval_every_env_steps / episode_env_steps))
        config.eval.episodes = eval_episodes
        return config.validate()

    def train(
        self, config: Any, *, allow_config_change: bool = False, progress: bool = True
    ) -> dict[str, Any]:
        return loop.train(config, allow_config_change=allow_config_change, progress=progress)

    def counts(self, summary: dict[str, Any]) -> str:
        return (
            f"{summary['episodes']} episodes, {summary['env_steps']} env steps, "
            f"{summary['updates']} updates"
        )

    def evaluate(
        self,
        logdir: str | Path,
        *,
        episodes: int,
        seed: int,
        device: str,
        parallel: bool,
        record: bool,
        threads: int | None,
        on_step: Callable[[int], None] | None = None,
        log: Callable[[str], None] = print,
        task: str | None = None,
    ) -> Evaluation:
        """Batched CEM on ``episodes`` parallel envs (:func:`planetrl.training.loop.evaluate`),
        the run's fast paths (said first). ``task``: another task, planned for with the world
        model's reward head for it, in that task's env (zero env steps of it in training)."""
        config, world_model = loop.load_run(logdir, device=device)
        reward_task = None
        if task is not None and task != config.task:
            world_model.planning_reward_for(task)  # a ValueError naming the heads it has
            reward_task = task
            config = dataclasses.replace(config, task=task)
        dev = next(world_model.parameters()).device
        fast = speed.resolve(config.speed, dev)
        log(fast.describe())
        governor = ThreadGovernor(config.threads if threads is None else threads)
        governor.adjust()
        log(f"  {'threads':<13} {governor.threads:<3}  ({governor.reason})")
        planner = loop.build_planner(
            config, torch.Generator(device=dev).manual_seed(seed), dev, fast
        )
        returns, frames, timing = loop.evaluate(
            config,
            world_model,
            episodes=episodes,
            seed=seed,
            planner=planner,
            parallel=parallel,
            record=record,
            on_step=(lambda step, _: on_step(step)) if on_step else None,
            reward_task=reward_task,
        )
        detail = f"{timing['eval/ms_per_plan']:.0f} ms per plan"
        if is_multitask(config.task):
            by_task = returns_by_task(split_tasks(config.task), seed, list(returns))
            detail += "; " + ", ".join(
                f"{t}: {np.mean(v):.1f} ({len(v)})" for t, v in by_task.items()
            )
        return Evaluation(config.task, list(returns), frames, detail)

    def load_models(self, run_dir: Path, device: str = "cpu"):
        if not (Path(run_dir) / "checkpoint.pt").exists():
            return None
        return loop.load_run(run_dir, device=device)

    def parameters(self, loaded) -> list[tuple[str, int]]:
        config, wm = loaded
        transition = (
            "transition (RSSM)"
            if config.model.transition == "rssm"
            else f"transition ({config.model.transition})"
        )
        return [
            ("encoder", _count(wm.encoder)),
            (transition, _count(wm.transition)),
            ("decoder", _count(wm.decoder)),
            ("reward model", _count(wm.reward)),
            ("planner (CEM)", 0),
        ]

    def stages(self, loaded, episodes: list[tuple[int, int]]) -> list[tuple[str, int]]:
        first = loaded[0].train.seed_episodes
        return [
            ("random seed episodes", sum(s for i, s in episodes if i < first)),
            ("planner episodes (exploration noise)", sum(s for i, s in episodes if i >= first)),
        ]

    def open_loop(self, loaded, data: dict[str, np.ndarray], context: int, seed: int):
        """RSSM: filter ``context`` frames, imagine the rest under the true actions (prior
        samples from a stream seeded with ``seed``); decoder and reward means
        (:meth:`~planetrl.models.WorldModel.open_loop`)."""
        _, wm = loaded
        device = next(wm.parameters()).device
        image = wm.preprocess(
            torch.as_tensor(data["image"]).to(device),
            torch.Generator(device=device).manual_seed(seed),
        )
        action = torch.as_tensor(data["action"], device=device)
        frames, reward = wm.open_loop_rewards_and_frames(image, action, context, seed)
        return [("RSSM imagined (prior samples)", frames, reward)]

    def planner(self, config: Any) -> PlannerConfig:
        return config.planner


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


PLANET = PlaNetKind()
