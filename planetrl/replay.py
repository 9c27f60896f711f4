"""The episode replay: one compressed ``.npz`` file per episode, and the in-memory copy to sample.

PlaNet (Hafner et al. 2019, Algorithm 1) trains on chunks of ``L = 50`` consecutive steps drawn
uniformly from all episodes collected so far. The run's episode folder *is* the replay: every
episode is written once, atomically, as ``<index:06d>-<length>.npz`` (the format and the step
convention are :mod:`planetrl.episodes`'), and a :class:`Replay` constructed on the same folder
after a crash or restart reloads it.

Sampling design (the decision this module makes):

* The episodes in memory, in file-index order, form one chronological stream of steps. A chunk
  of ``L`` consecutive steps may span an episode boundary: the first step of every episode has
  ``is_first=True`` (enforced on write and load), which is where the model resets its latent
  state. So episodes shorter than ``L`` remain usable, and every stored step is equally likely to
  be trained on (up to the ``L - 1`` steps at the ends of each segment, see next point).
* A chunk never crosses into a step that is not in memory. The stream splits into *segments* of
  episodes with consecutive file indices; a jump in the indices (a corrupt file skipped at load,
  a file removed by hand) ends a segment. Chunk starts are drawn uniformly over all valid starts of
  all segments: a segment of ``N`` steps has ``max(0, N - L + 1)`` of them.
* Memory holds compact arrays (uint8 images; float32 action/reward; bool flags), one set per
  episode: about ``H*W*3 + 4*A + 6`` bytes per step (12,318 for 64x64 images, ``A = 6``), so 1M
  steps fit in ~12.3 GB. Adding an episode never reallocates or copies what is stored, dropping
  the oldest one frees its memory at once. A batch is gathered with one contiguous slab copy per
  (chunk, episode) piece, which moves the same bytes as a fancy-index gather over one big array,
  with O(batch size) Python work. A batch holds the images as stored (uint8 HWC): turning them
  into the model's input is the model's business (PlaNet: ``WorldModel.preprocess``), so the
  replay knows nothing of any agent and serves any of them.

Not process-safe: one :class:`Replay` per folder writes (several readers are fine). Within one
process the methods are thread-safe (a lock guards the in-memory index).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from planetrl.atomic import is_temporary
from planetrl.episodes import (
    EPISODE_KEYS,
    TASK_REWARD_PREFIX,
    EpisodeFileError,
    load_episode,
    parse_episode_filename,
    save_episode,
    task_reward_key,
    validate_episode,
)

__all__ = ["Batch", "Replay", "ReplayWarning"]


class ReplayWarning(UserWarning):
    """A file in the replay folder was skipped (corrupt, leftover temp file, unexpected name)."""


class _FileEntry(NamedTuple):
    index: int  # type: ignore[assignment]  # a field may shadow tuple.index
    length: int
    path: Path


@dataclasses.dataclass
class Batch:
    """A batch of ``B`` chunks of ``L`` consecutive steps, as torch tensors on one device.

    Attributes:
        image: uint8 ``(B, L, H, W, 3)``, the stored frames o_t.
        action: float32 ``(B, L, A)``, ``action[:, t]`` = a_{t-1}.
        reward: float32 ``(B, L)``, ``reward[:, t]`` = r_t.
        is_first: bool ``(B, L)``; True where an episode starts (the model resets its state).
        is_terminal: bool ``(B, L)``; True only on true termination.
        task_rewards: float32 ``(B, L)`` per task: other tasks' rewards r_t on the same steps
            (the episodes' ``reward/<task>``), for the tasks the replay was asked for.
    """

    image: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    is_first: torch.Tensor
    is_terminal: torch.Tensor
    task_rewards: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.reward.shape[0]

    @property
    def length(self) -> int:
        return self.reward.shape[1]

    @property
    def device(self) -> torch.device:
        return self.image.device

    def to(self, device: str | torch.device, non_blocking: bool = False) -> Batch:
        """This batch with every tensor moved to ``device``."""
        return Batch(
            **{
                field.name: getattr(self, field.name).to(device, non_blocking=non_blocking)
                for field in dataclasses.fields(self)
                if field.name != "task_rewards"
            },
            task_rewards={
                task: value.to(device, non_blocking=non_blocking)
                for task, value in self.task_rewards.items()
            },
        )


class _Episode:
    __slots__ = ("index", "length", "data")

    def __init__(self, index: int, data: dict[str, np.ndarray]) -> None:
        self.index = index
        self.length = len(data["image"])
        self.data = data


class _Layout(NamedTuple):
    """The sampling index over the episodes in memory (rebuilt after every change)."""

    episodes: list[_Episode]
    offsets: np.ndarray  # stream position of each episode's first step
    segment_starts: np.ndarray  # stream position of each segment's first step
    segment_lengths: np.ndarray  # steps in each segment


class Replay:
    """Episodes on disk (the run's episode folder) and in memory, sampled as fixed-length chunks.

    Args:
        directory: the episode folder, created if missing. Existing episode files in it are
            reloaded (``load=True``): newest first while they fit in ``capacity``, then kept in
            chronological order. Truncated/corrupt files, leftover temporary files from an
            interrupted write and unexpected ``.npz`` names are skipped with a
            :class:`ReplayWarning` naming them.
        capacity: most steps kept in memory (None: unlimited). When an added episode takes the
            total over, the oldest episodes leave memory (their files stay on disk); the newest
            episode is always kept, even if it alone exceeds ``capacity``.
        seed: seed of the numpy generator (PCG64) behind sampling (the chunk starts); None
            draws fresh entropy. See :meth:`rng_state`.
        load: reload existing episodes into memory. With False the folder is only scanned so that
            new files continue the index sequence.
        load_workers: threads used to decompress files at reload (None: ``min(8, cpu_count)``).
        task_rewards: tasks whose relabelled rewards (the episodes' ``reward/<task>``) batches
            carry (:attr:`Batch.task_rewards`); an episode without them cannot be added (and is
            skipped at reload, with a warning).

    The file index of the next :meth:`add` is one more than the largest index of any episode file
    in the folder (loaded, skipped or corrupt), so files are never overwritten after a restart.
    """

    def __init__(
        self,
        directory: str | Path,
        capacity: int | None = 1_000_000,
        *,
        seed: int | None = None,
        load: bool = True,
        load_workers: int | None = None,
        task_rewards: tuple[str, ...] | list[str] = (),
    ) -> None:
        self._task_keys = tuple(task_reward_key(task) for task in task_rewards)
        if capacity is not None:
            capacity = _check_positive("capacity (steps kept in memory, or None)", capacity)
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._capacity = None if capacity is None else int(capacity)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._lock = threading.RLock()
        self._episodes: deque[_Episode] = deque()
        self._num_steps = 0
        self._image_shape: tuple[int, int, int] | None = None  # (H, W, 3)
        self._action_dim: int | None = None
        self._layout: _Layout | None = None

        entries = self._scan()
        self._next_index = max((entry.index for entry in entries), default=-1) + 1
        self._total_episodes = len(entries)
        self._total_steps = sum(entry.length for entry in entries)
        if load and entries:
            workers = load_workers if load_workers is not None else min(8, os.cpu_count() or 1)
            self._load(entries, max(1, int(workers)))

    # ----------------------------------------------------------------------------------- files
    def _scan(self) -> list[_FileEntry]:
        """The episode files in the folder, sorted by index; warns about anything suspicious."""
        by_index: dict[int, _FileEntry] = {}
        for name in sorted(os.listdir(self._directory)):
            path = self._directory / name
            parsed = parse_episode_filename(name)
            if parsed is not None:
                index, length = parsed
                if index in by_index:
                    warnings.warn(
                        f"Replay: skipping {path}: another file has episode index {index} "
                        f"({by_index[index].path.name})",
                        ReplayWarning,
                        stacklevel=3,
                    )
                    continue
                by_index[index] = _FileEntry(index, length, path)
            elif is_temporary(name):
                warnings.warn(
                    f"Replay: ignoring leftover temporary file {path} (an interrupted write; it "
                    f"can be deleted)",
                    ReplayWarning,
                    stacklevel=3,
                )
            elif name.endswith(".npz"):
                warnings.warn(
                    f"Replay: ignoring {path}: not an episode file name (expected "
                    f"<index:06d>-<length>.npz)",
                    ReplayWarning,
                    stacklevel=3,
                )
        return [by_index[index] for index in sorted(by_index)]

    def _load(self, entries: list[_FileEntry], workers: int) -> None:
        """Load newest-first while within capacity, in parallel, skipping bad files."""
        budget = float("inf") if self._capacity is None else self._capacity
        newest_first = entries[::-1]
        loaded: list[_Episode] = []
        position = 0

        def read(entry: _FileEntry) -> dict[str, np.ndarray] | EpisodeFileError:
            try:
                return load_episode(entry.path)
            except EpisodeFileError as error:
                return error

        with ThreadPoolExecutor(max_workers=workers) as pool:
            while position < len(newest_first):
                # Plan the files that fit the budget if they all load; lengths come from the
                # names, which load_episode checks against the contents.
                plan: list[_FileEntry] = []
                planned = 0
                for entry in newest_first[position:]:
                    if (loaded or plan) and planned + entry.length > budget:
                        break
                    plan.append(entry)
                    planned += entry.length
                if not plan:
                    break
                position += len(plan)
                for entry, result in zip(plan, pool.map(read, plan)):
                    if isinstance(result, EpisodeFileError):
                        warnings.warn(f"Replay: skipping {result}", ReplayWarning, stacklevel=3)
                        continue
                    problem = self._spec_mismatch(result)
                    if problem is not None:
                        warnings.warn(
                            f"Replay: skipping {entry.path}: {problem}", ReplayWarning, stacklevel=3
                        )
                        continue
                    self._set_spec(result)
                    loaded.append(_Episode(entry.index, result))
                    budget -= entry.length
                # Skipped files free budget: the next round re-plans from where this one stopped
                # (and plans nothing if the next file does not fit).
        for episode in reversed(loaded):
            episode.data = _freeze(episode.data)
            self._episodes.append(episode)
            self._num_steps += episode.length
        self._layout = None

    def _spec_mismatch(self, data: dict[str, np.ndarray]) -> str | None:
        missing = [key for key in self._task_keys if key not in data]
        if missing:
            return (
                f"episode lacks {missing}, the other tasks' rewards this replay samples (collect "
                "with sibling_rewards on)"
            )
        if self._image_shape is None:
            return None
        image_shape = tuple(data["image"].shape[1:])
        action_dim = data["action"].shape[1]
        if image_shape != self._image_shape or action_dim != self._action_dim:
            return (
                f"episode has images {image_shape} and action dim {action_dim}, the replay holds "
                f"images {self._image_shape} and action dim {self._action_dim}"
            )
        return None

    def _set_spec(self, data: dict[str, np.ndarray]) -> None:
        if self._image_shape is None:
            self._image_shape = tuple(data["image"].shape[1:])  # type: ignore[assignment]
            self._action_dim = int(data["action"].shape[1])

    # ------------------------------------------------------------------------------ properties
    @property
    def directory(self) -> Path:
        """The episode folder."""
        return self._directory

    @property
    def capacity(self) -> int | None:
        """Most steps kept in memory (None: unlimited)."""
        return self._capacity

    @property
    def num_episodes(self) -> int:
        """Episodes in memory."""
        return len(self._episodes)

    @property
    def num_steps(self) -> int:
        """Steps in memory."""
        return self._num_steps

    @property
    def total_episodes(self) -> int:
        """Episode files in the folder: found at construction (valid or not) plus those added."""
        return self._total_episodes

    @property
    def total_steps(self) -> int:
        """Steps in all episode files (by their names), including those not in memory."""
        return self._total_steps

    @property
    def next_index(self) -> int:
        """File index the next :meth:`add` writes: 1 + the largest index seen in the folder."""
        return self._next_index

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(H, W, 3)`` of the stored images (None while empty)."""
        return self._image_shape

    @property
    def action_dim(self) -> int | None:
        """``A``, the action size (None while empty)."""
        return self._action_dim

    @property
    def nbytes(self) -> int:
        """Bytes of episode data held in memory."""
        with self._lock:
            return sum(array.nbytes for e in self._episodes for array in e.data.values())

    def episodes(self) -> list[dict[str, np.ndarray]]:
        """The episodes in memory, oldest first, as read-only ``{key: array}`` (no copies)."""
        with self._lock:
            return [dict(e.data) for e in self._episodes]

    def episode_indices(self) -> np.ndarray:
        """File index of each episode in memory, oldest first."""
        with self._lock:
            return np.array([e.index for e in self._episodes], dtype=np.int64)

    def episode_returns(self) -> np.ndarray:
        """Sum of rewards of each episode in memory, oldest first (float64)."""
        with self._lock:
            return np.array([float(e.data["reward"].sum(dtype=np.float64)) for e in self._episodes])

    def episode_lengths(self) -> np.ndarray:
        """Steps of each episode in memory, oldest first."""
        with self._lock:
            return np.array([e.length for e in self._episodes], dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"Replay({str(self._directory)!r}, capacity={self._capacity}, episodes in memory="
            f"{self.num_episodes}, steps in memory={self.num_steps}, total episodes="
            f"{self.total_episodes})"
        )

    # ------------------------------------------------------------------------------------- add
    def add(self, episode: Mapping[str, Any]) -> Path:
        """Write ``episode`` to the folder (atomically) and keep a compact copy in memory.

        Args:
            episode: ``{key: array}`` for :data:`EPISODE_KEYS`, see :func:`validate_episode`.

        Returns:
            The path of the new episode file.

        Raises:
            ValueError: the episode breaks the contract, or its image shape / action size differs
                from the episodes already in the replay.
        """
        data = validate_episode(episode, copy=True)
        with self._lock:
            problem = self._spec_mismatch(data)
            if problem is not None:
                raise ValueError(f"cannot add episode: {problem}")
            index = self._next_index
            self._next_index += 1
        path = save_episode(self._directory, index, data)
        with self._lock:
            self._set_spec(data)
            item = _Episode(index, _freeze(data))
            if self._episodes and self._episodes[-1].index > index:  # concurrent adds
                items = sorted([*self._episodes, item], key=lambda e: e.index)
                self._episodes = deque(items)
            else:
                self._episodes.append(item)
            self._num_steps += item.length
            self._total_episodes += 1
            self._total_steps += item.length
            if self._capacity is not None:
                while self._num_steps > self._capacity and len(self._episodes) > 1:
                    self._num_steps -= self._episodes.popleft().length
            self._layout = None
        return path

    # ---------------------------------------------------------------------------------- sample
    def rng_state(self) -> Mapping[str, Any]:
        """The sampling generator's state (a plain dict), to checkpoint with the model."""
        with self._lock:
            return self._rng.bit_generator.state

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`rng_state`; later samples then repeat exactly."""
        with self._lock:
            self._rng.bit_generator.state = dict(state)

    def _get_layout(self) -> _Layout:
        if self._layout is None:
            episodes = list(self._episodes)
            lengths = np.array([e.length for e in episodes], dtype=np.int64)
            indices = np.array([e.index for e in episodes], dtype=np.int64)
            offsets = np.zeros(len(episodes), dtype=np.int64)
            if len(episodes) > 1:
                np.cumsum(lengths[:-1], out=offsets[1:])
            total = int(lengths.sum())
            if episodes:
                # A segment ends wherever the file indices are not consecutive.
                breaks = np.flatnonzero(np.diff(indices) != 1) + 1
                starts = offsets[np.concatenate([[0], breaks]).astype(np.int64)]
                ends = np.concatenate([offsets[breaks], [total]]).astype(np.int64)
            else:
                starts = ends = np.zeros(0, dtype=np.int64)
            self._layout = _Layout(episodes, offsets, starts, ends - starts)
        return self._layout

    def valid_starts(self, length: int) -> np.ndarray:
        """Every stream position a chunk of ``length`` steps may start at (for tests/inspection).

        Positions count steps from the oldest step in memory, in chronological order.
        """
        length = _check_positive("length", length)
        with self._lock:
            layout = self._get_layout()
            parts = [
                np.arange(start, start + max(0, n - length + 1))
                for start, n in zip(layout.segment_starts, layout.segment_lengths)
            ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _draw_starts(
        self, layout: _Layout, batch_size: int, length: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Chunk starts (stream positions), uniform over all valid starts, and their episodes."""
        valid = np.maximum(layout.segment_lengths - length + 1, 0)
        total = int(valid.sum())
        if total == 0:
            longest = int(layout.segment_lengths.max()) if len(layout.segment_lengths) else 0
            raise ValueError(
                f"cannot sample chunks of length {length}: the replay holds no run of {length} "
                f"consecutive steps (longest contiguous run: {longest} steps, {self._num_steps} "
                f"steps in {len(self._episodes)} episodes in memory); collect more data or "
                f"sample shorter chunks"
            )
        draws = rng.integers(0, total, size=batch_size)
        cumulative = np.cumsum(valid)
        segment = np.searchsorted(cumulative, draws, side="right")
        starts = layout.segment_starts[segment] + draws - (cumulative[segment] - valid[segment])
        episode = np.searchsorted(layout.offsets, starts, side="right") - 1
        return starts, episode

    def _gather(
        self,
        batch_size: int,
        length: int,
        rng: np.random.Generator,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        with self._lock:
            # The layout is an immutable snapshot: copying from it needs no lock, even if an add
            # drops its oldest episodes meanwhile (the snapshot keeps their arrays alive).
            layout = self._get_layout()
            starts, first_episode = self._draw_starts(layout, batch_size, length, rng)
            height, width, _ = self._image_shape  # type: ignore[misc]
            action_dim = self._action_dim
            assert action_dim is not None  # set by the first episode; _draw_starts needs one
        if out is None:
            out = {
                "image": np.empty((batch_size, length, height, width, 3), dtype=np.uint8),
                "action": np.empty((batch_size, length, action_dim), dtype=np.float32),
                "reward": np.empty((batch_size, length), dtype=np.float32),
                "is_first": np.empty((batch_size, length), dtype=np.bool_),
                "is_terminal": np.empty((batch_size, length), dtype=np.bool_),
                **{
                    key: np.empty((batch_size, length), dtype=np.float32) for key in self._task_keys
                },
            }
        targets = [(out[key], key) for key in (*EPISODE_KEYS, *self._task_keys)]
        episodes, offsets = layout.episodes, layout.offsets
        # One contiguous slab copy per (chunk, episode) piece; a chunk continues into the next
        # episode of its segment when it runs past the end of one.
        for row, (start, index) in enumerate(zip(starts.tolist(), first_episode.tolist())):
            offset = start - int(offsets[index])
            filled = 0
            while filled < length:
                episode = episodes[index]
                count = min(length - filled, episode.length - offset)
                data = episode.data
                for target, key in targets:
                    target[row, filled : filled + count] = data[key][offset : offset + count]
                filled += count
                index += 1
                offset = 0
        return out

    def sample_raw(
        self, batch_size: int, length: int, *, rng: np.random.Generator | None = None
    ) -> dict[str, np.ndarray]:
        """``batch_size`` chunks of ``length`` consecutive steps, as stored (numpy, uint8 images).

        Returns:
            ``{"image": uint8 (B, L, H, W, 3), "action": float32 (B, L, A), "reward": float32
            (B, L), "is_first": bool (B, L), "is_terminal": bool (B, L)}``.

        Raises:
            ValueError: no ``length`` consecutive steps are in memory.
        """
        batch_size = _check_positive("batch_size", batch_size)
        length = _check_positive("length", length)
        return self._gather(batch_size, length, self._rng if rng is None else rng)

    def sample(
        self,
        batch_size: int,
        length: int,
        device: str | torch.device = "cpu",
        *,
        rng: np.random.Generator | None = None,
        out: Batch | None = None,
    ) -> Batch:
        """``batch_size`` chunks of ``length`` consecutive steps, as a :class:`Batch` on ``device``.

        The images stay uint8 ``(B, L, H, W, 3)`` (a quarter of the bytes of float32 to move to
        the device); the model preprocesses them where they land.

        Args:
            batch_size: ``B``, chunks per batch (PlaNet: 50).
            length: ``L``, steps per chunk (PlaNet: 50).
            device: where the batch tensors live.
            rng: generator to use instead of the replay's own seeded one.
            out: a previous Batch of the same shapes on ``device`` to overwrite in place instead of
                allocating new tensors. Only pass one that nothing still uses.

        Raises:
            ValueError: no ``length`` consecutive steps are in memory; ``out`` does not match.
        """
        batch_size = _check_positive("batch_size", batch_size)
        length = _check_positive("length", length)
        device = torch.device(device)
        rng = self._rng if rng is None else rng
        if out is not None and self._task_keys:
            raise ValueError("out= holds no task rewards; sample without out= for this replay")
        if out is not None:
            if self._image_shape is None:
                self._gather(batch_size, length, rng)  # raises: nothing to sample
            self._check_out(out, batch_size, length, device)
            if device.type == "cpu":  # gather straight into the output
                self._gather(
                    batch_size, length, rng, {k: getattr(out, k).numpy() for k in EPISODE_KEYS}
                )
                return out
        raw = self._gather(batch_size, length, rng)
        if out is not None:
            for key in EPISODE_KEYS:
                getattr(out, key).copy_(torch.from_numpy(raw[key]))
            return out
        return Batch(
            **{key: torch.from_numpy(raw[key]).to(device) for key in EPISODE_KEYS},
            task_rewards={
                key[len(TASK_REWARD_PREFIX) :]: torch.from_numpy(raw[key]).to(device)
                for key in self._task_keys
            },
        )

    def _check_out(self, out: Batch, batch_size: int, length: int, device: torch.device) -> None:
        height, width, _ = self._image_shape  # type: ignore[misc]
        expected = {
            "image": ((batch_size, length, height, width, 3), torch.uint8),
            "action": ((batch_size, length, self._action_dim), torch.float32),
            "reward": ((batch_size, length), torch.float32),
            "is_first": ((batch_size, length), torch.bool),
            "is_terminal": ((batch_size, length), torch.bool),
        }
        for key, (shape, dtype) in expected.items():
            tensor = getattr(out, key, None)
            if (
                not isinstance(tensor, torch.Tensor)
                or tuple(tensor.shape) != shape
                or tensor.dtype != dtype
                or tensor.device != device
                or not tensor.is_contiguous()
            ):
                raise ValueError(
                    f"out.{key} must be a contiguous {dtype} tensor of shape {shape} on {device}"
                )


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _freeze(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mark stored arrays read-only so no caller can change the replay's memory by accident."""
    for array in data.values():
        array.flags.writeable = False
    return data
