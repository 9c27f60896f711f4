"""Headless OpenGL for MuJoCo: the backend is chosen when this module is first imported.

MuJoCo renders through OpenGL and ``dm_control`` picks its backend from the ``MUJOCO_GL``
environment variable *when it is first imported*. ``planetrl.envs`` imports this module before
anything else, so the backend is chosen before anything imports ``dm_control``:

* If ``MUJOCO_GL`` is already set, that choice is respected as is (``egl``, ``osmesa`` or
  ``glfw``).
* Otherwise ``MUJOCO_GL=egl`` is tried (GPU through the NVIDIA driver, or Mesa's software
  rasteriser llvmpipe on machines without a GPU). "Tried" means: import dm_control's renderer and
  create and free a tiny off-screen context (about 10 ms).
* If EGL fails, ``MUJOCO_GL=osmesa`` (pure software rendering) is tried the same way.
* If both fail, ``ImportError`` is raised saying to install Debian's ``libegl1`` (EGL) or
  ``libosmesa6`` (OSMesa), or to set ``MUJOCO_GL`` yourself.

The chosen backend is in :data:`GL_BACKEND`. Subprocesses started by :class:`EnvPool` inherit
the variable. Gymnasium's MuJoCo environments read the same variable.
"""

from __future__ import annotations

import os
import sys

_GL_INSTALL_HINT = (
    "planetrl renders MuJoCo scenes off-screen and needs a working OpenGL backend. Install one "
    "(Debian/Ubuntu: `apt-get install libegl1` for EGL, or `apt-get install libosmesa6` for "
    "OSMesa software rendering), or pick a backend yourself by setting the MUJOCO_GL environment "
    "variable (egl, osmesa or glfw) before importing planetrl.envs."
)


def _purge_gl_modules() -> None:
    """Forget partially imported dm_control / PyOpenGL modules so another backend can be tried.

    PyOpenGL fixes its platform (EGL, OSMesa, GLX) on first import, and dm_control fixes its
    backend on first import, so retrying with another backend needs fresh imports of both.
    """
    prefixes = ("dm_control", "OpenGL", "mujoco.egl", "mujoco.osmesa")
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]


def _probe_backend() -> None:
    """Import dm_control's renderer and create/free a 8×8 off-screen context (raises on failure)."""
    from dm_control import _render  # noqa: PLC0415  (import must follow the env variable)

    context = _render.Renderer(max_width=8, max_height=8)
    try:
        with context.make_current():
            pass
    finally:
        context.free()


def _select_gl_backend() -> str:
    """Choose ``MUJOCO_GL`` (egl, then osmesa) before dm_control is imported; see module docs."""
    already = sys.modules.get("dm_control._render")
    if already is not None:  # someone imported dm_control first: its choice is final
        return str(getattr(already, "BACKEND", None) or os.environ.get("MUJOCO_GL", "unknown"))
    user_choice = os.environ.get("MUJOCO_GL")
    if user_choice:
        return user_choice
    user_pyopengl = os.environ.get("PYOPENGL_PLATFORM")
    failures: list[str] = []
    for backend in ("egl", "osmesa"):
        os.environ["MUJOCO_GL"] = backend
        try:
            _probe_backend()
            return backend
        except Exception as error:  # noqa: BLE001  (any failure means: try the next backend)
            failures.append(f"{backend}: {type(error).__name__}: {error}")
            _purge_gl_modules()
            # dm_control's EGL/OSMesa modules set PYOPENGL_PLATFORM; undo that for the next try.
            if user_pyopengl is None:
                os.environ.pop("PYOPENGL_PLATFORM", None)
            else:
                os.environ["PYOPENGL_PLATFORM"] = user_pyopengl
    os.environ.pop("MUJOCO_GL", None)
    raise ImportError(
        "No OpenGL backend could be initialised (tried "
        + "; ".join(failures)
        + "). "
        + _GL_INSTALL_HINT
    )


GL_BACKEND: str = _select_gl_backend()
"""The chosen ``MUJOCO_GL`` backend."""
