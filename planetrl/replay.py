"""The episode replay: one compressed ``.npz`` file per episode, and the in-memory copy to sample.

PlaNet (Hafner et al. 2019, Algorithm 1) trains on chunks of ``L = 50`` consecutive steps drawn
uniformly from all episodes collected so far. The run's episode folder *is* the replay: every
episode is written once, atomically, as ``<index:06d>-<length>.npz`` (see ``docs/design.md``), and
a :class:`Replay` constructed on the same folder after a crash or restart reloads it.

Step convention (``docs/design.md``): step ``t`` holds ``image`` o_t (uint8 HWC), ``action``
a_{t-1} (zeros at the first step), ``reward`` r_t (0 at the first step), ``is_first`` and
``is_terminal`` (true termination only).

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
  with O(batch size) Python work. Images are converted to float only for the sampled batch, by
  :func:`planetrl.preprocess.preprocess`, on the requested device.

Not process-safe: one :class:`Replay` per folder writes (several readers are fine). Within one
process the methods are thread-safe (a lock guards the in-memory index).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from planetrl.preprocess import preprocess

__all__ = [
    "EPISODE_KEYS",
    "Batch",
    "EpisodeFileError",
    "Replay",
    "ReplayWarning",
    "episode_filename",
    "load_episode",
    "parse_episode_filename",
    "save_episode",
    "validate_episode",
]

#: The keys of an episode (dict or file), in the order of ``docs/design.md``.
EPISODE_KEYS: tuple[str, ...] = ("image", "action", "reward", "is_first", "is_terminal")

_NAME_RE = re.compile(r"^(\d{6,})-(\d+)\.npz$")
_TMP_SUFFIX = ".tmp"
_EXPECTED = (
    "image uint8 (T, H, W, 3), action float32 (T, A), reward float32 (T,), is_first bool (T,), "
    "is_terminal bool (T,), with is_first[0] True"
)


class EpisodeFileError(ValueError):
    """An episode file is missing, truncated, corrupt, or does not hold a valid episode."""


class ReplayWarning(UserWarning):
    """A file in the replay folder was skipped (corrupt, leftover temp file, unexpected name)."""


class _FileEntry(NamedTuple):
    index: int
    length: int
    path: Path


def episode_filename(index: int, length: int) -> str:
    """``<index:06d>-<length>.npz``, the name of episode ``index`` with ``length`` steps."""
    return f"{index:06d}-{length}.npz"


def parse_episode_filename(name: str) -> tuple[int, int] | None:
    """``(index, length)`` from an episode file name, or None if it is not one."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def validate_episode(episode: Mapping[str, Any], *, copy: bool = False) -> dict[str, np.ndarray]:
    """Check an episode against the contract and return it as numpy arrays of the stored dtypes.

    Accepts numpy arrays, CPU torch tensors or nested lists. ``action`` and ``reward`` may have any
    real (non-bool) numeric dtype and are cast to float32; ``image`` must already be uint8 and the
    flags bool (a silent cast there would hide a bug). With ``copy=True`` the arrays never share
    memory with the input.

    Returns:
        ``{key: array}`` for :data:`EPISODE_KEYS`, C-contiguous.

    Raises:
        ValueError: a key is missing or unexpected, or a dtype/shape/length/value is wrong; the
            message names the key and what is accepted.
    """
    if not isinstance(episode, Mapping):
        raise ValueError(f"an episode must be a mapping with keys {EPISODE_KEYS}, got "
                         f"{type(episode).__name__}")
    missing = [key for key in EPISODE_KEYS if key not in episode]
    extra = sorted(str(key) for key in episode if key not in EPISODE_KEYS)
    if missing or extra:
        raise ValueError(
            f"an episode needs exactly the keys {EPISODE_KEYS}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )

    def array(key: str) -> np.ndarray:
        value = episode[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        return np.asarray(value)

    image = array("image")
    if image.dtype != np.uint8 or image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(
            f"episode['image'] must be uint8 with shape (T, H, W, 3); got {image.dtype} with shape "
            f"{image.shape}"
        )
    length = image.shape[0]
    if length == 0:
        raise ValueError("an episode must have at least one step (T >= 1); got T = 0")
    result = {"image": image}
    for key, ndim, shape_text in (("action", 2, "(T, A)"), ("reward", 1, "(T,)")):
        value = array(key)
        if value.dtype.kind not in "fiu" or value.ndim != ndim or value.shape[0] != length:
            raise ValueError(
                f"episode[{key!r}] must be a real-valued array (stored as float32) with shape "
                f"{shape_text}, T = {length} from 'image'; got {value.dtype} with shape "
                f"{value.shape}"
            )
        value = value.astype(np.float32, copy=False)
        if not np.isfinite(value).all():
            raise ValueError(f"episode[{key!r}] contains NaN or infinite values")
        result[key] = value
    for key in ("is_first", "is_terminal"):
        value = array(key)
        if value.dtype != np.bool_ or value.shape != (length,):
            raise ValueError(
                f"episode[{key!r}] must be bool with shape (T,) = ({length},); got {value.dtype} "
                f"with shape {value.shape}"
            )
        result[key] = value
    if not result["is_first"][0]:
        raise ValueError("episode['is_first'][0] must be True (an episode starts with a reset)")
    if copy:
        return {key: np.array(value, order="C", copy=True) for key, value in result.items()}
    return {key: np.ascontiguousarray(value) for key, value in result.items()}


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_episode(directory: str | Path, index: int, episode: Mapping[str, Any]) -> Path:
    """Validate ``episode`` and write it atomically as ``directory/<index:06d>-<T>.npz``.

    The data goes to a hidden temporary file in the same folder (``.<name>.<random>.tmp``), is
    flushed to disk, then ``os.replace``d onto the final name, so a reader (or a restart after a
    crash) sees either no file or the whole file, never a partial one.

    Returns:
        The path of the written file.

    Raises:
        ValueError: the episode breaks the contract (see :func:`validate_episode`), or ``index``
            is negative.
        FileExistsError: an episode file with this index already exists in ``directory``.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    index = int(index)
    data = validate_episode(episode)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clash = sorted(directory.glob(f"{index:06d}-*.npz"))
    clash = [path for path in clash if parse_episode_filename(path.name) is not None]
    if clash:
        raise FileExistsError(f"episode index {index} already exists in {directory}: {clash[0]}")
    name = episode_filename(index, len(data["image"]))
    path = directory / name
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return path


def load_episode(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate one episode file.

    Returns:
        ``{key: array}`` for :data:`EPISODE_KEYS` with the stored dtypes.

    Raises:
        EpisodeFileError: (a ``ValueError``) the file is missing, unreadable, truncated or corrupt,
            lacks a key, holds an invalid episode, or its length disagrees with its file name. The
            message names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = getattr(archive, "files", None)
            if files is None:
                raise EpisodeFileError(
                    f"{path}: not an episode file (expected an .npz archive with keys "
                    f"{EPISODE_KEYS}, found a single array)"
                )
            missing = [key for key in EPISODE_KEYS if key not in files]
            if missing:
                raise EpisodeFileError(
                    f"{path}: episode file is missing keys {missing} (has {sorted(files)}; "
                    f"expected {EPISODE_KEYS})"
                )
            raw = {key: archive[key] for key in EPISODE_KEYS}
    except EpisodeFileError:
        raise
    except Exception as error:  # zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError...
        raise EpisodeFileError(
            f"{path}: cannot read episode file, it is missing, truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from error
    try:
        episode = validate_episode(raw)
    except ValueError as error:
        raise EpisodeFileError(f"{path}: invalid episode: {error}") from error
    parsed = parse_episode_filename(path.name)
    if parsed is not None and parsed[1] != len(episode["image"]):
        raise EpisodeFileError(
            f"{path}: the file name says {parsed[1]} steps but the file holds "
            f"{len(episode['image'])}"
        )
    return episode


@dataclasses.dataclass
class Batch:
    """A batch of ``B`` chunks of ``L`` consecutive steps, as torch tensors on one device.

    Attributes:
        image: float32 ``(B, L, 3, H, W)``, preprocessed (:func:`planetrl.preprocess.preprocess`).
        action: float32 ``(B, L, A)``, ``action[:, t]`` = a_{t-1}.
        reward: float32 ``(B, L)``, ``reward[:, t]`` = r_t.
        is_first: bool ``(B, L)``; True where an episode starts (the model resets its state).
        is_terminal: bool ``(B, L)``; True only on true termination.
    """

    image: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    is_first: torch.Tensor
    is_terminal: torch.Tensor

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
            }
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
        seed: seed of the numpy generator (PCG64) behind sampling (chunk starts and the
            dequantisation noise); None draws fresh entropy. See :meth:`rng_state`.
        load: reload existing episodes into memory. With False the folder is only scanned so that
            new files continue the index sequence.
        bits: bit depth for :func:`planetrl.preprocess.preprocess` in :meth:`sample`.
        load_workers: threads used to decompress files at reload (None: ``min(8, cpu_count)``).

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
        bits: int = 5,
        load_workers: int | None = None,
    ) -> None:
        if capacity is not None:
            capacity = _check_positive("capacity (steps kept in memory, or None)", capacity)
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
            raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._capacity = None if capacity is None else int(capacity)
        self._bits = int(bits)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._lock = threading.RLock()
        self._episodes: deque[_Episode] = deque()
        self._num_steps = 0
        self._image_shape: tuple[int, int, int] | None = None  # (H, W, 3)
        self._action_dim: int | None = None
        self._layout: _Layout | None = None
        self._local = threading.local()  # per-thread uint8 staging buffer for sample()

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
            elif name.endswith(_TMP_SUFFIX) and name.startswith("."):
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
    def rng_state(self) -> dict[str, Any]:
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
        image_out: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        with self._lock:
            # The layout is an immutable snapshot: copying from it needs no lock, even if an add
            # drops its oldest episodes meanwhile (the snapshot keeps their arrays alive).
            layout = self._get_layout()
            starts, first_episode = self._draw_starts(layout, batch_size, length, rng)
            height, width, _ = self._image_shape  # type: ignore[misc]
            action_dim = self._action_dim
        if image_out is None:
            image_out = np.empty((batch_size, length, height, width, 3), dtype=np.uint8)
        out = {
            "image": image_out,
            "action": np.empty((batch_size, length, action_dim), dtype=np.float32),
            "reward": np.empty((batch_size, length), dtype=np.float32),
            "is_first": np.empty((batch_size, length), dtype=np.bool_),
            "is_terminal": np.empty((batch_size, length), dtype=np.bool_),
        }
        targets = [(out[key], key) for key in EPISODE_KEYS]
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
        noise: bool = True,
        out: Batch | None = None,
    ) -> Batch:
        """``batch_size`` chunks of ``length`` consecutive steps, as a :class:`Batch` on ``device``.

        The compact uint8 images are moved to ``device`` first and preprocessed there (5-bit
        quantisation, dequantisation noise, centring; see :mod:`planetrl.preprocess`).

        Args:
            batch_size: ``B``, chunks per batch (PlaNet: 50).
            length: ``L``, steps per chunk (PlaNet: 50).
            device: where the batch tensors live.
            rng: generator to use instead of the replay's own seeded one.
            noise: add the dequantisation noise (disable for evaluation/videos).
            out: a previous Batch of the same shapes on ``device`` to overwrite in place instead of
                allocating new tensors (on CPU this saves ~123 MB of fresh memory, i.e. its page
                faults, per batch). Only pass one that nothing (e.g. an autograd graph) still uses.

        Raises:
            ValueError: no ``length`` consecutive steps are in memory; ``out`` does not match.
        """
        batch_size = _check_positive("batch_size", batch_size)
        length = _check_positive("length", length)
        device = torch.device(device)
        rng = self._rng if rng is None else rng
        height, width, _ = self._image_shape or (0, 0, 3)
        # The uint8 images are consumed before this call returns (preprocessed on CPU, or copied
        # to the device by a blocking copy), so a per-thread staging buffer is reused.
        shape = (batch_size, length, height, width, 3)
        staging = getattr(self._local, "staging", None)
        if staging is None or staging.shape != shape:
            staging = np.empty(shape, dtype=np.uint8) if self._image_shape else None
            self._local.staging = staging
        raw = self._gather(batch_size, length, rng, staging)
        images = torch.from_numpy(raw["image"])
        if device.type != "cpu":
            images = images.to(device)
            generator = torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**62)))
        else:
            generator = rng
        if out is not None:
            self._check_out(out, batch_size, length, device)
            preprocess(images, self._bits, generator, noise, out=out.image)
            for key in EPISODE_KEYS[1:]:
                getattr(out, key).copy_(torch.from_numpy(raw[key]))
            return out
        image = preprocess(images, self._bits, generator, noise)
        rest = {key: torch.from_numpy(raw[key]).to(device) for key in EPISODE_KEYS[1:]}
        return Batch(image=image, **rest)

    def _check_out(self, out: Batch, batch_size: int, length: int, device: torch.device) -> None:
        height, width, _ = self._image_shape  # type: ignore[misc]
        expected = {
            "image": ((batch_size, length, 3, height, width), torch.float32),
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
