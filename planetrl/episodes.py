"""The episode format and the step convention: the one owner of both.

Step ``t`` of an episode (and of a sampled chunk) holds

* ``image`` o_t: uint8 ``(H, W, 3)`` (HWC, 64x64 for PlaNet), the observation arrived at;
* ``action`` a_{t-1}: float32 ``(A,)``, the action that led to o_t (zeros at the first step);
* ``reward`` r_t: float32, received on arriving at o_t (0 at the first step);
* ``is_first``: bool, True at the first step only (an episode starts with a reset);
* ``is_terminal``: bool, True only on true termination (a time-limit end is truncation and is
  never terminal);
* optionally ``reward/<task>``: float32 ``(T,)``, the reward r_t that task ``<task>`` (e.g.
  ``dmc:walker-run``) pays on the same step, relabelled from the same physics state while the
  episode was collected for another task (:data:`planetrl.envs.dmc.SIBLING_TASKS`); 0 at the
  first step. Episodes without them (every episode before they existed) are valid.

So an episode of ``T`` agent steps has ``T + 1`` entries. An episode is a dict of these five
arrays (:data:`EPISODE_KEYS`); on disk it is ``<index:06d>-<length>.npz`` (``np.savez_compressed``,
written atomically), ``length`` being the number of entries. :class:`EpisodeRecorder` builds
episodes in this convention from ``reset`` / ``step`` results, :func:`validate_episode` checks
them, :func:`save_episode` / :func:`load_episode` write and read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from planetrl.atomic import atomic_savez

__all__ = [
    "EPISODE_KEYS",
    "TASK_REWARD_PREFIX",
    "EpisodeFile",
    "EpisodeFileError",
    "EpisodeRecorder",
    "episode_filename",
    "list_episode_files",
    "load_episode",
    "parse_episode_filename",
    "save_episode",
    "task_reward_key",
    "validate_episode",
]

#: The keys of an episode (dict or file), in the order of ``docs/design.md``.
EPISODE_KEYS: tuple[str, ...] = ("image", "action", "reward", "is_first", "is_terminal")
#: The prefix of the optional keys ``reward/<task>`` (rewards of other tasks, relabelled).
TASK_REWARD_PREFIX = "reward/"


def task_reward_key(task: str) -> str:
    """The episode key of task ``task``'s relabelled rewards: ``reward/<task>``."""
    if not isinstance(task, str) or not task:
        raise ValueError(f"a task name must be a non-empty string, got {task!r}")
    return TASK_REWARD_PREFIX + task


_NAME_RE = re.compile(r"^(\d{6,})-(\d+)\.npz$")


class EpisodeFileError(ValueError):
    """An episode file is missing, truncated, corrupt, or does not hold a valid episode."""


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
        ``{key: array}`` for :data:`EPISODE_KEYS` and any ``reward/<task>`` keys, C-contiguous.

    Raises:
        ValueError: a key is missing or unexpected, or a dtype/shape/length/value is wrong; the
            message names the key and what is accepted.
    """
    if not isinstance(episode, Mapping):
        raise ValueError(
            f"an episode must be a mapping with keys {EPISODE_KEYS}, got {type(episode).__name__}"
        )
    missing = [key for key in EPISODE_KEYS if key not in episode]
    extra = sorted(
        str(key)
        for key in episode
        if key not in EPISODE_KEYS
        and not (isinstance(key, str) and key.startswith(TASK_REWARD_PREFIX) and key != "reward/")
    )
    if missing or extra:
        raise ValueError(
            f"an episode needs exactly the keys {EPISODE_KEYS} (and optionally "
            f"'{TASK_REWARD_PREFIX}<task>' keys); "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {extra}" if extra else "")
        )

    def array(key: str) -> np.ndarray:
        value = episode[key]
        if hasattr(value, "detach"):  # a torch tensor (this module does not import torch)
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
    task_rewards = sorted(k for k in episode if k not in EPISODE_KEYS)
    for key, ndim, shape_text in (
        ("action", 2, "(T, A)"),
        ("reward", 1, "(T,)"),
        *((k, 1, "(T,)") for k in task_rewards),
    ):
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


def save_episode(directory: str | Path, index: int, episode: Mapping[str, Any]) -> Path:
    """Validate ``episode`` and write it atomically as ``directory/<index:06d>-<T>.npz``.

    Written through :func:`planetrl.atomic.atomic_savez`, so a reader (or a restart after a
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
    path = directory / episode_filename(index, len(data["image"]))
    atomic_savez(path, data)
    return path


def load_episode(path: str | Path) -> dict[str, np.ndarray]:
    """Read and validate one episode file.

    Returns:
        ``{key: array}`` for :data:`EPISODE_KEYS` (and any ``reward/<task>`` keys) with the
        stored dtypes.

    Raises:
        EpisodeFileError: (a ``ValueError``) the file is missing, unreadable, truncated or corrupt,
            lacks a key, holds an invalid episode, or its length disagrees with its file name. The
            message names the file.
    """
    path = Path(path)
    try:
        raw = _read_archive(path)
    except SystemError:
        # CPython 3.11's spurious "AST constructor recursion depth mismatch" (gh-106905) from
        # the .npy header's literal_eval: the interpreter's error, not the file's. Seen once in
        # a test; read again rather than skip a good episode as corrupt.
        try:
            raw = _read_archive(path)
        except SystemError as error:
            raise EpisodeFileError(
                f"{path}: cannot read episode file, twice ({type(error).__name__}: {error})"
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


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an episode file, unvalidated; :class:`EpisodeFileError` where it cannot be
    read (a ``SystemError`` is let through: see :func:`load_episode`)."""
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
            keys = [*EPISODE_KEYS, *(k for k in files if k.startswith(TASK_REWARD_PREFIX))]
            return {key: archive[key] for key in keys}
    except (EpisodeFileError, SystemError):
        raise
    except Exception as error:  # zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError...
        raise EpisodeFileError(
            f"{path}: cannot read episode file, it is missing, truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from error


class EpisodeFile(NamedTuple):
    """An episode file found in a folder: its index, its length (from the name) and path."""

    index: int  # type: ignore[assignment]  # a field may shadow tuple.index
    length: int
    path: Path


def list_episode_files(directory: str | Path) -> list[EpisodeFile]:
    """The episode files in ``directory`` (by name only, nothing is read), sorted by index.

    Other names are not listed (see :func:`parse_episode_filename`); a missing folder is empty.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        parsed = parse_episode_filename(path.name)
        if parsed is not None:
            found.append(EpisodeFile(parsed[0], parsed[1], path))
    return sorted(found)


class EpisodeRecorder:
    """Builds one episode in the step convention from what an environment returns.

    ``EpisodeRecorder(o_0, A)`` holds the first step (zero action, zero reward, ``is_first``);
    :meth:`step` appends (o_t, a_{t-1}, r_t, terminated) after each env step; :meth:`episode`
    returns the validated episode (:func:`validate_episode`).
    """

    def __init__(self, first_image: np.ndarray, action_size: int) -> None:
        self._image = [np.asarray(first_image)]
        self._action = [np.zeros(int(action_size), np.float32)]
        self._reward = [0.0]
        self._terminal = [False]
        self._task_rewards: dict[str, list[float]] | None = None

    def __len__(self) -> int:
        return len(self._image)

    def step(
        self,
        image: np.ndarray,
        action: np.ndarray,
        reward: float,
        terminated: bool,
        task_rewards: Mapping[str, float] | None = None,
    ) -> None:
        """Record arriving at o_t = ``image`` by a_{t-1} = ``action`` with reward r_t;
        ``terminated``: true termination (not a time-limit truncation); ``task_rewards``: other
        tasks' rewards on the same step (``{task: r_t}``; the same tasks at every step)."""
        if task_rewards is not None or self._task_rewards is not None:
            given = dict(task_rewards or {})
            if self._task_rewards is None:
                if len(self._image) > 1:
                    raise ValueError("task rewards must be given from the first step on")
                self._task_rewards = {task: [0.0] for task in given}
            if set(given) != set(self._task_rewards):
                raise ValueError(
                    f"task rewards for {sorted(given)}, earlier steps had "
                    f"{sorted(self._task_rewards)}"
                )
            for task, value in given.items():
                self._task_rewards[task].append(float(value))
        self._image.append(np.asarray(image))
        self._action.append(np.asarray(action, np.float32))
        self._reward.append(float(reward))
        self._terminal.append(bool(terminated))

    def episode(self) -> dict[str, np.ndarray]:
        """The episode so far as ``{key: array}`` for :data:`EPISODE_KEYS` (validated)."""
        is_first = np.zeros(len(self), bool)
        is_first[0] = True
        return validate_episode(
            {
                "image": np.stack(self._image).astype(np.uint8, copy=False),
                "action": np.stack(self._action).astype(np.float32, copy=False),
                "reward": np.asarray(self._reward, np.float32),
                "is_first": is_first,
                "is_terminal": np.asarray(self._terminal, bool),
                **{
                    task_reward_key(task): np.asarray(values, np.float32)
                    for task, values in (self._task_rewards or {}).items()
                },
            }
        )
