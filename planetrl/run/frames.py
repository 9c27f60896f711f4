"""Frames for videos: several environments side by side (the driver's recordings, any agent)."""

from __future__ import annotations

import numpy as np


def tile_frames(obs: np.ndarray) -> np.ndarray:
    """(E, H, W, 3) → one frame (H, E·W, 3), environments side by side."""
    obs = np.asarray(obs)
    return np.concatenate(list(obs), axis=1)
