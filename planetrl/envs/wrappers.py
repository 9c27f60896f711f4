"""Gymnasium wrappers: action repeat and action validation.

:class:`ActionRepeat` implements the paper's action repeat: the agent picks ``a_t`` and the
environment applies it for R simulator steps, ``r_t = Σ_{k=1..R} r_{t,k}``; only the frame after
the last of the R steps is observed. :class:`ValidateAction` turns bad actions into clear
``ValueError``\\ s before they reach the simulator.

Both follow Gymnasium's wrapper conventions: they record their constructor arguments
(``gymnasium.utils.RecordConstructorArgs``), so the ``spec`` of a wrapped env made by
``gymnasium.make`` lists them and ``gymnasium.make(env.spec)`` recreates the stack.
"""

from __future__ import annotations

import numbers
from typing import Any, SupportsFloat, cast

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs


class ActionRepeat(gymnasium.Wrapper, RecordConstructorArgs):
    """Repeat each action ``repeat`` times, summing the rewards.

    ``step(a)`` calls the wrapped env's step with ``a`` up to R times and returns the observation
    after the last step taken, the sum of the rewards, and the last ``terminated``/``truncated``
    flags. It stops at the first step that ends the episode (terminated or truncated), so an
    episode of T simulator steps lasts ``ceil(T / R)`` agent steps and the last one may take fewer
    than R simulator steps. ``info`` is the last step's info plus ``info["env_steps"]``, the
    number of simulator steps taken; ``info["rewards"]`` (other tasks' rewards, when the env
    gives them) is summed over the steps as the reward is.

    Frames between the R steps are never observed, so if the wrapped env has
    ``step_without_observation(a) -> (reward, terminated, truncated, info)`` and
    ``observation() -> obs`` (as :class:`~planetrl.envs.dmc.DMCEnv` and
    :class:`~planetrl.envs.gym.GymPixelEnv` do), the first R-1 steps skip rendering. The result
    is the same; rendering is most of the cost of a pixel env.

    Args:
        env: the env to wrap.
        repeat: R, an integer >= 1.

    Raises:
        ValueError: ``repeat`` is not an integer >= 1.
    """

    def __init__(self, env: gymnasium.Env, repeat: int) -> None:
        # cast: numpy integers pass too (to mypy, no int is an Integral)
        if (
            isinstance(repeat, bool)
            or not isinstance(cast(object, repeat), numbers.Integral)
            or repeat < 1
        ):
            raise ValueError(f"action repeat must be an integer >= 1, got {repeat!r}")
        RecordConstructorArgs.__init__(self, repeat=int(repeat))
        gymnasium.Wrapper.__init__(self, env)
        self.action_repeat = int(repeat)
        skip = getattr(env, "step_without_observation", None)
        observe = getattr(env, "observation", None)
        self._skip_render = callable(skip) and callable(observe)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` up to R times; see the class docstring."""
        total = 0.0
        task_totals: dict[str, float] | None = None
        terminated = truncated = False
        info: dict[str, Any] = {}
        obs = None
        steps = 0
        for k in range(self.action_repeat):
            last = k == self.action_repeat - 1
            steps += 1
            if self._skip_render and not last:
                # cast: _skip_render says the wrapped env has both methods
                inner = cast(Any, self.env)
                reward, terminated, truncated, info = inner.step_without_observation(action)
                if terminated or truncated:
                    obs = inner.observation()
            else:
                obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if "rewards" in info:  # other tasks' rewards (DMCEnv's sibling_rewards), summed too
                task_totals = task_totals or dict.fromkeys(info["rewards"], 0.0)
                for task, value in info["rewards"].items():
                    task_totals[task] += float(value)
            if terminated or truncated:
                break
        info = dict(info)
        info["env_steps"] = steps
        if task_totals is not None:
            info["rewards"] = task_totals
        return obs, total, bool(terminated), bool(truncated), info


class ValidateAction(gymnasium.Wrapper, RecordConstructorArgs):
    """Check every action before it reaches the simulator; clip it into the action space.

    For a ``Box`` action space of shape S (``(A,)`` for all envs made by ``make_env``):

    * the action must be numeric (bool, int or float; anything array-like) and have shape S,
      or a shape that equals S after removing size-1 axes (e.g. ``(1, A)`` or, for ``A == 1``,
      a scalar); otherwise ``ValueError`` naming the expected and the received shape;
    * every value must be finite; NaN or ±inf raise ``ValueError`` naming the offending entries;
    * values outside ``[low, high]`` (``[-1, 1]`` for ``make_env``) are **clipped** into it,
      silently: exploration noise routinely leaves the box and the planner clips too;
    * the action passed on is ``float32`` of shape S.

    ``reset`` is passed through. Non-``Box`` action spaces are passed through unchecked.
    """

    def __init__(self, env: gymnasium.Env) -> None:
        RecordConstructorArgs.__init__(self)
        gymnasium.Wrapper.__init__(self, env)
        space = env.action_space
        self._box = space if isinstance(space, spaces.Box) else None

    def action(self, action: Any) -> np.ndarray:
        """Return the validated, reshaped, clipped float32 action (or raise ValueError)."""
        box = self._box
        if box is None:
            return action
        expected = tuple(box.shape)
        try:
            array = np.asarray(action)
        except Exception as error:  # ragged lists and the like
            raise ValueError(
                f"action must be a numeric array of shape {expected}, got {action!r} ({error})"
            ) from error
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"action must be a real numeric array of shape {expected}, got dtype "
                f"{array.dtype} ({action!r})"
            )
        if array.shape != expected:
            squeezed = tuple(d for d in array.shape if d != 1)
            if squeezed != tuple(d for d in expected if d != 1):
                raise ValueError(
                    f"action must have shape {expected} (action space {box}), got shape "
                    f"{array.shape}"
                )
            array = array.reshape(expected)
        array = array.astype(np.float64, copy=False)
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            shown = ", ".join(f"[{', '.join(map(str, i))}]={array[tuple(i)]}" for i in bad[:5])
            raise ValueError(
                f"action must be finite (values in [{box.low.min()}, {box.high.max()}], "
                f"shape {expected}), got non-finite entries {shown}"
            )
        return np.clip(array, box.low, box.high).astype(np.float32)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Validate ``action`` (see the class docstring), then step the wrapped env."""
        return self.env.step(self.action(action))
