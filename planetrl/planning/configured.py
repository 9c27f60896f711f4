"""The planner of a configuration: the one place a :class:`planetrl.config.PlannerConfig` becomes
a planner. :func:`planner_from_config` fixes the options the config gives (those the planner's own
signature takes) with :func:`planetrl.planning.make_planner` and adds the warm start
(:class:`planetrl.planning.WarmStart`) when the config (or the planner's registration) asks for
it. The fast paths (:func:`planetrl.speed.accelerate`) wrap what it returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch

from planetrl.planning.base import Planner, default_warm_start, make_planner, planner_option_names
from planetrl.planning.warm_start import WarmStart


def _settings(planner_cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(planner_cfg):
        return {f.name: getattr(planner_cfg, f.name) for f in dataclasses.fields(planner_cfg)}
    return dict(vars(planner_cfg))


def planner_options(planner_cfg: Any) -> dict[str, Any]:
    """The options ``planner_cfg`` gives its planner ``planner_cfg.name``: every field the
    planner's signature takes (H and J for random shooting; H, I, J, K and iCEM's options for CEM
    and iCEM), except those left None (the planner's own default). Fields the planner does not
    take are not passed (``Config.validate`` rejects iCEM options set for another planner)."""
    accepted = planner_option_names(planner_cfg.name)
    return {
        key: value
        for key, value in _settings(planner_cfg).items()
        if key in accepted and value is not None
    }


def uses_warm_start(planner_cfg: Any) -> bool:
    """``planner_cfg.warm_start``, or when None (or absent) the planner's registered default
    (on for ``icem``)."""
    value = getattr(planner_cfg, "warm_start", None)
    return default_warm_start(planner_cfg.name) if value is None else bool(value)


def planner_from_config(planner_cfg: Any, *, generator: torch.Generator | None = None) -> Planner:
    """The planner of ``planner_cfg`` (a :class:`planetrl.config.PlannerConfig`):
    ``make_planner(name, generator=generator, **planner_options(planner_cfg))``, in a
    :class:`planetrl.planning.WarmStart` when :func:`uses_warm_start` (call ``reset(num_envs)`` at
    the start of episodes; :class:`planetrl.agent.Agent` does).

    Raises:
        ValueError: an unknown planner name (the message lists the known ones) or a bad value.
    """
    planner = make_planner(planner_cfg.name, generator=generator, **planner_options(planner_cfg))
    # cast: WarmStart's call returns the action as Planner's does (a tuple only on request)
    return cast(Planner, WarmStart(planner)) if uses_warm_start(planner_cfg) else planner
