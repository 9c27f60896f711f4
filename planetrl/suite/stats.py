"""Statistics over seeds for a suite's report, computed with ``rliable`` (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice").

The score of a run is its **last** evaluation (the mean return of the suite's evaluation episodes
at the end of its budget), never its best one. Only finished runs count.

- **Per task:** the mean over seeds with a 95% percentile-bootstrap interval over seeds (rliable's
  stratified bootstrap; with one task the strata are that task's runs), and a verdict against
  each published figure: *above* where the whole interval lies above the published figure's own
  95% interval, *below* where it lies below it, *within noise* otherwise. The published interval
  is mean ± 1.96 · std / √n with n the source's seed count (``published.csv``); where the source
  does not state n, n = 1 (mean ± 1.96 std, the spread of a single run: the widest honest
  reading). One seed has no interval over seeds: its verdict is then read from its point value
  alone and marked so.
- **Across tasks:** scores normalised to [0, 1] (:func:`normaliser`: DMC returns lie in
  [0, 1000]), then the interquartile mean (IQM), the median and the mean with 95% stratified
  bootstrap intervals (runs resampled within each task), the performance profile (the fraction of
  runs with a normalised score above τ, with its interval) and, between every pair of variants
  that share tasks, the probability of improvement P(X > Y) with its interval.

Bootstrap draws: rliable's bootstrap reads NumPy's global random state, so each computation runs
under a fixed seed (:data:`SEED`) with the caller's global state restored afterwards; the
report is the same every time it is regenerated from the same files.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

SEED = 0
"""The seed of every bootstrap (see the module's docstring)."""
REPS = 10_000
"""Bootstrap replications for the intervals of per-task means and aggregates."""
PROFILE_REPS = 2_000
"""Bootstrap replications for the performance profile (rliable's default)."""
IMPROVEMENT_REPS = 2_000
"""Bootstrap replications for the probability of improvement (as rliable's examples use: each
replication runs a Mann-Whitney U per task, ~6 ms on a 2-core CPU)."""
CURVE_REPS = 2_000
"""Bootstrap replications for the learning curves' intervals (a picture)."""
CONFIDENCE = 0.95
TAUS = np.linspace(0.0, 1.0, 101)
"""Thresholds τ of the performance profile (normalised score)."""
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def _rliable():
    # the suite extra (rliable, arch, pandas): seconds to import, only for a report
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError as err:  # pragma: no cover - an install without the suite extra
        raise ImportError(
            "the suite report's statistics use rliable: pip install "
            "'planetrl[suite]' (or rliable and pandas<3)"
        ) from err
    return rly, metrics


@contextlib.contextmanager
def _seeded(seed: int = SEED) -> Iterator[None]:
    """NumPy's global random state seeded with ``seed`` for the duration, then restored; arch's
    deprecation warning for a RandomState is silenced (rliable passes none here)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(state)


def normaliser(task: str) -> float | None:
    """The score that normalises ``task``'s return to 1 (DMC: 1000, the most reward 1,000 steps
    can earn), or None where no such bound is known (the task is left out of aggregates)."""
    return 1000.0 if task.startswith("dmc:") else None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval (``lo``/``hi`` equal ``point`` with one run)."""

    point: float
    lo: float
    hi: float
    n: int
    """Runs (seeds) behind it."""

    def fmt(self, digits: int = 0) -> str:
        if self.n < 2:
            return f"{self.point:.{digits}f}"
        return f"{self.point:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def mean_interval(scores: Sequence[float]) -> Interval:
    """The mean of one task's scores over seeds and its 95% bootstrap interval (rliable)."""
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"need a non-empty list of scores, got shape {values.shape}")
    return column_intervals(values[:, None])[0]


def column_intervals(matrix: np.ndarray, reps: int = REPS) -> list[Interval]:
    """Per column of a (runs × columns) matrix (columns: tasks, or one task's evaluation
    steps), the mean over runs and its 95% interval by rliable's stratified bootstrap (runs
    resampled within each column). One run: the values, without an interval."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"need a (runs × columns) matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    if n == 1:
        return [Interval(float(v), float(v), float(v), 1) for v in matrix[0]]
    rly, _ = _rliable()
    with _seeded():
        point, ci = rly.get_interval_estimates(
            {"x": matrix},
            lambda s: np.mean(s, axis=0),
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
    return [
        Interval(float(point["x"][j]), float(ci["x"][0, j]), float(ci["x"][1, j]), n)
        for j in range(matrix.shape[1])
    ]


def published_band(mean: float, std: float | None, seeds: int | None) -> tuple[float, float]:
    """The published figure's 95% interval: mean ± 1.96 · std / √n (n = 1 where not stated; a
    figure without a std is a point)."""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return mean, mean
    half = Z95 * std / math.sqrt(seeds or 1)
    return mean - half, mean + half


def verdict(ours: Interval, mean: float, std: float | None, seeds: int | None) -> str:
    """``above``, ``below`` or ``within noise`` of a published figure (module docstring)."""
    lo, hi = published_band(mean, std, seeds)
    if ours.lo > hi:
        return "above"
    if ours.hi < lo:
        return "below"
    return "within noise"


AGGREGATES = ("IQM", "median", "mean")


def aggregate_intervals(matrix: np.ndarray) -> dict[str, Interval]:
    """IQM, median and mean of a (runs × tasks) matrix of normalised scores, each with its 95%
    stratified-bootstrap interval (runs resampled within each task)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"need a (runs × tasks) matrix, got shape {matrix.shape}")
    rly, metrics = _rliable()

    def func(s: np.ndarray) -> np.ndarray:
        return np.array(
            [metrics.aggregate_iqm(s), metrics.aggregate_median(s), metrics.aggregate_mean(s)]
        )

    with _seeded():
        point, ci = rly.get_interval_estimates(
            {"x": matrix}, func, reps=REPS, confidence_interval_size=CONFIDENCE
        )
    n = matrix.shape[0]
    return {
        name: Interval(float(point["x"][i]), float(ci["x"][0, i]), float(ci["x"][1, i]), n)
        for i, name in enumerate(AGGREGATES)
    }


def performance_profile(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The score distribution of a (runs × tasks) matrix at :data:`TAUS`: the fraction of runs
    above τ, and its 95% interval (2 × len(TAUS)), by rliable's stratified bootstrap."""
    rly, _ = _rliable()
    matrix = np.asarray(matrix, dtype=float)
    with _seeded():
        profile, ci = rly.create_performance_profile(
            {"x": matrix}, TAUS, reps=PROFILE_REPS, confidence_interval_size=CONFIDENCE
        )
    return np.asarray(profile["x"]), np.asarray(ci["x"])


def improvement(x: np.ndarray, y: np.ndarray) -> Interval:
    """P(X > Y): the probability that a run of X on a task scores above a run of Y on the same
    task, averaged over tasks (Mann-Whitney U / (n m)), with its 95% interval from rliable's
    stratified bootstrap of X's and Y's runs independently. ``x``, ``y``: (runs × tasks) on the
    same tasks in the same order. P(Y > X) = 1 − P(X > Y), ties counting half, in every
    replication: its interval is [1 − hi, 1 − lo]."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"need two (runs × tasks) matrices on the same tasks, got {x.shape} and {y.shape}"
        )
    rly, metrics = _rliable()
    with _seeded():
        point, ci = rly.get_interval_estimates(
            {"xy": (x, y)},
            metrics.probability_of_improvement,
            reps=IMPROVEMENT_REPS,
            confidence_interval_size=CONFIDENCE,
        )
    return Interval(
        float(point["xy"]),
        float(np.ravel(ci["xy"])[0]),
        float(np.ravel(ci["xy"])[1]),
        min(len(x), len(y)),
    )
