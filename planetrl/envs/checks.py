"""Argument checks shared by the env factory and the env classes (a leaf of ``planetrl.envs``:
the classes and the registry both import it, neither imports the other for it)."""

from __future__ import annotations

import numbers
from typing import Any

#: Accepted values of ``make_env(render=...)``.
RENDER_MODES: tuple[str, ...] = ("paper", "fast")


def check_action_repeat(action_repeat: object) -> int:
    """Return ``action_repeat`` as an int, or raise ValueError unless it is an integer >= 1."""
    if (
        isinstance(action_repeat, bool)
        or not isinstance(action_repeat, numbers.Integral)
        or int(action_repeat) < 1
    ):
        raise ValueError(
            f"action_repeat must be an integer >= 1 (or None for the task's default), "
            f"got {action_repeat!r}"
        )
    return int(action_repeat)


def check_render(render: object) -> str:
    """Return ``render`` or raise ValueError listing :data:`RENDER_MODES`."""
    if render not in RENDER_MODES:
        raise ValueError(
            f"render must be one of {', '.join(repr(m) for m in RENDER_MODES)} "
            f"('paper': dm_control's default rendering as in the paper; 'fast': no shadows, "
            f"reflections or multisampling), got {render!r}"
        )
    return str(render)


def check_size(size: object) -> int:
    """Return ``size`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or int(size) < 1:
        raise ValueError(f"size must be a positive integer (image side in pixels), got {size!r}")
    return int(size)


def check_seed(seed: object) -> int | None:
    """Return ``seed`` (None or an int >= 0) or raise ValueError."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    return int(seed)


def check_env_kwargs(env_kwargs: object, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return a copy of ``env_kwargs`` (None: ``{}``), or raise ValueError unless it is a dict
    with string keys none of which is in ``reserved`` (the arguments planetrl sets itself)."""
    if env_kwargs is None:
        return {}
    if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
        raise ValueError(
            f"env_kwargs must be a dict of keyword arguments with string keys (on the command "
            f"line a JSON object, e.g. '{{\"frame_skip\": 4}}'), got {env_kwargs!r}"
        )
    taken = sorted(set(env_kwargs) & set(reserved))
    if taken:
        raise ValueError(
            f"env_kwargs may not set {', '.join(map(repr, taken))}: planetrl sets "
            f"{', '.join(map(repr, reserved))} itself"
        )
    return dict(env_kwargs)
