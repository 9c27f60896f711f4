"""A lean CEM for the RSSM: the same function as :func:`planetrl.planning.cem` with
``transition.imagine`` + ``reward_model`` (same weights, same random draws in the same order; the
CEM loop itself is shared, :func:`planetrl.planning.cem_loop`, only the scoring differs), but
written for speed: the RSSM's own prior step on bare tensors
(:func:`planetrl.models.rssm.prior_step`, the function :meth:`RSSM._img_step` calls, on the
weights of :meth:`RSSM.prior_weights` cast once per plan; no ``State`` objects, no argument checks,
no mean/std kept for all H steps) and the reward MLP applied once per iteration to all N * H
features, optionally in bfloat16 and with the H-step rollout ``torch.compile``'d.

With a continuation head (the world model's ``planning_reward`` is a
:class:`planetrl.models.DiscountedReward`) the continuation MLP is applied the same way and each
imagined reward weighted by the predicted probability that the episode has not ended before it,
as the eager planner's scoring (:func:`planetrl.models.continuation.continuation_weights`); the
CUDA-graph planner runs this same function.

Random draws, in the order of the eager code: per iteration the candidate noise (E, J, H, A) from
``generator`` (or the default generator), then per rollout step the prior sample eps (N, S) from
the default generator of the device (``torch.randn_like`` in the eager RSSM).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from planetrl.models.continuation import (
    ContinuationModel,
    DiscountedReward,
    continuation_weights,
)
from planetrl.models.reward import RewardModel
from planetrl.models.rssm import RSSM, PriorWeights, prior_step
from planetrl.models.state import State
from planetrl.planning.cem import CEMOptions, Plan, PlanInit, cem_loop, plan_result


def reward_mlp(features: Tensor, layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The reward MLP (ReLU between the Linear layers) on bare tensors, (..., F) -> (...,)."""
    x = features
    for i, (w, b) in enumerate(layers):
        x = F.linear(x, w, b)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x.squeeze(-1)


def reward_layers(
    reward_model: Any, dtype: torch.dtype | None
) -> list[tuple[Tensor, Tensor]] | None:
    """The (weight, bias) pairs of a :class:`planetrl.models.RewardModel` (its
    :meth:`~planetrl.models.RewardModel.mlp_layers`, cast to ``dtype``), or None for any other
    reward function (exactly that class and :class:`~planetrl.models.ContinuationModel`: a
    subclass may compute something else)."""
    if type(reward_model) not in (RewardModel, ContinuationModel):
        return None
    cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t.detach())
    return [(cast(w), cast(b)) for w, b in reward_model.mlp_layers()]


def scoring_layers(
    reward_model: Any, dtype: torch.dtype | None
) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]] | None] | None:
    """(reward layers, continuation layers or None) of a planner's reward: a
    :class:`planetrl.models.RewardModel`-like MLP, or a
    :class:`planetrl.models.DiscountedReward` of two such MLPs; None when it is something else."""
    if isinstance(reward_model, DiscountedReward):
        reward = reward_layers(reward_model.reward, dtype)
        continuation = reward_layers(reward_model.continuation, dtype)
        if reward is None or continuation is None:
            return None
        return reward, continuation
    reward = reward_layers(reward_model, dtype)
    return None if reward is None else (reward, None)


def supports(transition: Any, reward_model: Any) -> bool:
    """True when the lean planner computes the same function as the eager one for these models."""
    return (
        type(transition) is RSSM
        and scoring_layers(reward_model, None) is not None
        and not transition.mean_only
    )


def rollout_returns(
    deter: Tensor,
    stoch: Tensor,
    action_in: Tensor,
    eps: Tensor,
    prior: PriorWeights,
    reward: list[tuple[Tensor, Tensor]],
    gru_cell: bool = True,
    continuation: list[tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """Predicted returns (N,) float32 of N open-loop rollouts of the RSSM prior: from (h, s) (N, .)
    under the prepared actions ``action_in`` = W_a a + b (N, H, hidden) with prior noise ``eps``
    (H, N, S), s_t = mu_t + sigma_t eps_t after each :func:`planetrl.models.rssm.prior_step`
    (``gru_cell``: its fused GRU); the reward MLP once on all N * H features. With
    ``continuation`` (the continuation head's layers) each reward r_t is weighted by
    prod_{tau < t} sigmoid(cont(features_tau)), as :class:`planetrl.models.DiscountedReward`.
    One pure tensor function (what ``torch.compile`` and the CUDA graph capture)."""
    features = []
    for t in range(action_in.shape[1]):
        deter, mean, std = prior_step(prior, deter, stoch, action_in[:, t], fused_gru=gru_cell)
        stoch = mean + std * eps[t]
        features.append(torch.cat([deter, stoch], -1))
    stacked = torch.stack(features, 1)
    rewards = reward_mlp(stacked, reward).float()
    if continuation is not None:
        probability = torch.sigmoid(reward_mlp(stacked, continuation).float())
        rewards = rewards * continuation_weights(probability)
    returns = rewards.sum(1)
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
    options: CEMOptions = CEMOptions(),  # noqa: B008 (a frozen dataclass: one shared value)
    generator: torch.Generator | None = None,
    min_action: float = -1.0,
    max_action: float = 1.0,
    init: PlanInit | None = None,
    dtype: torch.dtype | None = None,
    rollout: Callable[..., Tensor] | None = None,
    noise: Tensor | None = None,
    return_stats: bool = False,
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]] | Plan:
    """CEM as :func:`planetrl.planning.cem` (the same loop, :func:`planetrl.planning.cem_loop`,
    with iCEM's ``options`` as one :class:`planetrl.planning.CEMOptions`, plain CEM by default),
    scored by a fast rollout of the RSSM.

    ``dtype``: compute dtype of the rollout (None = the model's; e.g. torch.bfloat16); the CEM
    belief, the candidates and the returns stay float32. ``rollout``: the rollout function
    (default :func:`rollout_returns` with ``torch.gru_cell``; e.g. a ``torch.compile``'d one,
    which compiles once per population size N: with ``population_decay`` γ > 1 or warm-start
    elites, once per distinct N_i). ``noise`` (I, E, J, H, A): pre-drawn white candidate noise (the
    CUDA-graph planner's static buffer when its generator cannot be captured; only with a constant
    population and no warm-start elites); None draws it from ``generator`` as the eager code.
    """
    out_dtype, device = state.deter.dtype, state.deter.device
    prior = transition.prior_weights().cast(dtype)  # once per plan, not per step
    layers = scoring_layers(reward_model, dtype)
    if layers is None:
        raise ValueError(
            f"the lean planner scores with an MLP reward model (or a DiscountedReward of two), "
            f"got {type(reward_model).__name__}; use the eager planner"
        )
    rew, cont = layers
    # The continuation layers only when there are any: without the head the rollout is called
    # exactly as before (one compiled graph, the same function).
    extra: dict[str, Any] = {} if cont is None else {"continuation": cont}
    run = rollout_returns if rollout is None else rollout
    cdtype = prior.w_ih.dtype
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
        # W_a a + b in the rollout's dtype, from the cast weights.
        action_in = prior.actions(actions.reshape(N, H, A).to(cdtype))
        for t in range(H):  # one draw per step, in the eager order (randn_like in the RSSM)
            eps[t] = torch.randn((N, S), dtype=out_dtype, device=device)
        returns = run(deter0, stoch0, action_in, eps.to(cdtype), prior, rew, **extra)
        return returns.to(out_dtype).reshape(E, num)

    plan = cem_loop(
        score,
        num_envs=E,
        horizon=H,
        action_size=A,
        iterations=iterations,
        candidates=candidates,
        top_k=top_k,
        low=min_action,
        high=max_action,
        dtype=out_dtype,
        device=device,
        options=options,
        generator=generator,
        noise=noise,
        init=init,
        return_stats=return_stats,
    )
    return plan_result(plan, return_stats, return_plan)
