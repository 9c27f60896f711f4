"""Image augmentation of the world model's training chunks (an option; PlaNet has none).

Random shift (Laskin et al. 2020, RAD; Kostrikov et al. 2021, DrQ: "pad 4, random crop"): each
chunk's frames are padded by ``pad`` pixels on every side, repeating the border pixels, and cut
back to their size at a random offset in [0, 2 pad]² (a shift of up to ``pad`` pixels in x and
y). One offset per chunk, the same for its L frames: a chunk stays a consistent video, so the
dynamics the model learns from it are those of the unshifted one, seen from a moved camera.
The encoder sees the shifted frames and the decoder reconstructs them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """``images`` (B, L, H, W, C) of any dtype, each chunk b shifted by its own random offset
    (dx, dy) in [-pad, pad]² with the border pixels repeated; ``pad`` = 0 returns them as they
    are. The offsets are drawn with ``generator`` (a CPU torch generator; None: torch's global
    RNG)."""
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    if images.dim() != 5:
        raise ValueError(f"images must be (B, L, H, W, C), got {tuple(images.shape)}")
    if pad == 0:
        return images
    batch, _, height, width, _ = images.shape
    offsets = torch.randint(-pad, pad + 1, (batch, 2), generator=generator)
    rows = (torch.arange(height)[None, :] + offsets[:, :1]).clamp(0, height - 1)  # (B, H)
    cols = (torch.arange(width)[None, :] + offsets[:, 1:]).clamp(0, width - 1)  # (B, W)
    rows, cols = rows.to(images.device), cols.to(images.device)
    index = torch.arange(batch, device=images.device)[:, None, None]
    # (B, H, W, L, C): advanced indices first, then the sliced L and C; back to (B, L, H, W, C).
    shifted = images.permute(0, 2, 3, 1, 4)[index, rows[:, :, None], cols[:, None, :]]
    return shifted.permute(0, 3, 1, 2, 4)
