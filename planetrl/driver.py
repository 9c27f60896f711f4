"""The episode driver: runs any policy ``act(obs (E, H, W, 3)) -> actions (E, A)`` on E
environments in lockstep, agent-agnostic.

One runner serves every use: seed episodes (:func:`uniform_policy`), data collection and
evaluation (PlaNet's ``Agent.act``), the random baseline (:func:`random_policy_returns`), and any
other agent. The episodes it returns are in the step convention of :mod:`planetrl.episodes`
(built by :class:`~planetrl.episodes.EpisodeRecorder`), ready for ``Replay.add``.

The environments are an :class:`~planetrl.envs.EnvPool` (worker processes when E > 1), made by
:func:`make_pool` from env settings: any object with ``task``, ``action_repeat`` (R; 0 = the
task's default), ``render`` and optionally ``env_kwargs`` (PlaNet's ``Config`` is one), and an
optional ``env_fn`` factory for ``fn:`` tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from planetrl.envs import EnvPool, default_action_repeat
from planetrl.envs.multitask import is_multitask, split_tasks, task_for_seed
from planetrl.envs.registry import task_repeat
from planetrl.episodes import EpisodeRecorder
from planetrl.run.frames import tile_frames

__all__ = [
    "Rollouts",
    "brownian_policy",
    "make_pool",
    "random_policy_returns",
    "resolve_action_repeat",
    "episode_action_repeat",
    "action_repeats",
    "run_episodes",
    "uniform_policy",
]

Act = Callable[[np.ndarray], np.ndarray]


@dataclass
class Rollouts:
    """What :func:`run_episodes` returns."""

    returns: list[float]
    """The return (sum of rewards) of each episode."""
    episodes: list[dict[str, np.ndarray]] | None
    """With ``keep``: the episodes in the step convention of :mod:`planetrl.episodes`."""
    frames: np.ndarray | None
    """With ``record``: (T, H, E·W, 3) uint8, the environments side by side."""
    ms_per_act: float
    """Mean milliseconds of one ``act`` call."""
    env_steps_per_s: float
    """Env steps (after action repeat, summed over environments) per second of wall clock."""


def run_episodes(
    pool: EnvPool,
    act: Act,
    seeds: list[int],
    *,
    reset: Callable[[int], None] | None = None,
    keep: bool = False,
    record: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> Rollouts:
    """Run ``len(seeds)`` = E episodes in the first environments of ``pool``, in lockstep: one call
    ``act(obs (E, ...)) -> actions (E, A)`` serves them all (batched acting); a finished
    environment is no longer stepped (its rows of later ``obs`` are its last observation and its
    actions are ignored).

    Args:
        pool: the environments.
        act: the policy.
        seeds: the reset seed of each episode.
        reset: called as ``reset(E)`` before the first ``act`` (a policy with a state per
            environment starts afresh; e.g. PlaNet's ``Agent.reset``).
        keep: return the episodes (see :class:`Rollouts`).
        record: return the frames of all environments side by side.
        on_step: ``on_step(agent_steps, env_steps)`` after every step: the step count so far and
            the env steps (after action repeat, summed over environments) of this step.
    """
    count = len(seeds)
    if not 1 <= count <= pool.num_envs:
        raise ValueError(f"need 1..{pool.num_envs} seeds, got {count}")
    start_time = time.perf_counter()
    obs, _ = pool.reset(seeds, indices=list(range(count)))
    obs = obs[:count]
    if reset is not None:
        reset(count)
    action_size = pool.single_action_space.shape[0]
    active = np.zeros(pool.num_envs, bool)
    active[:count] = True
    returns = np.zeros(count)
    steps = np.zeros(count, np.int64)
    frames = [tile_frames(obs)] if record else None
    recorders = [EpisodeRecorder(o, action_size) for o in obs] if keep else None
    act_time, acts = 0.0, 0
    while active.any():
        start = time.perf_counter()
        actions = np.asarray(act(obs), dtype=np.float32).reshape(count, action_size)
        act_time += time.perf_counter() - start
        acts += 1
        full = np.zeros((pool.num_envs, action_size), np.float32)
        full[:count] = actions
        was_active = active[:count].copy()
        next_obs, reward, terminated, truncated, infos = pool.step(full, active)
        next_obs = next_obs[:count]
        before = int(steps.sum())
        for i in np.flatnonzero(was_active):
            returns[i] += reward[i]
            steps[i] += int(infos[i].get("env_steps", 1))
            if recorders is not None:  # keep
                recorders[i].step(
                    next_obs[i], actions[i], reward[i], terminated[i], infos[i].get("rewards")
                )
        active[:count] &= ~(np.asarray(terminated[:count]) | np.asarray(truncated[:count]))
        obs = next_obs
        if frames is not None:  # record
            frames.append(tile_frames(obs))
        if on_step is not None:
            on_step(acts, int(steps.sum()) - before)
    elapsed = time.perf_counter() - start_time
    return Rollouts(
        returns=returns.tolist(),
        episodes=[r.episode() for r in recorders] if recorders is not None else None,
        frames=np.stack(frames) if frames is not None else None,
        ms_per_act=1000 * act_time / max(acts, 1),
        env_steps_per_s=float(steps.sum()) / max(elapsed, 1e-9),
    )


def resolve_action_repeat(env: Any) -> int:
    """R of the env settings ``env``: its ``action_repeat``, or the task's default when 0 (0 for
    a multi-task name whose tasks keep their own: :func:`episode_action_repeat`)."""
    return env.action_repeat or default_action_repeat(env.task)


def episode_action_repeat(env: Any, seed: int) -> int:
    """R of the episode that the env settings ``env`` reset with ``seed``: the settings' R, or,
    for a multi-task name, that of the episode's task (:mod:`planetrl.envs.multitask`)."""
    if is_multitask(env.task):
        return task_repeat(task_for_seed(split_tasks(env.task), seed), env.action_repeat)
    return resolve_action_repeat(env)


def action_repeats(env: Any) -> tuple[int, ...]:
    """Every R the env settings ``env`` act with: one, or one per task of a multi-task name."""
    if is_multitask(env.task):
        return tuple(task_repeat(t, env.action_repeat) for t in split_tasks(env.task))
    return (resolve_action_repeat(env),)


def make_pool(
    env: Any,
    num_envs: int,
    parallel: bool = True,
    env_fn: Callable[[], Any] | None = None,
    *,
    sibling_rewards: bool = False,
) -> EnvPool:
    """``num_envs`` environments of the env settings ``env`` (``task``, ``action_repeat``,
    ``render``, ``env_kwargs`` if it has them), in worker processes when ``parallel`` and ``num_envs
    > 1``; ``env_fn`` builds them for an ``fn:`` task, ``sibling_rewards`` (or the settings' own
    ``sibling_rewards``) gives the sibling tasks' rewards of every step, which :func:`run_episodes`
    keeps in the episodes as ``reward/<task>`` (see :func:`planetrl.envs.make_env`)."""
    extra: dict[str, Any] = {}
    if getattr(env, "env_kwargs", None):
        extra["env_kwargs"] = env.env_kwargs
    if env_fn is not None:
        extra["env_fn"] = env_fn
    if sibling_rewards or getattr(env, "sibling_rewards", False):
        extra["sibling_rewards"] = True
    return EnvPool(
        env.task,
        num_envs,
        asynchronous=parallel and num_envs > 1,
        action_repeat=resolve_action_repeat(env),
        render=env.render,
        **extra,
    )


#: Tag of the action streams of :func:`uniform_policy` (keeps them apart from any other use of
#: an episode's seed, such as the environment's own reset).
_UNIFORM_ACTIONS = 0x5EED_AC71


def uniform_policy(action_size: int, seeds: Sequence[int]) -> Act:
    """The random policy (PlaNet's seed episodes): a_t ~ U[-1, 1]^A, with one generator per
    episode, seeded by that episode's reset seed (``seeds``, as given to :func:`run_episodes`).
    Row i of every call draws from generator i, so an episode's actions depend on its seed only,
    not on which episodes run beside it: a batch cut short by a kill and finished on resume with
    fewer environments collects the same episodes as the whole batch."""
    rngs = [np.random.default_rng([int(seed), _UNIFORM_ACTIONS]) for seed in seeds]

    def act(obs: np.ndarray) -> np.ndarray:
        if len(obs) != len(rngs):
            raise ValueError(
                f"uniform_policy was made for {len(rngs)} episodes, got {len(obs)} observations"
            )
        return np.stack([rng.uniform(-1.0, 1.0, action_size) for rng in rngs]).astype(np.float32)

    return act


#: Tag of the action streams of :func:`brownian_policy`.
_BROWNIAN_ACTIONS = 0xB120_AC71


def brownian_policy(action_size: int, seeds: Sequence[int], dt: float) -> Act:
    """Brownian actions (ctallec/world-models' data collection): a_0 ~ U[-1, 1]^A, then
    a_{t+1} = clip(a_t + sqrt(dt) ε, -1, 1), ε ~ N(0, I), one generator per episode seeded by
    its reset seed (an episode's actions depend on its seed only, as :func:`uniform_policy`'s).
    The steps are taken in the normalised [-1, 1] action space."""
    if not dt > 0:
        raise ValueError(f"brownian_policy: dt must be > 0, got {dt}")
    rngs = [np.random.default_rng([int(seed), _BROWNIAN_ACTIONS]) for seed in seeds]
    actions = [rng.uniform(-1.0, 1.0, action_size) for rng in rngs]
    first = [True] * len(rngs)
    step = float(np.sqrt(dt))

    def act(obs: np.ndarray) -> np.ndarray:
        if len(obs) != len(rngs):
            raise ValueError(
                f"brownian_policy was made for {len(rngs)} episodes, got {len(obs)} observations"
            )
        for i, rng in enumerate(rngs):
            if first[i]:
                first[i] = False
            else:
                actions[i] = np.clip(actions[i] + step * rng.standard_normal(action_size), -1, 1)
        return np.stack(actions).astype(np.float32)

    return act


def random_policy_returns(
    env: Any,
    *,
    episodes: int,
    seed: int,
    parallel: bool = True,
    env_fn: Callable[[], Any] | None = None,
) -> list[float]:
    """Returns of :func:`uniform_policy` on the env settings ``env``, episode i reset with seed
    ``seed + i`` (the seeds PlaNet's evaluation uses): the baseline every learning claim is
    measured against."""
    with make_pool(env, episodes, parallel, env_fn) as pool:
        seeds = [seed + i for i in range(episodes)]
        return run_episodes(
            pool, uniform_policy(pool.single_action_space.shape[0], seeds), seeds
        ).returns
