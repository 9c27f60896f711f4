"""One interface for every transition model (RSSM, SSM, GRU), used by the loss and the planner.

Conventions (shared by the replay, the loss and the agent):
- Step t of a sequence holds the observation o_t (as its embedding e_t), the action a_{t-1} that
  led to it (zeros at an episode start) and the reward r_t received on arriving at o_t.
- ``is_first[:, t]`` marks an episode start: the state and the previous action are reset to the
  initial ones before step t, so a chunk may span episodes.

How a subclass plugs in. The public methods :meth:`TransitionModel.img_step`,
:meth:`TransitionModel.obs_step`, :meth:`TransitionModel.observe` and
:meth:`TransitionModel.imagine` validate their inputs and run the time loops once, here. A subclass
implements the two one-step functions on *prepared* inputs, :meth:`TransitionModel._img_step` and
:meth:`TransitionModel._obs_step`, and may override :meth:`TransitionModel.prepare_actions` /
:meth:`TransitionModel.prepare_embeds`, which map raw a_{t-1} / e_t to what the step functions
consume. The loops call the prepare hooks once on the whole (B, T, .) sequence, so everything that
depends on a_{t-1} or e_t alone (e.g. the action and embedding columns of the first layers) is one
batched matrix product outside the Python loop, and the loop body is only the recurrent part.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Independent, Normal, kl_divergence

from planetrl.models.state import State


def sample_normal(mean: Tensor, std: Tensor, mean_only: bool = False) -> Tensor:
    """Reparameterised sample s = mean + std * eps, eps ~ N(0, I) (``Normal.rsample``, without
    building a distribution object in the hot loop). ``mean_only`` returns the mean."""
    if mean_only:
        return mean
    return mean + std * torch.randn_like(std)


def capturing(device: torch.device) -> bool:
    """Whether a CUDA graph is being captured on ``device``'s current stream (no host sync
    allowed: code that would read a tensor on the host takes a sync-free path instead)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def diag_normal(mean: Tensor, std: Tensor) -> Independent:
    """The diagonal Gaussian N(mean, diag(std^2)) over the last dimension."""
    return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)


class GaussianHead(nn.Module):
    """Linear map to the parameters of a diagonal Gaussian: mean = W_m x + b_m,
    std = softplus(W_s x + b_s) + min_std (as the official PlaNet code). One fused Linear (same
    function and initialisation distribution as two separate ones, since the fan-in is equal)."""

    def __init__(self, in_size: int, out_size: int, min_std: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_size, 2 * out_size)
        self.min_std = float(min_std)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw_std = self.linear(x).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + self.min_std


class SplitLinear(nn.Module):
    """``nn.Linear`` on the concatenation [x_1, ..., x_k] of several inputs, stored as one weight
    (so the function and the initialisation are those of the Linear on the concatenation) but
    applicable part by part: :meth:`part` gives W_i x_i, which lets the sequence loops compute the
    columns that do not depend on the recurrent state batched over time, outside the loop.

    ``forward(*xs)`` = W [x_1; ...; x_k] + b."""

    def __init__(self, in_sizes: tuple[int, ...], out_size: int, bias: bool = True) -> None:
        super().__init__()
        self.in_sizes = tuple(int(s) for s in in_sizes)
        self.linear = nn.Linear(sum(self.in_sizes), out_size, bias=bias)
        offsets = [0]
        for size in self.in_sizes:
            offsets.append(offsets[-1] + size)
        self._offsets = offsets

    def weight_part(self, i: int) -> Tensor:
        return self.linear.weight[:, self._offsets[i] : self._offsets[i + 1]]

    def part(self, i: int, x: Tensor, bias: bool = False) -> Tensor:
        """W_i x_i (+ b if ``bias``)."""
        return F.linear(x, self.weight_part(i), self.linear.bias if bias else None)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.linear(torch.cat(xs, dim=-1))


def check_sizes(**sizes: int) -> None:
    """Raise a ValueError naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if int(value) <= 0:
            raise ValueError(f"{name} must be a positive int, got {value}")


class TransitionModel(nn.Module, abc.ABC):
    """Base of the latent transition models.

    Subclasses implement :meth:`initial`, :meth:`_img_step`, :meth:`_obs_step` and
    :meth:`features` (and optionally :meth:`prepare_actions` / :meth:`prepare_embeds`); ``kl`` has a
    default for diagonal Gaussians. The public :meth:`img_step`, :meth:`obs_step` and the sequence
    loops :meth:`observe` and :meth:`imagine` are shared.

    Attributes:
        action_size: dimension of a_t.
        embed_size: dimension of the image embedding e_t.
        feature_size: dimension of ``features(state)``, the input of decoder and reward model.
        deter_size: size of ``State.deter``, the deterministic part a state carries from step to
            step (0 without a deterministic path). It is the size of h_t for the RSSM, but not
            for every model: :class:`~planetrl.models.gru.DeterministicGRU` carries h_t and its
            observation input u_t there, so its ``deter_size`` is ``belief_size`` (h_t, what
            its constructor and ``model.deter_size`` call ``deter_size``) + ``obs_input_size``.
            ``feature_size`` is the size of what is decoded.
        stoch_size: size of ``State.stoch`` / ``mean`` / ``std`` (0 without a stochastic path).
    """

    action_size: int
    embed_size: int
    feature_size: int
    deter_size: int
    stoch_size: int

    # ----------------------------------------------------------------- to implement
    @abc.abstractmethod
    def initial(self, batch: int, device: torch.device | None = None) -> State:
        """The state before the first step: zeros, shape (batch, ...)."""

    @abc.abstractmethod
    def _img_step(self, prev: State, action_in: Tensor) -> State:
        """:meth:`img_step` on a prepared action ``prepare_actions(a_{t-1})``."""

    @abc.abstractmethod
    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor) -> tuple[State, State]:
        """:meth:`obs_step` on prepared inputs; the reset is already applied."""

    @abc.abstractmethod
    def features(self, state: State) -> Tensor:
        """Input to decoder and reward model, e.g. concat(h_t, s_t)."""

    def prepare_actions(self, actions: Tensor) -> Tensor:
        """Per-step precomputation on a_{t-1} (any leading shape), batched over time by the loops.
        Default: identity."""
        return actions

    def prepare_embeds(self, embeds: Tensor) -> Tensor:
        """Per-step precomputation on e_t (any leading shape), batched over time.
        Default: identity."""
        return embeds

    def kl(self, post: State, prior: State) -> Tensor:
        """KL(q || p) between the diagonal Gaussians of two states, summed over the latent
        dimensions (``torch.distributions``: Independent(Normal) and ``kl_divergence``); shape =
        leading shape of the states. Zeros for a model without a stochastic part."""
        if post.mean.shape[-1] == 0:
            return post.mean.new_zeros(post.mean.shape[:-1])
        return kl_divergence(diag_normal(post.mean, post.std), diag_normal(prior.mean, prior.std))

    # ----------------------------------------------------------------- helpers
    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _device(self, device: torch.device | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def _check_state(self, state: State, name: str, batch: int | None = None) -> None:
        if not isinstance(state, State):
            raise ValueError(f"{name} must be a planetrl.models.State, got {type(state).__name__}")
        if state.deter.shape[-1] != self.deter_size or state.stoch.shape[-1] != self.stoch_size:
            raise ValueError(
                f"{name} has deter/stoch sizes ({state.deter.shape[-1]}, {state.stoch.shape[-1]}),"
                f" expected ({self.deter_size}, {self.stoch_size}) for {type(self).__name__}"
            )
        if batch is not None and tuple(state.shape) != (batch,):
            raise ValueError(f"{name} must have leading shape ({batch},), got {tuple(state.shape)}")

    def _check_last(self, x: Tensor, size: int, name: str, ndim: int) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != ndim or x.shape[-1] != size:
            raise ValueError(
                f"{name} must have {ndim} dims with last dim {size}, got shape {tuple(x.shape)}"
            )

    def _reset(self, state: State, first: Tensor) -> State:
        """Replace the state by the initial one where ``first`` (leading shape) is true."""
        init = self.initial(first.shape[0], device=first.device).to(dtype=state.deter.dtype)
        return State.where(first, init, state)

    # ----------------------------------------------------------------- public one-step API
    def img_step(self, prev: State, prev_action: Tensor) -> State:
        """One open-loop step: the prior p(s_t | h_t), h_t = f(h_{t-1}, s_{t-1}, a_{t-1}).
        ``prev`` (B,), ``prev_action`` (B, A)."""
        self._check_last(prev_action, self.action_size, "prev_action", 2)
        self._check_state(prev, "prev", prev_action.shape[0])
        return self._img_step(prev, self.prepare_actions(prev_action))

    def obs_step(
        self, prev: State, prev_action: Tensor, embed: Tensor, is_first: Tensor | None = None
    ) -> tuple[State, State]:
        """One filtering step: (posterior q(s_t | h_t, e_t), prior p(s_t | h_t)).

        ``prev`` (B,), ``prev_action`` a_{t-1} (B, A), ``embed`` e_t (B, E), ``is_first`` (B,)
        bool: where true, ``prev`` and ``prev_action`` are reset to the initial ones (zeros)."""
        self._check_last(prev_action, self.action_size, "prev_action", 2)
        self._check_last(embed, self.embed_size, "embed", 2)
        batch = prev_action.shape[0]
        if embed.shape[0] != batch:
            raise ValueError(f"embed batch {embed.shape[0]} != prev_action batch {batch}")
        self._check_state(prev, "prev", batch)
        if is_first is not None:
            is_first = torch.as_tensor(is_first, device=embed.device).bool()
            if tuple(is_first.shape) != (batch,):
                raise ValueError(
                    f"is_first must have shape ({batch},), got {tuple(is_first.shape)}"
                )
            prev = self._reset(prev, is_first)
            prev_action = prev_action * (~is_first).unsqueeze(-1).to(prev_action.dtype)
        return self._obs_step(prev, self.prepare_actions(prev_action), self.prepare_embeds(embed))

    # ----------------------------------------------------------------- sequence loops
    def observe(
        self,
        embeds: Tensor,
        actions: Tensor,
        is_first: Tensor,
        state: State | None = None,
        *,
        reset_every_step: bool = False,
    ) -> tuple[State, State]:
        """Filter a sequence: embeds (B, T, E), actions (B, T, A) where actions[:, t] = a_{t-1},
        is_first (B, T) bool. Returns (posteriors, priors), each with leading shape (B, T).

        ``state`` (B,) is the state before step 0 (default: initial). Where ``is_first[:, t]``, the
        state and a_{t-1} are reset to the initial ones (zeros) before step t.
        ``reset_every_step``: apply the reset at every step, without the host sync that finds the
        steps with one (the same result; what a CUDA graph capture does by itself)."""
        self._check_last(embeds, self.embed_size, "embeds", 3)
        self._check_last(actions, self.action_size, "actions", 3)
        batch, length = embeds.shape[:2]
        if tuple(actions.shape[:2]) != (batch, length):
            raise ValueError(
                f"actions leading shape {tuple(actions.shape[:2])} != embeds {(batch, length)}"
            )
        is_first = torch.as_tensor(is_first, device=embeds.device).bool()
        if tuple(is_first.shape) != (batch, length):
            raise ValueError(
                f"is_first must have shape {(batch, length)}, got {tuple(is_first.shape)}"
            )
        if state is None:
            state = self.initial(batch, device=embeds.device)
        else:
            self._check_state(state, "state", batch)
        if length == 0:
            empty = state.map(lambda x: x.unsqueeze(1)[:, :0])
            return empty, empty
        # a_{t-1} is zero at a reset, batched once; one host sync to find the steps with a reset.
        # While a CUDA graph is being captured (no host sync allowed) the reset is applied at
        # every step instead: the same result, State.where keeps the state where not is_first.
        actions = actions * (~is_first).unsqueeze(-1).to(actions.dtype)
        if reset_every_step or capturing(embeds.device):
            reset_steps = [True] * length
        else:
            reset_steps = is_first.any(0).tolist()
        action_in = self.prepare_actions(actions).unbind(1)
        embed_in = self.prepare_embeds(embeds).unbind(1)
        posts, priors = [], []
        for t in range(length):
            if reset_steps[t]:
                state = self._reset(state, is_first[:, t])
            post, prior = self._obs_step(state, action_in[t], embed_in[t])
            posts.append(post)
            priors.append(prior)
            state = post
        return State.stack(posts, 1), State.stack(priors, 1)

    def imagine(self, state: State, actions: Tensor) -> State:
        """Open-loop rollout of the prior from ``state`` (B,) under actions (B, T, A):
        actions[:, t] is applied to the state before step t. Returns priors with shape (B, T).
        Never sees an observation."""
        self._check_last(actions, self.action_size, "actions", 3)
        self._check_state(state, "state", actions.shape[0])
        if actions.shape[1] == 0:
            return state.map(lambda x: x.unsqueeze(1)[:, :0])
        action_in = self.prepare_actions(actions).unbind(1)
        priors = []
        for a in action_in:
            state = self._img_step(state, a)
            priors.append(state)
        return State.stack(priors, 1)
