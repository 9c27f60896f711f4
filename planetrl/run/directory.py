"""A run directory and its setup, the same for every agent (PlaNet's
:class:`~planetrl.training.loop.Trainer`, World Models'
:class:`~planetrl.worldmodels.trainer.WorldModelsTrainer`)::

    <logdir>/config.json     the merged config (a :class:`~planetrl.config.RunConfig`); a resumed
                             run is checked against it
    <logdir>/checkpoint.pt   the run's state (:class:`~planetrl.run.checkpoint.Checkpoint`)
    <logdir>/episodes/       the replay, one file per episode (the source of truth for the
                             collected episodes and env steps)
    <logdir>/videos/         mp4s of the logger and of ``planetrl eval``
    <logdir>/lock            held by the process that trains the run (:class:`RunLock`)

plus the logger's ``metrics.jsonl`` and ``tb/`` (:class:`~planetrl.run.logger.Logger`).
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl.atomic import remove_temporary
from planetrl.config import ConfigError, RunConfig, diff_configs, save_config
from planetrl.episodes import list_episode_files

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
EPISODES_DIR = "episodes"
VIDEOS_DIR = "videos"
LOCK_FILE = "lock"


class RunLock:
    """An exclusive lock on a run directory: one process trains a run at a time.

    A POSIX record lock (``fcntl.lockf``) on ``<logdir>/lock``, which holds the owner's pid. The
    kernel releases it when the owning process ends, however it ends, so a run killed by SIGKILL
    resumes at once with no stale lock to clear. A second process (a second ``planetrl train`` or
    suite on the same directory) gets a :class:`ConfigError` instead of two writers interleaving
    checkpoints, episodes and metrics rows. Within one process the lock is re-entrant (POSIX
    locks belong to the process), so a run reopened in the same process (tests, notebooks) works.
    Where ``fcntl`` does not exist (Windows) it locks nothing."""

    def __init__(self, logdir: str | Path) -> None:
        self.path = Path(logdir) / LOCK_FILE
        self._fd: int | None = None
        try:
            import fcntl  # POSIX only: imported where the lock is taken
        except ImportError:  # pragma: no cover - not POSIX
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            owner = self.path.read_text().strip() or "another process"
            raise ConfigError(
                f"{self.path.parent} is being trained by process {owner} (it holds "
                f"{self.path}); wait for it to end or stop it, then rerun to continue"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file releases it); the lock file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_run_dir(
    config: RunConfig,
    load_config: Callable[[Path], RunConfig],
    *,
    allow_config_change: bool = False,
) -> tuple[Path, RunLock]:
    """Create (or reopen) the run directory ``config.logdir``, lock it (:class:`RunLock`; the
    caller releases it when done) and save ``config`` in it; returns its path and the lock.

    A directory that holds a run already is checked first: its config (read by the agent's
    ``load_config``) may differ from ``config`` only in the resumable fields (budgets, logging,
    hardware: ``RESUMABLE`` of the config's class), else a :class:`ConfigError` names the fields
    that differ, unless ``allow_config_change`` (the new values win and are saved). Then the
    temporary files that a killed run left half-written are removed: this run is the one writer
    of its directory."""
    logdir = Path(config.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(logdir)
    try:
        config_path = logdir / CONFIG_FILE
        if config_path.exists():
            diff = diff_configs(load_config(config_path), config)
            if diff and not allow_config_change:
                lines = ", ".join(f"{k}: saved {a!r} != new {b!r}" for k, (a, b) in diff.items())
                raise ConfigError(
                    f"{logdir} holds a run with a different config ({lines}); use the same "
                    "options to resume, a new --logdir, or --allow-config-change"
                )
        save_config(config, config_path)
        for folder in (logdir, logdir / EPISODES_DIR, logdir / VIDEOS_DIR):
            remove_temporary(folder)
    except BaseException:
        lock.release()
        raise
    return logdir, lock


def seed_global_rngs(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (those that
    :meth:`~planetrl.run.checkpoint.Checkpoint.attach_global_rngs` saves)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The torch device of a config's ``device``: ``auto`` is CUDA when available, else the CPU;
    a CUDA device without CUDA is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return torch.device(name)


#: Env seeds are reset seeds: ``np.random.RandomState`` (DMC) needs them below 2**32.
ENV_SEED_LIMIT = 2**32
#: Room for a run's evaluation seeds: episode i of an evaluation uses ``eval_seed + i``, i below
#: this; a run's collection seeds (:func:`collect_seed`) never enter it.
EVAL_SEED_ROOM = 2000
#: Where :func:`collect_seed` moves a collection seed that would enter the evaluation room.
MOVED_COLLECT_SEED_BASE = 2_000_000_000
#: First seed of the streams of World Models' CMA-ES fitness rollouts and of its final re-test
#: (:func:`fitness_seed`, :func:`retest_seed`): apart from a run's collection and evaluation
#: seeds.
FITNESS_SEED_BASE = 500_000_000
RETEST_SEED_BASE = 3_000_000_000


def eval_seed(config: Any) -> int:
    """Seed of a run's evaluation episodes (episode i uses ``eval_seed + i``) from the run's
    ``config.seed``: the same for every evaluation of a run, for both agents given the same run
    seed, and for the random-policy baseline of the suite."""
    return 1_000_000 + 1000 * config.seed


def collect_seed(config: Any, index: int) -> int:
    """Reset seed of a run's training episode ``index`` (0-based, both agents):
    ``seed · 100,003 + index``, except that a seed inside the run's own evaluation room
    ``[eval_seed, eval_seed + EVAL_SEED_ROOM)`` moves to ``MOVED_COLLECT_SEED_BASE + seed ·
    EVAL_SEED_ROOM + (its place in the room)``. That happens only for run seeds up to 10, after
    ~10^4 to 10^6 episodes (run seed 10 from episode 9,970 on: World Models' 10,000 rollouts);
    without the move those training episodes would replay evaluation episodes. Every other seed
    is what it always was, so older runs resume with the same episodes."""
    seed = config.seed * 100_003 + index
    start = eval_seed(config)
    if start <= seed < start + EVAL_SEED_ROOM:
        return MOVED_COLLECT_SEED_BASE + config.seed * EVAL_SEED_ROOM + (seed - start)
    return seed


def fitness_seed(config: Any, index: int) -> int:
    """Reset seed ``index`` of World Models' CMA-ES fitness rollouts in the real environment
    (a stream of the run's own, disjoint from its collection and evaluation seeds)."""
    return _below(FITNESS_SEED_BASE + config.seed * 1_000_030 + index, RETEST_SEED_BASE, config)


def retest_seed(config: Any) -> int:
    """First seed of the final re-test of a kept controller (episode i uses ``retest_seed +
    i``): fresh seeds, none of them an evaluation, collection or fitness seed of the run."""
    return _below(RETEST_SEED_BASE + 10_000 * config.seed, ENV_SEED_LIMIT - 10_000, config)


def _below(seed: int, limit: int, config: Any) -> int:
    if seed >= limit:
        raise ConfigError(
            f"run seed {config.seed} is too large for World Models' env-seed streams (its "
            f"seeds would pass {limit:,}); use a run seed below 2,500"
        )
    return seed


def episodes_on_disk(
    logdir: str | Path, action_repeat: int | Callable[[int], int]
) -> tuple[int, int]:
    """(episodes, env steps) of the episode files in ``<logdir>/episodes``, the source of truth
    for both: an episode file of ``length`` entries holds ``length - 1`` agent steps of R =
    ``action_repeat`` env steps each (a callable: R of the episode of that index, e.g. in a
    multi-task run, whose tasks differ in R)."""
    files = list_episode_files(Path(logdir) / EPISODES_DIR)
    repeat = action_repeat if callable(action_repeat) else (lambda _: action_repeat)
    return len(files), sum((f.length - 1) * repeat(f.index) for f in files)
