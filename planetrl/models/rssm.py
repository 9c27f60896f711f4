"""Recurrent state-space model (RSSM), paper section 3 (Eq. 4), the default transition model."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from planetrl.models.base import (
    GaussianHead,
    SplitLinear,
    TransitionModel,
    check_sizes,
    sample_normal,
)
from planetrl.models.state import State


class PriorWeights(NamedTuple):
    """The tensors of one RSSM prior step (:func:`prior_step`), as bare tensors: what the fast
    planner's rollout (:mod:`planetrl.speed.lean`) takes instead of the modules. ``hidden`` is
    the size of the transition's and the prior's hidden layers, D of h_t, S of s_t."""

    w_stoch: Tensor  # (hidden, S): the s_{t-1} columns of the transition's input layer
    w_ih: Tensor  # (3D, hidden): GRU input weights, gates (r, z, n)
    b_ih: Tensor  # (3D,)
    w_hh: Tensor  # (3D, D): GRU recurrent weights
    b_hh: Tensor  # (3D,)
    w_prior: Tensor  # (hidden, D): the prior's hidden layer
    b_prior: Tensor  # (hidden,)
    w_head: Tensor  # (2S, hidden): the prior's mean and raw std
    b_head: Tensor  # (2S,)
    w_action: Tensor  # (hidden, A): the a_{t-1} columns of the transition's input layer
    b_action: Tensor  # (hidden,): that layer's bias b
    min_std: float

    def cast(self, dtype: torch.dtype | None = None) -> "PriorWeights":
        """Detached, contiguous copies (once per plan, not per step), in ``dtype`` when given."""

        def get(t: Tensor) -> Tensor:
            t = t.detach()
            return (t.to(dtype) if dtype is not None else t).contiguous()

        return PriorWeights._make([*(get(t) for t in self[:-1]), self.min_std])

    def actions(self, actions: Tensor) -> Tensor:
        """W_a a_{t-1} + b for actions (..., A): the action's part of the transition's input
        layer, batched over time (the ``action_in`` of :func:`prior_step`)."""
        return F.linear(actions, self.w_action, self.b_action)


def prior_step(
    weights: PriorWeights, deter: Tensor, stoch: Tensor, action_in: Tensor, fused_gru: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the RSSM prior on bare tensors: (h_{t-1}, s_{t-1}, W_a a_{t-1} + b) ->
    (h_t, mu_t, sigma_t) of p(s_t | h_t) = N(mu_t, diag(sigma_t^2)), with
    h_t = GRUCell(ReLU(W_s s_{t-1} + W_a a_{t-1} + b), h_{t-1}).

    The one definition of the step: :meth:`RSSM._img_step` calls it on the live parameters (then
    samples s_t), the fast planner's rollout on cast copies (:meth:`PriorWeights.cast`).
    ``fused_gru``: the GRU as ``torch.gru_cell`` (``nn.GRUCell``'s kernel; one fused CPU kernel for
    the gates); else written out, r, z = sigmoid(.), n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h' = (1 - z) n + z h (the same function, for compilers to fuse with the rest of the step).
    """
    w = weights
    x = F.relu(F.linear(stoch, w.w_stoch) + action_in)
    if fused_gru:
        deter = torch.gru_cell(x, deter, w.w_ih, w.w_hh, w.b_ih, w.b_hh)
    else:
        i_r, i_z, i_n = F.linear(x, w.w_ih, w.b_ih).chunk(3, -1)
        h_r, h_z, h_n = F.linear(deter, w.w_hh, w.b_hh).chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        deter = n + z * (deter - n)
    hidden = F.relu(F.linear(deter, w.w_prior, w.b_prior))
    mean, raw_std = F.linear(hidden, w.w_head, w.b_head).chunk(2, -1)
    return deter, mean, F.softplus(raw_std) + w.min_std


class RSSM(TransitionModel):
    """Deterministic and stochastic paths (paper Eq. 4):

    - deterministic state model  h_t = f(h_{t-1}, s_{t-1}, a_{t-1})
      = GRUCell(ReLU(W [s_{t-1}; a_{t-1}] + b), h_{t-1}),
    - stochastic state model (prior)  p(s_t | h_t) = N(mu, diag(sigma^2)),
      (mu, sigma) = head(ReLU(W h_t + b)),
    - encoder / filter (posterior)  q(s_t | h_t, e_t) = N(mu, diag(sigma^2)),
      (mu, sigma) = head(ReLU(W [h_t; e_t] + b)),

    with sigma = softplus(.) + min_std and reparameterised samples s_t = mu + sigma * eps.
    ``features`` = concat(h_t, s_t).

    Choices (as the official PlaNet code, google-research/planet ``models/rssm.py`` with the
    default ``future_mix=True``): ReLU activations (not ELU; that code's RSSM uses ReLU), one hidden
    layer of ``hidden_size`` units before the GRU and in each of prior and posterior, a standard
    GRU cell (``nn.GRUCell`` = GRUBlockCell), the prior's hidden layer reads h_t (the GRU output).
    ``mean_only`` replaces samples by means (the official ``mean_only`` option; deterministic, used
    in tests).

    Args:
        action_size: A. embed_size: E (1024 with the paper's encoder).
        deter_size: size of h_t (200). stoch_size: size of s_t (30).
        hidden_size: units of the hidden layers (200). min_std: lower bound of sigma (0.1).
    """

    def __init__(
        self,
        action_size: int,
        embed_size: int,
        *,
        deter_size: int = 200,
        stoch_size: int = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
        mean_only: bool = False,
    ) -> None:
        super().__init__()
        check_sizes(
            action_size=action_size,
            embed_size=embed_size,
            deter_size=deter_size,
            stoch_size=stoch_size,
            hidden_size=hidden_size,
        )
        self.action_size = int(action_size)
        self.embed_size = int(embed_size)
        self.deter_size = int(deter_size)
        self.stoch_size = int(stoch_size)
        self.hidden_size = int(hidden_size)
        self.feature_size = self.deter_size + self.stoch_size
        self.mean_only = bool(mean_only)
        # Transition: [s_{t-1}; a_{t-1}] -> hidden -> GRU -> h_t.
        self.img_in = SplitLinear((self.stoch_size, self.action_size), self.hidden_size)
        self.cell = nn.GRUCell(self.hidden_size, self.deter_size)
        # Prior p(s_t | h_t).
        self.prior_hidden = nn.Linear(self.deter_size, self.hidden_size)
        self.prior_head = GaussianHead(self.hidden_size, self.stoch_size, min_std)
        # Posterior q(s_t | h_t, e_t).
        self.post_hidden = SplitLinear((self.deter_size, self.embed_size), self.hidden_size)
        self.post_head = GaussianHead(self.hidden_size, self.stoch_size, min_std)

    def initial(self, batch: int, device: torch.device | None = None) -> State:
        kw: dict[str, Any] = dict(device=self._device(device), dtype=self._dtype())
        z = torch.zeros(batch, self.stoch_size, **kw)
        return State(torch.zeros(batch, self.deter_size, **kw), z, z.clone(), z.clone())

    def prepare_actions(self, actions: Tensor) -> Tensor:
        # W_a a_{t-1} + b: the action columns of the transition's input layer, batched over time.
        return self.prior_weights().actions(actions)

    def prepare_embeds(self, embeds: Tensor) -> Tensor:
        # W_e e_t + b: the embedding columns of the posterior's hidden layer, batched over time.
        return self.post_hidden.part(1, embeds, bias=True)

    def prior_weights(self) -> PriorWeights:
        """The live parameters of the prior step (views; gradients flow through them)."""
        return PriorWeights(
            self.img_in.weight_part(0),
            self.cell.weight_ih,
            self.cell.bias_ih,
            self.cell.weight_hh,
            self.cell.bias_hh,
            self.prior_hidden.weight,
            self.prior_hidden.bias,
            self.prior_head.linear.weight,
            self.prior_head.linear.bias,
            self.img_in.weight_part(1),
            self.img_in.linear.bias,
            self.prior_head.min_std,
        )

    def _img_step(self, prev: State, action_in: Tensor) -> State:
        deter, mean, std = prior_step(self.prior_weights(), prev.deter, prev.stoch, action_in)
        return State(deter, sample_normal(mean, std, self.mean_only), mean, std)

    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor) -> tuple[State, State]:
        prior = self._img_step(prev, action_in)
        x = F.relu(self.post_hidden.part(0, prior.deter) + embed_in)
        mean, std = self.post_head(x)
        post = State(prior.deter, sample_normal(mean, std, self.mean_only), mean, std)
        return post, prior

    def features(self, state: State) -> Tensor:
        return torch.cat([state.deter, state.stoch], dim=-1)
