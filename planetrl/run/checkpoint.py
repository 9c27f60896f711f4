"""Checkpoints: a run's state in one file, written atomically (a run killed at any moment leaves
either the old or the new checkpoint, never a half-written one).

A :class:`Checkpoint` saves what is attached to it, by name: modules and optimisers (their
``state_dict``), torch and numpy generators (their states), the global RNGs
(:meth:`Checkpoint.attach_global_rngs`) and any value given as a ``get``/``set`` pair (counters,
a replay's sampling state). Nothing about any agent is listed here, so every agent checkpoints
the same way.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl.atomic import atomic_torch_save


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, not a planetrl checkpoint, or lacks an entry."""


CHECKPOINT_FORMAT = "planetrl-checkpoint-v1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Serialise ``payload`` with ``torch.save`` and write it atomically."""
    atomic_torch_save(path, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, pickle garbage, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a planetrl checkpoint ({CHECKPOINT_FORMAT})")
    return payload


def _accessors(obj: Any) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    """(get, set) of the state of a module/optimiser, torch generator or numpy generator."""
    if isinstance(obj, torch.Generator):
        # The state of a CUDA generator is saved on the CPU and restored where it was.
        def set_torch(state: torch.Tensor) -> None:
            obj.set_state(state.to(obj.get_state().device))

        return lambda: obj.get_state().cpu(), set_torch
    if isinstance(obj, np.random.Generator):

        def set_numpy(state: dict[str, Any]) -> None:
            obj.bit_generator.state = state

        return lambda: obj.bit_generator.state, set_numpy
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return obj.state_dict, obj.load_state_dict
    raise TypeError(
        f"cannot checkpoint a {type(obj).__name__}: attach a module or optimiser (state_dict), "
        "a torch or numpy generator, or give get= and set="
    )


class Checkpoint:
    """The state of a run in one file: what is attached, by name, and nothing else.

    ``checkpoint.attach("model", world_model)``, ``attach("optimizer", optimiser)``,
    ``attach("generator", torch_generator)``, ``attach("updates", get=..., set=...)``, then
    :meth:`save` after each step of the run and :meth:`load` at start (when :meth:`exists`).
    Entries given to ``save(extra=...)`` are written but never restored (e.g. the config, for
    a reader of the file).

    Args:
        path: the checkpoint file (``<run>/checkpoint.pt``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[Callable[[], Any], Callable[[Any], None], bool]] = {}

    @property
    def names(self) -> list[str]:
        """The attached names, in attachment order."""
        return list(self._entries)

    def attach(
        self,
        name: str,
        obj: Any = None,
        *,
        get: Callable[[], Any] | None = None,
        set: Callable[[Any], None] | None = None,  # noqa: A002  (reads as get/set)
        optional: bool = False,
    ) -> "Checkpoint":
        """Save ``obj``'s state (or ``get()``) under ``name``; :meth:`load` restores it (or calls
        ``set(value)``). ``optional``: a checkpoint without the entry (written before it was
        attached) loads, leaving it as it is. Returns ``self`` for chaining."""
        if name in self._entries or name == "format":
            raise ValueError(f"checkpoint entry {name!r} is already attached or reserved")
        if obj is not None:
            if get is not None or set is not None:
                raise ValueError("give an object or get=/set=, not both")
            get, set = _accessors(obj)
        elif get is None or set is None:
            raise ValueError(f"checkpoint entry {name!r} needs an object or both get= and set=")
        self._entries[name] = (get, set, optional)
        return self

    def attach_global_rngs(self) -> "Checkpoint":
        """Attach torch's, numpy's and Python's global RNGs (``torch_rng``, ``numpy_rng``,
        ``python_rng``)."""
        self.attach("torch_rng", get=torch.get_rng_state, set=torch.set_rng_state)
        self.attach("numpy_rng", get=np.random.get_state, set=np.random.set_state)
        return self.attach("python_rng", get=random.getstate, set=random.setstate)

    def exists(self) -> bool:
        return self.path.exists()

    def state(self) -> dict[str, Any]:
        """``{name: state}`` of everything attached, as :meth:`save` writes it."""
        return {name: get() for name, (get, _, _) in self._entries.items()}

    def save(self, extra: dict[str, Any] | None = None) -> None:
        """Write the state of everything attached (and ``extra``) atomically."""
        save_checkpoint(self.path, {**(extra or {}), **self.state()})

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Restore everything attached from the file; returns the whole payload.

        Raises:
            CheckpointError: no file, a corrupt or foreign file, or a required entry missing
                (all checked before anything is restored).
        """
        payload = load_checkpoint(self.path, map_location=map_location)
        missing = [
            n for n, (_, _, optional) in self._entries.items() if n not in payload and not optional
        ]
        if missing:
            raise CheckpointError(f"checkpoint {self.path} lacks {missing}")
        for name, (_, set_state, _) in self._entries.items():
            if name in payload:
                set_state(payload[name])
        return payload
