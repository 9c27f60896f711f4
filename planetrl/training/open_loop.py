"""The open-loop reward error over the planner's horizon on whole episodes: the measure that
says whether a world model's reward predictions hold on episodes it never trained on
(:mod:`planetrl.suite.attribution`'s held-out error, :mod:`planetrl.suite.screen`'s score).

Each episode is cut into chunks of ``context + H`` steps, one every H steps. On each chunk the
model filters ``context`` steps, q(s_t | h_t, o_t), then imagines H steps with its prior
p(s_t | h_t) under the true actions, and the reward model's means E[p(r_t | s_t)] are compared
with the true rewards: (1 / N) Σ (E[r̂_t] − r_t)² over the imagined steps
(:meth:`planetrl.models.WorldModel.open_loop_reward_error`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

KEYS = ("image", "action", "reward", "is_first")


def episode_chunks(
    episodes: Sequence[Mapping[str, np.ndarray]], length: int, stride: int
) -> dict[str, np.ndarray]:
    """Every chunk of ``length`` steps that starts at a multiple of ``stride`` in each episode,
    stacked per key of :data:`KEYS`; a ValueError when no episode is that long."""
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    for episode in episodes:
        for start in range(0, len(episode["reward"]) - length + 1, stride):
            for key in KEYS:
                chunks[key].append(np.asarray(episode[key][start : start + length]))
    if not chunks["reward"]:
        raise ValueError(f"no episode has {length} steps for a chunk (context + H)")
    return {k: np.stack(v) for k, v in chunks.items()}


def open_loop_reward_error_on(
    world_model: Any,
    episodes: Sequence[Mapping[str, np.ndarray]],
    *,
    horizon: int,
    context: int = 5,
    seed: int = 0,
    max_chunks: int | None = None,
) -> dict[str, Any]:
    """The open-loop reward MSE over ``horizon`` steps on the chunks of ``episodes`` (at most
    ``max_chunks``, drawn with ``seed``), with the reward variance of the imagined steps (the
    MSE of predicting their mean) and the number of chunks. The dequantisation noise and the
    latent samples come from streams seeded with ``seed``: the same model and episodes give the
    same figure."""
    chunks = episode_chunks(episodes, context + horizon, horizon)
    count = len(chunks["reward"])
    if max_chunks is not None and count > max_chunks:
        pick = np.sort(np.random.default_rng(seed).choice(count, max_chunks, replace=False))
        chunks = {k: v[pick] for k, v in chunks.items()}
    device = next(world_model.parameters()).device
    image = torch.as_tensor(chunks["image"]).to(device)
    batch = SimpleNamespace(
        image=world_model.preprocess(image, torch.Generator().manual_seed(seed)),
        action=torch.as_tensor(chunks["action"], device=device),
        reward=torch.as_tensor(chunks["reward"], device=device),
        is_first=torch.zeros(chunks["reward"].shape, dtype=torch.bool, device=device),
    )
    mse = world_model.open_loop_reward_error(batch, context=context, seed=seed)
    return {
        "mse": mse,
        "chunks": len(chunks["reward"]),
        "context": context,
        "horizon": horizon,
        "reward_var": float(np.var(chunks["reward"][:, context:])),
    }
