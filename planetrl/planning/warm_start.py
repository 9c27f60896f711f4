"""Warm start across environment steps: a planner that starts from its own previous plan.

iCEM's shift initialisation (arXiv 2008.06389): the plan of step t, shifted by one step in time,
is where the plan of step t + 1 starts, instead of N(0, σ_0^2 I). The planners stay pure
functions; :class:`WarmStart` is the only thing that remembers, per environment, and
:meth:`WarmStart.reset` (called by :meth:`planetrl.agent.Agent.reset`) forgets at the start of
new episodes.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import Tensor

from planetrl.models.state import State
from planetrl.planning.base import RewardModel, check_positive_int, check_state
from planetrl.planning.cem import Plan, PlanInit


def _takes_warm_start(planner: Callable[..., Any]) -> bool:
    """Whether ``planner`` accepts ``init`` and ``return_plan`` (True when it cannot be told)."""
    try:
        parameters = inspect.signature(planner).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return True
    names = {p.name for p in parameters}
    return {"init", "return_plan"} <= names


class WarmStart:
    """Wrap a CEM-like planner (one that takes ``init=`` and ``return_plan=True``, as
    :func:`planetrl.planning.cem`, :func:`planetrl.planning.icem` and
    :func:`planetrl.speed.lean.lean_cem`) so that every call starts from the previous call's plan.

    At step t the planner returns a :class:`Plan`; at step t + 1 it gets ``init = plan.shifted()``:
    the final mean μ shifted by one step (μ'_τ = μ_{τ+1}, the new last step 0) and, when the planner
    keeps elites (ξ > 0), its kept elites shifted the same way. Everything is per environment and
    env-major: row e of the memory is environment e of the batch and only ever initialises row e.

    Call :meth:`reset` at the start of new episodes (:meth:`planetrl.agent.Agent.reset` does), so
    that no plan carries over from one episode (or batch of environments) to the next. A call with
    another number of environments than the remembered plan's is an error rather than a silent
    cold start.

    The call is the planner protocol: ``warm(transition, reward_model, state, **overrides) ->
    action (E, A)``; ``return_stats=True`` gives (action, stats) as the wrapped planner would.
    """

    def __init__(self, planner: Callable[..., Any]) -> None:
        if not callable(planner):
            raise ValueError(f"planner must be callable, got {type(planner).__name__}")
        if not _takes_warm_start(planner):
            raise ValueError(
                f"WarmStart needs a planner that takes init= and return_plan= (cem, icem, "
                f"lean_cem), got {getattr(planner, '__name__', type(planner).__name__)}"
            )
        self.planner = planner
        self.previous: Plan | None = None
        self.num_envs: int | None = None

    def reset(self, num_envs: int | None = None) -> None:
        """Forget the previous plan (start of new episodes); ``num_envs`` E, when given, is the
        number of environments the next calls must plan for."""
        if num_envs is not None:
            num_envs = check_positive_int("num_envs", num_envs)
        self.previous = None
        self.num_envs = num_envs

    def initialisation(self) -> PlanInit | None:
        """The ``init`` of the next call: the previous plan shifted by one step (None: cold)."""
        return None if self.previous is None else self.previous.shifted()

    def __call__(
        self, transition: Any, reward_model: RewardModel, state: State, **kwargs: Any
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        num_envs = check_state(state)
        if self.num_envs is not None and num_envs != self.num_envs:
            raise ValueError(
                f"WarmStart planned for E={self.num_envs} environments, got a state with "
                f"E={num_envs}; call reset(num_envs) at the start of new episodes"
            )
        for key in ("init", "return_plan"):
            if key in kwargs:
                raise ValueError(f"WarmStart sets {key!r} itself; do not pass it")
        plan = self.planner(
            transition, reward_model, state, init=self.initialisation(), return_plan=True, **kwargs
        )
        if not isinstance(plan, Plan):
            raise ValueError(
                f"the wrapped planner returned {type(plan).__name__}, not a Plan: WarmStart needs "
                "a planner that takes init= and return_plan= (cem, icem, lean_cem)"
            )
        self.previous, self.num_envs = plan, num_envs
        if kwargs.get("return_stats"):
            assert plan.stats is not None
            return plan.action, plan.stats
        return plan.action
