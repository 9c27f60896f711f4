"""Planning in latent space (paper, section 2): CEM, and random shooting as a baseline.

A planner is a pure function ``planner(transition, reward_model, state (E,)) -> action (E, A)``;
:func:`make_planner` builds one by name with its options fixed, :func:`register_planner` adds
another implementation of the same call.
"""

from planetrl.planning.base import Planner, available_planners, make_planner, register_planner
from planetrl.planning.cem import cem
from planetrl.planning.random_shooting import random_shooting

__all__ = [
    "Planner",
    "available_planners",
    "cem",
    "make_planner",
    "random_shooting",
    "register_planner",
]
