"""Shared test data (the planner option sets that the planning and speed tests run over) and
how the suite is spread over pytest-xdist's workers (``-n`` in pyproject.toml's addopts)."""

from __future__ import annotations

import pytest

from planetrl.planning.cem import CEM_OPTIONS, ICEM_DEFAULTS

ICEM_OPTIONS = {k: v for k, v in ICEM_DEFAULTS.items() if k in CEM_OPTIONS}
"""iCEM's published option values (without the warm start, which is the wrapper's)."""

OPTION_SETS = {
    "paper": {},
    "coloured": {"noise_beta": 2.0},
    "keep_elites": {"keep_elites": 0.3},
    "population_decay": {"population_decay": 1.5},
    "momentum_init_std": {"momentum": 0.1, "init_std": 0.5},
    "best_and_mean": {"execute_best": True, "mean_candidate": True},
    "icem": ICEM_OPTIONS,
}
"""Each iCEM option on its own, and all of them: the sets every option test is run over."""


@pytest.fixture
def few_resamples(monkeypatch):
    """Fewer bootstrap resamples than a real suite report (rliable takes ~0.2-6 ms per resample
    on 2 cores); the tests that compare with rliable directly use the same counts."""
    from planetrl.suite import stats

    for name, value in (
        ("REPS", 300),
        ("PROFILE_REPS", 100),
        ("IMPROVEMENT_REPS", 100),
        ("CURVE_REPS", 100),
    ):
        monkeypatch.setattr(stats, name, value)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups for ``--dist loadgroup`` (pyproject.toml's addopts), set before xdist reads them:
    every test of a file runs in one worker, so a module-scoped fixture (the learning guard's
    training run, the transfer source run) is built once, not once per worker; and the tests
    marked ``ray`` (each starts a local Ray cluster of every core) share one worker, so two
    clusters never compete for the same two cores. Without xdist the marks change nothing."""
    for item in items:
        if not any(True for _ in item.iter_markers("xdist_group")):
            group = "ray" if item.get_closest_marker("ray") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _ray_workers_at_normal_priority(request, monkeypatch):
    """Ray starts its workers at niceness 15 (its `worker_niceness`), right for a suite beside
    interactive work; in the test suite it starves a Ray test's runs behind the other xdist
    worker's tests (the tiny comparison took 3x as long). The clusters a `ray` test starts run
    their workers at the tests' own priority (the raylet reads RAY_worker_niceness)."""
    if request.node.get_closest_marker("ray"):
        monkeypatch.setenv("RAY_worker_niceness", "0")
