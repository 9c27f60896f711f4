"""Planning in latent space (paper, section 2): CEM, and random shooting as a baseline; iCEM's
improvements (arXiv 2008.06389) as CEM options (:class:`CEMOptions`), the ``icem`` planner with
iCEM's defaults and :class:`WarmStart` for the warm start across environment steps.

A planner is a pure function ``planner(transition, reward_model, state (E,)) -> action (E, A)``;
:func:`make_planner` is the one factory, building one by name with its options fixed (the
planner's own keyword parameters), :func:`planner_from_config` builds the planner of a
``PlannerConfig`` with it, and :func:`register_planner` adds another implementation of the same
call. The fast paths (:func:`planetrl.speed.accelerate`) wrap what these return.
"""

from planetrl.planning.base import (
    ConfiguredPlanner,
    Planner,
    available_planners,
    make_planner,
    register_planner,
)
from planetrl.planning.cem import (
    CEM_OPTIONS,
    ICEM,
    ICEM_DEFAULTS,
    CEMOptions,
    Plan,
    PlanInit,
    cem,
    cem_loop,
    icem,
)
from planetrl.planning.configured import planner_from_config, planner_options, uses_warm_start
from planetrl.planning.random_shooting import random_shooting
from planetrl.planning.warm_start import WarmStart

__all__ = [
    "CEMOptions",
    "CEM_OPTIONS",
    "ConfiguredPlanner",
    "ICEM",
    "ICEM_DEFAULTS",
    "Plan",
    "PlanInit",
    "Planner",
    "WarmStart",
    "available_planners",
    "cem",
    "cem_loop",
    "icem",
    "make_planner",
    "planner_from_config",
    "planner_options",
    "random_shooting",
    "register_planner",
    "uses_warm_start",
]
