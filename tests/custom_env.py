"""A tiny custom Gymnasium environment, registered on import: the example of README's "Your own
environment" section and of the tests of ``gym:<module>:<id>`` tasks.

``PlanetrlCustom/Dot-v0``: a red dot in a square arena, moved by a 2-D continuous action
(``Box(-1, 1, (2,))``, each step moves it by ``speed * action``); the reward is
``1 - distance to the goal`` (the centre); the episode **terminates** when the dot leaves the
arena (a true termination, as Hopper falling) and is truncated after 50 steps. Observations are
the rendered ``uint8 (size, size, 3)`` frames, and ``render_mode="rgb_array"`` renders the same
frame. ``speed`` and ``size`` are constructor arguments (``--env-kwargs '{"speed": 0.3}'``).

Train it (from the repository root, so that ``tests/`` is on ``PYTHONPATH`` in every process)::

    PYTHONPATH=tests planetrl train --task gym:custom_env:PlanetrlCustom/Dot-v0 --preset small \\
        --logdir runs/dot --train.max-episodes 10
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "PlanetrlCustom/Dot-v0"


class DotEnv(gymnasium.Env):
    """See the module docstring."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, speed: float = 0.1, size: int = 32) -> None:
        self.render_mode = render_mode
        self.speed, self.size = float(speed), int(size)
        self.observation_space = spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.position = np.zeros(2)

    def _frame(self) -> np.ndarray:
        frame = np.full((self.size, self.size, 3), 40, np.uint8)
        middle = self.size // 2
        frame[middle, :, 1] = frame[:, middle, 1] = 120  # the goal's cross, green
        x, y = np.clip(
            ((self.position + 1) / 2 * (self.size - 1)).round().astype(int), 0, self.size - 1
        )
        frame[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = (230, 40, 40)
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-0.8, 0.8, 2)
        return self._frame(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self.position = self.position + self.speed * action
        reward = 1.0 - float(np.linalg.norm(self.position))
        terminated = bool(np.any(np.abs(self.position) > 1.0))
        return self._frame(), reward, terminated, False, {}

    def render(self):
        return self._frame()


gymnasium.register(id=ENV_ID, entry_point=DotEnv, max_episode_steps=50)


def make_dot(speed: float = 0.1) -> DotEnv:
    """A factory for ``Trainer(config, env_fn=...)`` (module level, so picklable)."""
    return DotEnv(speed=speed)
