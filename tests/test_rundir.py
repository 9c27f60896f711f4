"""The run directory: one process trains a run at a time (``RunLock``), and a killed owner
leaves no stale lock."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from planetrl.config import ConfigError, load_config, preset
from planetrl.run import directory as rundir

HOLDER = (
    "import sys, time\n"
    "from planetrl.run.directory import RunLock\n"
    "RunLock(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


def _config(logdir):
    config = preset("quick")
    config.task, config.logdir = "dmc:cartpole-balance", str(logdir)
    return config


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX record locks")
def test_a_second_process_cannot_open_a_run_being_trained_and_a_killed_owner_frees_it(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(logdir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"being trained by process {holder.pid}"):
            rundir.open_run_dir(_config(logdir), load_config)
        assert not (logdir / rundir.CONFIG_FILE).exists()  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    path, lock = rundir.open_run_dir(_config(logdir), load_config)  # no stale lock after SIGKILL
    try:
        assert path == logdir and (logdir / rundir.CONFIG_FILE).exists()
        # Re-entrant within the owning process: a run reopened here (e.g. to resume) is allowed.
        _, again = rundir.open_run_dir(_config(logdir), load_config)
        again.release()
    finally:
        lock.release()


@pytest.mark.parametrize("agent", ["planet", "worldmodels"])
def test_a_trainer_that_fails_while_starting_gives_its_lock_back(tmp_path, monkeypatch, agent):
    """A trainer that raises after taking the run directory leaves nothing open, so the same
    process (a notebook, a suite worker retrying) is not left holding the lock's descriptor."""
    from planetrl.training import loop
    from planetrl.worldmodels import config as wm_config
    from planetrl.worldmodels import trainer as wm_trainer

    taken, open_run_dir = [], rundir.open_run_dir

    def open_and_keep(*args, **kwargs):
        path, lock = open_run_dir(*args, **kwargs)
        taken.append(lock)
        return path, lock

    def broken(*args, **kwargs):
        raise RuntimeError("model construction failed")

    if agent == "planet":
        config, module, build, make = _config(tmp_path), loop, "build_world_model", loop.Trainer
    else:
        config = wm_config.preset("small")
        config.task, config.logdir, config.device = "dmc:cartpole-balance", str(tmp_path), "cpu"
        module, build, make = wm_trainer, "build_models", wm_trainer.WorldModelsTrainer
    monkeypatch.setattr(module.rundir, "open_run_dir", open_and_keep)
    monkeypatch.setattr(module, build, broken)
    with pytest.raises(RuntimeError, match="model construction failed"):
        make(config)
    assert len(taken) == 1 and taken[0]._fd is None  # released on the way out
