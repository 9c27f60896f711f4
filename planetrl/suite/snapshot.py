"""A run's state as a compact, checked snapshot: move an unfinished run to another machine.

A run directory (:mod:`planetrl.run.directory`) keeps its replay as one image file per episode:
a 100k-step walker replay is ~70 MB (swingup's ~4 MB). Its pixels are not needed to move the run:
training episode ``i`` was reset with ``collect_seed(config, i)`` and driven by the actions it
stores, and the simulator is deterministic, so the same episode can be made again. A snapshot of
a run directory holds::

    <snapshot>/snapshot.json   the manifest, written last: format, where and when it was made
                               (planetrl commit, CPU), the size and sha256 of every file
    <snapshot>/replay/<index:06d>-<length>.npz
                               an episode that re-simulates exactly: its reset seed, the sha256 of
                               its arrays, its actions and rewards (a few KB)
    <snapshot>/episodes/<index:06d>-<length>.npz
                               an episode that does not (an ``fn:`` task, a changed simulator):
                               the episode file itself
    <snapshot>/<every other file of the run>   config.json, checkpoint.pt, metrics.jsonl, tb/, ...

Videos, the lock and the temporary files of interrupted writes are left out. :func:`pack_run`
re-simulates each episode before it keeps the compact form; packing into the same folder again
re-simulates only the episodes it has not checked yet. :func:`restore_run` checks every file
against the manifest, re-simulates the episodes into a new run directory and compares each with
its sha256; the run then resumes there with its usual command (a killed run resumes from any
point, so a run stopped by SIGKILL is a valid source). A suite directory
(:mod:`planetrl.suite.layout`) is packed run by run (:func:`pack`, :func:`restore`); its finished
runs keep their small files only, unless asked to keep their checkpoints and replays too.

The snapshot is exact where the simulator and the renderer give the same bits: MuJoCo's physics
does for one build; the software renderer (Mesa's llvmpipe) is compiled for the CPU it runs on and
may not round alike on another CPU model. A restore that finds an episode re-simulated
differently stops and names it; ``accept_mismatch`` writes the re-simulated episode instead (a
valid trajectory of the same actions, no longer the one the run saw) and records which episodes
differ in ``restored.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from planetrl.atomic import atomic_savez, atomic_write_bytes, atomic_write_json, is_temporary
from planetrl.episodes import (
    EpisodeFileError,
    episode_filename,
    list_episode_files,
    load_episode,
    parse_episode_filename,
    validate_episode,
)
from planetrl.run import directory as rundir
from planetrl.suite import layout

__all__ = [
    "MANIFEST_FILE",
    "RESTORED_FILE",
    "SNAPSHOT_FORMAT",
    "SnapshotError",
    "episode_digest",
    "pack",
    "pack_run",
    "restore",
    "restore_run",
    "verify_run",
]

SNAPSHOT_FORMAT = "planetrl-snapshot-v1"
MANIFEST_FILE = "snapshot.json"
#: The compact episodes of a snapshot (seed, digest, actions, rewards).
REPLAY_DIR = "replay"
#: Written into a restored run directory: where its snapshot came from and what re-simulated.
RESTORED_FILE = "restored.json"
#: What a snapshot never holds: the replay's image files (re-simulated or kept apart), videos and
#: the lock. (A restored run's ``restored.json`` travels on: the next restore keeps it inside its
#: own, so a run moved twice still says which episodes differed.)
_LEFT_OUT = {rundir.EPISODES_DIR, rundir.VIDEOS_DIR, rundir.LOCK_FILE}
#: A run's state besides its small files: left out of a finished run unless asked for.
_STATE = {rundir.CHECKPOINT_FILE, "tb"}

Log = Callable[[str], None]


class SnapshotError(RuntimeError):
    """A snapshot is incomplete or corrupt, its destination holds a run already, or an episode
    re-simulated differently."""


def episode_digest(episode: Mapping[str, np.ndarray]) -> str:
    """sha256 over an episode's arrays (keys sorted; each key's name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for key in sorted(episode):
        array = np.ascontiguousarray(episode[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_run_config(run: Path) -> Any:
    from planetrl.agents import kind, read_agent

    path = run / rundir.CONFIG_FILE
    return kind(read_agent(path)).load_config(path)


class _Resimulator:
    """Makes training episode ``index`` of a run again from its actions: reset with
    ``collect_seed(config, index)``, then the stored a_0 .. a_{T-1} (one environment, in this
    process, made on first use)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.pool: Any = None
        self.unavailable: str | None = None
        self.failed: str | None = None

    def __call__(self, index: int, actions: np.ndarray) -> dict[str, np.ndarray] | None:
        """The re-simulated episode, or None where it cannot be made (the reason in
        :attr:`unavailable`) or ran past the stored actions."""
        from planetrl.driver import make_pool, run_episodes

        if self.unavailable is not None:
            return None
        if self.pool is None:
            try:
                self.pool = make_pool(self.config, 1, parallel=False)
            except Exception as err:  # e.g. an fn: task, whose factory is not known here
                self.unavailable = f"its environment cannot be made here ({err})"
                return None
        stored = iter(np.asarray(actions, np.float32)[1:])
        overran = []

        def act(obs: np.ndarray) -> np.ndarray:
            try:
                return next(stored)[None]
            except StopIteration:
                overran.append(True)
                return np.zeros((1, actions.shape[-1]), np.float32)

        seed = rundir.collect_seed(self.config, index)
        try:
            out = run_episodes(self.pool, act, [seed], keep=True)
        except Exception as err:  # a worker or env error: this episode is not re-made
            self.failed = f"stepping its environment failed ({err})"
            self.close()
            return None
        if overran or out.episodes is None:
            return None
        return validate_episode(out.episodes[0])

    def again(self, index: int, actions: np.ndarray, digest: str) -> dict[str, np.ndarray] | None:
        """The re-simulated episode; where it differs from ``digest``, made once more in a fresh
        environment (an env whose state outlives ``reset`` would differ after other episodes)."""
        episode = self(index, actions)
        if episode is not None and episode_digest(episode) == digest:
            return episode
        self.close()
        retried = self(index, actions)
        return retried if retried is not None else episode

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def _files_of(run: Path, state: bool) -> list[Path]:
    """The run's files a snapshot copies, relative to ``run``, sorted."""
    found = []
    for root, dirs, names in os.walk(run):
        rel = Path(root).relative_to(run)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in _LEFT_OUT and (state or d not in _STATE)]
        dirs.sort()
        for name in names:
            if is_temporary(name) or (rel == Path(".") and name in _LEFT_OUT | {MANIFEST_FILE}):
                continue
            if not state and rel == Path(".") and name in _STATE:
                continue
            found.append(rel / name)
    return sorted(found)


def _read_manifest(snapshot: Path) -> dict[str, Any] | None:
    path = snapshot / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SnapshotError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path} is not a planetrl snapshot ({SNAPSHOT_FORMAT})")
    return manifest


def _provenance() -> dict[str, str]:
    from planetrl.suite.runner import code_version, cpu_model

    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "planetrl": code_version(),
        "cpu": cpu_model(),
    }


def pack_run(
    source: str | Path, destination: str | Path, *, state: bool = True, log: Log = print
) -> dict[str, Any]:
    """Snapshot the run directory ``source`` into ``destination`` (created, or a snapshot of the
    same run packed before: then only its new episodes are re-simulated, and files the run no
    longer has are removed). ``state=False`` leaves the checkpoint, the TensorBoard logs and the
    replay out (a finished run's small files). Takes the run's lock: a run being trained is
    refused. Returns the manifest."""
    source, destination = Path(source), Path(destination)
    if not (source / rundir.CONFIG_FILE).is_file():
        raise SnapshotError(f"{source} is not a run directory (it has no {rundir.CONFIG_FILE})")
    _check_apart(source, destination)
    previous = _read_manifest(destination) if destination.exists() else None
    if previous is None and destination.exists() and any(destination.iterdir()):
        raise SnapshotError(
            f"{destination} is not empty and holds no snapshot; pack into a new directory or "
            "into a snapshot of the same run"
        )
    if previous is not None and previous.get("run") != source.name:
        raise SnapshotError(
            f"{destination} is the snapshot of run {previous.get('run')!r}, not of {source.name!r}"
        )
    lock = rundir.RunLock(source)
    try:
        destination.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict[str, Any]] = {}
        for rel in _files_of(source, state):
            target = destination / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, (source / rel).read_bytes())
            files[rel.as_posix()] = {"bytes": target.stat().st_size, "sha256": _file_sha256(target)}
        episodes = _pack_episodes(source, destination, files, log) if state else {}
        for rel in (previous or {}).get("files", {}):
            if rel not in files:
                (destination / rel).unlink(missing_ok=True)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "run": source.name,
            "state": state,
            "made": _provenance(),
            "episodes": episodes,
            "files": files,
        }
        atomic_write_json(destination / MANIFEST_FILE, manifest)
    finally:
        lock.release()
    return manifest


def _check_apart(source: Path, destination: Path) -> None:
    a, b = source.resolve(), destination.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise SnapshotError(
            f"the snapshot {destination} and the directory {source} must not contain each other"
        )


def _pack_episodes(
    source: Path, destination: Path, files: dict[str, dict[str, Any]], log: Log
) -> dict[str, Any]:
    """Write the replay of ``source`` into the snapshot ``destination`` (compact where an episode
    re-simulates exactly, whole where not); adds their entries to ``files``."""
    config = _load_run_config(source)
    resimulate = _Resimulator(config)
    compact, whole, checked = 0, [], 0
    try:
        for item in list_episode_files(source / rundir.EPISODES_DIR):
            name = episode_filename(item.index, item.length)
            try:
                episode: dict[str, np.ndarray] | None = load_episode(item.path)
            except EpisodeFileError:  # the run skips it, but it counts: it travels as it is
                episode = None
            digest = episode_digest(episode) if episode is not None else ""
            small = destination / REPLAY_DIR / name
            kept = destination / rundir.EPISODES_DIR / name  # whole in an earlier pack
            if episode is None or (kept.exists() and kept.read_bytes() == item.path.read_bytes()):
                small.unlink(missing_ok=True)
            elif not (small.exists() and _compact_digest(small) == digest):
                checked += 1
                again = resimulate.again(item.index, episode["action"], digest)
                if again is not None and episode_digest(again) == digest:
                    atomic_savez(
                        small,
                        {
                            "seed": np.int64(rundir.collect_seed(config, item.index)),
                            "digest": np.array(digest),
                            "action": episode["action"],
                            "reward": episode["reward"],
                        },
                    )
                else:
                    small.unlink(missing_ok=True)
            if small.exists():
                compact += 1
                rel = f"{REPLAY_DIR}/{name}"
            else:
                whole.append(item.index)
                rel = f"{rundir.EPISODES_DIR}/{name}"
                (destination / rel).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(destination / rel, item.path.read_bytes())
            files[rel] = {
                "bytes": (destination / rel).stat().st_size,
                "sha256": _file_sha256(destination / rel),
            }
    finally:
        resimulate.close()
    reason = resimulate.unavailable or resimulate.failed or "re-simulated differently"
    log(
        f"{source.name}: {compact} episodes compact, {len(whole)} whole"
        + (f" ({reason})" if whole else "")
        + f"; {checked} re-simulated now"
    )
    return {"compact": compact, "whole": whole, "whole_because": reason if whole else None}


def _compact_digest(path: Path) -> str | None:
    try:
        with np.load(path) as data:
            return str(data["digest"])
    except Exception:  # a torn or foreign file is re-made
        return None


def verify_run(snapshot: str | Path) -> dict[str, Any]:
    """The manifest of the run snapshot ``snapshot``, once every file it lists is there with its
    sha256 (a :class:`SnapshotError` names the first that is not: a torn or edited snapshot)."""
    snapshot = Path(snapshot)
    manifest = _read_manifest(snapshot)
    if manifest is None:
        raise SnapshotError(f"{snapshot} is not a snapshot (it has no {MANIFEST_FILE})")
    for rel, entry in manifest["files"].items():
        path = snapshot / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise SnapshotError(f"{snapshot / MANIFEST_FILE} lists a path outside it: {rel!r}")
        if not path.is_file() or _file_sha256(path) != entry["sha256"]:
            raise SnapshotError(
                f"{path} is missing or differs from the snapshot's manifest (a torn or edited "
                "snapshot); pack the run again"
            )
    return manifest


def restore_run(
    snapshot: str | Path,
    destination: str | Path,
    *,
    accept_mismatch: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Make the run directory ``destination`` from the run snapshot ``snapshot``: every file
    checked against the manifest, every compact episode re-simulated and checked against its
    sha256. Built in a temporary folder beside ``destination`` and renamed into place when
    complete, so a killed restore leaves no half run. A ``destination`` that exists is an error.
    Returns what ``restored.json`` records."""
    snapshot, destination = Path(snapshot), Path(destination)
    if destination.exists():
        raise SnapshotError(f"{destination} exists; restore into a new directory")
    manifest = verify_run(snapshot)
    building = destination.parent / f".{destination.name}.restoring"
    if building.exists():
        shutil.rmtree(building)
    building.mkdir(parents=True)
    mismatched: list[int] = []
    compact = 0
    resimulate = None
    try:
        for rel in manifest["files"]:
            parts = Path(rel).parts
            if parts[0] == REPLAY_DIR:
                continue
            target = building / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snapshot / rel, target)
        replay = sorted(r for r in manifest["files"] if Path(r).parts[0] == REPLAY_DIR)
        if replay:
            resimulate = _Resimulator(_load_run_config(building))
        for rel in replay:
            parsed = parse_episode_filename(Path(rel).name)
            assert parsed is not None
            with np.load(snapshot / rel) as data:
                seed, digest = int(data["seed"]), str(data["digest"])
                actions, rewards = data["action"], data["reward"]
            assert resimulate is not None
            expected_seed = rundir.collect_seed(resimulate.config, parsed[0])
            if seed != expected_seed:
                raise SnapshotError(
                    f"{snapshot / rel}: seed {seed} is not the run's "
                    f"collection seed {expected_seed} of episode {parsed[0]}"
                )
            episode = resimulate.again(parsed[0], actions, digest)
            if episode is None:
                reason = resimulate.unavailable or resimulate.failed or "it ran past its actions"
                raise SnapshotError(
                    f"episode {parsed[0]} of {snapshot} cannot be re-made here: {reason}"
                )
            if episode_digest(episode) != digest:
                detail = _difference(episode, rewards)
                if not accept_mismatch:
                    raise SnapshotError(
                        f"episode {parsed[0]} of {snapshot} re-simulated differently here "
                        f"({detail}); restore with accept_mismatch (--accept-mismatch) to keep "
                        "the re-simulated episodes, a valid replay of the same actions"
                    )
                mismatched.append(parsed[0])
            episodes_dir = building / rundir.EPISODES_DIR
            episodes_dir.mkdir(exist_ok=True)
            # named by its own length (a re-simulated episode that ended sooner is shorter)
            atomic_savez(episodes_dir / episode_filename(parsed[0], len(episode["image"])), episode)
            compact += 1
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # no half run left behind
        raise
    finally:
        if resimulate is not None:
            resimulate.close()
    earlier = building / RESTORED_FILE
    record = {
        "snapshot": str(snapshot),
        "state": manifest["state"],
        "made": manifest["made"],
        "restored": _provenance(),
        "episodes_resimulated": compact,
        "episodes_copied": len((manifest["episodes"] or {}).get("whole", [])),
        "mismatched": mismatched,
        "earlier": json.loads(earlier.read_text()) if earlier.exists() else None,
    }
    atomic_write_json(building / RESTORED_FILE, record)
    os.replace(building, destination)
    log(
        f"{destination}: restored ({compact} episodes re-simulated"
        + (f", {len(mismatched)} differently: {mismatched}" if mismatched else "")
        + ")"
    )
    return record


def _difference(episode: Mapping[str, np.ndarray], rewards: np.ndarray) -> str:
    if len(episode["reward"]) != len(rewards):
        return f"length {len(episode['reward'])} instead of {len(rewards)}"
    gap = float(np.abs(episode["reward"] - rewards).max())
    return f"largest reward difference {gap:.3g}" + ("; the images differ" if gap == 0 else "")


def _copy_suite_files(source: Path, destination: Path, *, replace: bool) -> None:
    """A suite directory's own files (``suite.json``, the report) and ``ceiling/``; ``replace``:
    overwrite those ``destination`` has (else keep them)."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and not is_temporary(path.name):
            if replace or not (destination / path.name).exists():
                atomic_write_bytes(destination / path.name, path.read_bytes())
    if (source / layout.CEILING_DIR).is_dir():
        shutil.copytree(
            source / layout.CEILING_DIR, destination / layout.CEILING_DIR, dirs_exist_ok=True
        )


def pack(
    source: str | Path, destination: str | Path, *, finished_state: bool = False, log: Log = print
) -> list[Path]:
    """Snapshot a run directory, or every run of a suite directory (its ``suite.json`` and other
    top-level files, ``ceiling/``, then each run: an unfinished one with its state, a finished one
    with its small files only unless ``finished_state``; a reused run as its ``reused.json``).
    Returns the run snapshots written."""
    source, destination = Path(source), Path(destination)
    if not (source / layout.SUITE_FILE).is_file():
        pack_run(source, destination, log=log)
        return [destination]
    _copy_suite_files(source, destination, replace=True)
    written = []
    for run in sorted(p for p in (source / layout.RUNS_DIR).glob("[!.]*") if p.is_dir()):
        target = destination / layout.RUNS_DIR / run.name
        if (run / layout.REUSED_FILE).exists():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / layout.REUSED_FILE, target / layout.REUSED_FILE)
            log(
                f"{run.name}: reused from {layout.run_dir(source, run.name)}, which is not packed "
                "here: pack the suite it is trained in too"
            )
            continue
        if not (run / rundir.CONFIG_FILE).exists():
            continue  # created, never started
        finished = (run / layout.FINISHED_FILE).exists()
        pack_run(run, target, state=finished_state or not finished, log=log)
        written.append(target)
    return written


def restore(
    snapshot: str | Path,
    destination: str | Path,
    *,
    accept_mismatch: bool = False,
    log: Log = print,
) -> list[Path]:
    """Restore a run snapshot, or a suite's (its top-level files and every run; a run already in
    ``destination`` is left as it is, so a killed restore continues). Returns the runs restored."""
    snapshot, destination = Path(snapshot), Path(destination)
    if not (snapshot / layout.SUITE_FILE).is_file():
        restore_run(snapshot, destination, accept_mismatch=accept_mismatch, log=log)
        return [destination]
    _copy_suite_files(snapshot, destination, replace=False)
    restored = []
    for run in sorted(p for p in (snapshot / layout.RUNS_DIR).glob("[!.]*") if p.is_dir()):
        target = destination / layout.RUNS_DIR / run.name
        if target.exists():
            log(f"{target}: exists, left as it is")
            continue
        if (run / layout.REUSED_FILE).exists() and not (run / MANIFEST_FILE).exists():
            target.mkdir(parents=True)
            shutil.copyfile(run / layout.REUSED_FILE, target / layout.REUSED_FILE)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        restore_run(run, target, accept_mismatch=accept_mismatch, log=log)
        restored.append(target)
    return restored
