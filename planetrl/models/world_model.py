"""The world model: encoder + transition model + observation model + reward model, and the
preprocessing of the frames they see (the model's own input format, so one owner for training
and acting)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from planetrl.models.continuation import ContinuationModel, DiscountedReward
from planetrl.models.decoder import Decoder
from planetrl.models.encoder import Encoder, check_image
from planetrl.models.reward import RewardModel
from planetrl.models.transitions import make_transition
from planetrl.preprocess import GeneratorLike, check_bits, postprocess, preprocess


class WorldModel(nn.Module):
    """PlaNet's latent dynamics model (paper section 3) with its parts as attributes:

    - ``encoder``: o_t -> e_t (:class:`~planetrl.models.encoder.Encoder`),
    - ``transition``: a :class:`~planetrl.models.base.TransitionModel` (``"rssm"``, ``"ssm"``,
      ``"gru"``), the filter q(s_t | .) and prior p(s_t | .),
    - ``decoder``: p(o_t | h_t, s_t), image mean (:class:`~planetrl.models.decoder.Decoder`),
    - ``reward``: p(r_t | h_t, s_t), reward mean (:class:`~planetrl.models.reward.RewardModel`),
    - ``continuation``: p(c_t = 1 | h_t, s_t), the probability that the episode goes on after
      step t (:class:`~planetrl.models.continuation.ContinuationModel`, logits), or None (the
      default, PlaNet's model: no termination is predicted);
    - ``task_rewards``: one more reward head per other task, p(r^k_t | h_t, s_t) for task k, on
      the same latent state (an ``nn.ModuleDict`` by task name; empty by default, PlaNet's
      model). Trained on rewards relabelled from the same physics
      (:data:`planetrl.envs.dmc.SIBLING_TASKS`), they let the planner score a task the agent
      never acted in: :meth:`planning_reward_for`.

    The planner's reward is :attr:`planning_reward`: ``reward`` itself without the continuation
    head (PlaNet), with it a :class:`~planetrl.models.continuation.DiscountedReward` that weights
    each imagined reward by the predicted probability that the episode has not ended before.

    Its input format is its own: :meth:`preprocess` turns uint8 frames (from the env, or a replay
    batch) into the float images the encoder takes (``bits``-bit quantised, dequantisation noise,
    centred), and :meth:`postprocess` inverts it for display. The training objective and the
    agent both call it, so what the model trains on and what it acts on cannot differ.

    Args:
        action_size: A.
        transition: the kind of transition model, see :func:`planetrl.models.make_transition`.
        deter_size, stoch_size, hidden_size, min_std: transition sizes (paper 200, 30, 200, 0.1).
        embed_size: size of e_t; None (or 32 * cnn_depth, 1024 at the paper's size) is the
            paper's encoder, another value adds a Linear projection after the convolutions.
        cnn_depth: channel multiplier of encoder and decoder (32).
        reward_hidden, reward_layers: the reward MLP (200, 2).
        bits: bit depth of :meth:`preprocess` (paper: 5). A setting, not a parameter: it is not
            in the ``state_dict`` (the run's config restores it).
        channels_last: run the convolutions in channels_last memory format (same function;
            one update at B = L = 50 on a 2-core CPU took ~9 s instead of ~12 s). Off by default.
        continuation: add the continuation head (an MLP of the reward model's sizes); off by
            default (PlaNet), which leaves the parameters, the ``state_dict`` and the planner's
            reward exactly as without this option.
        task_rewards: the other tasks to add a reward head for (MLPs of the reward model's
            sizes), by name, e.g. ``("dmc:walker-run",)``; none by default, which leaves the
            ``state_dict`` as without this option.
    """

    def __init__(
        self,
        action_size: int,
        *,
        transition: str = "rssm",
        deter_size: int = 200,
        stoch_size: int = 30,
        hidden_size: int = 200,
        embed_size: int | None = None,
        cnn_depth: int = 32,
        min_std: float = 0.1,
        reward_hidden: int = 200,
        reward_layers: int = 2,
        bits: int = 5,
        channels_last: bool = False,
        continuation: bool = False,
        task_rewards: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__()
        self.action_size = int(action_size)
        self.bits = check_bits(bits)
        if embed_size is None:
            embed_size = 32 * cnn_depth
        self.encoder = Encoder(cnn_depth, embed_size, channels_last=channels_last)
        self.transition = make_transition(
            transition,
            self.action_size,
            self.encoder.embed_size,
            deter_size=deter_size,
            stoch_size=stoch_size,
            hidden_size=hidden_size,
            min_std=min_std,
        )
        feature_size = self.transition.feature_size
        self.decoder = Decoder(feature_size, cnn_depth, channels_last=channels_last)
        self.reward = RewardModel(feature_size, reward_hidden, reward_layers)
        self.continuation: ContinuationModel | None = None
        self._discounted: DiscountedReward | None = None  # a plain object, not a submodule
        if continuation:
            self.continuation = ContinuationModel(feature_size, reward_hidden, reward_layers)
            # One object for the life of the model: planners may key caches on its identity
            # (the CUDA-graph planner does).
            self._discounted = DiscountedReward(self.reward, self.continuation)
        heads = {
            task: RewardModel(feature_size, reward_hidden, reward_layers) for task in task_rewards
        }
        self.task_rewards = nn.ModuleDict(heads)
        # With the continuation head, each task's planner reward is discounted the same way; one
        # object per task for the life of the model (as _discounted).
        continuation_head = self.continuation
        self._task_planning: dict[str, RewardModel | DiscountedReward] = {
            task: head if continuation_head is None else DiscountedReward(head, continuation_head)
            for task, head in heads.items()
        }

    @property
    def planning_reward(self) -> RewardModel | DiscountedReward:
        """What the planner scores imagined features with (``planner(transition,
        planning_reward, state)``): :attr:`reward` (PlaNet), or with the continuation head the
        expected reward up to the predicted end (:class:`~planetrl.models.continuation.
        DiscountedReward`)."""
        return self.reward if self._discounted is None else self._discounted

    def planning_reward_for(self, task: str | None) -> RewardModel | DiscountedReward:
        """The planner's reward for ``task``: :attr:`planning_reward` for None (the task the
        model was trained on), else the reward head of ``task`` (:attr:`task_rewards`), with the
        continuation weighting when the model has that head. A task without a head is a
        ValueError naming those it has."""
        if task is None:
            return self.planning_reward
        if task not in self._task_planning:
            raise ValueError(
                f"this world model has no reward head for {task!r}; it has heads for "
                f"{sorted(self._task_planning) or 'no other task'} (train with sibling_rewards "
                "on a task of the same domain)"
            )
        return self._task_planning[task]

    # ------------------------------------------------------------- open-loop diagnostics
    @contextlib.contextmanager
    def own_samples(self, seed: int) -> Iterator[None]:
        """Evaluation mode, and the latent samples s_t ~ q, p drawn from a stream of their own:
        torch's global RNG (CPU and the model's CUDA device) forked and seeded with ``seed``, so
        that a diagnostic is repeatable and leaves every stream of the training run as it was
        (the training mode is restored too)."""
        device = next(self.parameters()).device
        devices = [device] if device.type == "cuda" else []
        was_training = self.training
        self.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield
        finally:
            self.train(was_training)

    def open_loop(
        self, images: Tensor, actions: Tensor, is_first: Tensor, context: int
    ) -> tuple[Tensor, Tensor | None]:
        """The open loop every diagnostic reads (one owner): filter the first ``context`` steps,
        q(s_t | o_<=t, a_<t), then imagine the rest from the last posterior under the true
        actions with the prior, p(s_t | s_{context-1}, a_{context-1:t}) (``is_first`` after the
        context is ignored: the rollout does not reset).

        Args:
            images: (B, T, 3, 64, 64) preprocessed. actions: (B, T, A), actions[:, t] = a_{t-1}.
            is_first: (B, T) bool. context: filtered steps, 1 <= context <= T.
        Returns:
            the features (h_t, s_t) of the posterior states (B, context, F) and of the imagined
            prior states (B, T - context, F), None when context = T.
        """
        embeds = self.encoder(images[:, :context])
        posts, _ = self.transition.observe(
            embeds, actions[:, :context], torch.as_tensor(is_first)[:, :context]
        )
        filtered = self.transition.features(posts)
        if context == images.shape[1]:
            return filtered, None
        priors = self.transition.imagine(posts[:, -1], actions[:, context:])
        return filtered, self.transition.features(priors)

    @torch.no_grad()
    def open_loop_reward_error(
        self, batch: Any, context: int = 5, horizon: int | None = None, *, seed: int = 0
    ) -> float:
        """Mean squared error of the rewards predicted open loop (:meth:`open_loop`): filter
        ``context`` steps, then imagine the rest of the chunk (or only its next ``horizon``
        steps, e.g. the planner's H) under the true actions and compare the reward model's means
        with the true rewards, (1 / N) sum (E[p(r_t | s_t)] - r_t)^2 over the imagined steps.
        Chunks with an episode start after the context are not used (NaN when none is left).

        ``batch``: ``image`` (B, T, 3, 64, 64) preprocessed, ``action`` (B, T, A), ``reward``
        (B, T), ``is_first`` (B, T). The latent samples come from their own stream (``seed``,
        :meth:`own_samples`)."""
        if horizon is not None:
            if horizon < 1:
                raise ValueError(f"horizon must be >= 1 or None, got {horizon!r}")
            batch = SimpleNamespace(
                **{
                    k: getattr(batch, k)[:, : context + horizon]
                    for k in ("image", "action", "reward", "is_first")
                }
            )
        is_first = torch.as_tensor(batch.is_first)
        keep = ~is_first[:, context:].any(dim=1).to(batch.image.device)
        if not keep.any():
            return float("nan")
        image, action, reward = batch.image[keep], batch.action[keep], batch.reward[keep]
        with self.own_samples(seed):
            _, imagined = self.open_loop(image, action, is_first[keep], context)
            predicted = self.reward(imagined)
        return float((predicted - reward[:, context:]).square().mean())

    @torch.no_grad()
    def open_loop_rewards_and_frames(
        self, images: Tensor, actions: Tensor, context: int, seed: int
    ) -> tuple[Tensor, Tensor]:
        """The decoder's and the reward model's means on the imagined steps of :meth:`open_loop`
        (no episode start inside the chunks), latent samples from their own stream (``seed``):
        frames (B, T - context, 3, 64, 64) in [0, 1] and rewards (B, T - context)."""
        is_first = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        with self.own_samples(seed):
            _, imagined = self.open_loop(images, actions, is_first, context)
            if imagined is None:
                raise ValueError(f"context {context} leaves no step to imagine")
            return self.decoder(imagined) + 0.5, self.reward(imagined)  # centred scale -> [0, 1]

    def preprocess(
        self,
        images: Tensor | np.ndarray,
        generator: GeneratorLike = None,
        noise: bool = True,
        *,
        out: Tensor | None = None,
    ) -> Tensor:
        """uint8 frames ``(..., H, W, 3)`` -> the encoder's input, float32 ``(..., 3, H, W)`` in
        [-0.5, 0.5): ``floor(x / 2^(8-b)) / 2^b + U(0, 2^-b) - 0.5`` with b = :attr:`bits`
        (:func:`planetrl.preprocess.preprocess`), on ``images``' device. ``noise=False`` drops
        the dequantisation noise U(0, 2^-b); ``generator`` draws it (None: torch's global RNG)."""
        return preprocess(images, self.bits, generator, noise, out=out)

    def postprocess(self, images: Tensor) -> Tensor:
        """Inverse of :meth:`preprocess` for display: float ``(..., 3, H, W)`` -> uint8
        ``(..., H, W, 3)``, the ``bits``-bit quantised frames."""
        return postprocess(images, self.bits)

    @torch.no_grad()
    def open_loop_prediction(
        self,
        images: Tensor,
        actions: Tensor,
        is_first: Tensor,
        context: int = 5,
        *,
        seed: int | None = None,
    ) -> Tensor:
        """Predicted frames for the open-loop video (truth / model / error).

        Frames 0..context-1: decoder means of the posterior (filtered) states q(s_t | o_<=t, a_<t).
        Frames context..T-1: decoder means of the prior imagined open-loop from the last context
        posterior under the true actions, p(s_t | s_{context-1}, a_{context-1:t}); ``is_first``
        after the context is ignored (the rollout does not reset).

        Args:
            images: (B, T, 3, 64, 64) preprocessed. actions: (B, T, A), actions[:, t] = a_{t-1}.
            is_first: (B, T) bool. context: number of filtered frames, 1 <= context <= T.
            seed: draw the latent samples from their own stream seeded with ``seed``, in
                evaluation mode (:meth:`own_samples`); None: from torch's global RNG, as is.
        Returns:
            (B, T, 3, 64, 64) float predicted images (preprocessed scale).
        """
        if seed is not None:
            with self.own_samples(seed):
                return self.open_loop_prediction(images, actions, is_first, context)
        check_image(images, "images")
        if images.dim() != 5:
            raise ValueError(f"images must be (B, T, 3, 64, 64), got {tuple(images.shape)}")
        batch, length = images.shape[:2]
        if actions.dim() != 3 or tuple(actions.shape[:2]) != (batch, length):
            raise ValueError(
                f"actions must be (B={batch}, T={length}, A), got {tuple(actions.shape)}"
            )
        if not 1 <= int(context) <= length:
            raise ValueError(f"context must be in [1, T={length}], got {context}")
        filtered, imagined = self.open_loop(images, actions, is_first, int(context))
        recon = self.decoder(filtered)
        if imagined is None:
            return recon
        pred = self.decoder(imagined)
        return torch.cat([recon, pred], dim=1)
