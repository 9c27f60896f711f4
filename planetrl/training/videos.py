"""PlaNet's open-loop video: the paper's figure (truth / model / error) as frames."""

from __future__ import annotations

import numpy as np
import torch

from planetrl.preprocess import postprocess


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
