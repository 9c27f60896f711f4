"""Several pixel environments stepped in parallel, one subprocess each.

:class:`EnvPool` runs N copies of ``make_env(task, **make_kwargs)``, each in its own process
(``asynchronous=True``, the default) or all in the calling process (``asynchronous=False``, same
results, useful for debugging). Data collection in PlaNet steps E episodes at once; rendering is
most of the cost of a step, so processes give close to N-fold throughput on N free cores.

Processes are started with the ``"spawn"`` method: a forked child would inherit the parent's
OpenGL (EGL/OSMesa) state and threads, which is unsafe. Each worker imports ``planetrl.envs``
itself and makes its own env and OpenGL context; ``MUJOCO_GL`` is inherited, so all processes use
the same backend. Workers are daemon processes: they cannot outlive the parent.

A spawned worker starts a fresh interpreter, so nothing registered in the parent at run time
exists there: a custom Gymnasium env reaches the workers by name, ``gym:<module>:<id>`` (each
worker imports ``<module>``, which registers ``<id>``; the parent's ``sys.path`` is passed on), or
as an ``env_fn`` factory, which is pickled to each worker (a module-level function, a
``functools.partial`` of one, or an instance of a module-level class; not a lambda or a local
function: :class:`EnvPool` checks this before starting workers and says so).

Threads: each worker runs with one thread for every threaded library (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` = 1 in its environment from the start, and torch's
intra-op threads = 1 if torch is loaded there): N workers beside a planner that uses the cores
must not start N more thread teams (``worker_info()`` reports what a worker runs with).

Masked stepping: ``step(actions, active)`` steps only the envs with ``active[i]`` true. An
inactive env is not touched: it returns its last observation, reward 0, its last
``terminated``/``truncated`` flags (true for an env whose episode has ended) and an empty info.
This lets a collector finish the episodes of the other envs after one env's episode has ended.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import numbers
import os
import pickle
import sys
import threading
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

import gymnasium
import numpy as np

from planetrl.envs.checks import check_seed
from planetrl.envs.registry import check_task, default_action_repeat, make_env

WORKER_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Environment variables set to 1 in every worker process (read by libraries when they load)."""
_ENVIRON_LOCK = threading.Lock()


@contextlib.contextmanager
def _single_threaded_children():
    """Set :data:`WORKER_THREAD_VARIABLES` to 1 while child processes are started (a spawned
    child copies this process's environment at start), then restore them."""
    with _ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in WORKER_THREAD_VARIABLES}
        os.environ.update({name: "1" for name in WORKER_THREAD_VARIABLES})
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _thread_info() -> dict[str, Any]:
    info: dict[str, Any] = {name: os.environ.get(name) for name in WORKER_THREAD_VARIABLES}
    info["pid"] = os.getpid()
    torch = sys.modules.get("torch")
    info["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return info


MAKE_ARGUMENTS = (
    "action_repeat",
    "render",
    "size",
    "seed",
    "env_kwargs",
    "env_fn",
    "sibling_rewards",
)
"""The keyword arguments of ``make_env`` that :class:`EnvPool` passes on."""


def _check_picklable(env_fn: Any) -> None:
    """Raise ValueError unless ``env_fn`` can be sent to a spawned worker process."""
    try:
        pickle.dumps(env_fn)
    except Exception as error:  # noqa: BLE001  (PicklingError, AttributeError, TypeError, ...)
        raise ValueError(
            f"env_fn {env_fn!r} cannot be pickled ({type(error).__name__}: {error}), and the "
            "environments run in worker processes that receive it pickled. Use a module-level "
            "function, a functools.partial of one, or an instance of a module-level class (not "
            "a lambda or a function defined inside another), or step the environments in this "
            "process (EnvPool(asynchronous=False); for a run: train.collect_envs=1 and "
            "eval.parallel=False)."
        ) from error


class EnvPoolWorkerError(RuntimeError):
    """A worker process raised an exception or died; the message names the worker and cause."""


def _worker(conn: Connection, index: int, task: str, make_kwargs: dict[str, Any]) -> None:
    """Worker loop: make the env, then serve ``(command, data)`` requests until ``close``.

    Replies are ``("ok", result)`` or ``("error", (exception type name, message, traceback))``.
    """
    env: gymnasium.Env | None = None
    for name in WORKER_THREAD_VARIABLES:  # also when started by other means than EnvPool
        os.environ[name] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        try:
            env = make_env(task, **make_kwargs)
            conn.send(("ok", (env.observation_space, env.action_space)))
        except Exception as error:  # noqa: BLE001  (reported to the parent)
            conn.send(("error", (type(error).__name__, str(error), traceback.format_exc())))
            return
        while True:
            try:
                command, data = conn.recv()
            except (EOFError, KeyboardInterrupt):
                return
            if command == "close":
                conn.send(("ok", None))
                return
            try:
                if command == "reset":
                    result: Any = env.reset(seed=data)
                elif command == "step":
                    result = env.step(data)
                elif command == "info":
                    result = _thread_info()
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", result))
            except Exception as error:  # noqa: BLE001  (reported to the parent)
                conn.send(("error", (type(error).__name__, str(error), traceback.format_exc())))
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001, S110  (closing at exit is best effort)
                pass
        conn.close()


class EnvPool:
    """N environments of one task, stepped together (see the module docstring).

    Args:
        task: task name, as for :func:`planetrl.envs.make_env`.
        num_envs: N >= 1.
        asynchronous: one subprocess per env (True) or all envs in this process (False).
        seeds: N seeds (or None entries) passed as ``make_env(seed=...)``: the seed of each env's
            first ``reset()`` without a seed. ``None``: ``seed + i`` if ``make_kwargs`` has an
            integer ``seed``, else no seeds.
        start_method: multiprocessing start method, ``"spawn"`` (default) or ``"forkserver"``.
        timeout: seconds to wait for a worker's reply before raising (None: wait as long as the
            worker is alive).
        **make_kwargs: ``action_repeat``, ``render``, ``size``, ``seed``, ``env_kwargs``,
            ``env_fn`` for ``make_env`` (``env_fn`` must be picklable when ``asynchronous``).

    Attributes:
        num_envs, single_observation_space, single_action_space, action_repeat.

    Raises:
        ValueError: bad arguments (checked in this process, before workers start).
        EnvPoolWorkerError: a worker failed to make its env, raised, or died.
    """

    def __init__(
        self,
        task: str,
        num_envs: int,
        *,
        asynchronous: bool = True,
        seeds: Sequence[int | None] | None = None,
        start_method: str = "spawn",
        timeout: float | None = None,
        **make_kwargs: Any,
    ) -> None:
        # cast: numpy integers pass too (to mypy, no int is an Integral)
        if (
            isinstance(num_envs, bool)
            or not isinstance(cast(object, num_envs), numbers.Integral)
            or num_envs < 1
        ):
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"start_method must be 'spawn' or 'forkserver' (fork is unsafe with OpenGL "
                f"contexts), got {start_method!r}"
            )
        unknown = set(make_kwargs) - set(MAKE_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"unknown make_env arguments {sorted(unknown)}; accepted: "
                f"{', '.join(MAKE_ARGUMENTS)}"
            )
        env_fn = make_kwargs.get("env_fn")
        if asynchronous and env_fn is not None:
            _check_picklable(env_fn)
        self.num_envs = int(num_envs)
        self.task = task
        self.asynchronous = bool(asynchronous)
        self.timeout = timeout
        base_seed = check_seed(make_kwargs.pop("seed", None))
        if seeds is None:
            seeds = [None if base_seed is None else base_seed + i for i in range(self.num_envs)]
        seeds = list(seeds)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seeds must have num_envs={self.num_envs} entries, got {len(seeds)}")
        seeds = [check_seed(s) for s in seeds]
        check_task(task)  # clear errors here rather than from every worker

        self._closed = False
        self._envs: list[gymnasium.Env] = []
        self._processes: list[Any] = []
        self._conns: list[Connection] = []
        self._pending: dict[int, tuple[str, Any]] = {}
        per_env = [dict(make_kwargs, seed=s) for s in seeds]
        if self.asynchronous:
            context = mp.get_context(start_method)
            try:
                with _single_threaded_children():
                    self._start_workers(context, task, per_env)
                spaces_ = [self._receive(i, "make_env") for i in range(self.num_envs)]
            except BaseException:
                self.close()
                raise
            self.single_observation_space, self.single_action_space = spaces_[0]
        else:
            try:
                for kwargs in per_env:
                    self._envs.append(make_env(task, **kwargs))
            except BaseException:
                self.close()
                raise
            self.single_observation_space = self._envs[0].observation_space
            self.single_action_space = self._envs[0].action_space
        repeat = make_kwargs.get("action_repeat")
        self.action_repeat = default_action_repeat(task) if repeat is None else int(repeat)
        shape = self.single_observation_space.shape
        self._obs = np.zeros((self.num_envs, *shape), dtype=np.uint8)
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def _start_workers(self, context: Any, task: str, per_env: list[dict[str, Any]]) -> None:
        for i in range(self.num_envs):
            parent_conn, child_conn = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(child_conn, i, task, per_env[i]),
                name=f"planetrl-envpool-{i}",
                daemon=True,
            )
            process.start()
            child_conn.close()  # so that recv() sees EOF when the worker dies
            self._processes.append(process)
            self._conns.append(parent_conn)

    # -- transport ----------------------------------------------------------------------------
    def _send(self, index: int, command: str, data: Any) -> None:
        if self.asynchronous:
            try:
                self._conns[index].send((command, data))
            except (BrokenPipeError, ConnectionResetError, OSError) as error:
                raise self._dead(index, command) from error
        else:
            self._pending[index] = (command, data)

    def _dead(self, index: int, command: str) -> EnvPoolWorkerError:
        process = self._processes[index]
        process.join(timeout=1.0)
        message = (
            f"EnvPool worker {index} ({self.task}, pid {process.pid}) died during {command!r} "
            f"with exit code {process.exitcode}; the pool has been closed"
        )
        self.close()
        return EnvPoolWorkerError(message)

    def _receive(self, index: int, command: str) -> Any:
        if not self.asynchronous:
            command, data = self._pending.pop(index)
            env = self._envs[index]
            if command == "info":
                return _thread_info()
            return env.reset(seed=data) if command == "reset" else env.step(data)
        conn, process = self._conns[index], self._processes[index]
        waited = 0.0
        while not conn.poll(0.5):
            waited += 0.5
            if not process.is_alive() and not conn.poll(0):
                raise self._dead(index, command)
            if self.timeout is not None and waited >= self.timeout:
                self.close()
                raise EnvPoolWorkerError(
                    f"EnvPool worker {index} ({self.task}) did not answer {command!r} within "
                    f"{self.timeout} s; the pool has been closed"
                )
        try:
            status, payload = conn.recv()
        except (EOFError, ConnectionResetError, OSError) as error:
            raise self._dead(index, command) from error
        if status == "error":
            name, message, remote_traceback = payload
            if command == "make_env":
                self.close()
            raise EnvPoolWorkerError(
                f"EnvPool worker {index} ({self.task}) raised {name} during {command!r}: "
                f"{message}\n--- worker traceback ---\n{remote_traceback}"
            )
        return payload

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("EnvPool is closed")

    # -- API ----------------------------------------------------------------------------------
    def reset(
        self,
        seeds: Sequence[int | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset envs; returns ``(obs uint8 (N, H, W, 3), infos)`` for all N envs.

        Args:
            seeds: one seed (or None) per reset env; None: no seeds (each env continues its
                random stream, or uses its ``make_env`` seed at its first reset).
            indices: which envs to reset (default all). Others keep their last observation and
                flags and get an empty info.
        """
        self._check_open()
        indices = list(range(self.num_envs)) if indices is None else [int(i) for i in indices]
        if any(not 0 <= i < self.num_envs for i in indices):
            raise ValueError(f"indices must be in [0, {self.num_envs}), got {indices}")
        seeds = [None] * len(indices) if seeds is None else list(seeds)
        if len(seeds) != len(indices):
            raise ValueError(
                f"seeds must have one entry per reset env ({len(indices)}), got {len(seeds)}"
            )
        seeds = [check_seed(s) for s in seeds]
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i, seed in zip(indices, seeds):
            self._send(i, "reset", seed)
        for i in indices:
            obs, info = self._receive(i, "reset")
            self._obs[i] = obs
            self._terminated[i] = self._truncated[i] = False
            infos[i] = info
        return self._obs.copy(), infos

    def step(
        self, actions: np.ndarray, active: np.ndarray | Sequence[bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step the active envs with their actions.

        Args:
            actions: ``(N, A)`` actions in ``[-1, 1]`` (rows of inactive envs are ignored).
            active: bool ``(N,)``; None: all envs are stepped.

        Returns:
            ``obs`` uint8 ``(N, H, W, 3)``, ``reward`` float32 ``(N,)``, ``terminated`` bool
            ``(N,)``, ``truncated`` bool ``(N,)``, ``infos`` (N dicts). Inactive envs: last obs,
            reward 0, last flags, ``{}``.
        """
        self._check_open()
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, *self.single_action_space.shape)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected} (N, A), got {actions.shape}")
        if active is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(active)
            if mask.shape != (self.num_envs,) or mask.dtype != bool:
                raise ValueError(
                    f"active must be a bool array of shape ({self.num_envs},), got "
                    f"{mask.dtype} {mask.shape}"
                )
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        stepped = np.flatnonzero(mask).tolist()
        for i in stepped:
            self._send(i, "step", actions[i])
        errors: list[BaseException] = []
        for i in stepped:  # receive every reply, even after an error, to keep pipes in sync
            try:
                obs, reward, terminated, truncated, info = self._receive(i, "step")
            except EnvPoolWorkerError as error:
                if self._closed:
                    raise
                errors.append(error)
                continue
            self._obs[i] = obs
            rewards[i] = reward
            self._terminated[i], self._truncated[i] = terminated, truncated
            infos[i] = info
        if errors:
            raise errors[0]
        return self._obs.copy(), rewards, self._terminated.copy(), self._truncated.copy(), infos

    def worker_info(self) -> list[dict[str, Any]]:
        """Per env: the pid and thread settings (``OMP_NUM_THREADS``, ..., torch's threads or
        None where torch is not loaded) of the process it runs in."""
        self._check_open()
        for i in range(self.num_envs):
            self._send(i, "info", None)
        return [self._receive(i, "info") for i in range(self.num_envs)]

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty when ``asynchronous=False``)."""
        return [p.pid for p in self._processes]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (asking first, then terminating) and close the envs. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
            except Exception:  # noqa: BLE001, S110  (worker already gone)
                pass
        for process in self._processes:
            process.join(timeout=timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout=timeout)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
        for env in self._envs:
            env.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close(timeout=1.0)
        except Exception:  # noqa: BLE001, S110  (interpreter shutdown)
            pass

    def __repr__(self) -> str:
        mode = "processes" if self.asynchronous else "in-process"
        return f"EnvPool({self.task!r}, num_envs={self.num_envs}, {mode})"
