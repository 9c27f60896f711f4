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
