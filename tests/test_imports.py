"""The import graph of planetrl: no cycles, ``config`` at the bottom (a leaf), and at folder
level the rooms on floors, every import going down.

Imports are read from the source with ``ast`` (nothing is imported), per module: those at module
level (also inside a top-level ``if`` / ``try``), and separately all of them, function bodies
included (deferred imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "planetrl"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The planetrl module ``name`` refers to (itself, or the package that defines it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "planetrl":
                found.add(_resolve(alias.name))
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}".rstrip(".")
        if base.split(".")[0] == "planetrl":
            for alias in node.names:  # `from planetrl import speed` imports a module
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else _resolve(base))
    found.discard(None)
    found.discard(module)
    return found


def _module_level(body: list[ast.stmt]):
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level(
                node.body
                + node.orelse
                + node.finalbody
                + [s for h in node.handlers for s in h.body]
            )


def import_graph(deferred: bool) -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        nodes = ast.walk(tree) if deferred else _module_level(tree.body)
        graph[module] = set().union(*(_targets(n, module) for n in nodes))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as the list of its modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph(deferred=False)
    assert "planetrl.replay" in graph["planetrl.training.loop"]
    assert "planetrl.envs.gl" in graph["planetrl.envs"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "all"])
def test_no_import_cycle(deferred):
    cycle = find_cycle(import_graph(deferred))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_and_atomic_are_leaves():
    """``config`` imports only ``atomic`` and ``rules``, those two nothing (deferred imports
    included), planning not the config, and the episode format and the driver import nothing of
    PlaNet's (models, planning, training loop)."""
    graph = import_graph(deferred=True)
    assert graph["planetrl.config"] <= {"planetrl.atomic", "planetrl.rules"}, graph[
        "planetrl.config"
    ]
    assert graph["planetrl.atomic"] == set() and graph["planetrl.rules"] == set()
    planning = [m for m in graph if m.startswith("planetrl.planning")]
    assert planning and not any("planetrl.config" in graph[m] for m in planning)
    assert graph["planetrl.episodes"] == {"planetrl.atomic"}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    planet = {
        "planetrl.agent",
        "planetrl.objective",
        "planetrl.training.loop",
        "planetrl.speed",
        "planetrl.planning",
        "planetrl.models",
    }
    for shared in (
        "planetrl.driver",
        "planetrl.replay",
        "planetrl.run.checkpoint",
        "planetrl.run.logger",
        "planetrl.threads",
    ):
        assert not reachable(shared) & planet, (shared, reachable(shared) & planet)


# ---------------------------------------------------------------------------- folder level
# The rooms of planetrl (a top-level module, or a folder with everything below it) on floors,
# the basic ones low: an import goes to a lower floor only, never up or sideways. The shared run
# infrastructure (``run``) sits below every agent; each agent (``training`` for PlaNet,
# ``worldmodels``) below the suites; the command line on top.
FLOORS = {
    "atomic": 0,
    "rules": 0,
    "config": 1,
    "episodes": 1,
    "preprocess": 1,
    "augment": 1,
    "threads": 1,
    "envs": 2,
    "run": 2,
    "replay": 2,
    "agents": 2,
    "models": 2,
    "driver": 3,
    "planning": 3,
    "objective": 3,
    "agent": 3,
    "speed": 4,
    "training": 5,
    "worldmodels": 5,
    "suite": 6,
    "cli": 7,
    "__main__": 8,
}


def room(module: str) -> str:
    """The room of a planetrl module: ``planetrl.suite.report`` -> ``suite``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "planetrl"


def room_graph(deferred: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph(deferred).items():
        for target in targets:
            if room(module) != room(target) and room(target) != "planetrl":
                graph.setdefault(room(module), set()).add(room(target))
    return graph


def test_every_room_has_a_floor():
    rooms = {room(m) for m in MODULES} - {"planetrl"}
    assert rooms == set(FLOORS), (
        f"rooms without a floor: {sorted(rooms - set(FLOORS))}; "
        f"floors of no room: {sorted(set(FLOORS) - rooms)}"
    )


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The room-to-room imports that go up or sideways."""
    return sorted((a, b) for a, targets in graph.items() for b in targets if FLOORS[b] >= FLOORS[a])


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "all"])
def test_rooms_import_downward_only(deferred):
    graph = room_graph(deferred)
    cycle = find_cycle(graph)
    assert cycle is None, "cycle between rooms: " + " -> ".join(cycle)
    wrong = upward(graph)
    assert not wrong, "imports up or sideways (room -> room): " + ", ".join(
        f"{a} (floor {FLOORS[a]}) -> {b} (floor {FLOORS[b]})" for a, b in wrong
    )


def test_the_room_check_finds_upward_and_sideways_arrows():
    graph = {"run": {"training", "config"}, "driver": {"planning"}, "suite": {"training"}}
    assert upward(graph) == [("driver", "planning"), ("run", "training")]
    assert room("planetrl.suite.report") == "suite" and room("planetrl.cli") == "cli"
