"""ActionRepeat and ValidateAction on a tiny fake environment whose rewards are known."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from planetrl.envs import ActionRepeat, ValidateAction


class CountingEnv(gymnasium.Env):
    """Reward at step k (1-based) is k; terminates after `terminate_at` steps, truncates after
    `truncate_at`. Observation is the step count. Records every action it receives."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, terminate_at: int | None = None, truncate_at: int | None = None, action_dim: int = 2
    ) -> None:
        self.observation_space = spaces.Box(0, 10_000, shape=(), dtype=np.int64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        self.terminate_at, self.truncate_at = terminate_at, truncate_at
        self.t = 0
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.int64(0), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = self.truncate_at is not None and self.t >= self.truncate_at
        return np.int64(self.t), float(self.t), terminated, truncated, {"t": self.t}


class SkippingEnv(CountingEnv):
    """CountingEnv with the render-skipping protocol; counts how often it is observed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observations = 0

    def observation(self):
        self.observations += 1
        return np.int64(self.t)

    def step_without_observation(self, action):
        obs, reward, terminated, truncated, info = CountingEnv.step(self, action)
        return reward, terminated, truncated, info

    def step(self, action):
        reward, terminated, truncated, info = self.step_without_observation(action)
        return self.observation(), reward, terminated, truncated, info


@pytest.mark.parametrize("env_cls", [CountingEnv, SkippingEnv])
def test_action_repeat_sums_rewards(env_cls) -> None:
    env = ActionRepeat(env_cls(), 3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.zeros(2))
    assert reward == 1 + 2 + 3 and obs == 3 and info["env_steps"] == 3 and info["t"] == 3
    assert not terminated and not truncated
    obs, reward, *_ = env.step(np.zeros(2))
    assert reward == 4 + 5 + 6 and obs == 6
    assert len(env.unwrapped.actions) == 6


@pytest.mark.parametrize("env_cls", [CountingEnv, SkippingEnv])
@pytest.mark.parametrize("flag", ["terminate_at", "truncate_at"])
def test_action_repeat_stops_at_episode_end(env_cls, flag) -> None:
    env = ActionRepeat(env_cls(**{flag: 5}), 4)
    env.reset()
    env.step(np.zeros(2))  # steps 1..4
    obs, reward, terminated, truncated, info = env.step(np.zeros(2))  # step 5 ends it
    assert reward == 5 and obs == 5 and info["env_steps"] == 1
    assert (terminated, truncated) == ((True, False) if flag == "terminate_at" else (False, True))
    assert len(env.unwrapped.actions) == 5


def test_action_repeat_skips_intermediate_observations() -> None:
    base = SkippingEnv(truncate_at=6)
    env = ActionRepeat(base, 4)
    env.reset()
    env.step(np.zeros(2))
    assert base.observations == 1  # only the 4th frame was rendered
    obs, *_ = env.step(np.zeros(2))  # ends at step 6 (a skipped step): rendered once there
    assert obs == 6 and base.observations == 2


def test_action_repeat_one_is_identity() -> None:
    env = ActionRepeat(CountingEnv(), 1)
    env.reset()
    assert env.step(np.zeros(2))[1] == 1.0


@pytest.mark.parametrize("bad", [0, -1, 2.0, 1.5, "2", None, True])
def test_action_repeat_rejects_bad_values(bad) -> None:
    with pytest.raises(ValueError, match="integer >= 1"):
        ActionRepeat(CountingEnv(), bad)


def test_validate_action_clips_and_casts() -> None:
    env = ValidateAction(CountingEnv())
    env.reset()
    env.step([3.0, -7.0])
    sent = env.unwrapped.actions[-1]
    assert sent.dtype == np.float32 and sent.tolist() == [1.0, -1.0]
    env.step(np.array([[0.5, 0.25]]))  # (1, A) is squeezed to (A,)
    assert env.unwrapped.actions[-1].tolist() == [0.5, 0.25]


def test_validate_action_scalar_for_one_dim() -> None:
    env = ValidateAction(CountingEnv(action_dim=1))
    env.reset()
    env.step(0.5)
    assert env.unwrapped.actions[-1].shape == (1,)


@pytest.mark.parametrize("bad_shape", [(3,), (1,), (2, 2), ()])
def test_validate_action_wrong_shape(bad_shape) -> None:
    env = ValidateAction(CountingEnv())
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(2,\)") as info:
        env.step(np.zeros(bad_shape))
    assert str(bad_shape) in str(info.value)
    assert env.unwrapped.actions == []  # nothing reached the env


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_validate_action_non_finite(value) -> None:
    env = ValidateAction(CountingEnv())
    env.reset()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.0, value]))
    assert env.unwrapped.actions == []


@pytest.mark.parametrize("bad", ["a", ["x", "y"], [1 + 2j, 0]])
def test_validate_action_non_numeric(bad) -> None:
    env = ValidateAction(CountingEnv())
    env.reset()
    with pytest.raises(ValueError, match="numeric"):
        env.step(bad)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, (2,), elements=st.floats(-1e6, 1e6)))
def test_validate_action_any_finite_action_lands_in_box(action) -> None:
    env = ValidateAction(CountingEnv())
    env.reset()
    env.step(action)
    sent = env.unwrapped.actions[-1]
    assert sent.shape == (2,) and np.all(np.abs(sent) <= 1.0)
    inside = np.abs(action) <= 1.0
    np.testing.assert_allclose(sent[inside], action[inside].astype(np.float32))
