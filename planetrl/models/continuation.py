"""The optional continuation head p(c_t | h_t, s_t) and the planner's reward with it.

PlaNet predicts no termination: its planner sums the imagined rewards of H steps as if every
episode went on. The continuation head (``model.continuation``, off by default) is the discount /
continue predictor of Dreamer (Hafner et al. 2020, "Dream to Control", its Atari variant) and
DreamerV2 (Hafner et al. 2021, "Mastering Atari with Discrete World Models"): a Bernoulli
p(c_t = 1 | h_t, s_t) with c_t = 0 on a true terminal step (``is_terminal``) and 1 otherwise,
trained on the posterior features (``loss.continuation_scale``, :func:`planetrl.objective.
compute_loss`). The planner then scores an imagined sequence by its expected return up to the
predicted end (:class:`DiscountedReward`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from planetrl.models.reward import RewardModel


class ContinuationModel(RewardModel):
    """MLP features -> ``layers`` x ``hidden`` ReLU -> the logit of p(c_t = 1 | h_t, s_t), the
    probability that the episode goes on after step t (the same MLP as the reward model's).

    ``forward`` takes any leading shape (..., F) and returns the logits (...,);
    :meth:`probability` the probabilities."""

    def probability(self, features: Tensor) -> Tensor:
        """p(c_t = 1 | features), (..., F) -> (...,)."""
        return torch.sigmoid(self(features))


def continuation_weights(probability: Tensor) -> Tensor:
    """The probability that an imagined episode has not ended before step t, for t = 1..H along
    the last axis: w_1 = 1, w_t = prod_{tau < t} p(c_tau = 1) ((..., H) -> (..., H)).

    The step convention (:mod:`planetrl.episodes`): r_t is received on arriving at o_t and a
    terminal step t has c_t = 0, so the reward of the terminal step itself is received and
    every later one is not; the expected return of a sequence is sum_t w_t r_t."""
    ones = torch.ones_like(probability[..., :1])
    return torch.cat([ones, probability[..., :-1]], dim=-1).cumprod(dim=-1)


class DiscountedReward:
    """The planner's reward when the world model has a continuation head: a reward-model-like
    callable over imagined trajectories, features (..., H, F) -> (..., H) expected rewards
    w_t E[r_t] with w_t = prod_{tau < t} p(c_tau = 1 | h_tau, s_tau) (:func:`continuation_weights`),
    so that the planners' return sum_t (their :func:`planetrl.planning.base.rollout_returns`)
    is the expected return up to the predicted end of the episode,

        R = sum_{t=1..H} (prod_{tau=1..t-1} p(c_tau = 1)) E[r_t].

    Unlike a per-step reward model, the time axis matters: it must be the second-to-last axis
    of ``features`` (the planners' (N, H, F) rollouts). Not a module (its models belong to the
    :class:`~planetrl.models.WorldModel`); the lean planner (:mod:`planetrl.speed.lean`) reads
    ``reward`` and ``continuation`` and computes the same function on bare tensors.
    """

    def __init__(self, reward: RewardModel, continuation: ContinuationModel) -> None:
        self.reward = reward
        self.continuation = continuation

    def __call__(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor) or features.dim() < 2:
            raise ValueError("features must be a tensor (..., H, F) of imagined trajectories")
        rewards = self.reward(features)
        return rewards * continuation_weights(self.continuation.probability(features))

    def __repr__(self) -> str:
        return f"DiscountedReward(reward={self.reward!r}, continuation={self.continuation!r})"
