"""Task names, the paper's action repeats, and :func:`make_env`, the one factory for pixel envs.

Task names
----------
* ``dmc:<domain>-<task>`` for every task in ``dm_control.suite.ALL_TASKS`` (51 in dm_control
  1.0.50), e.g. ``dmc:cartpole-swingup``, ``dmc:ball_in_cup-catch``, ``dmc:cheetah-run``. Domain
  and task names may contain underscores; the first ``-`` separates them (no DMC domain has one).
* ``gym:<id>`` for any registered Gymnasium environment with a continuous (``Box``) action space
  that can render ``rgb_array`` frames, e.g. ``gym:InvertedPendulum-v5``.
* ``gym:<module>:<id>``: the same, after importing ``<module>`` (which registers ``<id>``), as
  ``gymnasium.make("<module>:<id>")`` does, e.g. ``gym:gymnasium.envs.mujoco:Hopper-v5`` or
  ``gym:my_envs:MyEnv-v0``. This is how a custom environment reaches other processes (the
  :class:`~planetrl.envs.EnvPool` workers, a suite's runs): each imports the module itself, so
  the module must be importable there (installed, or on ``PYTHONPATH``).
* ``fn:<label>`` names an environment built by a factory given from Python
  (``make_env("fn:mine", env_fn=...)``, ``Trainer(config, env_fn=...)``); it cannot be made
  without the factory.

Keyword arguments for the environment (``make_env(env_kwargs=...)``, ``--env-kwargs`` on the
command line) go to ``gymnasium.make(id, **env_kwargs)`` for ``gym:`` tasks and to the DMC task
function (``suite.load(..., task_kwargs=env_kwargs)``, e.g. ``{"time_limit": 5}``) for ``dmc:``
tasks.

Action repeat
-------------
PlaNet (Hafner et al. 2019, Table/appendix) repeats each action R times: cartpole 8, reacher 4,
cheetah 4, finger 2, ball_in_cup 4, walker 2. Other DMC domains default to R = 2 (the value later
work such as Dreamer uses for every DMC task); Gymnasium envs and factories default to R = 1 (their
own control rate is kept).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from typing import Any, Callable, Literal

import gymnasium
from dm_control import suite

from planetrl.envs.checks import (
    check_action_repeat,
    check_env_kwargs,
    check_render,
    check_seed,
    check_size,
)
from planetrl.envs.multitask import MultiTaskEnv, split_tasks
from planetrl.envs.wrappers import ActionRepeat, ValidateAction

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
        suite: ``"dmc"``, ``"gym"``, ``"fn"`` (a factory given from Python) or ``"multi"``
            (several tasks in turn, :mod:`planetrl.envs.multitask`).
        domain: DMC domain (``"cheetah"``); for Gymnasium, the environment id; for ``fn``, the
            label.
        task: DMC task (``"run"``); ``None`` otherwise.
        module: for ``gym:<module>:<id>``, the module imported before ``gymnasium.make``.
    """

    name: str
    suite: Literal["dmc", "gym", "fn", "multi"]
    domain: str
    task: str | None = None
    module: str | None = None

    @property
    def gym_id(self) -> str:
        """The Gymnasium id (only for ``suite == "gym"``)."""
        if self.suite != "gym":
            raise AttributeError(f"{self.name!r} is not a Gymnasium task")
        return self.domain

    def import_module(self) -> None:
        """Import :attr:`module` (which registers the Gymnasium id), if any.

        Raises:
            ValueError: the module cannot be imported; the message says where it must be found.
        """
        if self.module is None:
            return
        try:
            importlib.import_module(self.module)
        except ImportError as error:
            raise ValueError(
                f"{self.name}: the module {self.module!r} that should register {self.domain!r} "
                f"could not be imported ({type(error).__name__}: {error}). It must be importable "
                "in every process that makes the env (installed, or on PYTHONPATH; env worker "
                "processes import it themselves)."
            ) from error


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
        "Task names are 'dmc:<domain>-<task>' for the DeepMind Control Suite, 'gym:<id>' or "
        "'gym:<module>:<id>' (the module is imported first; it registers <id>) for any Gymnasium "
        "env with a Box action space that renders rgb_array (e.g. 'gym:InvertedPendulum-v5'), "
        "or 'fn:<label>' for an env factory given from Python (env_fn=...). DMC domains and "
        "their tasks:"
    )
    for domain, tasks in _dmc_tasks().items():
        lines.append(f"  {domain}: {', '.join(tasks)}")
    return ValueError("\n".join(lines))


_MODULE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def parse_task(task: str) -> TaskSpec:
    """Parse ``dmc:<domain>-<task>``, ``gym:<id>``, ``gym:<module>:<id>`` or ``fn:<label>``
    into a :class:`TaskSpec`.

    DMC names are checked against ``dm_control.suite.ALL_TASKS``. Gymnasium ids are only checked
    syntactically here (``make_env`` imports the module and reports an id that is not
    registered). ``gym:<module>:<id>`` splits at the last ``:`` as Gymnasium's
    ``"module:id"`` form does (a Gymnasium id has no ``:``).

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
        module, colon, gym_id = rest.rpartition(":")
        if not gym_id:
            raise ValueError(
                f"Empty Gymnasium id in {task!r}; use 'gym:<id>' (e.g. 'gym:InvertedPendulum-v5') "
                "or 'gym:<module>:<id>' (e.g. 'gym:gymnasium.envs.mujoco:Hopper-v5')."
            )
        if colon and not _MODULE.match(module):
            raise ValueError(
                f"{task!r}: {module!r} is not a Python module name; 'gym:<module>:<id>' imports "
                "<module> (dotted, e.g. 'my_package.envs') before making <id>."
            )
        return TaskSpec(name=task, suite="gym", domain=gym_id, module=module or None)
    if prefix == "multi":
        for name in split_tasks(task):
            if parse_task(name).suite not in ("dmc", "gym"):
                raise ValueError(
                    f"{task!r}: {name!r} cannot be one of its tasks (dmc: and gym: tasks only)"
                )
        return TaskSpec(name=task, suite="multi", domain=rest)
    if prefix == "fn":
        if not rest:
            raise ValueError("Empty label in 'fn:'; use e.g. 'fn:my-env' with env_fn=...")
        return TaskSpec(name=task, suite="fn", domain=rest)
    if prefix != "dmc":
        raise _unknown_task_error(
            task, f"unknown prefix {prefix!r} (accepted: 'dmc', 'gym', and 'fn' with env_fn)"
        )
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


def check_task(task: str) -> TaskSpec:
    """:func:`parse_task`, and for ``gym:`` tasks import the module (if named) and check that the
    id is registered: the clear errors of :func:`make_env` without making an env.

    Raises:
        ValueError: as :func:`parse_task`; an unimportable module; an unregistered id.
    """
    spec = parse_task(task)
    if spec.suite == "gym":
        spec.import_module()
        try:
            gymnasium.spec(spec.gym_id)
        except gymnasium.error.Error as error:
            where = f" after importing {spec.module!r}" if spec.module else ""
            raise ValueError(
                f"{task}: {spec.gym_id!r} is not a registered Gymnasium environment{where} "
                f"({error}). Use 'gym:<id>' with an id from gymnasium.registry, e.g. "
                "'gym:InvertedPendulum-v5', or 'gym:<module>:<id>' for an env that <module> "
                "registers when imported."
            ) from error
    return spec


def default_action_repeat(task: str | TaskSpec) -> int:
    """The action repeat R used when ``make_env(action_repeat=None)``.

    The paper's values for its six domains (cartpole 8, reacher 4, cheetah 4, finger 2,
    ball_in_cup 4, walker 2), 2 for other DMC domains, 1 for Gymnasium envs and factories, 0
    for a multi-task name: each of its tasks keeps its own.
    """
    spec = task if isinstance(task, TaskSpec) else parse_task(task)
    if spec.suite == "multi":
        return 0  # each task its own (planetrl.envs.multitask.task_repeat)
    if spec.suite != "dmc":
        return DEFAULT_GYM_ACTION_REPEAT
    return PAPER_ACTION_REPEAT.get(spec.domain, DEFAULT_DMC_ACTION_REPEAT)


def task_repeat(task: str, action_repeat: int | None) -> int:
    """A task's action repeat inside a multi-task env: ``action_repeat`` for every task when
    given (not None or 0), else the task's own (:func:`default_action_repeat`)."""
    return check_action_repeat(action_repeat) if action_repeat else default_action_repeat(task)


def make_env(
    task: str,
    *,
    action_repeat: int | None = None,
    seed: int | None = None,
    render: str = "paper",
    size: int = 64,
    env_kwargs: dict[str, Any] | None = None,
    env_fn: Callable[[], gymnasium.Env] | None = None,
    sibling_rewards: bool = False,
) -> gymnasium.Env:
    """Make a pixel environment: ``uint8 (size, size, 3)`` observations, actions in ``[-1, 1]``.

    The returned env is ``ValidateAction(ActionRepeat(base, R))``:

    * ``base`` is a :class:`planetrl.envs.dmc.DMCEnv` or a
      :class:`planetrl.envs.gym.GymPixelEnv` (around ``gymnasium.make``'s env, or around what
      ``env_fn()`` returned: see :func:`planetrl.envs.gym.wrap_env`);
    * ``ActionRepeat`` applies each agent action R times and returns the sum of the R rewards;
      ``info["env_steps"]`` is the number of simulator steps taken (R, fewer at an episode end);
    * ``ValidateAction`` rejects actions of the wrong shape or with NaN/inf values (ValueError)
      and clips the others to ``[-1, 1]``.

    Every wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``),
    so for ``dmc:`` and ``gym:`` tasks ``gymnasium.make(env.spec)`` makes the same env again.
    The env is closed at interpreter exit if its user did not close it
    (:mod:`planetrl.envs.lifecycle`).

    Args:
        task: ``dmc:<domain>-<task>``, ``gym:<id>``, ``gym:<module>:<id>`` (see
            :func:`parse_task`), or ``fn:<label>`` with ``env_fn``.
        action_repeat: R; ``None`` for :func:`default_action_repeat`.
        seed: seed of the first ``reset()`` when that is called without a seed. ``reset(seed=s)``
            always reseeds, and the same ``s`` gives the same first frame.
        render: ``"paper"`` (dm_control's default look, as in the paper) or ``"fast"`` (no
            shadows, reflections or multisampling, roughly 10× faster in software rendering; see
            :class:`planetrl.envs.dmc.DMCEnv`).
        size: side of the square images.
        env_kwargs: keyword arguments of the environment: ``gymnasium.make(id, **env_kwargs)``
            for ``gym:`` tasks (``render_mode``, ``width`` and ``height`` are planetrl's), the DMC
            task function's for ``dmc:`` tasks (``random`` is planetrl's: use ``seed``). Not
            accepted with ``env_fn`` (bind them into the factory).
        env_fn: a callable returning a ``gymnasium.Env`` with a ``Box`` action space of finite
            bounds, and pixel observations (``Box`` uint8 ``(H, W, 3)``) or
            ``render_mode="rgb_array"``; only with an ``fn:<label>`` task. For
            :class:`~planetrl.envs.EnvPool` worker processes it must be picklable.
        sibling_rewards: ``dmc:`` tasks with siblings only (:data:`planetrl.envs.dmc.
            SIBLING_TASKS`): ``info["rewards"]`` holds the sibling tasks' rewards of each step,
            summed over the action repeat like the reward.

    Raises:
        ValueError: unknown task, unregistered Gymnasium id, a Gymnasium env without
            ``rgb_array`` rendering or with a non-``Box`` action space, bad ``action_repeat``,
            ``render``, ``size`` or ``seed``.
        ImportError: a Gymnasium env whose dependencies (e.g. pygame, Box2D) are missing.
    """
    spec = parse_task(task)
    env_kwargs = check_env_kwargs(env_kwargs)
    if env_fn is not None and spec.suite != "fn":
        raise ValueError(
            f"env_fn is given, so the task must be an 'fn:<label>' name (a label for logs and the "
            f"run's config), got {task!r}"
        )
    if spec.suite == "fn" and env_fn is None:
        raise ValueError(
            f"{task!r} names an env built by a factory given from Python, and none is given: pass "
            "env_fn=... again (Trainer(config, env_fn=...), load_run(logdir, env_fn=...)), or "
            "register the env with Gymnasium and use 'gym:<module>:<id>' to make it by name"
        )
    if env_fn is not None and env_kwargs:
        raise ValueError(
            f"env_kwargs {sorted(env_kwargs)} cannot be passed to env_fn; bind them into the "
            "factory (e.g. functools.partial(factory, **kwargs))"
        )
    if spec.suite == "multi":
        if env_kwargs or sibling_rewards:
            raise ValueError(
                f"{task}: env_kwargs and sibling_rewards are not taken by a multi-task env"
            )
        envs: dict[str, gymnasium.Env] = {}
        try:
            for name in split_tasks(task):
                envs[name] = make_env(
                    name,
                    action_repeat=task_repeat(name, action_repeat),
                    seed=seed,
                    render=render,
                    size=size,
                )
            return ValidateAction(MultiTaskEnv(envs))
        except BaseException:
            for env in envs.values():
                env.close()
            raise
    repeat = default_action_repeat(spec) if action_repeat is None else action_repeat
    repeat = check_action_repeat(repeat)
    render = check_render(render)
    size = check_size(size)
    seed = check_seed(seed)

    base: gymnasium.Env
    if spec.suite == "dmc":
        from planetrl.envs.dmc import DMCEnv  # noqa: PLC0415

        assert spec.task is not None
        base = DMCEnv(
            spec.domain,
            spec.task,
            seed=seed,
            render=render,
            size=size,
            task_kwargs=env_kwargs,
            sibling_rewards=sibling_rewards,
        )
    elif sibling_rewards:
        raise ValueError(
            f"{task}: sibling rewards are relabelled for dmc: tasks only (planetrl.envs.dmc."
            "SIBLING_TASKS)"
        )
    elif spec.suite == "gym":
        from planetrl.envs.gym import make_gym_pixel_env  # noqa: PLC0415

        spec.import_module()
        base = make_gym_pixel_env(
            spec.gym_id, seed=seed, render=render, size=size, env_kwargs=env_kwargs
        )
    else:
        from planetrl.envs.gym import wrap_env  # noqa: PLC0415

        assert env_fn is not None
        base = wrap_env(env_fn, label=spec.name, seed=seed, render=render, size=size)
    try:
        return ValidateAction(ActionRepeat(base, repeat))
    except BaseException:
        base.close()
        raise
