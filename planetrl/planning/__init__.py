"""Planning in latent space (paper, section 2): CEM, and random shooting as a baseline; iCEM's
improvements (arXiv 2008.06389) as CEM options, the ``icem`` planner with iCEM's defaults and
:class:`WarmStart` for the warm start across environment steps.

A planner is a pure function ``planner(transition, reward_model, state (E,)) -> action (E, A)``;
:func:`make_planner` builds one by name with its options fixed, :func:`register_planner` adds
another implementation of the same call.
"""

from planetrl.planning.base import Planner, available_planners, make_planner, register_planner
from planetrl.planning.cem import ICEM_DEFAULTS, Plan, PlanInit, cem, cem_loop, icem
from planetrl.planning.random_shooting import random_shooting
from planetrl.planning.warm_start import WarmStart

__all__ = [
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
    "random_shooting",
    "register_planner",
]
