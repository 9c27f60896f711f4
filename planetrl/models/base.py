"""One interface for every transition model (RSSM, SSM, GRU), used by the loss and the planner.

Conventions (shared by the replay, the loss and the agent):
- Step t of a sequence holds the observation o_t (as its embedding e_t), the action a_{t-1} that
  led to it (zeros at an episode start) and the reward r_t received on arriving at o_t.
- ``is_first[:, t]`` marks an episode start: the state and the previous action are reset to the
  initial ones before step t, so a chunk may span episodes.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from planetrl.models.state import State


class TransitionModel(nn.Module, abc.ABC):
    """Base of the latent transition models.

    Subclasses implement :meth:`initial`, :meth:`img_step`, :meth:`obs_step`, :meth:`features`
    and :meth:`kl`; the sequence loops :meth:`observe` and :meth:`imagine` are shared.

    Attributes:
        action_size: dimension of a_t.
        embed_size: dimension of the image embedding e_t.
        feature_size: dimension of ``features(state)``, the input of decoder and reward model.
    """

    action_size: int
    embed_size: int
    feature_size: int

    @abc.abstractmethod
    def initial(self, batch: int, device: torch.device | None = None) -> State:
        """The state before the first step: zeros, shape (batch, ...)."""

    @abc.abstractmethod
    def img_step(self, prev: State, prev_action: Tensor) -> State:
        """One open-loop step: the prior p(s_t | h_t), h_t = f(h_{t-1}, s_{t-1}, a_{t-1})."""

    @abc.abstractmethod
    def obs_step(
        self, prev: State, prev_action: Tensor, embed: Tensor, is_first: Tensor | None = None
    ) -> tuple[State, State]:
        """One filtering step: (posterior q(s_t | h_t, e_t), prior p(s_t | h_t))."""

    @abc.abstractmethod
    def features(self, state: State) -> Tensor:
        """Input to decoder and reward model, e.g. concat(h_t, s_t)."""

    @abc.abstractmethod
    def kl(self, post: State, prior: State) -> Tensor:
        """KL(post || prior) summed over latent dims; shape = leading shape of the states."""

    def observe(
        self,
        embeds: Tensor,
        actions: Tensor,
        is_first: Tensor,
        state: State | None = None,
    ) -> tuple[State, State]:
        """Filter a sequence: embeds (B, T, E), actions (B, T, A) where actions[:, t] = a_{t-1},
        is_first (B, T) bool. Returns (posteriors, priors), each with leading shape (B, T)."""
        raise NotImplementedError

    def imagine(self, state: State, actions: Tensor) -> State:
        """Open-loop rollout of the prior from ``state`` (B,) under actions (B, T, A):
        actions[:, t] is applied to the state before step t. Returns priors with shape (B, T).
        Never sees an observation."""
        raise NotImplementedError
