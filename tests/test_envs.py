"""The environment layer: task registry, DMC and Gymnasium pixel envs, seeding, EnvPool."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from typing import Any

import dm_env
import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from planetrl.envs import (
    EnvPool,
    EnvPoolWorkerError,
    default_action_repeat,
    list_tasks,
    make_env,
    parse_task,
)

PAPER_TASKS = {
    "dmc:cartpole-swingup": 8,
    "dmc:reacher-easy": 4,
    "dmc:cheetah-run": 4,
    "dmc:finger-spin": 2,
    "dmc:ball_in_cup-catch": 4,
    "dmc:walker-walk": 2,
}
GYM_TASK = "gym:InvertedPendulum-v5"  # MuJoCo-based: renders without pygame


# -- fake Gymnasium envs for the error paths -------------------------------------------------
class _NoRgbEnv(gymnasium.Env):
    metadata: dict[str, Any] = {"render_modes": ["human"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1, 1, (1,))
        self.action_space = spaces.Box(-1, 1, (1,))


class _DiscreteRgbEnv(_NoRgbEnv):
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.action_space = spaces.Discrete(3)


class _LargeFrameEnv(_NoRgbEnv):
    """Renders 90×120 RGBA frames, takes no width/height, actions in [-2, 2] (records them)."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float64)
        self.actions: list[np.ndarray] = []
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        return np.zeros(1, np.float32), 0.5, False, self.t >= 3, {}

    def render(self):
        frame = np.zeros((90, 120, 4), np.uint8)
        frame[..., 0] = 200  # red everywhere, alpha 0: the alpha channel must be dropped
        return frame


gymnasium.register(id="PlanetrlTest/NoRgb-v0", entry_point=_NoRgbEnv)
gymnasium.register(id="PlanetrlTest/LargeFrame-v0", entry_point=_LargeFrameEnv)
gymnasium.register(id="PlanetrlTest/DiscreteRgb-v0", entry_point=_DiscreteRgbEnv)


# -- registry ---------------------------------------------------------------------------------
def test_paper_tasks_parse_with_paper_action_repeat() -> None:
    for task, repeat in PAPER_TASKS.items():
        spec = parse_task(task)
        assert spec.suite == "dmc" and f"dmc:{spec.domain}-{spec.task}" == task
        assert default_action_repeat(task) == repeat
    assert parse_task("dmc:ball_in_cup-catch").domain == "ball_in_cup"
    assert default_action_repeat("dmc:hopper-hop") == 2
    assert default_action_repeat(GYM_TASK) == 1
    assert parse_task(GYM_TASK).gym_id == "InvertedPendulum-v5"


def test_list_tasks_covers_the_suite() -> None:
    from dm_control import suite

    tasks = list_tasks()
    assert len(tasks) == len(suite.ALL_TASKS)
    assert set(PAPER_TASKS) <= set(tasks)
    for task in tasks:
        parse_task(task)


@pytest.mark.parametrize("task", ["dmc:nope-run", "cheetah-run", "foo:bar", "dmc:cheetah", ""])
def test_unknown_task_lists_available(task: str) -> None:
    with pytest.raises(ValueError) as info:
        make_env(task)
    message = str(info.value)
    assert "cheetah: run" in message and "ball_in_cup: catch" in message and "gym:" in message


@pytest.mark.parametrize(
    ("task", "suggestion"),
    [
        ("dmc:cartpol-swingup", "dmc:cartpole-swingup"),
        ("dmc:cheetah-runn", "dmc:cheetah-run"),
        ("cartpole-swingup", "dmc:cartpole-swingup"),
    ],
)
def test_misspelling_suggests(task: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"Did you mean: '{suggestion}'"):
        parse_task(task)


def test_bad_gym_id() -> None:
    with pytest.raises(ValueError, match="not a registered Gymnasium environment"):
        make_env("gym:NoSuchEnv-v0")


def test_gym_env_without_rgb_array() -> None:
    with pytest.raises(ValueError, match="cannot render 'rgb_array'"):
        make_env("gym:PlanetrlTest/NoRgb-v0")


@pytest.mark.parametrize("task", ["gym:PlanetrlTest/DiscreteRgb-v0", "gym:CartPole-v1"])
def test_gym_discrete_actions_refused(task: str) -> None:
    with pytest.raises(ValueError, match="Discrete action space.*continuous"):
        make_env(task)


@pytest.mark.parametrize("repeat", [0, -2, 1.5, "4", True])
def test_bad_action_repeat(repeat: Any) -> None:
    with pytest.raises(ValueError, match="action_repeat must be an integer >= 1"):
        make_env("dmc:cartpole-swingup", action_repeat=repeat)


def test_bad_render_lists_accepted() -> None:
    with pytest.raises(ValueError, match="'paper', 'fast'"):
        make_env("dmc:cartpole-swingup", render="pretty")


def test_gl_backend_falls_back_or_explains() -> None:
    """With EGL made to fail, planetrl.envs falls back to OSMesa or says what to install."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env["MUJOCO_EGL_DEVICE_ID"] = "99"  # no such device: dm_control's EGL import fails
    result = subprocess.run(
        [sys.executable, "-c", "import planetrl.envs as e; print('backend', e.GL_BACKEND)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        assert "backend osmesa" in result.stdout
    else:
        assert "ImportError" in result.stderr
        assert "libosmesa6" in result.stderr and "libegl1" in result.stderr
        assert "MUJOCO_GL" in result.stderr


# -- DMC ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(PAPER_TASKS))
def test_paper_task_spaces_and_obs(task: str) -> None:
    env = make_env(task, seed=0, render="fast")
    try:
        assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
        space = env.action_space
        assert isinstance(space, spaces.Box) and space.dtype == np.float32
        assert np.all(space.low == -1) and np.all(space.high == 1)
        obs, info = env.reset()
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 0
        assert info["discount"] == 1.0
        obs, reward, terminated, truncated, info = env.step(space.sample())
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert isinstance(reward, float) and not terminated and not truncated
        assert info["env_steps"] == PAPER_TASKS[task]
        assert env.get_wrapper_attr("action_repeat") == PAPER_TASKS[task]
    finally:
        env.close()


def test_dmc_size_and_quadruped_camera() -> None:
    env = make_env("dmc:quadruped-walk", size=32, render="fast")
    try:
        assert env.reset(seed=0)[0].shape == (32, 32, 3)
        assert env.unwrapped.camera_id == 2
        assert env.action_space.high.max() == 1.0  # native bound 1.1 rescaled
    finally:
        env.close()


def test_dmc_seeding_same_first_frame() -> None:
    env = make_env("dmc:cartpole-swingup", render="fast")
    fresh = make_env("dmc:cartpole-swingup", seed=3, render="fast")
    try:
        first = env.reset(seed=3)[0]
        env.step(env.action_space.sample())
        again = env.reset(seed=3)[0]
        other = env.reset(seed=4)[0]
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, fresh.reset()[0])  # make_env(seed=3): first reset
        assert not np.array_equal(first, other)
    finally:
        env.close()
        fresh.close()


def test_dmc_time_limit_is_truncation() -> None:
    env = make_env("dmc:cartpole-swingup", action_repeat=8, render="fast", seed=0)
    try:
        env.reset()
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            assert steps <= 125
        assert steps == 125 and truncated and not terminated and info["discount"] == 1.0
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(1))
    finally:
        env.close()


def test_dmc_zero_discount_is_termination() -> None:
    env = make_env("dmc:cartpole-swingup", action_repeat=4, render="fast")
    try:
        env.reset(seed=0)
        base = env.unwrapped
        base._env.step = lambda action: dm_env.termination(reward=2.0, observation={})
        _, reward, terminated, truncated, info = env.step(np.zeros(1))
        assert terminated and not truncated and reward == 2.0 and info["discount"] == 0.0
        assert info["env_steps"] == 1
    finally:
        env.close()


def test_dmc_bad_actions() -> None:
    env = make_env("dmc:cheetah-run", render="fast")
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"shape \(6,\).*got shape \(5,\)"):
            env.step(np.zeros(5))
        with pytest.raises(ValueError, match="finite"):
            env.step(np.full(6, np.nan))
        env.step(np.full(6, 5.0))  # clipped, no error
    finally:
        env.close()


def test_fast_render_close_to_paper() -> None:
    fast = make_env("dmc:cartpole-swingup", render="fast")
    paper = make_env("dmc:cartpole-swingup", render="paper")
    try:
        a = fast.reset(seed=1)[0].astype(np.float64)
        b = paper.reset(seed=1)[0].astype(np.float64)
        assert a.shape == b.shape == (64, 64, 3) and a.std() > 0
        assert 0 < np.abs(a - b).mean() < 4.0
    finally:
        fast.close()
        paper.close()


# -- Gymnasium ---------------------------------------------------------------------------------
def test_gym_mujoco_env() -> None:
    env = make_env(GYM_TASK, render="fast")
    try:
        assert env.observation_space == spaces.Box(0, 255, (64, 64, 3), np.uint8)
        assert env.action_space == spaces.Box(-1, 1, (1,), np.float32)
        first, _ = env.reset(seed=0)
        assert first.shape == (64, 64, 3) and first.dtype == np.uint8
        obs, reward, terminated, truncated, _ = env.step(np.ones(1))
        assert obs.shape == (64, 64, 3) and reward == 1.0 and not truncated
        np.testing.assert_array_equal(env.reset(seed=0)[0], first)
        assert not np.array_equal(env.reset(seed=1)[0], first)
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:.*last axis has three dimensions:UserWarning")
def test_gym_frames_resized_and_actions_rescaled() -> None:
    env = make_env("gym:PlanetrlTest/LargeFrame-v0", size=32, seed=0)
    try:
        obs, _ = env.reset()
        assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
        assert np.all(obs[..., 0] == 200) and np.all(obs[..., 1:] == 0)
        env.step(np.array([1.0, -0.5]))
        np.testing.assert_allclose(env.unwrapped.actions[-1], [2.0, -1.0])
        _, _, terminated, truncated, info = env.step(np.zeros(2))
        assert not truncated
        assert env.step(np.zeros(2))[3] and not terminated  # env's own truncation is kept
    finally:
        env.close()


# -- EnvPool -----------------------------------------------------------------------------------
def _rollout_single(task: str, seed: int, actions: np.ndarray) -> list[np.ndarray]:
    env = make_env(task, render="fast")
    try:
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(a)[0] for a in actions]
        return frames
    finally:
        env.close()


def test_envpool_async_matches_single_and_masks() -> None:
    task, seeds = "dmc:cartpole-swingup", [5, 6]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(3, 2, 1)).astype(np.float32)
    with EnvPool(task, 2, render="fast") as pool:
        assert pool.num_envs == 2 and pool.action_repeat == 8
        assert pool.single_observation_space.shape == (64, 64, 3)
        assert pool.single_action_space.shape == (1,)
        obs, infos = pool.reset(seeds)
        assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8 and len(infos) == 2
        frames = [obs]
        for a in actions:
            obs, reward, terminated, truncated, infos = pool.step(a)
            assert reward.shape == terminated.shape == truncated.shape == (2,)
            frames.append(obs)
        for i, seed in enumerate(seeds):
            single = _rollout_single(task, seed, actions[:, i])
            for t, frame in enumerate(single):
                np.testing.assert_array_equal(frames[t][i], frame)

        # Inactive envs are not stepped: same obs, zero reward, empty info.
        before = obs.copy()
        obs, reward, _, _, infos = pool.step(np.ones((2, 1)), active=np.array([True, False]))
        np.testing.assert_array_equal(obs[1], before[1])
        assert reward[1] == 0.0 and infos[1] == {} and infos[0]["env_steps"] == 8
        # ... and continue where they were: env 1 then matches the single env's next frame.
        obs, *_ = pool.step(
            np.stack([actions[0, 0], actions[0, 1]]), active=np.array([False, True])
        )
        expected = _rollout_single(task, seeds[1], np.concatenate([actions[:, 1], actions[:1, 1]]))
        np.testing.assert_array_equal(obs[1], expected[-1])

        # Errors inside a worker come back as clear errors; the pool stays usable.
        with pytest.raises(EnvPoolWorkerError, match="worker 0 .*ValueError.*finite"):
            pool.step(np.array([[np.nan], [0.0]], dtype=np.float32))
        with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
            pool.step(np.zeros((3, 1)))
        pool.reset([1, 2])

        # A worker that dies is reported and the pool closes.
        pids = pool.worker_pids
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(EnvPoolWorkerError, match="worker 1 .*died"):
            pool.step(np.zeros((2, 1)))
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("planetrl")]


def test_envpool_sync_matches_single() -> None:
    task = "dmc:cartpole-swingup"
    actions = np.full((2, 2, 1), 0.3, dtype=np.float32)
    pool = EnvPool(task, 2, asynchronous=False, render="fast", action_repeat=8)
    try:
        obs, _ = pool.reset([7, 8])
        for a in actions:
            obs, *_ = pool.step(a)
        np.testing.assert_array_equal(obs[0], _rollout_single(task, 7, actions[:, 0])[-1])
        np.testing.assert_array_equal(obs[1], _rollout_single(task, 8, actions[:, 1])[-1])
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.step(actions[0])


def test_envpool_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        EnvPool("dmc:cartpole-swingup", 0)
    with pytest.raises(ValueError, match="seeds must have num_envs=2"):
        EnvPool("dmc:cartpole-swingup", 2, seeds=[1])
    with pytest.raises(ValueError, match="Unknown task"):
        EnvPool("dmc:nope-run", 2)
    with pytest.raises(ValueError, match="unknown make_env arguments"):
        EnvPool("dmc:cartpole-swingup", 2, colour="red")
