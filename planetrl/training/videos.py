"""Frames for videos: several environments side by side, and the paper's open-loop figure
(truth / model / error)."""

from __future__ import annotations

import numpy as np
import torch

from planetrl.preprocess import postprocess


def tile_frames(obs: np.ndarray) -> np.ndarray:
    """(E, H, W, 3) → one frame (H, E·W, 3), environments side by side."""
    obs = np.asarray(obs)
    return np.concatenate(list(obs), axis=1)


def open_loop_video(truth: torch.Tensor, model: torch.Tensor, bits: int = 5) -> np.ndarray:
    """Frames (T, 3·H, B·W, 3) uint8: per column a sequence; rows truth, model, |error|.

    ``truth`` and ``model`` are preprocessed images (B, T, 3, H, W) in [-0.5, 0.5].
    """
    truth = truth.detach().float().cpu().clamp(-0.5, 0.5)
    model = model.detach().float().cpu().clamp(-0.5, 0.5)
    error = (model - truth).abs() - 0.5  # |error| in [0, 1] shown on the same scale
    rows = [postprocess(x, bits=bits).numpy() for x in (truth, model, error)]  # (B, T, H, W, 3)
    stacked = np.concatenate(rows, axis=2)  # (B, T, 3H, W, 3)
    return np.concatenate(list(stacked), axis=2)  # (T, 3H, B·W, 3)
