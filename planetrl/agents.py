"""The agents planetrl trains, and each one's presets: the one place that names them.

``planet`` (:mod:`planetrl.config`, :mod:`planetrl.training`) and ``worldmodels``
(:mod:`planetrl.worldmodels`). The command line (``train --agent``), the suite's runs
(``RunSpec.agent``) and ``compare --agents`` check names and presets here."""

from __future__ import annotations

from planetrl.config import ConfigError, check_preset

AGENTS = ("planet", "worldmodels")
"""The agents, PlaNet first (the default)."""


def check_agent(name: str) -> str:
    """``name`` if it is an agent, else a :class:`ConfigError` naming the accepted ones."""
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; accepted: {', '.join(AGENTS)}")
    return name


def presets_of(agent: str) -> tuple[str, ...]:
    """The presets of ``agent`` (each agent's config module owns its list)."""
    if check_agent(agent) == "worldmodels":
        from planetrl.worldmodels.config import PRESETS
    else:
        from planetrl.config import PRESETS
    return PRESETS


def check_agent_preset(agent: str, preset: str) -> str:
    """``preset`` if ``agent`` has it; the error names the agent's presets and the agent."""
    try:
        return check_preset(preset, presets_of(agent))
    except ConfigError as err:
        raise ConfigError(f"{err} (--agent {agent})") from None


def common_presets(agents: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The presets every one of ``agents`` has, in PlaNet's order."""
    from planetrl.config import PRESETS

    return tuple(p for p in PRESETS if all(p in presets_of(a) for a in agents))
