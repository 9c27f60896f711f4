"""Random shooting: the simplest latent-space planner, a baseline for CEM."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from planetrl.models.state import State
from planetrl.planning.base import (
    RewardModel,
    check_int_options,
    check_state,
    register_planner,
    resolve_action_size,
    resolve_bounds,
    rollout_returns,
    standard_normal,
    standard_uniform,
    tile_state,
)

DISTRIBUTIONS = ("normal", "uniform")


@torch.no_grad()
def random_shooting(
    transition: Any,
    reward_model: RewardModel,
    state: State,
    *,
    horizon: int = 12,
    candidates: int = 1000,
    action_size: int | None = None,
    min_action: float | Tensor = -1.0,
    max_action: float | Tensor = 1.0,
    distribution: str = "normal",
    generator: torch.Generator | None = None,
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Plan the next action of E environments by scoring J random action sequences once.

    Draw J sequences a^(j)_{t:t+H} per environment from N(0, I) clipped to
    [min_action, max_action] (``distribution="normal"``) or from U[min_action, max_action]
    (``"uniform"``), roll them all out once through the transition prior (E * J in one batch,
    env-major as in :func:`planetrl.planning.cem`), score each by
    R^(j) = sum_{tau=t+1}^{t+H} E[p(r_tau | s_tau)] and return the first action a^(j*)_t of the
    best one. This is CEM with one iteration and K = 1, returning the elite instead of a mean.

    Args:
        transition, reward_model, state, horizon, candidates, action_size, min_action,
        max_action, generator: as for :func:`planetrl.planning.cem`.
        distribution: "normal" (clipped N(0, I)) or "uniform".
        return_stats: also return a dict with ``best_return`` and ``mean_return`` (E,) and the
            best sequence ``best_actions`` (E, H, A).

    Returns:
        The first action of the best sequence, (E, A); with ``return_stats``, (action, stats).
    """
    check_int_options({"horizon": horizon, "candidates": candidates})
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    num_envs = check_state(state)
    action_size = resolve_action_size(transition, action_size)
    dtype, device = state.deter.dtype, state.deter.device
    low, high = resolve_bounds(min_action, max_action, action_size, dtype, device)

    shape = (num_envs, candidates, horizon, action_size)
    if distribution == "normal":
        noise = standard_normal(shape, dtype=dtype, device=device, generator=generator)
        actions = torch.clamp(noise, low, high)
    else:
        noise = standard_uniform(shape, dtype=dtype, device=device, generator=generator)
        actions = low + (high - low) * noise
    returns = rollout_returns(
        transition,
        reward_model,
        tile_state(state, candidates),
        actions.reshape(num_envs * candidates, horizon, action_size),
    ).reshape(num_envs, candidates)  # (E, J), env-major
    best = returns.argmax(dim=1)  # (E,)
    best_actions = actions[torch.arange(num_envs, device=device), best]  # (E, H, A)
    action = best_actions[:, 0]
    if not return_stats:
        return action
    finite = torch.where(torch.isfinite(returns), returns, torch.nan)
    stats = {
        "best_return": returns.gather(1, best.unsqueeze(1)).squeeze(1),
        "mean_return": finite.nanmean(dim=1),
        "best_actions": best_actions,
    }
    return action, stats


register_planner("random", random_shooting)
