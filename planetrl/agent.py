"""The PlaNet agent: a filtering belief over the latent state, and a planner acting on it.

At every env step t, for each of E environments:

0. o_t is preprocessed by the world model's own ``preprocess`` (the same as for training);
1. q(s_t | h_t, o_t) with h_t = f(h_{t-1}, s_{t-1}, a_{t-1}) — the posterior is updated from the
   previous state, the previous action and the new observation;
2. a_t = planner(transition, reward model, state_t) — CEM in latent space, first action only;
   the reward model is the world model's ``planning_reward`` (its reward model, or with the
   optional continuation head the reward discounted by the predicted end of the episode);
3. when collecting data, a_t + ε with ε ~ N(0, σ²) (σ = 0.3), clipped to [-1, 1]; no noise when
   evaluating.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from planetrl.models.state import State

Planner = Callable[..., Tensor]


class Agent:
    """Batched over E environments; call :meth:`reset` at the start of the episodes.

    Args:
        world_model: a :class:`planetrl.models.WorldModel`.
        planner: ``planner(transition, reward_model, state) -> (E, A)`` first actions; if it
            has a ``reset(num_envs)`` method (e.g. :class:`planetrl.planning.WarmStart`),
            :meth:`reset` calls it.
        generator: the torch generator for dequantisation and exploration noise (CPU).
        reward_task: plan for this other task with the world model's reward head for it
            (:meth:`planetrl.models.WorldModel.planning_reward_for`); None: the task it was
            trained on.
    """

    def __init__(
        self,
        world_model,
        planner: Planner,
        *,
        generator: torch.Generator | None = None,
        reward_task: str | None = None,
    ):
        self.world_model = world_model
        self.planner = planner
        self.generator = generator
        self.reward_task = reward_task
        self.reward_model = (
            world_model.planning_reward
            if reward_task is None
            else world_model.planning_reward_for(reward_task)
        )
        self.state: State | None = None
        self.prev_action: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.world_model.parameters()).device

    @property
    def action_size(self) -> int:
        return self.world_model.transition.action_size

    def reset(self, num_envs: int = 1) -> None:
        """Start E = ``num_envs`` new episodes: the initial belief, no previous action, and the
        planner's ``reset(num_envs)`` when it has one (a warm-started planner forgets its plans,
        so nothing carries over from the previous episodes)."""
        planner_reset = getattr(self.planner, "reset", None)
        if callable(planner_reset):
            planner_reset(num_envs)
        self.state = self.world_model.transition.initial(num_envs, device=self.device)
        self.prev_action = torch.zeros(num_envs, self.action_size, device=self.device)
        self._first = torch.ones(num_envs, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, *, explore_noise: float = 0.0) -> np.ndarray:
        """Observe ``obs`` (E, 64, 64, 3) uint8 and return actions (E, A) as float32 numpy."""
        if self.state is None:
            raise RuntimeError("call Agent.reset(num_envs) before Agent.act")
        obs = np.asarray(obs)
        if obs.ndim != 4 or obs.shape[0] != self.state.shape[0]:
            raise ValueError(
                f"expected observations (E={self.state.shape[0]}, H, W, 3), got {obs.shape}"
            )
        images = self.world_model.preprocess(torch.as_tensor(obs), self.generator)
        images = images.to(self.device)
        embed = self.world_model.encoder(images)
        post, _ = self.world_model.transition.obs_step(
            self.state, self.prev_action, embed, self._first
        )
        action = self.planner(self.world_model.transition, self.reward_model, post)
        if explore_noise > 0:
            noise = torch.randn(action.shape, generator=self.generator) * explore_noise
            action = (action + noise.to(action.device)).clamp(-1.0, 1.0)
        self.state = post
        self.prev_action = action.float()
        self._first = torch.zeros_like(self._first)
        return action.float().cpu().numpy()
