"""World Models' data in bounded memory: V's frames epoch by epoch in blocks of episode files, and
the episodes one at a time for M's encoding.

The original trained V on every frame of its 10,000 rollouts once per epoch, shuffled, in
batches of 100 (``vae_train.py``: the whole dataset in memory, 10M frames of 64 × 64 × 3, about
123 GB as uint8). Here memory holds at most ``collect.memory_steps`` frames of the replay at a
time (0 = all of them):

- **V, an epoch** (:class:`FrameSchedule`): the episode files in an order drawn for that epoch,
  cut into blocks of at most ``memory_steps`` frames (at least one episode each). A block is
  loaded, its frames shuffled, and cut into ``max(1, frames // batch_size)`` batches (the
  original drops the remainder of its one big block the same way; a block of fewer frames than a
  batch is one smaller batch). The next block replaces it. Every frame is seen once per epoch, as
  in the original; its batches mix the frames of one block (~100 episodes at the `paper`
  preset's budget) rather than of the whole dataset. With everything in memory the whole replay
  is one block: the original's procedure exactly.
- **Resumable.** Update k's batch is a function of k, the run seed, the iteration and the file
  list alone (every draw comes from a generator keyed by them), so a run killed in the middle of
  V resumes with the batches an uninterrupted run would have drawn.
- **M** (:func:`iter_episodes`): each episode is read, encoded by V and dropped, so only the
  encoded series stay in memory (z's mean and log-variance: 256 bytes per frame at z = 32, 2.6 GB
  for the original's 10M frames).

Episodes come from the replay's memory when it holds every episode file, from disk otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from planetrl.episodes import EpisodeFile, load_episode
from planetrl.replay import Replay

__all__ = ["FrameSchedule", "episode_loader", "iter_episodes"]

#: Tag of the generators of :class:`FrameSchedule` (apart from the run's other streams).
_FRAMES = 0xF4A3_E5


@dataclass(frozen=True)
class _Block:
    files: tuple[int, ...]
    """Positions in the file list."""
    first_update: int
    """The update (within the epoch) of its first batch."""
    batches: int


class FrameSchedule:
    """Which frames V's update k (0-based, within an iteration) trains on.

    Args:
        lengths: frames of each episode file (the file list of the replay, in index order).
        memory_steps: most frames in memory at once (0 = all).
        batch_size: frames per batch.
        key: seeds the draws (e.g. ``(run seed, iteration)``).
    """

    def __init__(
        self, lengths: Sequence[int], memory_steps: int, batch_size: int, key: Sequence[int]
    ) -> None:
        if not lengths:
            raise ValueError("V needs at least one episode to train on")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.memory_steps = int(memory_steps) or int(self.lengths.sum())
        self.batch_size = int(batch_size)
        self.key = [int(k) for k in key]
        self._epochs: dict[int, list[_Block]] = {}  # the latest two epochs' blocks
        self._counts: dict[int, int] = {}  # batches of every epoch seen

    def blocks(self, epoch: int) -> list[_Block]:
        """The blocks of ``epoch``: its file order cut where a block would pass
        ``memory_steps`` frames."""
        if epoch not in self._epochs:
            rng = np.random.default_rng([*self.key, epoch, _FRAMES])
            order = rng.permutation(len(self.lengths)) if len(self.lengths) > 1 else [0]
            blocks: list[_Block] = []
            current: list[int] = []
            frames = first = 0
            for position in order:
                n = int(self.lengths[position])
                if current and frames + n > self.memory_steps:
                    batches = max(1, frames // self.batch_size)
                    blocks.append(_Block(tuple(current), first, batches))
                    first += batches
                    current, frames = [], 0
                current.append(int(position))
                frames += n
            blocks.append(_Block(tuple(current), first, max(1, frames // self.batch_size)))
            self._epochs = {e: b for e, b in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = blocks
            self._counts[epoch] = blocks[-1].first_update + blocks[-1].batches
        return self._epochs[epoch]

    def batches_per_epoch(self, epoch: int) -> int:
        if epoch not in self._counts:
            self.blocks(epoch)
        return self._counts[epoch]

    def locate(self, update: int) -> tuple[int, int, int]:
        """(epoch, block number, batch within the block) of ``update``."""
        epoch = 0
        while update >= (n := self.batches_per_epoch(epoch)):
            update -= n
            epoch += 1
        for number, block in enumerate(self.blocks(epoch)):
            if update < block.first_update + block.batches:
                return epoch, number, update - block.first_update
        raise AssertionError("unreachable: the blocks cover the epoch")

    def permutation(self, epoch: int, number: int) -> np.ndarray:
        """The shuffled order of the frames of block ``number`` of ``epoch`` (positions in the
        block's frames, its files' frames concatenated in block order)."""
        block = self.blocks(epoch)[number]
        frames = int(self.lengths[list(block.files)].sum())
        return np.random.default_rng([*self.key, epoch, number, _FRAMES]).permutation(frames)

    def batch(self, update: int) -> tuple[tuple[int, int], tuple[int, ...], np.ndarray]:
        """((epoch, block number), the block's files, the frame positions of ``update``'s
        batch within the block)."""
        epoch, number, j = self.locate(update)
        block = self.blocks(epoch)[number]
        order = self.permutation(epoch, number)
        size = self.batch_size if len(order) >= self.batch_size else len(order)
        return (epoch, number), block.files, order[j * size : (j + 1) * size]


def episode_loader(replay: Replay, files: Sequence[EpisodeFile]) -> Callable[[int], dict]:
    """``load(position)``: episode ``files[position]``, from the replay's memory when it holds
    that file, else read from disk (:func:`planetrl.episodes.load_episode`; a corrupt file is an
    error naming it)."""
    in_memory = dict(zip(replay.episode_indices().tolist(), replay.episodes()))

    def load(position: int) -> dict:
        file = files[position]
        episode = in_memory.get(file.index)
        return episode if episode is not None else load_episode(file.path)

    return load


def iter_episodes(replay: Replay, files: Sequence[EpisodeFile]) -> Iterator[dict]:
    """Every episode of ``files`` in order, one at a time (see :func:`episode_loader`)."""
    load = episode_loader(replay, files)
    for position in range(len(files)):
        yield load(position)
