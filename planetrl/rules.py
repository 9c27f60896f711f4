"""What a setting accepts: :class:`Rule` and the rules shared by the configuration
(:mod:`planetrl.config`) and the code that takes the same values directly (the planners,
:mod:`planetrl.planning`), so that neither imports the other for them. A leaf of planetrl's import
graph: it imports nothing of planetrl.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any, Callable, NamedTuple

__all__ = [
    "PLANNER_NAMES",
    "AT_LEAST_ONE",
    "BOOL",
    "CEM_OPTION_RULES",
    "DEVICE",
    "NON_NEGATIVE",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "UNIT_INTERVAL",
    "Rule",
    "is_int",
    "is_json_object",
    "is_real",
    "one_of",
]


class Rule(NamedTuple):
    """What a field accepts: ``accepted`` in words (for the error), ``ok(value)`` the test,
    ``symbol`` the paper's symbol named in the error (optional)."""

    accepted: str
    ok: Callable[[Any], bool]
    symbol: str | None = None

    def named(self, symbol: str) -> "Rule":
        return self._replace(symbol=symbol)

    def or_none(self) -> "Rule":
        """The same rule for an optional field (None = the default of whoever reads it)."""
        return Rule(self.accepted, lambda v: v is None or self.ok(v), self.symbol)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_json_object(value: Any) -> bool:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return False
    try:
        return json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        return False


POSITIVE_INT = Rule("a positive integer", lambda v: is_int(v) and v >= 1)
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: is_int(v) and v >= 0)
POSITIVE = Rule("a finite number > 0", lambda v: is_real(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: is_real(v) and v >= 0)
AT_LEAST_ONE = Rule("a finite number >= 1", lambda v: is_real(v) and v >= 1)
UNIT_INTERVAL = Rule("a number in [0, 1)", lambda v: is_real(v) and 0 <= v < 1)
BOOL = Rule("True or False", lambda v: isinstance(v, bool))
DEVICE = Rule(
    "'auto', 'cpu', 'cuda' or 'cuda:N'",
    lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")),
)


PLANNER_NAMES = ("cem", "icem", "random")
"""The built-in planners, by the name :func:`planetrl.planning.make_planner` knows them and
``PlannerConfig.name`` accepts (its ``Literal`` spells them out for the command line; a test
checks that the two agree)."""

CEM_OPTION_RULES: dict[str, Rule] = {
    "noise_beta": NON_NEGATIVE.named("β"),
    "keep_elites": UNIT_INTERVAL.named("ξ"),
    "population_decay": AT_LEAST_ONE.named("γ"),
    "momentum": UNIT_INTERVAL.named("α"),
    "init_std": POSITIVE.named("σ_0"),
    "execute_best": BOOL,
    "mean_candidate": BOOL,
}
"""The ranges of iCEM's options (one owner): :class:`planetrl.config.PlannerConfig` (where None =
the planner's default) and :func:`planetrl.planning.base.check_cem_options` (``CEMOptions``) read
them."""


def one_of(*values: Any) -> Rule:
    return Rule(f"one of {', '.join(map(repr, values))}", lambda v: v in values)
