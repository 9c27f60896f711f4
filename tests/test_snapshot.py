"""Snapshots: a run moved to another directory (machine) through its compact snapshot resumes
exactly as the original does; corrupt snapshots, clashes and re-simulation mismatches are clear
errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from planetrl.cli import main
from planetrl.episodes import list_episode_files, load_episode, save_episode
from planetrl.run.checkpoint import load_checkpoint
from planetrl.run.logger import read_metrics
from planetrl.suite import snapshot
from planetrl.training.loop import train
from tests.test_training import episode_rows, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny PlaNet run of 3 episodes (2 random, 1 planned), never changed by the tests."""
    run = tmp_path_factory.mktemp("run") / "run"
    train(tiny_config(run, max_episodes=3), progress=False)
    return run


def _copy(run: Path, where: Path) -> Path:
    target = where / "original"
    shutil.copytree(run, target)
    return target


def test_a_restored_run_resumes_exactly_as_the_original(trained, tmp_path):
    original = _copy(trained, tmp_path)
    snap, moved = tmp_path / "snap", tmp_path / "moved"
    snapshot.pack(original, snap, log=lambda _: None)
    # The replay travels as seeds and actions: no image file in the snapshot.
    assert not (snap / "episodes").exists()
    assert len(list((snap / "replay").glob("*.npz"))) == 3
    assert (snap / "checkpoint.pt").exists() and not (snap / "videos").exists()
    snapshot.restore(snap, moved, log=lambda _: None)
    restored = json.loads((moved / snapshot.RESTORED_FILE).read_text())
    assert restored["episodes_resimulated"] == 3 and restored["mismatched"] == []
    assert restored["state"] is True and restored["earlier"] is None
    for a, b in zip(
        list_episode_files(original / "episodes"),
        list_episode_files(moved / "episodes"),
        strict=True,
    ):
        assert a.path.name == b.path.name
        assert snapshot.episode_digest(load_episode(a.path)) == snapshot.episode_digest(
            load_episode(b.path)
        )
    # Both continue by one episode: the same updates, the same episode, the same weights.
    for run in (original, moved):
        train(tiny_config(run, max_episodes=4), progress=False)
    rows = [episode_rows(run) for run in (original, moved)]
    assert [r["train/return"] for r in rows[0]] == [r["train/return"] for r in rows[1]]
    assert len(rows[0]) == 4
    a, b = (load_checkpoint(run / "checkpoint.pt") for run in (original, moved))
    for name, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][name], rtol=0, atol=0)
    losses = [
        [r["loss/loss"] for r in read_metrics(run / "metrics.jsonl") if "loss/loss" in r]
        for run in (original, moved)
    ]
    assert losses[0] == losses[1]


def test_packing_again_resimulates_only_new_episodes_and_drops_what_the_run_lost(trained, tmp_path):
    original = _copy(trained, tmp_path)
    snap, lines = tmp_path / "snap", []
    snapshot.pack(original, snap, log=lines.append)
    assert "3 re-simulated now" in lines[-1]
    (snap / "stale.txt").write_text("not the run's")  # never listed: left alone
    (original / "extra.json").write_text("{}")
    snapshot.pack(original, snap, log=lines.append)
    assert "0 re-simulated now" in lines[-1]
    manifest = json.loads((snap / snapshot.MANIFEST_FILE).read_text())
    assert "extra.json" in manifest["files"]
    (original / "extra.json").unlink()
    snapshot.pack(original, snap, log=lines.append)
    assert not (snap / "extra.json").exists() and (snap / "stale.txt").exists()


def test_an_episode_that_does_not_resimulate_is_kept_whole(trained, tmp_path):
    original = _copy(trained, tmp_path)
    first = list_episode_files(original / "episodes")[1]
    episode = load_episode(first.path)
    episode["reward"] = episode["reward"] + np.float32(0.5)  # not what the simulator pays
    first.path.unlink()
    save_episode(original / "episodes", first.index, episode)
    snap = tmp_path / "snap"
    manifest = snapshot.pack_run(original, snap, log=lambda _: None)["episodes"]
    assert manifest["whole"] == [first.index] and manifest["compact"] == 2
    assert (snap / "episodes" / first.path.name).exists()
    lines: list[str] = []
    snapshot.pack_run(original, snap, log=lines.append)  # what was kept whole is not tried again
    assert "1 whole" in lines[-1] and "0 re-simulated now" in lines[-1]
    snapshot.restore(snap, tmp_path / "moved", log=lambda _: None)
    back = load_episode(tmp_path / "moved" / "episodes" / first.path.name)
    np.testing.assert_array_equal(back["reward"], episode["reward"])


def test_a_corrupt_snapshot_or_an_existing_destination_is_refused(trained, tmp_path):
    snap = tmp_path / "snap"
    snapshot.pack(trained, snap, log=lambda _: None)
    (tmp_path / "taken").mkdir()
    with pytest.raises(snapshot.SnapshotError, match="exists"):
        snapshot.restore_run(snap, tmp_path / "taken")
    with pytest.raises(snapshot.SnapshotError, match="not a snapshot"):
        snapshot.restore_run(tmp_path / "taken", tmp_path / "new")
    with pytest.raises(snapshot.SnapshotError, match="not a run directory"):
        snapshot.pack_run(tmp_path / "taken", tmp_path / "new")
    (tmp_path / "taken" / "notes.txt").write_text("someone's")  # a swapped argument, say
    with pytest.raises(snapshot.SnapshotError, match="not empty and holds no snapshot"):
        snapshot.pack_run(trained, tmp_path / "taken")
    other = _copy(trained, tmp_path)
    with pytest.raises(snapshot.SnapshotError, match="snapshot of run 'run', not of 'original'"):
        snapshot.pack_run(other, snap)
    with pytest.raises(snapshot.SnapshotError, match="must not contain each other"):
        snapshot.pack_run(other, other / "snap")
    data = bytearray((snap / "checkpoint.pt").read_bytes())
    data[-10] ^= 0xFF
    (snap / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotError, match="checkpoint.pt is missing or differs"):
        snapshot.restore_run(snap, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_an_episode_resimulated_differently_stops_the_restore_unless_accepted(
    trained, tmp_path, monkeypatch
):
    snap = tmp_path / "snap"
    snapshot.pack(trained, snap, log=lambda _: None)
    real = snapshot._Resimulator.__call__

    def elsewhere(self, index, actions):  # another CPU's renderer: one pixel off
        episode = real(self, index, actions)
        episode["image"][-1, 0, 0, 0] ^= 1
        return episode

    monkeypatch.setattr(snapshot._Resimulator, "__call__", elsewhere)
    with pytest.raises(snapshot.SnapshotError, match="episode 0 .* re-simulated differently"):
        snapshot.restore_run(snap, tmp_path / "moved")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]  # nothing half made
    snapshot.restore_run(snap, tmp_path / "moved", accept_mismatch=True, log=lambda _: None)
    restored = json.loads((tmp_path / "moved" / snapshot.RESTORED_FILE).read_text())
    assert restored["mismatched"] == [0, 1, 2]
    # Moved once more, the run still says which of its episodes differed the first time.
    monkeypatch.setattr(snapshot._Resimulator, "__call__", real)
    snapshot.pack_run(tmp_path / "moved", tmp_path / "snap2", log=lambda _: None)
    snapshot.restore_run(tmp_path / "snap2", tmp_path / "again", log=lambda _: None)
    twice = json.loads((tmp_path / "again" / snapshot.RESTORED_FILE).read_text())
    assert twice["mismatched"] == [] and twice["earlier"]["mismatched"] == [0, 1, 2]


def test_a_suite_keeps_its_finished_runs_small_and_its_unfinished_runs_whole(trained, tmp_path):
    suite = tmp_path / "suite"
    (suite / "runs").mkdir(parents=True)
    (suite / "suite.json").write_text('{"name": "made-up"}')
    done, going = suite / "runs" / "done", suite / "runs" / "going"
    shutil.copytree(trained, done)
    shutil.copytree(trained, going)
    (done / "finished.json").write_text("{}")
    snap = tmp_path / "snap"
    assert snapshot.pack(suite, snap, log=lambda _: None) == [
        snap / "runs/done",
        snap / "runs/going",
    ]
    assert not (snap / "runs/done/checkpoint.pt").exists()
    assert not (snap / "runs/done/replay").exists()
    assert (snap / "runs/going/checkpoint.pt").exists()
    moved = tmp_path / "moved"
    assert len(snapshot.restore(snap, moved, log=lambda _: None)) == 2
    assert (moved / "suite.json").read_text() == '{"name": "made-up"}'
    assert (moved / "runs/done/metrics.jsonl").exists()
    assert len(list((moved / "runs/going/episodes").glob("*.npz"))) == 3
    # A second restore (after a kill, say) leaves the restored runs as they are.
    assert snapshot.restore(snap, moved, log=lambda _: None) == []


def test_the_command_packs_restores_and_names_bad_input(trained, tmp_path, capsys):
    snap, moved = tmp_path / "snap", tmp_path / "moved"
    assert main(["snapshot", "pack", "--source", str(trained), "--snapshot", str(snap)]) == 0
    assert main(["snapshot", "restore", "--snapshot", str(snap), "--destination", str(moved)]) == 0
    assert (moved / "checkpoint.pt").exists()
    capsys.readouterr()
    assert main(["snapshot", "restore", "--snapshot", str(snap), "--destination", str(moved)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["snapshot", "unpack", "--snapshot", str(snap)]) == 2
    assert "accepted: pack, restore" in capsys.readouterr().err


def test_a_world_models_run_travels_the_same_way(tmp_path):
    from planetrl.worldmodels.trainer import train as train_worldmodels
    from tests.test_worldmodels import tiny_config as tiny_worldmodels

    run = tmp_path / "run"
    train_worldmodels(tiny_worldmodels(run), progress=False)
    manifest = snapshot.pack_run(run, tmp_path / "snap", log=lambda _: None)
    assert manifest["episodes"]["compact"] == 2 and manifest["episodes"]["whole"] == []
    snapshot.restore_run(tmp_path / "snap", tmp_path / "moved", log=lambda _: None)
    for a, b in zip(
        list_episode_files(run / "episodes"),
        list_episode_files(tmp_path / "moved" / "episodes"),
        strict=True,
    ):
        assert snapshot.episode_digest(load_episode(a.path)) == snapshot.episode_digest(
            load_episode(b.path)
        )


COMMITTED = sorted(
    path.parent for path in (Path(__file__).parents[1] / "runs-in-progress").rglob("snapshot.json")
)


@pytest.mark.skipif(not COMMITTED, reason="no snapshot is committed")
@pytest.mark.parametrize("run", COMMITTED, ids=lambda p: p.name)
def test_the_committed_snapshots_are_whole(run):
    """The snapshots of unfinished runs kept in the repository (runs-in-progress/) hold every
    file their manifests list, unchanged."""
    manifest = snapshot.verify_run(run)
    assert manifest["run"] == run.name
