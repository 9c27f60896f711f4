"""The transition models by name, and the factory that builds any of them from one call site."""

from __future__ import annotations

import inspect
from typing import Any

from planetrl.models.base import TransitionModel
from planetrl.models.gru import DeterministicGRU
from planetrl.models.rssm import RSSM
from planetrl.models.ssm import SSM

TRANSITIONS: dict[str, type[TransitionModel]] = {
    "rssm": RSSM,
    "ssm": SSM,
    "gru": DeterministicGRU,
}

# Size arguments that some kinds do not have (the SSM has no h_t, the GRU no s_t); the factory
# drops them for those kinds so that one call site can build any kind.
_OPTIONAL_SIZES = {"deter_size", "stoch_size", "hidden_size", "min_std", "mean_only"}


def make_transition(kind: str, action_size: int, embed_size: int, **sizes: Any) -> TransitionModel:
    """Build a transition model: ``kind`` in ``"rssm"``, ``"ssm"``, ``"gru"``.

    ``sizes`` are keyword arguments of the class (``deter_size``, ``stoch_size``, ``hidden_size``,
    ``min_std``, ``mean_only``); those a kind does not have are dropped (e.g. ``deter_size`` for
    the SSM). Unknown kinds raise ValueError, unknown size names TypeError."""
    try:
        cls = TRANSITIONS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown transition model {kind!r}; choose one of {sorted(TRANSITIONS)}"
        ) from None
    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for name, value in sizes.items():
        if name in params:
            kwargs[name] = value
        elif name not in _OPTIONAL_SIZES:
            raise TypeError(f"unknown argument {name!r} for transition model {kind!r}")
    return cls(action_size, embed_size, **kwargs)
