"""Purely deterministic latent dynamics (a GRU), the paper's deterministic ablation (Fig. 2a)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planetrl.models.base import SplitLinear, TransitionModel, check_sizes
from planetrl.models.state import State


class DeterministicGRU(TransitionModel):
    """Deterministic transitions h_t = GRUCell(ReLU(W [a_{t-1}; u_{t-1}] + b), h_{t-1}), no
    stochastic path (``stoch`` / ``mean`` / ``std`` have size 0, ``kl`` is zero) and
    ``features`` = h_t.

    How observations enter. u_{t-1} is the observation input of the transition *into* step t:

    - a posterior (``obs_step`` / ``observe``) at step t stores u_t = [ReLU(W_o e_t + b_o); 1],
      the embedding of o_t (plus an "observed" flag), which the GRU reads at the next step;
    - a prior (``img_step`` / ``imagine``) stores the placeholder u_t = 0 (flag 0: "no
      observation").

    So ``State.deter`` = concat(h_t, u_t) has size ``belief_size + obs_input_size`` (the
    constructor's ``deter_size`` + ``hidden_size`` + 1): that is the attribute ``deter_size``,
    in the interface's meaning (the size of ``State.deter``, see
    :class:`planetrl.models.base.TransitionModel`); h_t alone is ``belief_size`` =
    ``feature_size``. The features h_t at step t are a function of (o_{<t}, a_{<t}) only,
    identical for the posterior and the prior of step t (KL = 0 is then exact, not an
    approximation). The decoder and reward loss on
    posterior features is the one-step-ahead prediction loss of a classical deterministic RNN world
    model trained with teacher forcing. An imagined rollout from a filtered state uses the last real
    observation in its first transition and the zero placeholder afterwards; it never sees a future
    observation.

    Why not feed e_t into h_t of the same step: a deterministic model has no KL term pulling an
    open-loop prediction towards the observation-conditioned state, so if the features decoded at
    step t had seen o_t, the reconstruction loss would be satisfied by auto-encoding and the prior
    path the planner uses would receive no training signal at all. The paper describes the
    deterministic baseline only as a GRU without stochastic states (the official code has no such
    model); this design keeps it trainable by the same objective. Its remaining weakness is the one
    the paper attributes to deterministic models: nothing trains its multi-step open-loop
    predictions (they are never compared with data), and the planner can exploit their errors.

    Args:
        action_size: A. embed_size: E. deter_size: size of h_t (200; ``model.deter_size``), kept
        as the attribute ``belief_size``. hidden_size: units of the transition's input layer
        and of the observation projection u (200).
        stoch_size, min_std, mean_only: not used (no stochastic path); accepted as 0/None-ish only
        via :func:`planetrl.models.make_transition`, which drops them.
    """

    def __init__(
        self,
        action_size: int,
        embed_size: int,
        *,
        deter_size: int = 200,
        hidden_size: int = 200,
    ) -> None:
        super().__init__()
        check_sizes(
            action_size=action_size,
            embed_size=embed_size,
            deter_size=deter_size,
            hidden_size=hidden_size,
        )
        self.action_size = int(action_size)
        self.embed_size = int(embed_size)
        self.hidden_size = int(hidden_size)
        self.belief_size = int(deter_size)  # size of h_t
        self.obs_input_size = self.hidden_size + 1  # size of u_t
        self.deter_size = self.belief_size + self.obs_input_size
        self.stoch_size = 0
        self.feature_size = self.belief_size
        self.obs_proj = nn.Linear(self.embed_size, self.hidden_size)
        self.img_in = SplitLinear((self.action_size, self.obs_input_size), self.hidden_size)
        self.cell = nn.GRUCell(self.hidden_size, self.belief_size)

    def initial(self, batch: int, device: torch.device | None = None) -> State:
        kw: dict[str, Any] = dict(device=self._device(device), dtype=self._dtype())
        empty = torch.zeros(batch, 0, **kw)
        return State(torch.zeros(batch, self.deter_size, **kw), empty, empty.clone(), empty.clone())

    def prepare_actions(self, actions: Tensor) -> Tensor:
        return self.img_in.part(0, actions, bias=True)

    def prepare_embeds(self, embeds: Tensor) -> Tensor:
        # u_t = [ReLU(W_o e_t + b_o); 1], batched over time.
        u = F.relu(self.obs_proj(embeds))
        return torch.cat([u, u.new_ones(u.shape[:-1] + (1,))], dim=-1)

    def _img_step(self, prev: State, action_in: Tensor) -> State:
        h_prev, u_prev = prev.deter.split([self.belief_size, self.obs_input_size], dim=-1)
        x = F.relu(self.img_in.part(1, u_prev) + action_in)
        h = self.cell(x, h_prev)
        deter = torch.cat([h, h.new_zeros(h.shape[:-1] + (self.obs_input_size,))], dim=-1)
        return State(deter, prev.stoch, prev.mean, prev.std)

    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor) -> tuple[State, State]:
        prior = self._img_step(prev, action_in)
        h = prior.deter[..., : self.belief_size]
        post = State(torch.cat([h, embed_in], dim=-1), prior.stoch, prior.mean, prior.std)
        return post, prior

    def features(self, state: State) -> Tensor:
        return state.deter[..., : self.belief_size]
