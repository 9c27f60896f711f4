"""Pixel environments for PlaNet: DeepMind Control Suite and Gymnasium, behind the Gymnasium API.

Every environment made here returns ``uint8`` images of shape ``(size, size, 3)`` (HWC, default
64×64) as its only observation and takes actions in ``[-1, 1]^A`` (float32). The agent acts every
R-th simulator step (action repeat R, the paper's per-domain values by default) and receives the
sum of the R rewards. Task names are ``dmc:<domain>-<task>`` (e.g. ``dmc:cheetah-run``),
``gym:<id>`` (e.g. ``gym:InvertedPendulum-v5``), ``gym:<module>:<id>`` (``<module>`` is imported
first and registers ``<id>``; e.g. ``gym:my_envs:MyEnv-v0``), ``fn:<label>`` with an
``env_fn`` factory, or ``multi:<task>,<task>,...``: several tasks in turn behind one env
(:mod:`planetrl.envs.multitask`).

Public API::

    make_env(task, *, action_repeat=None, seed=None, render="paper", size=64,
             env_kwargs=None, env_fn=None) -> gymnasium.Env
    planetrl.envs.gym.wrap_env(env_fn, *, label, ...)   (how an env_fn's env is wrapped)
    default_action_repeat(task) -> int
    list_tasks() -> list[str]
    parse_task(task) -> TaskSpec
    check_task(task) -> TaskSpec   (parse, import the module, check the Gymnasium id)
    EnvPool(task, num_envs, *, asynchronous=True, seeds=None, **make_kwargs)
    ActionRepeat(env, repeat), ValidateAction(env)

OpenGL backend (headless rendering)
-----------------------------------
MuJoCo renders through OpenGL and ``dm_control`` picks its backend from ``MUJOCO_GL`` when it is
first imported: :mod:`planetrl.envs.gl` chooses it (egl, then osmesa, unless ``MUJOCO_GL`` is set)
and is imported first, before anything imports ``dm_control``. The choice is in
:data:`GL_BACKEND`.
"""

from __future__ import annotations

# isort: off
from planetrl.envs.gl import GL_BACKEND  # first: sets MUJOCO_GL before dm_control loads

# isort: on
from planetrl.envs.checks import RENDER_MODES
from planetrl.envs.pool import EnvPool, EnvPoolWorkerError
from planetrl.envs.registry import (
    PAPER_ACTION_REPEAT,
    TaskSpec,
    check_task,
    default_action_repeat,
    list_tasks,
    make_env,
    parse_task,
)
from planetrl.envs.wrappers import ActionRepeat, ValidateAction

__all__ = [
    "GL_BACKEND",
    "PAPER_ACTION_REPEAT",
    "RENDER_MODES",
    "ActionRepeat",
    "EnvPool",
    "EnvPoolWorkerError",
    "TaskSpec",
    "ValidateAction",
    "check_task",
    "default_action_repeat",
    "list_tasks",
    "make_env",
    "parse_task",
]
