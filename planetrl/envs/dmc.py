"""DeepMind Control Suite tasks as pixel-only Gymnasium environments.

:class:`DMCEnv` wraps ``dm_control.suite.load(domain, task, task_kwargs={"random": seed})``:

* Observation: ``physics.render(size, size, camera_id)`` as ``uint8 (size, size, 3)``, rendered
  directly at the target size (no resizing). Camera 0 as in the paper and its official code,
  except quadruped, which conventionally uses camera 2 (the ``y`` side view; camera 0 is a far
  global view). The proprioceptive observations of dm_control are not returned.
* Actions: ``Box(-1, 1, (A,), float32)``. Every suite task but two has bounds ``[-1, 1]`` and
  gets the action unchanged; quadruped (some bounds ``[-1, 1.1]``) gets the affine map
  ``a_env = low + (a + 1) / 2 * (high - low)``; ``lqr`` (bounds ``±1e10``, i.e. unbounded) gets
  the action unchanged.
* Episode ends: DMC episodes end by their time limit (1000 simulator steps for every task but
  ``lqr``, which has none). dm_env marks an end with ``step_type == LAST``; ``discount == 0`` at
  LAST means a true terminal state (``terminated=True``), otherwise the end is a time limit
  (``truncated=True``). ``info["discount"]`` carries dm_env's discount.
* Seeding: ``reset(seed=s)`` reseeds the task's ``numpy.random.RandomState`` in place
  (``env.task.random.seed(s)``), which is what dm_control uses to draw the initial state, so the
  same ``s`` gives the same first frame as ``suite.load(..., task_kwargs={"random": s})``.

Sibling tasks
-------------
With ``sibling_rewards=True`` every step also computes the rewards of the task's siblings
(:data:`SIBLING_TASKS`: the other tasks of the domain that share its model and differ in their
reward only) on the same physics state, ``task.get_reward(physics)`` of each sibling's task
object, and returns them as ``info["rewards"] = {"dmc:<domain>-<sibling>": r}``
(:class:`~planetrl.envs.wrappers.ActionRepeat` sums them over its repeats as it sums the
reward). Collected into episodes as ``reward/<task>`` (:mod:`planetrl.episodes`), they let a
world model learn the reward of a task it never acted in. Domains whose tasks do not qualify are
listed in :data:`NOT_SIBLINGS` with the reason.

Render modes
------------
``"paper"``: dm_control's defaults, as the paper saw them: a 2048×2048 shadow map, 4×
multisample anti-aliasing, reflective floor. In software rendering (Mesa llvmpipe, no GPU) this
costs ≈20 ms a frame: ≈40–60 steps/s at 64×64 for cartpole.

``"fast"``: the same scene without shadows (``model.vis.quality.shadowsize = 0``), without
multisampling (``model.vis.quality.offsamples = 0``; both must be set before the first render
creates the OpenGL context) and without floor reflections (``mjRND_REFLECTION`` off in the
scene). Measured ≈800 steps/s at 64×64 for cartpole under llvmpipe. The images differ from the
paper's: no cast shadows (the agent's shadow on the floor is gone), no mirror image in the
floor, and aliased (jagged, unsmoothed) edges; geometry thinner than a pixel can vanish or break
up (at 64×64 cartpole's rail is not drawn). For cartpole the mean absolute pixel difference
to ``"paper"`` is ≈1.5 out of 255; lighting, colours, textures and camera are unchanged.
Results obtained with ``"fast"`` are not directly comparable with the paper's.

Gymnasium conventions
---------------------
``env.spec`` is an ``EnvSpec`` (id ``planetrl/DMC-v0``, entry point this class, the constructor's
arguments as kwargs), so ``gymnasium.make(env.spec)`` (and ``check_env``'s remakes) build the
same env again, with planetrl's wrappers when they are recorded in the spec. An env that is not
closed by its user is closed at interpreter exit (:mod:`planetrl.envs.lifecycle`), so its OpenGL
context is freed while the GL library still works.

In both modes one :class:`dm_control.mujoco.engine.Camera` (with its ``MjvScene``) is kept for
the life of the env instead of allocating one per frame as ``physics.render`` does.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import mujoco
import numpy as np
from dm_control import suite
from dm_control.mujoco import engine
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from planetrl.envs import lifecycle
from planetrl.envs.checks import check_env_kwargs, check_render, check_seed, check_size

#: The id of :class:`DMCEnv`'s ``spec`` (not registered: ``gymnasium.make`` takes the spec).
SPEC_ID = "planetrl/DMC-v0"

#: Camera per domain where the convention is not camera 0.
CAMERA_IDS: dict[str, int] = {"quadruped": 2}
_UNBOUNDED = 1e3  # action bounds beyond this are treated as "no bounds": no rescaling


#: Tasks of one domain that share its model (the same XML, the same dynamics) and whose rewards
#: read the physics state and the task's constructor arguments only, so that each one's reward
#: can be computed on an episode of any other (checked step by step against the sibling's own
#: env in ``tests/test_sibling_rewards.py``). Their initial states may differ (cartpole's
#: balance starts upright, swingup hanging down): the reward is relabelled, not the episode.
SIBLING_TASKS: dict[str, tuple[str, ...]] = {
    "walker": ("stand", "walk", "run"),  # PlanarWalker(move_speed): 0, 1, 8
    "hopper": ("stand", "hop"),  # Hopper(hopping): height (and small control), or speed
    "humanoid": ("stand", "walk", "run"),  # Humanoid(move_speed): 0, 1, 10
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse"),  # Balance(sparse)
    "acrobot": ("swingup", "swingup_sparse"),  # Balance(sparse)
}

#: Domains with several tasks that are not siblings, and why (see :data:`SIBLING_TASKS`).
NOT_SIBLINGS: dict[str, str] = {
    "reacher": "easy and hard write their own target size into the model at every reset, and "
    "the reward reads it from there: computed on an easy episode, hard's reward would use easy's "
    "target size",
    "finger": "turn_easy and turn_hard place a random target in the model at every reset (spin "
    "has none) and their rewards read it: spin's episodes have no target to be scored against",
    "fish": "swim places a random target at every reset, upright has none",
    "point_mass": "hard randomises the actuators' gains at every reset: other dynamics",
    "quadruped": "walk and run build their models with different floor sizes, escape and fetch "
    "add rough terrain and a ball: no two share a model",
    "manipulator": "each task builds a different model (ball or peg, cup or slot)",
    "stacker": "stack_2 and stack_4 build models with different numbers of boxes",
    "swimmer": "swimmer6 and swimmer15 are different bodies",
    "lqr": "lqr_2_1 and lqr_6_2 are different systems",
}


def sibling_tasks(task: str) -> tuple[str, ...]:
    """The siblings of ``task`` (``dmc:<domain>-<task>``), by their full names; empty when it has
    none."""
    if not task.startswith("dmc:") or "-" not in task:
        return ()
    domain, name = task[4:].split("-", 1)
    names = SIBLING_TASKS.get(domain, ())
    return (
        tuple(f"dmc:{domain}-{other}" for other in names if other != name) if name in names else ()
    )


def camera_id_for(domain: str) -> int:
    """The camera used for ``domain``: 0, except quadruped (2)."""
    return CAMERA_IDS.get(domain, 0)


class DMCEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One DMC task with pixel observations and the Gymnasium API (see the module docstring).

    Args:
        domain, task: as in ``dm_control.suite.ALL_TASKS``.
        seed: seed of the task's random state (used by the first ``reset()`` without a seed).
        render: ``"paper"`` or ``"fast"`` (see module docstring).
        size: image side in pixels.
        camera_id: camera index; ``None`` for :func:`camera_id_for`.
        task_kwargs: more keyword arguments of the task function (``suite.load(...,
            task_kwargs=...)``, e.g. ``{"time_limit": 5}``); ``random`` is ``seed``'s.
        render_mode: ``"rgb_array"`` (the only mode; accepted for ``gymnasium.make``).
        sibling_rewards: also return the sibling tasks' rewards in ``info["rewards"]`` (see the
            module docstring); a ValueError for a task without siblings.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        seed: int | None = None,
        render: str = "paper",
        size: int = 64,
        camera_id: int | None = None,
        task_kwargs: dict[str, Any] | None = None,
        render_mode: str | None = "rgb_array",
        sibling_rewards: bool = False,
    ) -> None:
        super().__init__()
        self._closed = True  # until construction succeeds: close() then has nothing to free
        self.domain, self.task_name = domain, task
        self.render_quality = check_render(render)
        self.size = check_size(size)
        seed = check_seed(seed)
        task_kwargs = check_env_kwargs(task_kwargs, reserved=("random",))
        if render_mode not in ("rgb_array", None):
            raise ValueError(
                f"dmc:{domain}-{task} renders only 'rgb_array' frames, got render_mode="
                f"{render_mode!r}"
            )
        self.render_mode = "rgb_array"
        try:
            self._env = suite.load(domain, task, task_kwargs={**task_kwargs, "random": seed})
        except TypeError as error:
            raise ValueError(
                f"dmc:{domain}-{task} does not accept env_kwargs {task_kwargs}: {error}"
            ) from error
        self._siblings: dict[str, Any] = {}
        if sibling_rewards:
            names = sibling_tasks(f"dmc:{domain}-{task}")
            if not names:
                reason = NOT_SIBLINGS.get(domain, "it is the domain's only task")
                raise ValueError(
                    f"dmc:{domain}-{task} has no sibling tasks whose rewards can be relabelled "
                    f"({reason}); tasks with siblings: "
                    + ", ".join(f"{d}: {', '.join(t)}" for d, t in SIBLING_TASKS.items())
                )
            for name in names:
                # Only the sibling's task object is kept: its get_reward reads our physics.
                other = suite.load(domain, name[4:].split("-", 1)[1], task_kwargs={"random": 0})
                self._siblings[name] = other.task
                other.physics.free()
        # Simulator frame rate (the agent sees every R-th frame); used by video recorders.
        self.metadata = {
            "render_modes": ["rgb_array"],
            "render_fps": round(1.0 / self._env.control_timestep()),
        }
        physics = self._env.physics
        self.camera_id = camera_id_for(domain) if camera_id is None else int(camera_id)
        if not 0 <= self.camera_id < physics.model.ncam:
            raise ValueError(
                f"dmc:{domain}-{task} has cameras 0..{physics.model.ncam - 1}, "
                f"got camera_id={self.camera_id}"
            )
        # The off-screen framebuffer must hold the image; both settings below are read when the
        # first render creates the OpenGL context, so they must precede it.
        vis = physics.model.vis
        vis.global_.offwidth = max(int(vis.global_.offwidth), self.size)
        vis.global_.offheight = max(int(vis.global_.offheight), self.size)
        if self.render_quality == "fast":
            vis.quality.shadowsize = 0
            vis.quality.offsamples = 0
        self._camera: engine.Camera | None = None

        spec = self._env.action_spec()
        low = np.asarray(spec.minimum, np.float64) * np.ones(spec.shape)
        high = np.asarray(spec.maximum, np.float64) * np.ones(spec.shape)
        self._action_low, self._action_high = low, high
        self._rescale = bool(
            np.all(np.abs(low) < _UNBOUNDED)
            and np.all(np.abs(high) < _UNBOUNDED)
            and not (np.all(low == -1.0) and np.all(high == 1.0))
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=spec.shape, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, shape=(self.size, self.size, 3), dtype=np.uint8)
        self._needs_reset = True
        self._last_obs: np.ndarray | None = None
        self.spec = EnvSpec(
            id=SPEC_ID,
            entry_point=f"{type(self).__module__}:{type(self).__name__}",
            kwargs={
                "domain": domain,
                "task": task,
                "seed": seed,
                "render": self.render_quality,
                "size": self.size,
                "camera_id": camera_id,
                "task_kwargs": task_kwargs,
                "render_mode": "rgb_array",
                "sibling_rewards": bool(sibling_rewards),
            },
            max_episode_steps=None,
            order_enforce=False,
            disable_env_checker=True,
        )
        self._closed = False
        lifecycle.track(self)

    # -- rendering ----------------------------------------------------------------------------
    def _render_frame(self) -> np.ndarray:
        if self._camera is None:
            self._camera = engine.Camera(
                self._env.physics, height=self.size, width=self.size, camera_id=self.camera_id
            )
            if self.render_quality == "fast":
                self._camera.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return np.array(self._camera.render(), dtype=np.uint8, copy=True)

    def observation(self) -> np.ndarray:
        """Render the current frame (the observation of the current state)."""
        self._last_obs = self._render_frame()
        return self._last_obs

    def render(self) -> np.ndarray:  # type: ignore[override]
        """The current frame, ``uint8 (size, size, 3)`` (the same image as the observation)."""
        return self._render_frame()

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``seed`` reseeds the task's random state (same seed, same start)."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(check_seed(seed))
        time_step = self._env.reset()
        self._needs_reset = False
        info = {"discount": float(time_step.discount if time_step.discount is not None else 1.0)}
        return self.observation(), info

    def step_without_observation(
        self, action: np.ndarray
    ) -> tuple[float, bool, bool, dict[str, Any]]:
        """Advance one simulator step without rendering: ``(reward, terminated, truncated, info)``.

        :class:`planetrl.envs.wrappers.ActionRepeat` uses this for the R-1 intermediate steps
        whose frames the agent never sees; :meth:`observation` renders when needed.
        """
        if self._needs_reset:
            raise RuntimeError(
                f"dmc:{self.domain}-{self.task_name}: step() called before reset() or after the "
                "episode ended (terminated or truncated); call reset() first"
            )
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        if self._rescale:
            action = self._action_low + (action + 1.0) * 0.5 * (
                self._action_high - self._action_low
            )
        time_step = self._env.step(action)
        reward = float(time_step.reward) if time_step.reward is not None else 0.0
        discount = float(time_step.discount) if time_step.discount is not None else 1.0
        terminated = bool(time_step.last() and discount == 0.0)
        truncated = bool(time_step.last() and not terminated)
        self._needs_reset = terminated or truncated
        info: dict[str, Any] = {"discount": discount}
        if self._siblings:
            physics = self._env.physics
            info["rewards"] = {
                name: float(task.get_reward(physics)) for name, task in self._siblings.items()
            }
        return reward, terminated, truncated, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One simulator step: ``(obs, reward, terminated, truncated, info)``."""
        reward, terminated, truncated, info = self.step_without_observation(action)
        return self.observation(), reward, terminated, truncated, info

    def close(self) -> None:
        """Free the camera's scene and the physics' OpenGL context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        lifecycle.untrack(self)
        if self._camera is not None:
            self._camera._scene.free()  # noqa: SLF001  (dm_control offers no public free())
            self._camera = None
        physics = getattr(self._env, "physics", None)
        if physics is not None and hasattr(physics, "free"):
            physics.free()
        super().close()

    def __repr__(self) -> str:
        return (
            f"DMCEnv(dmc:{self.domain}-{self.task_name}, render={self.render_quality!r}, "
            f"size={self.size}, camera_id={self.camera_id})"
        )
