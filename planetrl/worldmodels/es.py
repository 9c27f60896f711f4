"""CMA-ES for the controller: the `cma` package (Hansen's pycma) behind an ask/tell interface
that maximises returns, with the three traps of the package handled:

- it minimises: :meth:`CMAES.tell` passes the negative fitness;
- its ``seed`` option reseeds numpy's *global* generator, and by default it samples from it
  (``randn`` is the bound method of the global ``RandomState``, which pickling turns into a
  private copy, so a strategy restored from a pickle draws from another stream than one that
  was never pickled). Here the strategy samples from a ``RandomState`` of its own (the
  ``randn`` option), ``seed`` is NaN ("do nothing"), and every call runs with a numpy global
  state of its own swapped in and out (for any other draw inside the package): the run's other
  users of ``np.random`` are neither disturbed nor disturbing, and a resumed run draws exactly
  the candidates an uninterrupted one would (the whole state is part of :meth:`state_dict`);
- its termination criteria (``tolflatfitness`` after one generation of equal fitness, e.g. every
  candidate earning 0 early on; ``tolfun``, ``tolx``, ``tolstagnation``, ...) would end a run
  early: they are switched off, the number of generations is the budget. :meth:`CMAES.stop`
  reports what would have stopped it.

The fitness of candidate θ is its mean return minus ``weight_decay · mean(θ²)``, an L2 penalty. A
deliberate departure: the original (hardmaru/WorldModelsExperiments, ``es.py``, ``CMAES.tell``)
negates the returns for the minimiser and then *adds* ``-weight_decay · mean(θ²)`` to them, so its
term rewards large θ; with 0.01 · mean(θ²) against returns of hundreds either sign is negligible
there, and the penalty is what the term's name intends. The whole state pickles (``state_dict``),
and is saved in the run's checkpoint, which is written atomically.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import Any, Iterator

import cma
import numpy as np

__all__ = ["CMAES"]

_NEVER_STOP = {
    "tolflatfitness": 10**9,
    "tolfun": 0.0,
    "tolfunhist": 0.0,
    "tolx": 0.0,
    "tolstagnation": 10**9,
    "tolconditioncov": np.inf,
    "maxiter": np.inf,
    "maxfevals": np.inf,
}


class CMAES:
    """Maximise f(θ), θ in R^n, with ``cma.CMAEvolutionStrategy``.

    Args:
        num_params: n.
        population: λ, candidates per generation.
        sigma_init: σ_0.
        seed: seed of the numpy state the strategy draws from (a positive integer).
        x0: the initial mean (zeros when None).
        weight_decay: the L2 penalty on the fitness.
    """

    def __init__(
        self,
        num_params: int,
        *,
        population: int,
        sigma_init: float,
        seed: int,
        x0: np.ndarray | None = None,
        weight_decay: float = 0.0,
    ) -> None:
        self.weight_decay = float(weight_decay)
        self._rng_state = np.random.RandomState(seed + 1).get_state()
        x0 = np.zeros(num_params) if x0 is None else np.asarray(x0, float)
        options = {
            "popsize": int(population),
            "seed": np.nan,
            "randn": np.random.RandomState(seed).randn,
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
            **_NEVER_STOP,
        }
        with self._own_rng():
            self._es = cma.CMAEvolutionStrategy(x0, float(sigma_init), options)
        self.generation = 0
        self.best_fitness = -np.inf
        self.best_params = x0.copy()

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        outer = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outer)

    @property
    def num_params(self) -> int:
        return int(self._es.N)

    @property
    def population(self) -> int:
        return int(self._es.popsize)

    def ask(self) -> np.ndarray:
        """The candidates of this generation, (λ, n)."""
        with self._own_rng():
            return np.asarray(self._es.ask(), np.float64)

    def fitness(self, candidates: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """mean return - weight_decay · mean(θ²), per candidate."""
        decay = self.weight_decay * np.mean(np.square(candidates), axis=1)
        return np.asarray(returns, np.float64) - decay

    def tell(self, candidates: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """Update the distribution with the candidates' mean returns; returns their fitness."""
        fitness = self.fitness(candidates, returns)
        if not np.all(np.isfinite(fitness)):
            raise ValueError(f"non-finite fitness at generation {self.generation + 1}")
        with self._own_rng():
            self._es.tell(list(candidates), list(-fitness))  # cma minimises
        best = int(np.argmax(fitness))
        if fitness[best] > self.best_fitness:
            self.best_fitness, self.best_params = float(fitness[best]), candidates[best].copy()
        self.generation += 1
        return fitness

    @property
    def mean(self) -> np.ndarray:
        """The distribution's mean (``xfavorite``), the controller to use."""
        return np.asarray(self._es.mean, np.float64).copy()

    @property
    def sigma(self) -> float:
        return float(self._es.sigma)

    def stop(self) -> dict[str, Any]:
        """What would have stopped the strategy (its termination criteria are off)."""
        return dict(self._es.stop())

    def state_dict(self) -> dict[str, Any]:
        """Everything, picklable: the strategy (pickled), its numpy state, the counters."""
        return {
            "es": pickle.dumps(self._es),
            "rng": self._rng_state,
            "generation": self.generation,
            "best_fitness": self.best_fitness,
            "best_params": self.best_params,
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "CMAES":
        self = cls.__new__(cls)
        self._es = pickle.loads(state["es"])
        self._rng_state = state["rng"]
        self.generation = int(state["generation"])
        self.best_fitness = float(state["best_fitness"])
        self.best_params = np.asarray(state["best_params"])
        self.weight_decay = float(state["weight_decay"])
        return self
