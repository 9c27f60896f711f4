"""Gymnasium environments as pixel-only environments with actions in ``[-1, 1]``.

``make_gym_pixel_env("InvertedPendulum-v5", size=64)`` builds

    GymPixelEnv(RescaleAction(
        gymnasium.make(id, render_mode="rgb_array", ..., **env_kwargs), -1, 1))

and :func:`wrap_env` does the same around the env an ``env_fn()`` factory returns (see there).
Both wrappers record their constructor arguments (``gymnasium.utils.RecordConstructorArgs``), so
``gymnasium.make(env.spec)`` recreates an env made by name.

* Images: an env whose observations are already images (a uint8 ``(H, W, 3)`` ``Box``, e.g.
  ``CarRacing-v3``'s 96 × 96 view) gives those, resized as below (:func:`frame_source`). Otherwise
  ``gymnasium.make(id, render_mode="rgb_array", width=size, height=size)`` when the
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
* Closing: a :class:`GymPixelEnv` that is not closed by its user is closed at interpreter exit
  (:mod:`planetrl.envs.lifecycle`), so MuJoCo's OpenGL context is freed while EGL still works.

Classic-control envs (``Pendulum-v1``, ...) need ``pygame`` to render, Box2D envs
(``CarRacing-v3``, ...) need ``box2d`` and ``pygame``; without them ``make_env`` raises
``ImportError`` naming the pip extra to install: ``pip install 'planetrl[classic]'`` or
``pip install 'planetrl[box2d]'`` (:data:`EXTRAS`).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, cast

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs
from gymnasium.wrappers import RescaleAction
from PIL import Image

from planetrl.envs import lifecycle
from planetrl.envs.checks import check_env_kwargs, check_render, check_seed, check_size

#: The pip extra of planetrl that installs what a family of Gymnasium envs needs, by the module
#: of their entry point: ``prefix -> (extra, what it installs)``.
EXTRAS: dict[str, tuple[str, str]] = {
    "gymnasium.envs.box2d": ("box2d", "Box2D and pygame"),
    "gymnasium.envs.classic_control": ("classic", "pygame"),
}
#: Arguments of ``gymnasium.make`` that planetrl sets itself (not accepted in ``env_kwargs``).
RESERVED_KWARGS = ("render_mode", "width", "height")
#: Where :class:`GymPixelEnv` takes its frames from.
SOURCES = ("render", "observation")


def extra_for(gym_id: str) -> tuple[str, str] | None:
    """The planetrl extra (name, what it installs) for ``gym_id``'s family, if one exists."""
    try:
        entry_point = gymnasium.spec(gym_id).entry_point
    except gymnasium.error.Error:
        return None
    if not isinstance(entry_point, str):
        return None
    for prefix, extra in EXTRAS.items():
        if entry_point.startswith(prefix):
            return extra
    return None


def _dependency_error(gym_id: str, error: Exception) -> ImportError:
    extra = extra_for(gym_id)
    hint = (
        f" Install it with planetrl's extra: pip install 'planetrl[{extra[0]}]' ({extra[1]})."
        if extra
        else ""
    )
    return ImportError(
        f"gym:{gym_id} needs a package that is not installed to be made or to render rgb_array "
        f"frames: {error}.{hint}"
    )


class GymPixelEnv(gymnasium.Wrapper, RecordConstructorArgs):
    """Replace a Gymnasium env's observations by its ``uint8 (size, size, 3)`` frames.

    ``env`` must have a ``Box`` action space in ``[-1, 1]`` (see :func:`make_gym_pixel_env`) and,
    with ``source="render"``, use ``render_mode="rgb_array"``. Construction resets the env once
    and takes a frame to check that it works, so errors (e.g. a missing pygame) surface in
    ``make_env`` rather than at the first step.

    Args:
        env: the wrapped env.
        size: image side in pixels; frames of another size are resized with Lanczos filtering.
        seed: used by the first ``reset()`` that is called without a seed.
        gym_id: the Gymnasium id (or the task name), for error messages.
        render: ``"paper"`` or ``"fast"`` (for MuJoCo-based envs: no shadows, multisampling or
            reflections; see the module docstring).
        source: ``"render"`` (frames from ``env.render()``) or ``"observation"`` (the env's
            observations are already images ``(H, W, 3)``).
    """

    def __init__(
        self,
        env: gymnasium.Env,
        *,
        size: int = 64,
        seed: int | None = None,
        gym_id: str = "?",
        render: str = "paper",
        source: str = "render",
    ) -> None:
        RecordConstructorArgs.__init__(
            self, size=size, seed=seed, gym_id=gym_id, render=render, source=source
        )
        gymnasium.Wrapper.__init__(self, env)
        self.size = check_size(size)
        self.gym_id = gym_id
        self._name = gym_id if gym_id.startswith("fn:") else f"gym:{gym_id}"
        self.render_quality = check_render(render)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.source = source
        self._pending_seed = check_seed(seed)
        inner = env.action_space
        assert isinstance(inner, spaces.Box)
        self._inner_dtype = inner.dtype
        self.action_space = spaces.Box(-1.0, 1.0, shape=inner.shape, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, shape=(self.size, self.size, 3), dtype=np.uint8)
        # The frames are this env's one render mode (the inner env's `human` window or depth
        # images are not offered: check_env remakes the env in every listed mode).
        self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}
        self._needs_reset = True
        self._last_obs: Any = None
        self._closed = False
        if self.render_quality == "fast":
            _disable_expensive_rendering(env)  # before the first render creates the context
        # Probe: reset and take a frame once, so rendering problems are reported now.
        try:
            self._last_obs, _ = self.env.reset(seed=self._pending_seed)
            self.observation()
        except gymnasium.error.DependencyNotInstalled as error:
            raise _dependency_error(gym_id, error) from error
        except (ValueError, TypeError):
            raise
        except Exception as error:
            raise RuntimeError(
                f"{self._name} could not render an rgb_array frame: {type(error).__name__}: {error}"
            ) from error
        if self.render_quality == "fast":
            _disable_reflections(env)
        lifecycle.track(self)

    def _frame(self) -> Any:
        return self.env.render() if self.source == "render" else self._last_obs

    def observation(self) -> np.ndarray:
        """The current frame as ``uint8 (size, size, 3)``."""
        frame = self._frame()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            described = frame.shape if isinstance(frame, np.ndarray) else type(frame).__name__
            how = "rendered" if self.source == "render" else "returned the observation"
            raise ValueError(
                f"{self._name} {how} {described}; expected an image array of shape (H, W, 3)"
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
        self._last_obs, info = self.env.reset(seed=seed, options=options)
        self._needs_reset = False
        return self.observation(), dict(info)

    def step_without_observation(
        self, action: np.ndarray
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Step without rendering: ``(reward, terminated, truncated, info)`` (see ActionRepeat)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self._name}: step() called before reset() or after the episode ended "
                "(terminated or truncated); call reset() first"
            )
        action = np.asarray(action, dtype=self._inner_dtype).reshape(self.action_space.shape)
        self._last_obs, reward, terminated, truncated, info = self.env.step(action)
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        return float(reward), terminated, truncated, dict(info)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One env step: ``(frame, reward, terminated, truncated, info)``."""
        reward, terminated, truncated, info = self.step_without_observation(action)
        return self.observation(), reward, terminated, truncated, info

    def close(self) -> None:
        """Close the wrapped env (frees MuJoCo's OpenGL context); idempotent."""
        if self._closed:
            return
        self._closed = True
        lifecycle.untrack(self)
        super().close()


def _make_rgb_env(gym_id: str, size: int, env_kwargs: dict[str, Any]) -> gymnasium.Env:
    """``gymnasium.make`` with rgb_array rendering, at ``size`` when the env accepts
    width/height."""
    try:
        gymnasium.spec(gym_id)
    except gymnasium.error.Error as error:
        raise ValueError(
            f"gym:{gym_id} is not a registered Gymnasium environment ({error}). Use 'gym:<id>' "
            "with an id from gymnasium.registry, e.g. 'gym:InvertedPendulum-v5', "
            "'gym:<module>:<id>' for an env that <module> registers when imported, or 'dmc:' "
            "tasks (planetrl.envs.list_tasks())."
        ) from error
    with warnings.catch_warnings():
        # gymnasium warns when render_mode is not in the env's render_modes; we check ourselves.
        warnings.simplefilter("ignore")
        try:
            try:
                return gymnasium.make(
                    gym_id, render_mode="rgb_array", width=size, height=size, **env_kwargs
                )
            except TypeError:
                try:
                    return gymnasium.make(gym_id, render_mode="rgb_array", **env_kwargs)
                except TypeError as error:
                    if not env_kwargs:
                        raise
                    raise ValueError(
                        f"gym:{gym_id} does not accept env_kwargs {env_kwargs}: {error}"
                    ) from error
        except gymnasium.error.DependencyNotInstalled as error:
            raise _dependency_error(gym_id, error) from error


def _check_action_space(env: gymnasium.Env, name: str) -> spaces.Box:
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"{name} has a {type(space).__name__} action space ({space}); PlaNet plans "
            "continuous actions and needs a Box action space"
        )
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(
            f"{name} has action bounds low={space.low}, high={space.high}; "
            "finite bounds are needed to rescale actions to [-1, 1]"
        )
    return space


def _rescaled(env: gymnasium.Env, space: spaces.Box) -> RescaleAction:
    # Bounds in the space's own dtype (a float32 bound on a float64 Box trips a cast warning).
    low = np.full(space.shape, -1.0, dtype=space.dtype)
    high = np.full(space.shape, 1.0, dtype=space.dtype)
    return RescaleAction(env, low, high)


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


def frame_source(env: gymnasium.Env) -> str | None:
    """Where an env's frames come from: ``"observation"`` when its observations are images (a
    ``Box`` of uint8, shape ``(H, W, 3)`` or 4 channels; e.g. CarRacing's 96 × 96 view, which it
    draws at every step anyway: rendering it again at 600 × 400 made a step ~10x dearer), else
    ``"render"`` when it renders ``rgb_array`` frames, else None."""
    obs_space = env.observation_space
    if (
        isinstance(obs_space, spaces.Box)
        and obs_space.dtype == np.uint8
        and len(obs_space.shape) == 3
        and obs_space.shape[-1] in (3, 4)
    ):
        return "observation"
    return "render" if env.render_mode == "rgb_array" else None


def make_gym_pixel_env(
    gym_id: str,
    *,
    seed: int | None = None,
    render: str = "paper",
    size: int = 64,
    env_kwargs: dict[str, Any] | None = None,
) -> GymPixelEnv:
    """Build the pixel env for ``gym:<gym_id>`` (see the module docstring); ``gym_id`` must be
    registered (for ``gym:<module>:<id>``, :meth:`TaskSpec.import_module` imports the module).

    Raises:
        ValueError: unregistered id; no ``rgb_array`` render mode; a non-``Box`` action space or
            one with infinite bounds; ``env_kwargs`` the env does not accept or that planetrl
            sets (``render_mode``, ``width``, ``height``).
        ImportError: a missing dependency (pygame, box2d, ...) to make or render the env; the
            message names the planetrl extra that installs it.
    """
    render = check_render(render)
    size = check_size(size)
    env_kwargs = check_env_kwargs(env_kwargs, RESERVED_KWARGS)
    env = _make_rgb_env(gym_id, size, env_kwargs)
    try:
        modes = list(env.metadata.get("render_modes", []) or [])
        if "rgb_array" not in modes or env.render_mode != "rgb_array":
            raise ValueError(
                f"gym:{gym_id} cannot render 'rgb_array' frames (its render modes: {modes}); "
                "PlaNet learns from pixels and needs rgb_array rendering"
            )
        space = _check_action_space(env, f"gym:{gym_id}")
        return GymPixelEnv(
            _rescaled(env, space),
            size=size,
            seed=seed,
            gym_id=gym_id,
            render=render,
            source=cast(str, frame_source(env)),  # not None: rgb_array rendering (above)
        )
    except BaseException:
        env.close()
        raise


def wrap_env(
    env_fn: Callable[[], gymnasium.Env],
    *,
    label: str = "fn:env",
    seed: int | None = None,
    render: str = "paper",
    size: int = 64,
) -> GymPixelEnv:
    """The pixel env around ``env_fn()``: ``GymPixelEnv(RescaleAction(env_fn(), -1, 1))``.

    What ``env_fn()`` returns must be a ``gymnasium.Env`` with a ``Box`` action space of finite
    bounds (rescaled to ``[-1, 1]``), and either

    * pixel observations: an observation space ``Box`` of dtype uint8 and shape ``(H, W, 3)``
      (or 4 channels, alpha dropped): the observations are the frames; or
    * ``render_mode == "rgb_array"``: the frames are ``env.render()`` after every step (the
      observations are not used).

    Frames of another size than ``size × size`` are resized (Lanczos). ``render="fast"`` applies
    to MuJoCo-based envs as for ``gym:`` tasks.

    Raises:
        ValueError: ``env_fn`` is not callable, or returned something that is not such an env.
    """
    if not callable(env_fn):
        raise ValueError(f"env_fn must be a callable returning a gymnasium.Env, got {env_fn!r}")
    env = env_fn()
    if not isinstance(env, gymnasium.Env):
        raise ValueError(
            f"env_fn ({label}) must return a gymnasium.Env, got {type(env).__name__}: {env!r}"
        )
    try:
        source = frame_source(env)
        if source is None:
            raise ValueError(
                f"env_fn ({label}) returned an env without pixel observations (observation space "
                f"{env.observation_space}; expected Box uint8 (H, W, 3)) and with render_mode="
                f"{env.render_mode!r}; give it pixel observations or make it with "
                "render_mode='rgb_array'"
            )
        space = _check_action_space(env, f"env_fn ({label})")
        return GymPixelEnv(
            _rescaled(env, space),
            size=size,
            seed=seed,
            gym_id=label,
            render=render,
            source=source,
        )
    except BaseException:
        env.close()
        raise
