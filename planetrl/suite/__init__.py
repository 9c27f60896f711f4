"""Benchmark suites: named lists of runs trained to an env-step budget on Ray, reported beside the
published figures (``planetrl suite NAME``)."""

from planetrl.suite.published import Published, PublishedDataError, load_published, published_at
from planetrl.suite.report import write_report
from planetrl.suite.runner import SuiteError, run_suite, train_run
from planetrl.suite.spec import BUILTIN, DMC_TASKS, RunSpec, Suite, builtin, run_config

__all__ = [
    "BUILTIN",
    "DMC_TASKS",
    "Published",
    "PublishedDataError",
    "RunSpec",
    "Suite",
    "SuiteError",
    "builtin",
    "load_published",
    "published_at",
    "run_config",
    "run_suite",
    "train_run",
    "write_report",
]
