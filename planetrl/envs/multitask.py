"""One environment that is several tasks: PlaNet's "one agent, all tasks" experiment (paper
section 5: a single agent trained on the six tasks, not told which one it faces, inferring it
from the images).

A multi-task name lists its tasks: ``multi:dmc:cartpole-swingup,dmc:reacher-easy``. The env
(:class:`MultiTaskEnv`) holds one env per task and, at each ``reset(seed=s)``, switches to task
``s mod n`` (:func:`task_for_seed`): a run's consecutive episode seeds take the tasks in turn,
one episode of each, as the official code collects one episode per task (google-research/planet
``scripts/configs.py``, ``_tasks``). Its action space is the largest task's, ``[-1, 1]^A_max``;
a task with fewer action dimensions ignores the extra ones (the official ``PadActions``). Each
task keeps its own action repeat (the paper's per domain, or ``action_repeat`` for all), so
``info["env_steps"]`` counts each step's simulator steps and every DMC episode is 1,000 env
steps, whatever its task. ``info["task"]`` names the task of the step; the agent never sees it.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium
import numpy as np
from gymnasium import spaces

PREFIX = "multi:"


def is_multitask(task: str) -> bool:
    return isinstance(task, str) and task.startswith(PREFIX)


def split_tasks(task: str) -> tuple[str, ...]:
    """The task names of a ``multi:<task>,<task>[,...]`` name: two or more, no repeats (each
    name is checked by :func:`planetrl.envs.parse_task`, which calls this); a ValueError says
    what is accepted."""
    if not is_multitask(task):
        raise ValueError(f"{task!r} is not a multi-task name ('multi:<task>,<task>,...')")
    tasks = tuple(t.strip() for t in task[len(PREFIX) :].split(","))
    if len(tasks) < 2 or not all(tasks):
        raise ValueError(
            f"{task!r}: a multi-task name lists two or more tasks, comma-separated, e.g. "
            "'multi:dmc:cartpole-swingup,dmc:reacher-easy'"
        )
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"{task!r} names a task twice")
    return tasks


def task_for_seed(tasks: tuple[str, ...], seed: int) -> str:
    """The task of the episode reset with ``seed``: ``tasks[seed mod n]``."""
    return tasks[int(seed) % len(tasks)]


def returns_by_task(
    tasks: tuple[str, ...], seed: int, returns: list[float] | tuple[float, ...]
) -> dict[str, list[float]]:
    """Episode returns grouped by task, episode i having been reset with ``seed + i`` (an
    evaluation's episodes), in the order of ``tasks``."""
    grouped: dict[str, list[float]] = {t: [] for t in tasks}
    for i, value in enumerate(returns):
        grouped[task_for_seed(tasks, seed + i)].append(float(value))
    return {t: v for t, v in grouped.items() if v}


class MultiTaskEnv(gymnasium.Env):
    """Several tasks behind one env (module docstring).

    Args:
        envs: the env of each task (made by :func:`planetrl.envs.make_env`, each with its own
            action repeat), in the order of the multi-task name; closed with this env.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, envs: dict[str, gymnasium.Env]) -> None:
        self.envs = dict(envs)
        self.tasks = tuple(self.envs)
        shapes = {t: e.observation_space.shape for t, e in self.envs.items()}
        if len(set(shapes.values())) != 1:
            self.close()
            raise ValueError(f"the tasks' observations differ in shape: {shapes}")
        self.sizes = {t: int(e.action_space.shape[0]) for t, e in self.envs.items()}  # type: ignore[index]
        width = max(self.sizes.values())
        self.action_space = spaces.Box(-1.0, 1.0, (width,), np.float32)
        self.observation_space = self.envs[self.tasks[0]].observation_space
        self.task = self.tasks[0]
        self.render_mode = "rgb_array"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.task = task_for_seed(self.tasks, seed)
        obs, info = self.envs[self.task].reset(seed=seed, options=options)
        return obs, {**info, "task": self.task}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float32)
        obs, reward, terminated, truncated, info = self.envs[self.task].step(
            action[..., : self.sizes[self.task]]
        )
        return obs, float(reward), terminated, truncated, {**info, "task": self.task}

    def render(self) -> np.ndarray:  # type: ignore[override]
        return cast(np.ndarray, self.envs[self.task].render())

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()

    def __repr__(self) -> str:
        return f"MultiTaskEnv({', '.join(self.tasks)})"
