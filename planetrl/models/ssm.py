"""Purely stochastic state-space model (SSM), the paper's ablation without a deterministic path."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from planetrl.models.base import (
    GaussianHead,
    SplitLinear,
    TransitionModel,
    check_sizes,
    sample_normal,
)
from planetrl.models.state import State


class SSM(TransitionModel):
    """Stochastic transitions only (paper Fig. 2b):

    - transition (prior)  p(s_t | s_{t-1}, a_{t-1}) = N(mu, diag(sigma^2)),
      (mu, sigma) = head(ReLU(W [s_{t-1}; a_{t-1}] + b)),
    - posterior  q(s_t | s_{t-1}, a_{t-1}, e_t) = N(mu, diag(sigma^2)),
      (mu, sigma) = head(ReLU(W [mu_p; sigma_p; e_t] + b)), where (mu_p, sigma_p) are the
      parameters of the prior p(s_t | s_{t-1}, a_{t-1}) (as the official PlaNet ``models/ssm.py``;
      they are a function of (s_{t-1}, a_{t-1}), so this is q(s_t | s_{t-1}, a_{t-1}, e_t)).

    sigma = softplus(.) + min_std, reparameterised samples. No deterministic path: ``State.deter``
    has size 0 and ``features`` = s_t. ReLU activations and one hidden layer of ``hidden_size`` as
    the official code. ``mean_only`` replaces samples by means (deterministic, used in tests).
    """

    def __init__(
        self,
        action_size: int,
        embed_size: int,
        *,
        stoch_size: int = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
        mean_only: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(
            action_size=action_size,
            embed_size=embed_size,
            stoch_size=stoch_size,
            hidden_size=hidden_size,
        )
        self.action_size = int(action_size)
        self.embed_size = int(embed_size)
        self.deter_size = 0
        self.stoch_size = int(stoch_size)
        self.hidden_size = int(hidden_size)
        self.feature_size = self.stoch_size
        self.mean_only = bool(mean_only)
        s = self.stoch_size
        self.prior_hidden = SplitLinear((s, self.action_size), self.hidden_size)
        self.prior_head = GaussianHead(self.hidden_size, s, min_std)
        self.post_hidden = SplitLinear((s, s, self.embed_size), self.hidden_size)
        self.post_head = GaussianHead(self.hidden_size, s, min_std)

    def initial(self, batch: int, device: torch.device | None = None) -> State:
        kw: dict[str, Any] = dict(device=self._device(device), dtype=self._dtype())
        z = torch.zeros(batch, self.stoch_size, **kw)
        return State(torch.zeros(batch, 0, **kw), z, z.clone(), z.clone())

    def prepare_actions(self, actions: Tensor) -> Tensor:
        return self.prior_hidden.part(1, actions, bias=True)

    def prepare_embeds(self, embeds: Tensor) -> Tensor:
        return self.post_hidden.part(2, embeds, bias=True)

    def _img_step(self, prev: State, action_in: Tensor) -> State:
        x = F.relu(self.prior_hidden.part(0, prev.stoch) + action_in)
        mean, std = self.prior_head(x)
        return State(prev.deter, sample_normal(mean, std, self.mean_only), mean, std)

    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor) -> tuple[State, State]:
        prior = self._img_step(prev, action_in)
        x = self.post_hidden.part(0, prior.mean) + self.post_hidden.part(1, prior.std)
        mean, std = self.post_head(F.relu(x + embed_in))
        post = State(prev.deter, sample_normal(mean, std, self.mean_only), mean, std)
        return post, prior

    def features(self, state: State) -> Tensor:
        return state.stoch
