"""The agents planetrl trains: one interface (:class:`AgentKind`) and one registry by name.

Everything above the agents (``planetrl train`` and ``eval``, the suite runner and report, the
attribution, ``planetrl compare``) asks an agent's :class:`AgentKind` for what differs between
agents and never names an agent itself. Built in: ``planet`` (PlaNet, :mod:`planetrl.training.kind`)
and ``worldmodels`` (World Models, :mod:`planetrl.worldmodels.kind`).

A third agent is a package with an :class:`AgentKind` instance plus one registry line, in any of:

- :data:`BUILTIN` below (an agent of planetrl itself);
- the entry-point group ``planetrl.agents`` of an installed package
  (``[project.entry-points."planetrl.agents"] mine = "mypackage.kind:KIND"``);
- the environment variable ``PLANETRL_AGENTS`` (``mine=mypackage.kind:KIND,other=...``), which
  the suite's Ray workers inherit.

Kinds are imported on first use, so naming an agent costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from planetrl.config import ConfigError, RunConfig, check_preset, read_config_file

BUILTIN: dict[str, str] = {
    "planet": "planetrl.training.kind:PLANET",
    "worldmodels": "planetrl.worldmodels.kind:WORLD_MODELS",
}
"""Agent name -> ``module:attribute`` of its :class:`AgentKind`, PlaNet first (the default)."""
ENTRY_POINTS = "planetrl.agents"
ENVIRONMENT = "PLANETRL_AGENTS"


@dataclass
class Evaluation:
    """What ``planetrl eval`` prints and saves for any agent."""

    task: str
    returns: list[float]
    frames: np.ndarray | None
    """(T, H, W, 3) uint8 frames of the episodes side by side, when recorded."""
    detail: str = ""
    """Agent-specific text after the returns (e.g. ms per plan)."""


class AgentKind:
    """What the rest of planetrl needs of an agent. Subclasses set the class attributes and
    implement the methods; the optional parts say so in their docstrings."""

    name: ClassVar[str]
    """The registry name (``--agent NAME``, ``RunSpec.agent``, the ``agent`` key of
    ``config.json``)."""
    title: ClassVar[str]
    """The agent's name in prose and reports (e.g. ``PlaNet``)."""
    presets: ClassVar[tuple[str, ...]]
    """The agent's presets, its default first."""
    config_class: ClassVar[type[RunConfig]]
    """The agent's run configuration (a :class:`~planetrl.config.RunConfig`)."""
    description: ClassVar[str]
    """What ``planetrl train --agent NAME`` does, for its ``--help``."""
    non_finite_error: ClassVar[type[Exception]] = ArithmeticError
    """The exception training raises on a non-finite loss (exit status 3)."""

    config_module: ClassVar[Any] = None
    """A module with ``preset(name)``, ``from_dict(data)``, ``to_dict(config)`` and
    ``load_config(path)`` (as :mod:`planetrl.config` has): the configuration methods below
    delegate to it; an agent without one overrides them."""

    # ------------------------------------------------------------------ configuration
    def _config_module(self) -> Any:
        if self.config_module is None:
            raise NotImplementedError(
                f"{type(self).__name__}: set config_module or override "
                "preset, from_dict, to_dict and load_config"
            )
        return self.config_module

    def preset(self, name: str) -> RunConfig:
        """The default configuration of preset ``name``."""
        return self._config_module().preset(name)

    def from_dict(self, data: dict[str, Any]) -> RunConfig:
        """A configuration from :meth:`to_dict`'s output; unknown keys are an error."""
        return self._config_module().from_dict(data)

    def to_dict(self, config: RunConfig) -> dict[str, Any]:
        """``config`` as the plain dict saved in ``config.json``."""
        return self._config_module().to_dict(config)

    def load_config(self, path: str | Path) -> RunConfig:
        """The saved configuration at ``path``; errors name the file."""
        return self._config_module().load_config(path)

    def budget(
        self,
        config: RunConfig,
        *,
        env_steps: int,
        episode_env_steps: int,
        eval_every_env_steps: int,
        eval_episodes: int,
    ) -> RunConfig:
        """``config`` trained to a suite's ``env_steps``, evaluated on ``eval_episodes`` every
        ``eval_every_env_steps`` (as the agent's training allows: say how in the docstring)."""
        raise NotImplementedError

    # ------------------------------------------------------------- training and evaluation
    def train(
        self, config: RunConfig, *, allow_config_change: bool = False, progress: bool = True
    ) -> dict[str, Any]:
        """Create or resume the run in ``config.logdir`` and train it to its budget; returns its
        summary (``episodes``, ``env_steps``, ``eval``: the last evaluation's metrics)."""
        raise NotImplementedError

    def counts(self, summary: dict[str, Any]) -> str:
        """The amounts of a finished :meth:`train`, for its last line."""
        return f"{summary['episodes']} episodes, {summary['env_steps']} env steps"

    def evaluate(
        self,
        logdir: str | Path,
        *,
        episodes: int,
        seed: int,
        device: str,
        parallel: bool,
        record: bool,
        threads: int | None,
        on_step: Callable[[int], None] | None = None,
        log: Callable[[str], None] = print,
        task: str | None = None,
    ) -> Evaluation:
        """Evaluate the trained run in ``logdir`` on ``episodes`` episodes (seeds ``seed + i``)
        without exploration noise; ``threads``: torch's CPU threads (None: the run's);
        ``task``: another task to act in, where the agent can plan for one it was not trained
        on (``planetrl eval --task``; passed only when given, so a kind without it still
        evaluates its own task)."""
        raise NotImplementedError

    # --------------------------------------------------- comparison (``planetrl compare``)
    def load_models(self, run_dir: Path, device: str = "cpu") -> tuple[RunConfig, Any] | None:
        """(config, models) of a run with a checkpoint, for the comparison; None without one."""
        raise NotImplementedError

    def parameters(self, loaded: tuple[RunConfig, Any]) -> list[tuple[str, int]]:
        """(part, parameters) of each part of the agent's models."""
        raise NotImplementedError

    def stages(
        self, loaded: tuple[RunConfig, Any], episodes: list[tuple[int, int]]
    ) -> list[tuple[str, int]]:
        """(stage, env steps) of each way the run spent its budget; ``episodes``: (index, env
        steps) of every episode file of the run."""
        raise NotImplementedError

    def open_loop(
        self, loaded: tuple[RunConfig, Any], data: dict[str, np.ndarray], context: int, seed: int
    ) -> list[tuple[str, Any, Any]]:
        """The dynamics model's open-loop predictions on held-out chunks (``data``: image,
        action, reward of shape (N, context + H, ...)): (prediction's name, frames (N, H, 3, 64,
        64) in [0, 1], rewards (N, H)) for each way the agent predicts (e.g. sampled, mean)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ attribution (optional)
    def planner(self, config: RunConfig) -> Any | None:
        """The CEM planner settings (H, I, J, K) an agent plans with, whose ceiling with the true
        simulator the attribution measures; None (the default) for an agent that does not plan
        that way, which the attribution then skips."""
        return None


def registered() -> dict[str, str]:
    """Every agent's name -> ``module:attribute`` (see the module docstring)."""
    found = dict(BUILTIN)
    try:
        points = metadata.entry_points(group=ENTRY_POINTS)
    except TypeError:  # pragma: no cover - Python < 3.10
        # Python < 3.10 only: the stubs (3.10) have no dict of lists here, hence the ignore.
        points = metadata.entry_points().get(ENTRY_POINTS, [])  # type: ignore[arg-type]
    for point in points:
        found.setdefault(point.name, point.value)
    for item in filter(None, (s.strip() for s in os.environ.get(ENVIRONMENT, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise ConfigError(f"{ENVIRONMENT}: {item!r} is not NAME=module:attribute")
        found.setdefault(name.strip(), target.strip())
    return found


def names() -> tuple[str, ...]:
    """The agents' names, PlaNet first."""
    return tuple(registered())


def check_agent(name: str) -> str:
    """``name`` if it is an agent, else a :class:`ConfigError` naming the accepted ones."""
    if name not in registered():
        raise ConfigError(f"unknown agent {name!r}; accepted: {', '.join(names())}")
    return name


_KINDS: dict[str, AgentKind] = {}


def kind(name: str) -> AgentKind:
    """The :class:`AgentKind` registered as ``name`` (imported on first use)."""
    if name not in _KINDS:
        target = registered()[check_agent(name)]
        module, _, attribute = target.partition(":")
        try:
            found = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"agent {name!r}: cannot load {target}: {err}") from None
        if not isinstance(found, AgentKind) or found.name != name:
            raise ConfigError(f"agent {name!r}: {target} is not an AgentKind named {name!r}")
        _KINDS[name] = found
    return _KINDS[name]


def of_config(config: Any) -> AgentKind:
    """The kind of a configuration object."""
    for name in names():
        if type(config) is kind(name).config_class:
            return kind(name)
    raise ConfigError(f"{type(config).__name__} is the configuration of no registered agent")


def read_agent(path: str | Path) -> str:
    """The agent of the saved config at ``path``: its ``agent`` key, ``planet`` without one (a
    PlaNet config.json never had the key). A missing or corrupt file is a :class:`ConfigError`."""

    return str(read_config_file(path).get("agent", "planet"))


def presets_of(agent: str) -> tuple[str, ...]:
    """The presets of ``agent``."""
    return kind(agent).presets


def check_agent_preset(agent: str, preset: str) -> str:
    """``preset`` if ``agent`` has it; the error names the agent's presets and the agent."""
    try:
        return check_preset(preset, presets_of(agent))
    except ConfigError as err:
        raise ConfigError(f"{err} (--agent {agent})") from None


def common_presets(agents: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The presets every one of ``agents`` has, in the first agent's order."""
    first = presets_of(agents[0]) if agents else ()
    return tuple(p for p in first if all(p in presets_of(a) for a in agents))
