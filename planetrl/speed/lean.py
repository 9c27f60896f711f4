"""A lean CEM for the RSSM: the same function as :func:`planetrl.planning.cem` with
``transition.imagine`` + ``reward_model`` (same weights, same random draws in the same order; the
CEM loop itself is shared, :func:`planetrl.planning.cem_loop`, only the scoring differs), but
written for speed: the RSSM prior step on bare tensors (no ``State`` objects, no argument checks,
no mean/std kept for all H steps), the features written into one preallocated (N, H, F) buffer
and the reward MLP applied once per iteration, optionally in bfloat16 (weights cast once per plan)
and with the one-step cell ``torch.compile``'d.

Random draws, in the order of the eager code: per iteration the candidate noise (E, J, H, A) from
``generator`` (or the default generator), then per rollout step the prior sample eps (N, S) from
the default generator of the device (``torch.randn_like`` in the eager RSSM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from planetrl.models.rssm import RSSM
from planetrl.models.state import State
from planetrl.planning.cem import Plan, PlanInit, cem_loop, plan_result


@dataclass
class RSSMPriorWeights:
    """The tensors of the RSSM's open-loop prior p(s_t | h_t), h_t = GRU(.., h_{t-1})."""

    w_stoch: Tensor  # (hidden, S): the s_{t-1} columns of the transition's input layer
    w_action: Tensor  # (hidden, A): its a_{t-1} columns
    b_in: Tensor  # (hidden,)
    w_ih: Tensor  # (3D, hidden) GRU input weights, gates (r, z, n)
    b_ih: Tensor
    w_hh: Tensor  # (3D, D) GRU recurrent weights
    b_hh: Tensor
    w_prior: Tensor  # (hidden, D)
    b_prior: Tensor
    w_head: Tensor  # (2S, hidden): mean and raw std
    b_head: Tensor
    min_std: float
    mean_only: bool

    @classmethod
    def from_rssm(cls, rssm: RSSM, dtype: torch.dtype | None = None) -> "RSSMPriorWeights":
        def get(t: Tensor) -> Tensor:
            t = t.detach()
            return t.to(dtype).contiguous() if dtype is not None else t.contiguous()

        return cls(
            get(rssm.img_in.weight_part(0)), get(rssm.img_in.weight_part(1)),
            get(rssm.img_in.linear.bias),
            get(rssm.cell.weight_ih), get(rssm.cell.bias_ih),
            get(rssm.cell.weight_hh), get(rssm.cell.bias_hh),
            get(rssm.prior_hidden.weight), get(rssm.prior_hidden.bias),
            get(rssm.prior_head.linear.weight), get(rssm.prior_head.linear.bias),
            float(rssm.prior_head.min_std), bool(rssm.mean_only),
        )


def prior_step(
    deter: Tensor, stoch: Tensor, action_in: Tensor, eps: Tensor,
    w_stoch: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,
    w_prior: Tensor, b_prior: Tensor, w_head: Tensor, b_head: Tensor, min_std: float,
) -> tuple[Tensor, Tensor]:
    """One RSSM prior step on bare tensors: (h_{t-1}, s_{t-1}, W_a a_{t-1} + b, eps) -> (h_t, s_t).
    The GRU is ``nn.GRUCell``'s: r, z = sigmoid(.), n = tanh(W_in x + b_in + r (W_hn h + b_hn)),
    h' = (1 - z) n + z h."""
    x = F.relu(F.linear(stoch, w_stoch) + action_in)
    gi = F.linear(x, w_ih, b_ih)
    gh = F.linear(deter, w_hh, b_hh)
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    deter = n + z * (deter - n)
    mean, raw_std = F.linear(F.relu(F.linear(deter, w_prior, b_prior)), w_head, b_head).chunk(2, -1)
    stoch = mean + (F.softplus(raw_std) + min_std) * eps
    return deter, stoch


def prior_step_gru_cell(
    deter: Tensor, stoch: Tensor, action_in: Tensor, eps: Tensor,
    w_stoch: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,
    w_prior: Tensor, b_prior: Tensor, w_head: Tensor, b_head: Tensor, min_std: float,
) -> tuple[Tensor, Tensor]:
    """:func:`prior_step` with the GRU as ``torch.gru_cell`` (one fused CPU kernel for the gates;
    the eager default)."""
    x = F.relu(F.linear(stoch, w_stoch) + action_in)
    deter = torch.gru_cell(x, deter, w_ih, w_hh, b_ih, b_hh)
    mean, raw_std = F.linear(F.relu(F.linear(deter, w_prior, b_prior)), w_head, b_head).chunk(2, -1)
    stoch = mean + (F.softplus(raw_std) + min_std) * eps
    return deter, stoch


def reward_mlp(features: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The reward MLP (ReLU between the Linear layers) on bare tensors, (..., F) -> (...,)."""
    x = features
    for i, (w, b) in enumerate(layers):
        x = F.linear(x, w, b)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x.squeeze(-1)


def reward_layers(reward_model: Any, dtype: torch.dtype | None) -> list[tuple[Tensor, Tensor]] | None:
    """The (weight, bias) pairs of a :class:`planetrl.models.RewardModel`-like MLP (Linear/ReLU
    ``net``), or None when it is something else."""
    net = getattr(reward_model, "net", None)
    if not isinstance(net, torch.nn.Sequential):
        return None
    layers = []
    for module in net:
        if isinstance(module, torch.nn.Linear):
            layers.append((module.weight, module.bias))
        elif not isinstance(module, torch.nn.ReLU):
            return None
    if not layers or any(b is None for _, b in layers):
        return None
    if not isinstance(net[-1], torch.nn.Linear) or net[-1].out_features != 1:
        return None
    cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t.detach())
    return [(cast(w), cast(b)) for w, b in layers]


def supports(transition: Any, reward_model: Any) -> bool:
    """True when the lean planner computes the same function as the eager one for these models."""
    return (
        type(transition) is RSSM
        and reward_layers(reward_model, None) is not None
        and not transition.mean_only
    )


def rollout_returns(
    deter: Tensor, stoch: Tensor, action_in: Tensor, eps: Tensor,
    w_stoch: Tensor, w_ih: Tensor, b_ih: Tensor, w_hh: Tensor, b_hh: Tensor,
    w_prior: Tensor, b_prior: Tensor, w_head: Tensor, b_head: Tensor,
    reward: list[tuple[Tensor, Tensor]], min_std: float, gru_cell: bool = True,
) -> Tensor:
    """Predicted returns (N,) float32 of N open-loop rollouts of the RSSM prior: from (h, s) (N, .)
    under the prepared actions ``action_in`` = W_a a + b (N, H, hidden) with prior noise ``eps``
    (H, N, S); the reward MLP once on all N * H features. One pure tensor function (what
    ``torch.compile`` and the CUDA graph capture)."""
    step = prior_step_gru_cell if gru_cell else prior_step
    features = []
    for t in range(action_in.shape[1]):
        deter, stoch = step(
            deter, stoch, action_in[:, t], eps[t], w_stoch, w_ih, b_ih, w_hh, b_hh,
            w_prior, b_prior, w_head, b_head, min_std,
        )
        features.append(torch.cat([deter, stoch], -1))
    returns = reward_mlp(torch.stack(features, 1), reward).float().sum(1)
    return torch.nan_to_num(returns, nan=float("-inf"))


@torch.no_grad()
def lean_cem(
    transition: RSSM,
    reward_model: Any,
    state: State,
    *,
    horizon: int,
    iterations: int,
    candidates: int,
    top_k: int,
    generator: torch.Generator | None = None,
    min_action: float = -1.0,
    max_action: float = 1.0,
    noise_beta: float = 0.0,
    keep_elites: float = 0.0,
    population_decay: float = 1.0,
    momentum: float = 0.0,
    init_std: float = 1.0,
    execute_best: bool = False,
    mean_candidate: bool = False,
    init: PlanInit | None = None,
    dtype: torch.dtype | None = None,
    rollout: Callable[..., Tensor] | None = None,
    noise: Tensor | None = None,
    return_stats: bool = False,
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]] | Plan:
    """CEM as :func:`planetrl.planning.cem` (the same loop, :func:`planetrl.planning.cem_loop`,
    and the same options with the same defaults), scored by a fast rollout of the RSSM.

    ``dtype``: compute dtype of the rollout (None = the model's; e.g. torch.bfloat16); the CEM
    belief, the candidates and the returns stay float32. ``rollout``: the rollout function
    (default :func:`rollout_returns` with ``torch.gru_cell``; e.g. a ``torch.compile``'d one,
    which compiles once per population size N: with ``population_decay`` γ > 1 or warm-start
    elites, once per distinct N_i). ``noise`` (I, E, J, H, A): pre-drawn white candidate noise (the
    CUDA-graph planner's static buffer when its generator cannot be captured; only with a constant
    population and no warm-start elites); None draws it from ``generator`` as the eager code.
    """
    out_dtype, device = state.deter.dtype, state.deter.device
    w = RSSMPriorWeights.from_rssm(transition, dtype)
    rew = reward_layers(reward_model, dtype)
    run = rollout_returns if rollout is None else rollout
    cdtype = w.w_ih.dtype
    E, H, A, S = state.shape[0], horizon, transition.action_size, transition.stoch_size
    buffers: dict[int, tuple[Tensor, Tensor, Tensor]] = {}  # per population size N

    def score(actions: Tensor) -> Tensor:
        num = actions.shape[1]
        N = E * num
        if num not in buffers:
            # Env-major tiling (row e * N + c is env e, candidate c), as planning.tile_state.
            deter0 = state.deter.to(cdtype).unsqueeze(1).expand(E, num, -1).reshape(N, -1)
            stoch0 = state.stoch.to(cdtype).unsqueeze(1).expand(E, num, -1).reshape(N, -1)
            eps = torch.empty((H, N, S), dtype=out_dtype, device=device)
            buffers[num] = (deter0, stoch0, eps)
        deter0, stoch0, eps = buffers[num]
        action_in = F.linear(actions.reshape(N, H, A).to(cdtype), w.w_action, w.b_in)
        for t in range(H):  # one draw per step, in the eager order (randn_like in the RSSM)
            eps[t] = torch.randn((N, S), dtype=out_dtype, device=device)
        returns = run(
            deter0, stoch0, action_in, eps.to(cdtype), w.w_stoch, w.w_ih, w.b_ih, w.w_hh,
            w.b_hh, w.w_prior, w.b_prior, w.w_head, w.b_head, rew, w.min_std,
        )
        return returns.to(out_dtype).reshape(E, num)

    plan = cem_loop(
        score,
        num_envs=E, horizon=H, action_size=A, iterations=iterations, candidates=candidates,
        top_k=top_k, low=min_action, high=max_action, dtype=out_dtype, device=device,
        noise_beta=noise_beta, keep_elites=keep_elites, population_decay=population_decay,
        momentum=momentum, init_std=init_std, execute_best=execute_best,
        mean_candidate=mean_candidate, generator=generator, noise=noise, init=init,
        return_stats=return_stats,
    )
    return plan_result(plan, return_stats, return_plan)
