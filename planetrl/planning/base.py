"""What every planner shares: the call protocol, a registry, argument checks and the rollout.

A planner is a pure function of (transition model, reward model, latent state):

    action = planner(transition, reward_model, state)        # state (E,) -> action (E, A)

Any callable with that call can stand in for another one; :func:`register_planner` makes it
available to :func:`make_planner` by name.

Symbols are the paper's (arXiv 1811.04551): H planning horizon, I optimisation iterations,
J candidate action sequences, K elite (top) sequences, E environments planned for at once,
A action dimension.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from planetrl.models.state import State
from planetrl.rules import CEM_OPTION_RULES

RewardModel = Callable[[Tensor], Tensor]
"""Maps features (..., F) to the predicted mean reward (...,)."""


@runtime_checkable
class Planner(Protocol):
    """``planner(transition, reward_model, state, **overrides) -> action (E, A)``.

    ``transition`` is a :class:`planetrl.models.TransitionModel` (only ``imagine``, ``features``
    and ``action_size`` are used), ``reward_model`` maps features (..., F) to mean rewards (...,),
    ``state`` is the current latent belief with leading shape (E,).
    """

    def __call__(
        self, transition: Any, reward_model: RewardModel, state: State, **kwargs: Any
    ) -> Tensor: ...


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# Callable[..., Any]: what a planner returns depends on its options (return_stats=, ...).
_PLANNERS: dict[str, Callable[..., Any]] = {}
_WARM_START: dict[str, bool] = {}
_POSITIONAL = ("transition", "reward_model", "state")


def register_planner(name: str, fn: Callable[..., Any], *, warm_start: bool = False) -> None:
    """Make ``fn`` (with the :class:`Planner` call) available to :func:`make_planner`.

    ``warm_start``: whether the planner is meant to run warm-started from its previous plan
    (:class:`planetrl.planning.WarmStart`, which needs ``init=`` and ``return_plan=``); the
    configured planner (:func:`planetrl.planning.planner_from_config`) follows it unless the
    config says otherwise. The pure function ``fn`` itself is always stateless.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"planner name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise ValueError(f"planner {name!r} must be callable, got {type(fn).__name__}")
    _PLANNERS[name] = fn
    _WARM_START[name] = bool(warm_start)


def planner_function(name: str) -> Callable[..., Any]:
    """The function registered as ``name`` (ValueError listing the known names otherwise)."""
    if name not in _PLANNERS:
        known = ", ".join(available_planners())
        raise ValueError(f"unknown planner {name!r}; known planners: {known}")
    return _PLANNERS[name]


def planner_defaults(name: str) -> dict[str, Any]:
    """The default value of every option of planner ``name`` (from its signature)."""
    signature = inspect.signature(planner_function(name))
    return {
        n: p.default
        for n, p in signature.parameters.items()
        if n not in _POSITIONAL and p.default is not inspect.Parameter.empty
    }


def planner_option_names(name: str) -> tuple[str, ...]:
    """The options planner ``name`` takes (its keyword parameters, from its signature)."""
    signature = inspect.signature(planner_function(name))
    return tuple(
        n
        for n, p in signature.parameters.items()
        if n not in _POSITIONAL and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def default_warm_start(name: str) -> bool:
    """Whether planner ``name`` was registered to run warm-started (:func:`register_planner`)."""
    planner_function(name)
    return _WARM_START.get(name, False)


def available_planners() -> list[str]:
    """Names accepted by :func:`make_planner`, sorted."""
    return sorted(_PLANNERS)


class ConfiguredPlanner:
    """A planner with its options fixed and checked once, when it was made
    (:func:`make_planner`): ``planner(transition, reward_model, state, **overrides)`` calls
    ``function(transition, reward_model, state, **options, **overrides)``.

    Attributes:
        name: the registered name.
        function: the registered planner function.
        options: the options fixed at construction, as given.
        resolved: every option's value: the function's defaults (its signature; iCEM's for
            ``icem``) under ``options``. What code that builds another implementation of the same
            planner reads (:func:`planetrl.speed.accelerate`), so the options travel as one
            object from the configuration to every planner built from it.
    """

    __slots__ = ("name", "function", "options", "resolved")

    def __init__(
        self,
        name: str,
        function: Callable[..., Any],
        options: dict[str, Any],
        resolved: dict[str, Any],
    ) -> None:
        self.name, self.function = name, function
        self.options, self.resolved = dict(options), dict(resolved)

    def __call__(self, transition: Any, reward_model: Any, state: Any, **overrides: Any) -> Any:
        options = {**self.options, **overrides} if overrides else self.options
        return self.function(transition, reward_model, state, **options)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "generator")
        return f"ConfiguredPlanner({self.name!r}, {shown})"


def make_planner(name: str, **kwargs: Any) -> Planner:
    """The planner ``name`` with its options fixed: ``make_planner("cem", horizon=12)(t, r, s)``.

    The one planner factory: the options are the planner's own keyword parameters (its
    signature), checked now (unknown option -> TypeError naming the accepted ones; bad value ->
    ValueError) rather than at the first environment step. Options may still be overridden per
    call, e.g. ``generator=``. :func:`planetrl.planning.planner_from_config` calls it with the
    options of a ``PlannerConfig``; :func:`planetrl.speed.accelerate` wraps what it returns.

    Returns:
        a :class:`ConfiguredPlanner`.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones) or a bad option value.
        TypeError: an option the planner does not take.
    """
    fn = planner_function(name)
    values: dict[str, Any] = dict(kwargs)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins or exotic callables: no early checks
        signature = None
    if signature is not None:
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        options = [n for n in signature.parameters if n not in _POSITIONAL]
        for key in kwargs:
            if key in _POSITIONAL or (not accepts_any and key not in signature.parameters):
                raise TypeError(
                    f"planner {name!r} takes no option {key!r}; accepted options: "
                    f"{', '.join(options)}"
                )
        # Early value checks with the planner's own defaults filled in.
        values = {
            n: p.default
            for n, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        values.update(kwargs)
        check_int_options(values)
        check_cem_options(values)
    return ConfiguredPlanner(name, fn, kwargs, values)


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

_INT_OPTIONS = ("horizon", "iterations", "candidates", "top_k")


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is an integer >= 1 (not a bool), else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_int_options(values: dict[str, Any]) -> None:
    """Check whichever of horizon (H), iterations (I), candidates (J), top_k (K) are present."""
    for key in _INT_OPTIONS:
        if key in values:
            check_positive_int(key, values[key])
    if "top_k" in values and "candidates" in values and values["top_k"] > values["candidates"]:
        raise ValueError(
            f"top_k (K={values['top_k']}) must not exceed candidates (J={values['candidates']})"
        )


def check_cem_options(values: dict[str, Any], prefix: str = "") -> None:
    """Check whichever of the CEM/iCEM options (:func:`planetrl.planning.cem`) are present, by
    the ranges of :data:`planetrl.rules.CEM_OPTION_RULES` (their one owner): noise_beta (β >= 0),
    keep_elites (ξ in [0, 1)), population_decay (γ >= 1), momentum (α in [0, 1)), init_std
    (σ_0 > 0), execute_best and mean_candidate (bools).

    ``prefix`` is put before the option's name in the message (e.g. ``"planner."``).
    """
    for key, rule in CEM_OPTION_RULES.items():
        if key in values and not rule.ok(values[key]):
            named = f"{prefix}{key}" + (f" ({rule.symbol})" if rule.symbol else "")
            raise ValueError(f"{named} must be {rule.accepted}, got {values[key]!r}")


def check_state(state: Any) -> int:
    """The number of environments E of a latent state with leading shape (E,)."""
    if not isinstance(state, State):
        raise ValueError(f"state must be a planetrl.models.State, got {type(state).__name__}")
    shape = state.shape
    if len(shape) != 1:
        raise ValueError(
            f"state must have one batch dimension (E,), got leading shape {tuple(shape)}"
        )
    for field in ("stoch", "mean", "std"):
        tensor = getattr(state, field)
        if tensor.shape[:-1] != shape:
            raise ValueError(
                f"state.{field} has leading shape {tuple(tensor.shape[:-1])}, "
                f"but state.deter has {tuple(shape)}"
            )
    if shape[0] < 1:
        raise ValueError("state must hold at least one environment (E >= 1)")
    return int(shape[0])


def resolve_action_size(transition: Any, action_size: int | None) -> int:
    """``action_size`` or, when None, ``transition.action_size``; they must agree if both exist."""
    model_size = getattr(transition, "action_size", None)
    if action_size is None:
        if model_size is None:
            raise ValueError("action_size is not given and the transition model has no action_size")
        return check_positive_int("transition.action_size", model_size)
    action_size = check_positive_int("action_size", action_size)
    if model_size is not None and int(model_size) != action_size:
        raise ValueError(
            f"action_size={action_size} disagrees with transition.action_size={model_size}"
        )
    return action_size


def resolve_bounds(
    min_action: float | Tensor,
    max_action: float | Tensor,
    action_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The action bounds as tensors of shape (A,), checked to satisfy min < max everywhere."""
    bounds = []
    for name, value in (("min_action", min_action), ("max_action", max_action)):
        tensor = torch.as_tensor(value, dtype=dtype, device=device)
        try:
            tensor = torch.broadcast_to(tensor, (action_size,)).clone()
        except RuntimeError as error:
            raise ValueError(
                f"{name} must be a scalar or broadcast to ({action_size},), "
                f"got shape {tuple(tensor.shape)}"
            ) from error
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} must be finite, got {value!r}")
        bounds.append(tensor)
    low, high = bounds
    if not (low < high).all():
        raise ValueError(
            f"min_action must be below max_action, got {min_action!r} and {max_action!r}"
        )
    return low, high


# ---------------------------------------------------------------------------------------------
# Sampling, tiling, scoring
# ---------------------------------------------------------------------------------------------


def standard_normal(
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """N(0, I) noise of ``shape``; drawn on the generator's device (so a CPU generator also seeds
    a CUDA plan) and then moved to ``device``."""
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, dtype=dtype, device=generator.device, generator=generator).to(device)


def colour_noise(white: Tensor, beta: float, dim: int = -2) -> Tensor:
    """Filter white N(0, 1) noise along ``dim`` (the time axis, length H) into coloured noise
    whose power spectral density is proportional to 1/f^β, keeping unit variance.

    In the frequency domain every rfft bin k (frequency f_k = k / H, with f_0 set to the lowest
    non-zero frequency 1/H so that the constant component stays finite) is scaled by
    f_k^(-β/2); the inverse transform is a circular convolution of the white noise with a fixed
    kernel, so the result is a stationary Gaussian whose variance per step is, by Parseval,
    (1/H) sum_k w_k s_k^2 over the rfft bins (w_k = 2 for the bins standing for a conjugate pair,
    1 for f = 0 and, for even H, f = 1/2). The scales are divided by its square root: unit
    variance at every step, exactly in expectation. β = 0 returns ``white`` itself (white noise,
    plain CEM); β > 0 gives more power to low frequencies (β = 1 pink, β = 2 red/Brownian).
    """
    if beta == 0:
        return white
    length = white.shape[dim]
    freqs = torch.fft.rfftfreq(length, dtype=white.dtype, device=white.device)
    freqs[0] = 1.0 / length
    scale = freqs ** (-beta / 2.0)
    weight = torch.full_like(scale, 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    scale = scale / torch.sqrt((weight * scale**2).sum() / length)
    shape = [1] * white.dim()
    shape[dim] = scale.shape[0]
    spectrum = torch.fft.rfft(white, dim=dim) * scale.reshape(shape)
    return torch.fft.irfft(spectrum, n=length, dim=dim)


def standard_uniform(
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """U[0, 1) noise of ``shape``, drawn like :func:`standard_normal`."""
    if generator is None:
        return torch.rand(shape, dtype=dtype, device=device)
    return torch.rand(shape, dtype=dtype, device=generator.device, generator=generator).to(device)


def tile_state(state: State, candidates: int) -> State:
    """Repeat each of the E states J times, env-major: row ``e * J + c`` is env e, candidate c.

    The same order is used for the action sequences (``(E, J, H, A).reshape(E * J, H, A)``) and
    the returns (``(E * J,).reshape(E, J)``), so states, actions and scores can never be paired
    across environments.
    """
    num_envs = state.shape[0]
    index = torch.arange(num_envs, device=state.deter.device).repeat_interleave(candidates)
    return state[index]


def rollout_returns(
    transition: Any, reward_model: RewardModel, tiled_state: State, actions: Tensor
) -> Tensor:
    """Predicted return sum_{t=1..H} E[r_t] of each action sequence, shape (N,).

    One open-loop rollout of the prior for all N = E * J sequences (``actions`` (N, H, A)), then
    the reward model applied once to all N * H imagined features. Returns that are NaN are scored
    -inf so that they are never chosen.
    """
    num, horizon = actions.shape[:2]
    priors = transition.imagine(tiled_state, actions)
    if tuple(priors.shape) != (num, horizon):
        raise ValueError(
            f"transition.imagine returned leading shape {tuple(priors.shape)}, "
            f"expected ({num}, {horizon})"
        )
    # A reward model that returns a distribution is scored by its mean.
    rewards: Tensor | torch.distributions.Distribution = reward_model(transition.features(priors))
    if isinstance(rewards, torch.distributions.Distribution):
        rewards = rewards.mean
    if rewards.dim() == 3 and rewards.shape[-1] == 1:
        rewards = rewards.squeeze(-1)
    if tuple(rewards.shape) != (num, horizon):
        raise ValueError(
            f"reward_model returned shape {tuple(rewards.shape)}, expected ({num}, {horizon})"
        )
    returns = rewards.sum(dim=1)
    return torch.nan_to_num(returns, nan=float("-inf"))
