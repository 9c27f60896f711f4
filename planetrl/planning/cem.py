"""Model-predictive control with the cross-entropy method (CEM) in latent space (paper, sec. 2),
with the improvements of iCEM (Pinneri et al. 2020, "Sample-efficient Cross-Entropy Method for
Real-time Planning", arXiv 2008.06389) as options.

The CEM loop is written once, in :func:`cem_loop`: it knows nothing about the models and scores
candidate action sequences through a function ``score(actions (E, N, H, A)) -> returns (E, N)``.
:func:`cem` scores with ``transition.imagine`` + ``reward_model`` (any transition model);
:func:`planetrl.speed.lean.lean_cem` with a fast RSSM rollout on bare tensors. Both call the same
loop, so they draw the same random numbers in the same order and give equal plans in float32.

Symbols: the paper's (H, I, J, K, E, A; see :mod:`planetrl.planning.base`) and iCEM's: β the
exponent of the coloured noise, ξ the fraction of elites kept, γ the population decay, α the
momentum, σ_0 the initial standard deviation.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

from planetrl.models.state import State
from planetrl.planning.base import (
    RewardModel,
    check_cem_options,
    check_int_options,
    check_state,
    colour_noise,
    register_planner,
    resolve_action_size,
    resolve_bounds,
    rollout_returns,
    standard_normal,
    tile_state,
)

_Bound = TypeVar("_Bound", float, Tensor)
"""The action bounds of :func:`cem_loop`: both floats or both tensors (``torch.clamp`` takes no
mix)."""

Score = Callable[[Tensor], Tensor]
"""Maps candidate action sequences (E, N, H, A) to their predicted returns (E, N), env-major
(row e is environment e); a return that is NaN must come back as -inf."""


@dataclass(frozen=True)
class CEMOptions:
    """iCEM's improvements to CEM (arXiv 2008.06389), the options beyond the paper's H, I, J, K;
    the defaults are the paper's plain CEM (see :func:`cem` for what each one does). The one list
    of these options: :func:`cem` takes them as keywords with these defaults, :func:`cem_loop`
    and the lean planner (:func:`planetrl.speed.lean.lean_cem`) take the dataclass. Checked on
    construction (:func:`planetrl.planning.base.check_cem_options`).

    Attributes:
        noise_beta: β >= 0, the exponent of the coloured candidate noise (0: white).
        keep_elites: ξ in [0, 1), the fraction of the K elites kept for the next iteration.
        population_decay: γ >= 1, J_i = max(round(J γ^{-i}), min(2K, J)) at iteration i.
        momentum: α in [0, 1) on the refitted μ and σ.
        init_std: σ_0 > 0, the initial standard deviation.
        execute_best: execute the best sequence's first action instead of μ_t.
        mean_candidate: μ is a candidate in the last iteration.
    """

    noise_beta: float = 0.0
    keep_elites: float = 0.0
    population_decay: float = 1.0
    momentum: float = 0.0
    init_std: float = 1.0
    execute_best: bool = False
    mean_candidate: bool = False

    def __post_init__(self) -> None:
        check_cem_options(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


CEM_OPTIONS = tuple(f.name for f in fields(CEMOptions))
"""The names of :class:`CEMOptions` (also the :class:`planetrl.config.PlannerConfig` fields)."""

ICEM = CEMOptions(
    noise_beta=3.0,
    keep_elites=0.3,
    population_decay=1.25,
    momentum=0.1,
    init_std=0.5,
    execute_best=True,
    mean_candidate=True,
)
"""iCEM's published option values (the planner ``icem``), see :data:`ICEM_DEFAULTS`."""

ICEM_DEFAULTS: dict[str, Any] = {**ICEM.as_dict(), "warm_start": True}
"""iCEM's published defaults: the settings shared by every task in the authors' code release for
the paper (martius-lab/iCEM, ``icem/settings/defaults/i-cem-blitz.json``): coloured noise β = 3
(tuned per task there, e.g. 0.25 for HalfCheetah running and 2.5 for Door), ξ = 0.3 of the
elites kept between iterations and shifted
between environment steps, population decay γ = 1.25, momentum α = 0.1 on mean and std, σ_0 = 0.5
(relative to the half-range of the actions, 1 for [-1, 1]), the mean added as a candidate in the
last iteration, the best sequence executed, and the warm start (shift initialisation).
H, I, J, K are not taken from iCEM: its budgets were tuned for ground-truth simulators with H = 30;
here they stay PlaNet's (``PlannerConfig``)."""


# ---------------------------------------------------------------------------------------------
# Warm-start state: what a plan leaves for the next environment step
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanInit:
    """Where the first iteration of a plan starts instead of N(0, σ_0^2 I).

    Attributes:
        mean: μ of the first iteration (E, H, A), e.g. the previous step's final mean shifted by
            one step (:meth:`Plan.shifted`).
        elites: optional sequences added to the first iteration's candidates (E, P, H - 1, A),
            e.g. the previous step's kept elites shifted by one step; the last step of each is
            drawn fresh from N(μ_H, σ_0^2) (with the iteration's noise) before they are scored.
    """

    mean: Tensor
    elites: Tensor | None = None


@dataclass(frozen=True)
class Plan:
    """The result of one plan for E environments (``return_plan=True``).

    Attributes:
        action: the action to execute (E, A): μ_t of the final belief, or with ``execute_best``
            the first action of the best sequence of the last iteration.
        mean, std: the final belief μ, σ over the sequence (E, H, A).
        elites: the P = ⌊ξ K⌋ best sequences of the last iteration, best first (E, P, H, A);
            P = 0 unless ``keep_elites`` ξ > 0.
        stats: the per-iteration diagnostics of ``return_stats`` (else None).
    """

    action: Tensor
    mean: Tensor
    std: Tensor
    elites: Tensor
    stats: dict[str, Tensor] | None = None

    def shifted(self) -> PlanInit:
        """The warm start of the next environment step: μ shifted by one step in time
        (μ'_τ = μ_{τ+1}, the new last step gets the initial mean 0) and the kept elites shifted
        the same way (their new last step is drawn by the next plan)."""
        mean = torch.cat([self.mean[:, 1:], torch.zeros_like(self.mean[:, :1])], dim=1)
        elites = self.elites[:, :, 1:] if self.elites.shape[1] > 0 else None
        return PlanInit(mean=mean, elites=elites)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def population_sizes(candidates: int, top_k: int, iterations: int, decay: float) -> list[int]:
    """J_i = max(round(J γ^{-i}), min(2K, J)) fresh candidates at iteration i = 0..I-1 (iCEM's
    shrinking population; γ = 1 keeps J at every iteration, the paper)."""
    floor = min(2 * top_k, candidates)
    return [max(round(candidates * decay ** (-i)), floor) for i in range(iterations)]


def kept_elites(keep_elites: float, top_k: int) -> int:
    """P = ⌊ξ K⌋, the number of elites kept (rounding error of ξ K forgiven)."""
    return math.floor(keep_elites * top_k + 1e-9)


def cem_loop(
    score: Score,
    *,
    num_envs: int,
    horizon: int,
    action_size: int,
    iterations: int,
    candidates: int,
    top_k: int,
    low: _Bound,
    high: _Bound,
    dtype: torch.dtype,
    device: torch.device,
    options: CEMOptions = CEMOptions(),
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    init: PlanInit | None = None,
    return_stats: bool = False,
) -> Plan:
    """The CEM optimisation of E time-dependent diagonal Gaussians over action sequences, for
    any scoring function (see :func:`cem` for the maths and ``options``, :class:`CEMOptions`).

    Random draws, in order, per iteration: the candidate noise (E, N_i, H, A) from ``generator``
    (or from ``noise[i]``, pre-drawn white noise, when given), then whatever ``score`` draws.
    Nothing here reads a tensor back to Python, so the plain-option loop can be captured in a
    CUDA graph.
    """
    check_int_options(
        {"horizon": horizon, "iterations": iterations, "candidates": candidates, "top_k": top_k}
    )
    if not isinstance(options, CEMOptions):
        raise ValueError(f"options must be a CEMOptions, got {type(options).__name__}")
    E, H, A, K = num_envs, horizon, action_size, top_k
    sizes = population_sizes(candidates, K, iterations, options.population_decay)
    keep = kept_elites(options.keep_elites, K)
    momentum = options.momentum

    if init is None:
        mean = torch.zeros((E, H, A), dtype=dtype, device=device)
        shifted_elites = None
    else:
        if tuple(init.mean.shape) != (E, H, A):
            raise ValueError(
                f"init.mean must have shape (E, H, A) = {(E, H, A)}, got {tuple(init.mean.shape)}"
            )
        mean = init.mean.to(dtype=dtype, device=device)
        shifted_elites = init.elites
        if shifted_elites is not None:
            shape = tuple(shifted_elites.shape)
            if len(shape) != 4 or shape[0] != E or shape[2:] != (H - 1, A):
                raise ValueError(
                    f"init.elites must have shape (E, P, H - 1, A) = ({E}, P, {H - 1}, {A}), "
                    f"got {shape}"
                )
            shifted_elites = shifted_elites.to(dtype=dtype, device=device)
            if shape[1] == 0:
                shifted_elites = None
    # σ_0 at every call, also when warm-started (the shifted σ would be too narrow to explore).
    std = torch.full((E, H, A), float(options.init_std), dtype=dtype, device=device)
    env_index = torch.arange(E, device=device).unsqueeze(1)  # (E, 1)
    kept: Tensor | None = None  # the ⌊ξK⌋ best sequences of the previous iteration (E, P, H, A)
    kept_returns: Tensor | None = None  # and their returns (E, P), not scored again
    history: dict[str, list[Tensor]] = {
        "mean_return": [],
        "elite_return": [],
        "best_return": [],
        "mean_std": [],
    }

    for i, fresh in enumerate(sizes):
        extra = shifted_elites.shape[1] if (i == 0 and shifted_elites is not None) else 0
        shape = (E, fresh + extra, H, A)
        if noise is not None:
            z = noise[i]
            if tuple(z.shape) != shape:
                raise ValueError(
                    f"pre-drawn noise[{i}] has shape {tuple(z.shape)}, expected {shape}: "
                    "pre-drawn noise needs a constant population and no warm-start elites"
                )
        else:
            z = standard_normal(shape, dtype=dtype, device=device, generator=generator)
        z = colour_noise(z, options.noise_beta, dim=2)  # ~ 1/f^β along H (β = 0: as drawn)
        # a^(j) = clip(μ + σ ⊙ z^(j)), j = 1..N_i, per environment.
        actions = torch.clamp(mean.unsqueeze(1) + std.unsqueeze(1) * z, low, high)
        if extra:
            # The previous step's elites, shifted: their first H - 1 steps, then a fresh last step.
            assert shifted_elites is not None  # extra > 0 only with them
            shifted = torch.cat([shifted_elites, actions[:, fresh:, H - 1 :]], dim=2)
            actions = torch.cat([actions[:, :fresh], shifted], dim=1)
        if options.mean_candidate and i == iterations - 1:
            actions[:, 0] = torch.clamp(mean, low, high)  # iCEM: μ itself is a candidate
        returns = score(actions)  # (E, N_i), env-major
        if kept is not None and kept_returns is not None:
            actions = torch.cat([actions, kept], dim=1)
            returns = torch.cat([returns, kept_returns], dim=1)
        elite_returns, elite_index = torch.topk(returns, K, dim=1)  # (E, K), best first
        elites = actions[env_index, elite_index]  # (E, K, H, A)
        # Refit to the K elites: μ = mean, σ = population std (per step and action dimension);
        # with momentum α: μ <- (1 - α) μ_elites + α μ, the same for σ.
        elite_mean = elites.mean(dim=1)
        elite_std = elites.std(dim=1, correction=0)
        if momentum > 0:
            mean = (1.0 - momentum) * elite_mean + momentum * mean
            std = (1.0 - momentum) * elite_std + momentum * std
        else:
            mean, std = elite_mean, elite_std
        if keep > 0:
            kept, kept_returns = elites[:, :keep], elite_returns[:, :keep]
        if return_stats:
            finite = torch.where(torch.isfinite(returns), returns, torch.nan)
            history["mean_return"].append(finite.nanmean(dim=1))
            history["elite_return"].append(elite_returns.mean(dim=1))
            history["best_return"].append(elite_returns[:, 0])
            history["mean_std"].append(std.mean(dim=(1, 2)))

    if options.execute_best:
        action = elites[:, 0, 0]  # the best sequence of the last iteration (candidates: in bounds)
    else:
        action = torch.clamp(mean[:, 0], low, high)  # already inside: a mean of clipped samples
    stats = None
    if return_stats:
        stats = {key: torch.stack(values) for key, values in history.items()}
        stats["mean"] = mean
        stats["std"] = std
    return Plan(action=action, mean=mean, std=std, elites=elites[:, :keep], stats=stats)


def plan_result(plan: Plan, return_stats: bool, return_plan: bool) -> Any:
    """What a planner returns: the action, (action, stats) or the :class:`Plan`."""
    if return_plan:
        return plan
    if return_stats:
        assert plan.stats is not None
        return plan.action, plan.stats
    return plan.action


# ---------------------------------------------------------------------------------------------
# The eager planner
# ---------------------------------------------------------------------------------------------


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
    noise_beta: float = CEMOptions.noise_beta,
    keep_elites: float = CEMOptions.keep_elites,
    population_decay: float = CEMOptions.population_decay,
    momentum: float = CEMOptions.momentum,
    init_std: float = CEMOptions.init_std,
    execute_best: bool = CEMOptions.execute_best,
    mean_candidate: bool = CEMOptions.mean_candidate,
    init: PlanInit | None = None,
    generator: torch.Generator | None = None,
    return_stats: bool = False,
    return_plan: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]] | Plan:
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

    iCEM's improvements (arXiv 2008.06389) are options; their defaults give the paper's plain
    CEM above, bit for bit (:func:`icem` has iCEM's defaults):

    - ``noise_beta`` β: the candidate noise is coloured along the time axis, with power spectral
      density ∝ 1/f^β and unit variance (:func:`planetrl.planning.base.colour_noise`);
      β = 0 is white noise. Larger β: smoother, temporally correlated action sequences.
    - ``keep_elites`` ξ in [0, 1): the P = ⌊ξK⌋ best elites of an iteration join the next
      iteration's candidates (with their returns, not scored again); with a warm start
      (``init``) the previous step's kept elites, shifted by one step, join the first
      iteration's candidates (scored from the new belief; their new last step drawn fresh).
    - ``population_decay`` γ >= 1: iteration i = 0..I-1 draws J_i = max(round(J γ^{-i}),
      min(2K, J)) fresh candidates (γ = 1: J every time).
    - ``momentum`` α in [0, 1): μ <- (1 - α) μ_elites + α μ and the same for σ.
    - ``init_std`` σ_0 > 0: the initial standard deviation (also after a warm start).
    - ``mean_candidate``: in the last iteration the first candidate is μ itself.
    - ``execute_best``: return the first action of the best sequence of the last iteration
      (among its candidates and kept elites) instead of μ_t.
    - ``init`` (:class:`PlanInit`): start from a given μ (and elites) instead of 0: the warm start
      (shift initialisation). :class:`planetrl.planning.WarmStart` keeps it between calls.

    Candidates are laid out env-major everywhere (candidate c of env e is row e * N + c of the
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
        noise_beta, keep_elites, population_decay, momentum, init_std, execute_best,
            mean_candidate, init: iCEM's options, above.
        generator: a torch.Generator for repeatable plans (its device may differ from the
            model's; the noise is drawn there and moved).
        return_stats: also return a dict with the final belief ``mean`` and ``std`` (E, H, A) and
            per-iteration diagnostics (I, E): ``mean_return`` (all candidates),
            ``elite_return`` (the K elites), ``best_return`` and ``mean_std`` (the average
            sigma after the refit).
        return_plan: return a :class:`Plan` (action, final belief, kept elites, stats) instead.

    Returns:
        The action (E, A), on the device and in the dtype of ``state``; with ``return_stats``,
        the pair (action, stats); with ``return_plan``, a :class:`Plan`.

    Raises:
        ValueError: on a bad option (non-positive H/I/J/K, K > J, min_action >= max_action, an
            iCEM option out of range, ...), a state without exactly one batch dimension, an
            ``init`` of the wrong shape, or a model output of the wrong shape.
    """
    # H, I, J, K are checked once per plan, by cem_loop; the iCEM options by CEMOptions.
    options = CEMOptions(
        noise_beta=noise_beta,
        keep_elites=keep_elites,
        population_decay=population_decay,
        momentum=momentum,
        init_std=init_std,
        execute_best=execute_best,
        mean_candidate=mean_candidate,
    )
    num_envs = check_state(state)
    action_size = resolve_action_size(transition, action_size)
    dtype, device = state.deter.dtype, state.deter.device
    low, high = resolve_bounds(min_action, max_action, action_size, dtype, device)
    tiles: dict[int, State] = {}  # the state tiled env-major for each population size N

    def score(actions: Tensor) -> Tensor:
        num = actions.shape[1]
        if num not in tiles:
            tiles[num] = tile_state(state, num)  # (E * N,): row e * N + c is env e
        flat = actions.reshape(num_envs * num, horizon, action_size)  # the same env-major rows
        returns = rollout_returns(transition, reward_model, tiles[num], flat)
        return returns.reshape(num_envs, num)

    plan = cem_loop(
        score,
        num_envs=num_envs,
        horizon=horizon,
        action_size=action_size,
        iterations=iterations,
        candidates=candidates,
        top_k=top_k,
        low=low,
        high=high,
        dtype=dtype,
        device=device,
        options=options,
        generator=generator,
        init=init,
        return_stats=return_stats,
    )
    return plan_result(plan, return_stats, return_plan)


# ---------------------------------------------------------------------------------------------
# iCEM: the same planner with iCEM's defaults
# ---------------------------------------------------------------------------------------------

_ICEM_OPTIONS = ICEM.as_dict()


def icem(
    transition: Any, reward_model: RewardModel, state: State, **options: Any
) -> Tensor | tuple[Tensor, dict[str, Tensor]] | Plan:
    """:func:`cem` with iCEM's defaults (:data:`ICEM_DEFAULTS`): coloured noise, kept and
    shifted elites, a shrinking population, momentum, σ_0 = 0.5, the mean as a candidate and
    the best sequence executed. Every option of :func:`cem` can be given. Pure: the warm start
    across environment steps is :class:`planetrl.planning.WarmStart` around it (which the
    configured planner adds, ``PlannerConfig.warm_start``)."""
    return cem(transition, reward_model, state, **{**_ICEM_OPTIONS, **options})


# The signature of cem with iCEM's defaults, so that make_planner checks options early and
# planner_defaults("icem") reads them from one place.
_CEM_SIGNATURE = inspect.signature(cem)
icem.__signature__ = _CEM_SIGNATURE.replace(  # type: ignore[attr-defined]
    parameters=[
        p.replace(default=_ICEM_OPTIONS[p.name]) if p.name in _ICEM_OPTIONS else p
        for p in _CEM_SIGNATURE.parameters.values()
    ]
)

register_planner("cem", cem)
register_planner("icem", icem, warm_start=ICEM_DEFAULTS["warm_start"])
