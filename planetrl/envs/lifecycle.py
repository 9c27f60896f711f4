"""Closing environments that their user forgot to close, before the interpreter tears down.

MuJoCo renders through an OpenGL context (EGL or OSMesa) that must be freed while the GL library
is still usable. An env that is never closed is freed by garbage collection at interpreter exit,
when modules (PyOpenGL's EGL bindings among them) may already be gone: Gymnasium's
``OffScreenViewer.__del__`` and mujoco's ``GLContext.__del__`` then print "Exception ignored ...
EGLError" tracebacks.

:func:`track` records a live env in a weak set (an env that is garbage-collected earlier leaves
it by itself); one :mod:`atexit` hook, registered at the first :func:`track`, closes every env
still alive. ``atexit`` runs its hooks in reverse order of registration, so this one (registered
after the GL backend was loaded) runs before any hook of the GL libraries, while they still
work. Closing is best effort: an env whose ``close`` raises is skipped. The weak set and the hook
are the only process-wide state of :mod:`planetrl.envs` besides Gymnasium's registry.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
_LOCK = threading.Lock()
_REGISTERED = False


def track(env: Any) -> None:
    """Close ``env`` (anything with ``close()``) at interpreter exit if it is still alive then."""
    global _REGISTERED
    with _LOCK:
        _LIVE.add(env)
        if not _REGISTERED:
            atexit.register(close_live_envs)
            _REGISTERED = True


def untrack(env: Any) -> None:
    """Forget ``env`` (called by its ``close``)."""
    with _LOCK:
        _LIVE.discard(env)


def live_envs() -> list[Any]:
    """The tracked envs that are alive and not closed."""
    with _LOCK:
        return list(_LIVE)


def close_live_envs() -> None:
    """Close every tracked env that is still alive (the atexit hook; idempotent)."""
    for env in live_envs():
        try:
            env.close()
        except Exception:  # noqa: BLE001, S110  (at exit, closing is best effort)
            pass
        untrack(env)
