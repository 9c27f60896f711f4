"""Argument checks shared by the env factory and the env classes (a leaf of ``planetrl.envs``:
the classes and the registry both import it, neither imports the other for it)."""

from __future__ import annotations

import numbers

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
