"""Gymnasium environments as pixel-only environments with actions in ``[-1, 1]``.

``make_gym_pixel_env("InvertedPendulum-v5", size=64)`` builds

    GymPixelEnv(RescaleAction(gymnasium.make(id, render_mode="rgb_array", ...), -1, 1))

* Images: ``gymnasium.make(id, render_mode="rgb_array", width=size, height=size)`` when the
  environment accepts ``width``/``height`` (Gymnasium's MuJoCo envs: rendered directly at the
  target size). Otherwise (``TypeError`` from the constructor) the env renders at its own size and
  each frame is resized to ``size × size`` with PIL's Lanczos filter (an antialiasing low-pass
  filter, so small images do not alias). A non-square frame is resized to a square one: the
  aspect ratio is not kept. RGBA frames lose their alpha channel. The camera is the env's default.
* Actions: the env must have a ``Box`` action space with finite bounds; Gymnasium's
  ``RescaleAction`` maps ``a ∈ [-1, 1]`` affinely to ``low + (a + 1) / 2 * (high - low)``. The
  exposed action space is ``Box(-1, 1, float32)``. Discrete spaces are refused: PlaNet's planner
  (CEM over Gaussian action sequences) needs continuous actions.
* Episode ends: ``terminated``/``truncated`` as the env says (``gymnasium.make`` adds the
  registered ``TimeLimit``, whose ends are truncations).
* ``render="fast"``: for MuJoCo-based envs, shadows, multisampling and reflections are turned
  off as for DMC (see :mod:`planetrl.envs.dmc`); other envs look the same in both modes.

Classic-control envs (``Pendulum-v1``, ...) need ``pygame`` to render, Box2D envs need ``box2d``;
without them ``make_env`` raises ``ImportError`` naming the pip extra to install.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import RescaleAction
from PIL import Image

from planetrl.envs.checks import check_render, check_seed, check_size


def _dependency_error(gym_id: str, error: Exception) -> ImportError:
    return ImportError(
        f"gym:{gym_id} needs a package that is not installed to be made or to render rgb_array "
        f"frames: {error}"
    )


class GymPixelEnv(gymnasium.Wrapper):
    """Replace a Gymnasium env's observations by its rendered ``uint8 (size, size, 3)`` frames.

    ``env`` must already use ``render_mode="rgb_array"`` and have a ``Box`` action space in
    ``[-1, 1]`` (see :func:`make_gym_pixel_env`). Construction resets the env once and renders a
    frame to check that rendering works, so errors (e.g. a missing pygame) surface in
    ``make_env`` rather than at the first step.

    Args:
        env: the wrapped env.
        size: image side in pixels; frames of another size are resized with Lanczos filtering.
        seed: used by the first ``reset()`` that is called without a seed.
        gym_id: the Gymnasium id, for error messages.
    """

    def __init__(
        self, env: gymnasium.Env, *, size: int = 64, seed: int | None = None, gym_id: str = "?"
    ) -> None:
        super().__init__(env)
        self.size = check_size(size)
        self.gym_id = gym_id
        self._pending_seed = check_seed(seed)
        inner = env.action_space
        assert isinstance(inner, spaces.Box)
        self._inner_dtype = inner.dtype
        self.action_space = spaces.Box(-1.0, 1.0, shape=inner.shape, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, shape=(self.size, self.size, 3), dtype=np.uint8)
        self._needs_reset = True
        # Probe: reset and render once, so rendering problems are reported now.
        try:
            self.env.reset(seed=self._pending_seed)
            self.observation()
        except gymnasium.error.DependencyNotInstalled as error:
            raise _dependency_error(gym_id, error) from error
        except (ValueError, TypeError):
            raise
        except Exception as error:
            raise RuntimeError(
                f"gym:{gym_id} could not render an rgb_array frame: {type(error).__name__}: {error}"
            ) from error

    def observation(self) -> np.ndarray:
        """Render the current frame as ``uint8 (size, size, 3)``."""
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            described = frame.shape if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(
                f"gym:{self.gym_id} rendered {described} with render_mode='rgb_array'; expected an "
                "image array of shape (H, W, 3)"
            )
        frame = frame[..., :3]
        if frame.dtype != np.uint8:
            if np.issubdtype(frame.dtype, np.floating) and frame.size and frame.max() <= 1.0:
                frame = frame * 255.0
            frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        if frame.shape[:2] != (self.size, self.size):
            image = Image.fromarray(np.ascontiguousarray(frame))
            frame = np.asarray(
                image.resize((self.size, self.size), Image.Resampling.LANCZOS), dtype=np.uint8
            )
        return np.array(frame, dtype=np.uint8, copy=True)

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The current frame at the observation size."""
        return self.observation()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env (``seed`` as in Gymnasium) and return its first frame."""
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            seed = check_seed(seed)
            self._pending_seed = None
        _, info = self.env.reset(seed=seed, options=options)
        self._needs_reset = False
        return self.observation(), dict(info)

    def step_without_observation(
        self, action: np.ndarray
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Step without rendering: ``(reward, terminated, truncated, info)`` (see ActionRepeat)."""
        if self._needs_reset:
            raise RuntimeError(
                f"gym:{self.gym_id}: step() called before reset() or after the episode ended "
                "(terminated or truncated); call reset() first"
            )
        action = np.asarray(action, dtype=self._inner_dtype).reshape(self.action_space.shape)
        _, reward, terminated, truncated, info = self.env.step(action)
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        return float(reward), terminated, truncated, dict(info)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One env step: ``(frame, reward, terminated, truncated, info)``."""
        reward, terminated, truncated, info = self.step_without_observation(action)
        return self.observation(), reward, terminated, truncated, info


def _make_rgb_env(gym_id: str, size: int) -> gymnasium.Env:
    """``gymnasium.make`` with rgb_array rendering, at ``size`` when the env accepts width/height."""
    try:
        gymnasium.spec(gym_id)
    except gymnasium.error.Error as error:
        raise ValueError(
            f"gym:{gym_id} is not a registered Gymnasium environment ({error}). Use 'gym:<id>' "
            "with an id from gymnasium.registry, e.g. 'gym:InvertedPendulum-v5', or 'dmc:' tasks "
            "(planetrl.envs.list_tasks())."
        ) from error
    with warnings.catch_warnings():
        # gymnasium warns when render_mode is not in the env's render_modes; we check ourselves.
        warnings.simplefilter("ignore")
        try:
            try:
                return gymnasium.make(gym_id, render_mode="rgb_array", width=size, height=size)
            except TypeError:
                return gymnasium.make(gym_id, render_mode="rgb_array")
        except gymnasium.error.DependencyNotInstalled as error:
            raise _dependency_error(gym_id, error) from error


def _disable_expensive_rendering(env: gymnasium.Env) -> None:
    """For MuJoCo-based envs: no shadow map, no multisampling (before the context exists)."""
    model = getattr(env.unwrapped, "model", None)
    if isinstance(model, mujoco.MjModel):
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0


def _disable_reflections(env: gymnasium.Env) -> None:
    """For Gymnasium's MuJoCo renderer, once its viewer exists: floor reflections off."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    viewer = getattr(renderer, "viewer", None)
    scene = getattr(viewer, "scn", None)
    if scene is not None:
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def make_gym_pixel_env(
    gym_id: str, *, seed: int | None = None, render: str = "paper", size: int = 64
) -> GymPixelEnv:
    """Build the pixel env for ``gym:<gym_id>`` (see the module docstring).

    Raises:
        ValueError: unregistered id; no ``rgb_array`` render mode; a non-``Box`` action space or
            one with infinite bounds.
        ImportError: a missing dependency (pygame, box2d, ...) to make or render the env.
    """
    render = check_render(render)
    size = check_size(size)
    env = _make_rgb_env(gym_id, size)
    try:
        modes = list(env.metadata.get("render_modes", []) or [])
        if "rgb_array" not in modes or env.render_mode != "rgb_array":
            raise ValueError(
                f"gym:{gym_id} cannot render 'rgb_array' frames (its render modes: {modes}); "
                "PlaNet learns from pixels and needs rgb_array rendering"
            )
        space = env.action_space
        if not isinstance(space, spaces.Box):
            raise ValueError(
                f"gym:{gym_id} has a {type(space).__name__} action space ({space}); PlaNet plans "
                "continuous actions and needs a Box action space"
            )
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(
                f"gym:{gym_id} has action bounds low={space.low}, high={space.high}; "
                "finite bounds are needed to rescale actions to [-1, 1]"
            )
        if render == "fast":
            _disable_expensive_rendering(env)
        # Bounds in the space's own dtype (a float32 bound on a float64 Box trips a cast warning).
        low = np.full(space.shape, -1.0, dtype=space.dtype)
        high = np.full(space.shape, 1.0, dtype=space.dtype)
        wrapped = GymPixelEnv(RescaleAction(env, low, high), size=size, seed=seed, gym_id=gym_id)
        if render == "fast":
            _disable_reflections(env)
        return wrapped
    except BaseException:
        env.close()
        raise
