"""Task names, the paper's action repeats, and :func:`make_env`, the one factory for pixel envs.

Task names
----------
* ``dmc:<domain>-<task>`` for every task in ``dm_control.suite.ALL_TASKS`` (51 in dm_control
  1.0.50), e.g. ``dmc:cartpole-swingup``, ``dmc:ball_in_cup-catch``, ``dmc:cheetah-run``. Domain
  and task names may contain underscores; the first ``-`` separates them (no DMC domain has one).
* ``gym:<id>`` for any registered Gymnasium environment with a continuous (``Box``) action space
  that can render ``rgb_array`` frames, e.g. ``gym:InvertedPendulum-v5``.

Action repeat
-------------
PlaNet (Hafner et al. 2019, Table/appendix) repeats each action R times: cartpole 8, reacher 4,
cheetah 4, finger 2, ball_in_cup 4, walker 2. Other DMC domains default to R = 2 (the value later
work such as Dreamer uses for every DMC task); Gymnasium envs default to R = 1 (their own control
rate is kept).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

import gymnasium
from dm_control import suite

from planetrl.envs.checks import (
    check_action_repeat,
    check_render,
    check_seed,
    check_size,
)

#: The paper's action repeat per DMC domain.
PAPER_ACTION_REPEAT: dict[str, int] = {
    "cartpole": 8,
    "reacher": 4,
    "cheetah": 4,
    "finger": 2,
    "ball_in_cup": 4,
    "walker": 2,
}
#: Action repeat for DMC domains the paper did not use.
DEFAULT_DMC_ACTION_REPEAT = 2
#: Action repeat for Gymnasium environments.
DEFAULT_GYM_ACTION_REPEAT = 1


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A parsed task name.

    Attributes:
        name: the full task name, e.g. ``"dmc:cheetah-run"`` or ``"gym:InvertedPendulum-v5"``.
        suite: ``"dmc"`` or ``"gym"``.
        domain: DMC domain (``"cheetah"``); for Gymnasium, the environment id.
        task: DMC task (``"run"``); ``None`` for Gymnasium.
    """

    name: str
    suite: Literal["dmc", "gym"]
    domain: str
    task: str | None = None

    @property
    def gym_id(self) -> str:
        """The Gymnasium id (only for ``suite == "gym"``)."""
        if self.suite != "gym":
            raise AttributeError(f"{self.name!r} is not a Gymnasium task")
        return self.domain


def _dmc_tasks() -> dict[str, list[str]]:
    tasks: dict[str, list[str]] = {}
    for domain, task in suite.ALL_TASKS:
        tasks.setdefault(domain, []).append(task)
    return tasks


def list_tasks() -> list[str]:
    """All known DMC task names, ``dmc:<domain>-<task>``, in dm_control's order.

    Gymnasium tasks are open-ended (``gym:<id>`` for any registered id) and not listed.
    """
    return [f"dmc:{domain}-{task}" for domain, task in suite.ALL_TASKS]


def _unknown_task_error(task: str, reason: str) -> ValueError:
    known = list_tasks()
    lines = [f"Unknown task {task!r}: {reason}."]
    # difflib on the full names and on the bare `domain-task` part (for a missing `dmc:` prefix).
    bare = task.split(":", 1)[-1]
    close = difflib.get_close_matches(task, known, n=3, cutoff=0.75)
    close += [
        f"dmc:{m}"
        for m in difflib.get_close_matches(bare, [k[4:] for k in known], n=3, cutoff=0.75)
        if f"dmc:{m}" not in close
    ]
    if close:
        lines.append("Did you mean: " + ", ".join(repr(c) for c in close[:3]) + "?")
    lines.append(
        "Task names are 'dmc:<domain>-<task>' for the DeepMind Control Suite or 'gym:<id>' for "
        "any Gymnasium env with a Box action space that renders rgb_array "
        "(e.g. 'gym:InvertedPendulum-v5'). DMC domains and their tasks:"
    )
    for domain, tasks in _dmc_tasks().items():
        lines.append(f"  {domain}: {', '.join(tasks)}")
    return ValueError("\n".join(lines))


def parse_task(task: str) -> TaskSpec:
    """Parse ``dmc:<domain>-<task>`` or ``gym:<id>`` into a :class:`TaskSpec`.

    DMC names are checked against ``dm_control.suite.ALL_TASKS``. Gymnasium ids are only checked
    syntactically here (``make_env`` reports an id that is not registered).

    Raises:
        ValueError: not a string, no/unknown prefix, or an unknown DMC domain/task. The message
            lists every DMC domain with its tasks and suggests close matches.
    """
    if not isinstance(task, str):
        raise ValueError(f"task must be a string like 'dmc:cheetah-run', got {task!r}")
    prefix, sep, rest = task.partition(":")
    if not sep:
        raise _unknown_task_error(task, "a task name needs a 'dmc:' or 'gym:' prefix")
    if prefix == "gym":
        if not rest:
            raise ValueError("Empty Gymnasium id in 'gym:'; use e.g. 'gym:InvertedPendulum-v5'.")
        return TaskSpec(name=task, suite="gym", domain=rest)
    if prefix != "dmc":
        raise _unknown_task_error(task, f"unknown prefix {prefix!r} (accepted: 'dmc', 'gym')")
    domain, dash, name = rest.partition("-")
    tasks = _dmc_tasks()
    if not dash or not name:
        raise _unknown_task_error(task, "DMC task names have the form 'dmc:<domain>-<task>'")
    if domain not in tasks:
        raise _unknown_task_error(task, f"no DMC domain {domain!r}")
    if name not in tasks[domain]:
        raise _unknown_task_error(
            task, f"domain {domain!r} has no task {name!r} (its tasks: {', '.join(tasks[domain])})"
        )
    return TaskSpec(name=task, suite="dmc", domain=domain, task=name)


def default_action_repeat(task: str | TaskSpec) -> int:
    """The action repeat R used when ``make_env(action_repeat=None)``.

    The paper's values for its six domains (cartpole 8, reacher 4, cheetah 4, finger 2,
    ball_in_cup 4, walker 2), 2 for other DMC domains, 1 for Gymnasium envs.
    """
    spec = task if isinstance(task, TaskSpec) else parse_task(task)
    if spec.suite == "gym":
        return DEFAULT_GYM_ACTION_REPEAT
    return PAPER_ACTION_REPEAT.get(spec.domain, DEFAULT_DMC_ACTION_REPEAT)


def make_env(
    task: str,
    *,
    action_repeat: int | None = None,
    seed: int | None = None,
    render: str = "paper",
    size: int = 64,
) -> gymnasium.Env:
    """Make a pixel environment: ``uint8 (size, size, 3)`` observations, actions in ``[-1, 1]``.

    The returned env is ``ValidateAction(ActionRepeat(base, R))``:

    * ``base`` is a :class:`planetrl.envs.dmc.DMCEnv` or a
      :class:`planetrl.envs.gym.GymPixelEnv`;
    * ``ActionRepeat`` applies each agent action R times and returns the sum of the R rewards;
      ``info["env_steps"]`` is the number of simulator steps taken (R, fewer at an episode end);
    * ``ValidateAction`` rejects actions of the wrong shape or with NaN/inf values (ValueError)
      and clips the others to ``[-1, 1]``.

    Args:
        task: ``dmc:<domain>-<task>`` or ``gym:<id>`` (see :func:`parse_task`).
        action_repeat: R; ``None`` for :func:`default_action_repeat`.
        seed: seed of the first ``reset()`` when that is called without a seed. ``reset(seed=s)``
            always reseeds, and the same ``s`` gives the same first frame.
        render: ``"paper"`` (dm_control's default look, as in the paper) or ``"fast"`` (no
            shadows, reflections or multisampling, roughly 10× faster in software rendering; see
            :class:`planetrl.envs.dmc.DMCEnv`).
        size: side of the square images.

    Raises:
        ValueError: unknown task, unregistered Gymnasium id, a Gymnasium env without
            ``rgb_array`` rendering or with a non-``Box`` action space, bad ``action_repeat``,
            ``render``, ``size`` or ``seed``.
        ImportError: a Gymnasium env whose dependencies (e.g. pygame, Box2D) are missing.
    """
    spec = parse_task(task)
    repeat = default_action_repeat(spec) if action_repeat is None else action_repeat
    repeat = check_action_repeat(repeat)
    render = check_render(render)
    size = check_size(size)
    seed = check_seed(seed)

    from planetrl.envs.wrappers import ActionRepeat, ValidateAction  # noqa: PLC0415

    base: gymnasium.Env
    if spec.suite == "dmc":
        from planetrl.envs.dmc import DMCEnv  # noqa: PLC0415

        assert spec.task is not None
        base = DMCEnv(spec.domain, spec.task, seed=seed, render=render, size=size)
    else:
        from planetrl.envs.gym import make_gym_pixel_env  # noqa: PLC0415

        base = make_gym_pixel_env(spec.gym_id, seed=seed, render=render, size=size)
    return ValidateAction(ActionRepeat(base, repeat))
