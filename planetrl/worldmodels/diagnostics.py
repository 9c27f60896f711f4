"""M's open-loop predictions on recorded episodes (for comparing dynamics models).

Given a chunk of an episode (planetrl's step convention: step t holds o_t, a_{t-1}, r_t), V
encodes the first ``context`` frames (z_t = the posterior mean), M reads (z_t, a_t) for
t < context, which gives its prediction for step ``context``; from there it runs open loop under
the chunk's true actions, feeding its own predicted z back: step d = 1..H ahead is predicted from
o_{<context} and a_{<context+d-1}, the same information an RSSM filtered over the context and
imagining under the same actions has. Each predicted z is

- ``sample``: drawn from M's mixture at temperature τ (what a dream does), or
- ``mean``: the mixture's mean Σ_k π_k μ_k (at τ = 1), M's expected next latent;

the frame is V's decoding of it, the reward M's reward head.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from planetrl.worldmodels.models import MDNRNN, VAE, MDNOutput, sample_mixture

__all__ = ["OpenLoop", "mixture_mean", "open_loop_prediction"]


class OpenLoop(NamedTuple):
    """Predictions for steps context .. context + H - 1 of each chunk."""

    frames: torch.Tensor
    """(B, H, 3, 64, 64) in [0, 1]."""
    reward: torch.Tensor
    """(B, H)."""


def mixture_mean(out: MDNOutput) -> torch.Tensor:
    """Σ_k π_k μ_k per latent dimension: (..., z)."""
    return (out.log_pi.exp() * out.mean).sum(-1)


@torch.no_grad()
def open_loop_prediction(
    vae: VAE,
    mdn: MDNRNN,
    images: np.ndarray | torch.Tensor,
    actions: np.ndarray | torch.Tensor,
    *,
    context: int,
    mode: str = "sample",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> OpenLoop:
    """Open-loop predictions of chunks: ``images`` uint8 (B, T, 64, 64, 3), ``actions`` (B, T, A)
    (``actions[:, t]`` = a_{t-1}); H = T - context (see the module docstring)."""
    if mode not in ("sample", "mean"):
        raise ValueError(f"mode must be 'sample' or 'mean', got {mode!r}")
    device = next(mdn.parameters()).device
    images = torch.as_tensor(np.asarray(images))
    actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=device)
    length = images.shape[1]
    if not 1 <= context < length:
        raise ValueError(f"context must be in [1, T - 1 = {length - 1}], got {context}")
    z = vae.encode(VAE.preprocess(images[:, :context]).to(device)).mean
    out, state = mdn(z, actions[:, 1 : context + 1])
    out = MDNOutput(*(x[:, -1] for x in out))
    latents, rewards = [], []
    for d in range(1, length - context + 1):
        if mode == "mean":
            z_next = mixture_mean(out)
        else:
            shape = out.mean.shape[:-1]
            uniform = torch.rand(shape, generator=generator, device=device)
            normal = torch.randn(shape, generator=generator, device=device)
            z_next = sample_mixture(out, temperature, uniform, normal)
        latents.append(z_next)
        rewards.append(out.reward)
        if context + d < length:
            out, state = mdn.step(z_next, actions[:, context + d], state)
    return OpenLoop(vae.decode(torch.stack(latents, 1)), torch.stack(rewards, 1))
