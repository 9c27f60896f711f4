"""Model-predictive control with the cross-entropy method (CEM) in latent space (paper, sec. 2)."""

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
    tile_state,
)


@torch.no_grad()
def cem(
    transition: Any,
    reward_model: RewardModel,
    state: State,
    *,
    horizon: int = 12,
    iterations: int = 10,
    candidates: int = 1000,
    top_k: int = 100,
    action_size: int | None = None,
    min_action: float | Tensor = -1.0,
    max_action: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
    return_stats: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Plan the next action of E environments with CEM over action sequences in latent space.

    The belief over action sequences a_{t:t+H} is a time-dependent diagonal Gaussian
    q(a_{t:t+H}) = prod_{tau=t}^{t+H} N(a_tau | mu_tau, diag(sigma_tau^2)), initialised to
    N(0, I) at every call (every environment step). Then, I times:

    1. draw J candidate sequences a^(j)_{t:t+H} ~ q (per environment) and clip them to
       [min_action, max_action];
    2. roll every candidate out once through the transition prior,
       s_{tau+1} ~ p(s_{tau+1} | s_tau, a_tau), starting from the current belief ``state``
       (open loop: no observation, no image decoding; E * J candidates in one batch);
    3. score it by R^(j) = sum_{tau=t+1}^{t+H} E[p(r_tau | s_tau)], the reward model applied once
       to all H imagined features;
    4. refit mu_{t:t+H} and sigma_{t:t+H} to the K candidates with the highest R^(j)
       (mean and population standard deviation, per time step and action dimension).

    The planned action is the mean mu_t of the final belief at the first step.

    Candidates are laid out env-major everywhere (candidate c of env e is row e * J + c of the
    rollout), see :func:`planetrl.planning.base.tile_state`.

    Args:
        transition: a :class:`planetrl.models.TransitionModel`; ``imagine(state (N,), actions
            (N, H, A)) -> State (N, H)`` and ``features(state) -> (..., F)`` are used.
        reward_model: maps features (..., F) to the predicted mean reward (...,).
        state: the current latent belief (e.g. the filtering posterior), leading shape (E,).
        horizon: H, the length of the planned action sequences.
        iterations: I, the number of CEM refits.
        candidates: J, the action sequences sampled per environment and iteration.
        top_k: K, the elite sequences the belief is refitted to (K <= J).
        action_size: A; by default ``transition.action_size``.
        min_action, max_action: the action bounds (scalars or (A,) tensors).
        generator: a torch.Generator for repeatable plans (its device may differ from the
            model's; the noise is drawn there and moved).
        return_stats: also return a dict with the final belief ``mean`` and ``std`` (E, H, A) and
            per-iteration diagnostics (I, E): ``mean_return`` (all J candidates),
            ``elite_return`` (the K elites), ``best_return`` and ``mean_std`` (the average
            sigma after the refit).

    Returns:
        The first action mu_t, shape (E, A), on the device and in the dtype of ``state``; with
        ``return_stats``, the pair (action, stats).

    Raises:
        ValueError: on a bad option (non-positive H/I/J/K, K > J, min_action >= max_action, ...),
            a state without exactly one batch dimension, or a model output of the wrong shape.
    """
    check_int_options(
        {"horizon": horizon, "iterations": iterations, "candidates": candidates, "top_k": top_k}
    )
    num_envs = check_state(state)
    action_size = resolve_action_size(transition, action_size)
    dtype, device = state.deter.dtype, state.deter.device
    low, high = resolve_bounds(min_action, max_action, action_size, dtype, device)

    tiled = tile_state(state, candidates)  # (E * J,), env-major; the same for every iteration
    env_index = torch.arange(num_envs, device=device).unsqueeze(1)  # (E, 1)
    shape = (num_envs, candidates, horizon, action_size)
    mean = torch.zeros((num_envs, horizon, action_size), dtype=dtype, device=device)
    std = torch.ones((num_envs, horizon, action_size), dtype=dtype, device=device)
    history: dict[str, list[Tensor]] = {
        "mean_return": [],
        "elite_return": [],
        "best_return": [],
        "mean_std": [],
    }

    for _ in range(iterations):
        noise = standard_normal(shape, dtype=dtype, device=device, generator=generator)
        actions = mean.unsqueeze(1) + std.unsqueeze(1) * noise  # (E, J, H, A)
        actions = torch.clamp(actions, low, high)
        flat = actions.reshape(num_envs * candidates, horizon, action_size)  # env-major rows
        returns = rollout_returns(transition, reward_model, tiled, flat)
        returns = returns.reshape(num_envs, candidates)  # (E, J), the same env-major order
        elite_returns, elite_index = torch.topk(returns, top_k, dim=1)  # (E, K)
        elites = actions[env_index, elite_index]  # (E, K, H, A)
        mean = elites.mean(dim=1)
        std = elites.std(dim=1, correction=0)
        if return_stats:
            finite = torch.where(torch.isfinite(returns), returns, torch.nan)
            history["mean_return"].append(finite.nanmean(dim=1))
            history["elite_return"].append(elite_returns.mean(dim=1))
            history["best_return"].append(elite_returns[:, 0])
            history["mean_std"].append(std.mean(dim=(1, 2)))

    action = torch.clamp(mean[:, 0], low, high)  # already inside: a mean of clipped samples
    if not return_stats:
        return action
    stats = {key: torch.stack(values) for key, values in history.items()}
    stats["mean"] = mean
    stats["std"] = std
    return action, stats


register_planner("cem", cem)
