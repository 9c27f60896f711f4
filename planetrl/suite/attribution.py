"""Why a run falls short: the planner or the model.

(a) **The planner's ceiling**: the same CEM (H, I, J, K, action repeat R) with the true simulator
as its model. For every candidate sequence a_{t:t+H} the physics state is restored and the
sequence is executed, each action R times, summing the task's rewards (no images, no model). Its
return is what the planner could reach with a perfect model; a run far below it is held back by
its world model, a run near it by the planner's settings.

(b) **The model's open-loop reward error** over the planning horizon on held-out episodes: fresh
episodes of the trained agent (without exploration noise, never in its replay), cut into chunks of
``context + H`` steps; filter ``context`` steps, imagine H steps under the true actions, compare
the reward model's means with the true rewards (mean squared error per step). This is the error
the planner's returns are built on.

Both are written to ``<run>/attribution.json`` and shown in the suite's report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl.agent import Agent
from planetrl.agents import kind
from planetrl.atomic import atomic_write_text
from planetrl.config import Config, PlannerConfig
from planetrl.driver import make_pool, resolve_action_repeat, run_episodes
from planetrl.envs.multitask import is_multitask
from planetrl.planning.cem import cem_loop
from planetrl.suite.layout import ATTRIBUTION_FILE, ceiling_path, is_finished
from planetrl.suite.spec import run_budget, run_config
from planetrl.training.loop import build_planner, eval_seed, load_run
from planetrl.training.open_loop import open_loop_reward_error_on


class SimulatorModel:
    """A DMC task's physics as the planner's model (CEM scores candidates on it).

    Args:
        task: ``dmc:<domain>-<task>`` (Gymnasium tasks have no state to restore in general).
        seed: the task's random state (initial states of its episodes).
        action_repeat: R; each planned action is applied R times, rewards summed.
    """

    def __init__(self, task: str, seed: int, action_repeat: int) -> None:
        from dm_control import suite  # noqa: I001

        from planetrl.envs import parse_task  # first: it chooses MuJoCo's GL backend

        spec = parse_task(task)
        if spec.suite != "dmc":
            raise ValueError(
                f"the simulator planner needs a DMC task (its physics state can be "
                f"restored for every candidate); got {task!r}"
            )
        self.env = suite.load(spec.domain, spec.task, task_kwargs={"random": seed})
        self.physics, self.task = self.env.physics, self.env.task
        self.repeat = int(action_repeat)
        self.n_sub_steps = max(1, round(self.env.control_timestep() / self.physics.timestep()))
        action_spec = self.env.action_spec()
        self.low, self.high = action_spec.minimum, action_spec.maximum
        self.action_size = int(action_spec.shape[0])

    def _scale(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> the task's action bounds (planetrl's convention; DMC's are mostly [-1, 1])."""
        return self.low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)

    def reset(self) -> None:
        self.env.reset()

    def step(self, action: np.ndarray) -> tuple[float, bool]:
        """Execute ``action`` R times in the real episode: (summed reward, episode over)."""
        total, last = 0.0, False
        for _ in range(self.repeat):
            time_step = self.env.step(self._scale(np.asarray(action, dtype=np.float64)))
            total += float(time_step.reward or 0.0)
            if time_step.last():
                last = True
                break
        return total, last

    def rollout_return(self, actions: np.ndarray) -> float:
        """Return of the sequence ``actions`` (H, A) from the current state, each action R times;
        the physics state is put back afterwards."""
        state = self.physics.get_state().copy()
        total = 0.0
        try:
            for action in actions:
                action = self._scale(action.astype(np.float64))
                for _ in range(self.repeat):
                    self.task.before_step(action, self.physics)
                    self.physics.step(self.n_sub_steps)
                    self.task.after_step(self.physics)
                    total += float(self.task.get_reward(self.physics) or 0.0)
        finally:
            with self.physics.reset_context():
                self.physics.set_state(state)
        return total

    def score(self, candidates: torch.Tensor) -> torch.Tensor:
        """CEM's score: candidates (1, N, H, A) -> returns (1, N)."""
        seqs = candidates.detach().cpu().numpy()
        returns = [[self.rollout_return(seq) for seq in env_seqs] for env_seqs in seqs]
        return torch.tensor(returns, dtype=candidates.dtype, device=candidates.device)


def planner_ceiling(
    task: str,
    planner: PlannerConfig,
    *,
    episodes: int,
    seed: int,
    action_repeat: int,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Returns of ``episodes`` episodes planned by CEM with the true simulator as the model."""

    returns, seconds = [], []
    generator = torch.Generator().manual_seed(seed)
    for episode in range(episodes):
        model = SimulatorModel(task, seed + episode, action_repeat)
        model.reset()
        start, total, step, last = time.time(), 0.0, 0, False
        while not last:
            plan = cem_loop(
                model.score,
                num_envs=1,
                horizon=planner.horizon,
                action_size=model.action_size,
                iterations=planner.iterations,
                candidates=planner.candidates,
                top_k=planner.top_k,
                low=-1.0,
                high=1.0,
                dtype=torch.float64,
                device=torch.device("cpu"),
                generator=generator,
            )
            reward, last = model.step(plan.action[0].numpy())
            total += reward
            step += 1
            if on_step is not None:
                on_step(episode, step)
        returns.append(total)
        seconds.append(time.time() - start)
    return {
        "returns": returns,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "seconds_per_episode": float(np.mean(seconds)),
        "planner": {
            "H": planner.horizon,
            "I": planner.iterations,
            "J": planner.candidates,
            "K": planner.top_k,
            "R": action_repeat,
        },
    }


@torch.no_grad()
def heldout_open_loop_error(
    config: Config, world_model, *, episodes: int, seed: int, context: int = 5
) -> dict[str, Any]:
    """Open-loop reward error over the planner's horizon H on fresh episodes of the trained agent
    (no exploration noise), chunks of ``context + H`` steps every H steps."""

    device = next(world_model.parameters()).device
    H = config.planner.horizon
    planner = build_planner(config, torch.Generator(device=device).manual_seed(seed), device)
    agent = Agent(world_model, planner, generator=torch.Generator().manual_seed(seed))
    with make_pool(config, episodes, config.eval.parallel) as pool:
        out = run_episodes(
            pool, agent.act, [seed + i for i in range(episodes)], reset=agent.reset, keep=True
        )
    assert out.episodes is not None  # keep=True
    measured = open_loop_reward_error_on(
        world_model, out.episodes, horizon=H, context=context, seed=seed
    )
    return {
        **measured,
        "episode_returns": out.returns,
    }


def attribute_run(
    run_dir: str | Path,
    *,
    episodes: int = 3,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """(b) for a trained run, written atomically to ``<run>/attribution.json``."""

    run_dir = Path(run_dir)
    config, world_model = load_run(run_dir, device=device)
    log(f"{run_dir.name}: open-loop reward error on {episodes} held-out episodes")
    heldout = heldout_open_loop_error(
        config, world_model, episodes=episodes, seed=eval_seed(config) + 500
    )  # not the eval episodes
    record = {"heldout_open_loop": heldout, "episodes": episodes}
    atomic_write_text(run_dir / ATTRIBUTION_FILE, json.dumps(record, indent=1) + "\n")
    return record


def attribute_suite(
    suite,
    directory: str | Path,
    *,
    episodes: int = 3,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> None:
    """For every task of ``suite``: the planner ceiling (once per task and planner); for every
    finished run: the held-out open-loop reward error. Skips what is already written."""

    directory = Path(directory)
    planned = [
        r for r in suite.runs if kind(r.agent).planner(run_config(suite, r, directory)) is not None
    ]  # agents that plan with CEM
    for task in suite.tasks():
        run = next((r for r in planned if r.task == task), None)
        if run is None or is_multitask(task):
            # The ceiling is a CEM planner's on one task's physics (a multi-task run's tasks
            # have theirs from their single-task runs).
            continue
        config = run_config(suite, run, directory)
        p = kind(run.agent).planner(config)
        assert p is not None  # a run of planned
        path = ceiling_path(directory, task, p.horizon, p.iterations, p.candidates, p.top_k)
        if not path.exists():
            log(f"{task}: planner ceiling, {episodes} episodes with the simulator as the model")
            record = planner_ceiling(
                task, p, episodes=episodes, seed=10_000, action_repeat=resolve_action_repeat(config)
            )
            atomic_write_text(path, json.dumps(record, indent=1) + "\n")
            log(f"{task}: planner ceiling {record['mean']:.0f} ± {record['std']:.0f}")
    for run in planned:
        run_dir = Path(run_config(suite, run, directory).logdir)
        if (
            is_finished(run_dir, run_budget(suite, run))
            and not (run_dir / ATTRIBUTION_FILE).exists()
        ):
            attribute_run(run_dir, episodes=episodes, device=device, log=log)
