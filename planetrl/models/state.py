"""The latent state of a transition model, as one small named structure."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import Tensor


@dataclass
class State:
    """Latent state (h_t, s_t) with the parameters of the Gaussian s_t was drawn from.

    Every field has the same leading (batch) dimensions, e.g. (B,) or (B, T). A model without a
    deterministic path (SSM) has ``deter`` of size 0 in the last dimension; a model without a
    stochastic path (GRU) has ``stoch``, ``mean`` and ``std`` of size 0.

    Attributes:
        deter: the deterministic part, (..., D) with D = the model's ``deter_size``: h_t (RSSM);
            concat(h_t, u_t) for the deterministic GRU, which carries its observation input u_t
            here (see :class:`planetrl.models.gru.DeterministicGRU`).
        stoch: s_t, the stochastic sample, (..., S).
        mean: mean of the diagonal Gaussian over s_t, (..., S).
        std: standard deviation of that Gaussian, (..., S).
    """

    deter: Tensor
    stoch: Tensor
    mean: Tensor
    std: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> "State":
        """Apply ``fn`` to every field and return the new state."""
        return State(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __getitem__(self, index) -> "State":
        return self.map(lambda t: t[index])

    def detach(self) -> "State":
        return self.map(Tensor.detach)

    def to(self, *args, **kwargs) -> "State":
        return self.map(lambda t: t.to(*args, **kwargs))

    @property
    def shape(self) -> torch.Size:
        """Leading (batch) shape shared by all fields."""
        return self.deter.shape[:-1]

    @staticmethod
    def stack(states: list["State"], dim: int = 0) -> "State":
        """Stack states along a new leading dimension ``dim`` (e.g. time)."""
        return State(
            *(torch.stack([getattr(s, f.name) for s in states], dim) for f in fields(State))
        )

    @staticmethod
    def cat(states: list["State"], dim: int = 0) -> "State":
        return State(*(torch.cat([getattr(s, f.name) for s in states], dim) for f in fields(State)))

    @staticmethod
    def where(mask: Tensor, a: "State", b: "State") -> "State":
        """Per batch element: ``a`` where ``mask`` (shape = leading shape) is true, else ``b``."""
        return State(
            *(
                torch.where(mask.unsqueeze(-1), getattr(a, f.name), getattr(b, f.name))
                for f in fields(State)
            )
        )
