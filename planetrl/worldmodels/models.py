"""V, M and C of World Models (Ha & Schmidhuber 2018, arXiv 1803.10122).

- **V**, :class:`VAE`: q(z | o) = N(μ(o), diag σ²(o)), a 64×64×3 frame o in [0, 1] through four
  stride-2 4×4 convolutions (depth·(1, 2, 4, 8) channels, ReLU) to μ, log σ² of size z; the
  decoder maps z through a dense layer to 1×1×(32·depth) and four stride-2 transposed
  convolutions (kernels 5, 5, 6, 6; 4·depth, 2·depth, depth, 3 channels; sigmoid output) back to
  a frame. Loss per frame, averaged over the batch (the original's):
  ``Σ_pixels (o - ô)² + max(KL(q(z | o) || N(0, I)), kl_tolerance · z_size)``, with
  z = μ + σ ε sampled by reparameterisation.
- **M**, :class:`MDNRNN`: an LSTM on [z_t, a_t] whose output h_{t+1} parameterises, per latent
  dimension i, a mixture of K Gaussians
  ``p(z_{t+1,i}) = Σ_k π_{ik} N(μ_{ik}, σ_{ik}²)``; trained by the mixture's negative
  log-likelihood averaged over dimensions and steps (the original's). Sampling at temperature τ
  divides the mixture logits by τ and multiplies σ by sqrt(τ) (the original's). Departures:
  a reward head r̂_{t+1} (squared error; the original never predicted rewards, which a
  controller trained in the dream needs on these tasks) and an episode-end head (the original's
  Doom model had it as "restart", with the positive class weighted 10; its CarRacing model not);
  a dream episode ends where its logit is > 0 (as in the original's Doom dream). Done here with
  true terminations only: a time limit is not an episode end. Adam at a constant learning rate,
  as the original's CarRacing M (``decay_rate=1.0``; only its Doom M decayed it by 0.99999 per
  step to 1e-5).
- **C**, :class:`LinearController`: a_t = map(tanh(W [z_t, h_t] + b)) in the action bounds
  [-1, 1] (the env layer normalises every action space to it, affinely); ``map`` is the identity
  or the original's CarRacing mapping (:data:`ACTION_MAPS`); (z + h)·A + A parameters, 867 for
  z = 32, h = 256, A = 3. Stateless: its parameters are a flat vector θ, as CMA-ES sees them,
  and a population of them is evaluated at once (:meth:`LinearController.weights` of a (N, P)
  matrix of vectors).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "ACTION_MAPS",
    "ControllerWeights",
    "LSTMState",
    "LinearController",
    "MDNOutput",
    "MDNRNN",
    "Posterior",
    "VAE",
    "VAELoss",
    "mixture_nll",
    "sample_mixture",
    "vae_loss",
]


# ----------------------------------------------------------------------------------- V
class Posterior(NamedTuple):
    """q(z | o) = N(mean, diag exp(logvar))."""

    mean: torch.Tensor
    logvar: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std · ε, ε ~ N(0, I) (reparameterised)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over the latent dimensions."""
        return -0.5 * (1 + self.logvar - self.mean.square() - self.logvar.exp()).sum(-1)


class VAELoss(NamedTuple):
    """The loss and its terms, each averaged over the batch."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    """Σ_pixels (o - ô)², per frame."""
    kl: torch.Tensor
    """max(KL, kl_tolerance · z_size), per frame."""
    raw_kl: torch.Tensor
    """KL before the tolerance, per frame (for logging)."""


def vae_loss(
    frames: torch.Tensor, reconstruction: torch.Tensor, posterior: Posterior, kl_tolerance: float
) -> VAELoss:
    """The original's VAE loss for frames (B, 3, H, W) in [0, 1] (see the module docstring)."""
    rec = (frames - reconstruction).square().flatten(1).sum(-1).mean()
    raw = posterior.kl()
    free = kl_tolerance * posterior.mean.shape[-1]
    kl = raw.clamp(min=free).mean()
    return VAELoss(rec + kl, rec, kl, raw.mean())


class VAE(nn.Module):
    """V: the convolutional VAE of 64×64×3 frames (see the module docstring).

    Args:
        z_size: latent size (original: 32).
        depth: channel multiplier (original: 32, i.e. 32-64-128-256).
    """

    def __init__(self, z_size: int = 32, depth: int = 32) -> None:
        super().__init__()
        self.z_size, self.depth = z_size, depth
        d = depth
        self.encoder = nn.Sequential(
            nn.Conv2d(3, d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(d, 2 * d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(2 * d, 4 * d, 4, 2),
            nn.ReLU(),
            nn.Conv2d(4 * d, 8 * d, 4, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.mean = nn.Linear(2 * 2 * 8 * d, z_size)
        self.logvar = nn.Linear(2 * 2 * 8 * d, z_size)
        self.decoder_in = nn.Linear(z_size, 32 * d)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32 * d, 4 * d, 5, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * d, 2 * d, 5, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * d, d, 6, 2),
            nn.ReLU(),
            nn.ConvTranspose2d(d, 3, 6, 2),
            nn.Sigmoid(),
        )

    @staticmethod
    def preprocess(images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (..., H, W, 3) → float (..., 3, H, W) in [0, 1] (the original's input)."""
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8:
            raise TypeError(f"VAE.preprocess takes uint8 frames, got {images.dtype}")
        return images.movedim(-1, -3).float() / 255.0

    @staticmethod
    def postprocess(frames: torch.Tensor) -> np.ndarray:
        """float (..., 3, H, W) in [0, 1] → uint8 (..., H, W, 3) for display."""
        return (
            (frames.detach().float().clamp(0, 1) * 255)
            .round()
            .to(torch.uint8)
            .movedim(-3, -1)
            .cpu()
            .numpy()
        )

    # Fast paths (:meth:`use_fast_paths`): the convolutions in channels_last memory format and in
    # bfloat16 autocast; the dense layers, the latent and the loss stay float32.
    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None

    def use_fast_paths(self, channels_last: bool = False, bf16: bool = False) -> "VAE":
        """The convolutions in channels_last format and / or bfloat16 autocast (the flags of a
        run's decided ``speed`` section, :func:`planetrl.run.fast_paths.decide`); the parameters
        keep their identity, so the optimiser and checkpoints are unaffected. Returns self."""
        self.channels_last = bool(channels_last)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for convs in (self.encoder, self.decoder):
            convs.to(memory_format=fmt)  # type: ignore[call-overload]
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        return self

    def _convs(self, convs: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return convs(x)
        with torch.autocast(x.device.type, dtype=self.autocast_dtype):
            return convs(x).float()

    def encode(self, frames: torch.Tensor) -> Posterior:
        """q(z | o) of frames (..., 3, 64, 64) in [0, 1]."""
        lead = frames.shape[:-3]
        h = self._convs(self.encoder, frames.reshape(-1, *frames.shape[-3:]))
        return Posterior(self.mean(h).reshape(*lead, -1), self.logvar(h).reshape(*lead, -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean frame (..., 3, 64, 64) in [0, 1] of latents (..., z)."""
        lead = z.shape[:-1]
        h = self.decoder_in(z.reshape(-1, z.shape[-1]))[:, :, None, None]
        out = self._convs(self.decoder, h).contiguous()
        return out.reshape(*lead, *out.shape[1:])

    def loss(
        self, frames: torch.Tensor, kl_tolerance: float, generator: torch.Generator | None = None
    ) -> VAELoss:
        """:func:`vae_loss` of frames (B, 3, 64, 64) in [0, 1], z sampled with ``generator``."""
        posterior = self.encode(frames)
        return vae_loss(frames, self.decode(posterior.sample(generator)), posterior, kl_tolerance)


# ----------------------------------------------------------------------------------- M
class LSTMState(NamedTuple):
    """The LSTM's state: hidden h and cell c, each (B, hidden_size)."""

    h: torch.Tensor
    c: torch.Tensor


class MDNOutput(NamedTuple):
    """What M predicts from its output h_{t+1}: the mixture for z_{t+1} per latent dimension
    (``log_pi`` normalised over the K components), r̂_{t+1} and the episode-end logit."""

    log_pi: torch.Tensor
    """(..., z, K) log mixture weights."""
    mean: torch.Tensor
    """(..., z, K)."""
    log_std: torch.Tensor
    """(..., z, K)."""
    reward: torch.Tensor
    """(...) predicted reward r̂_{t+1}."""
    done_logit: torch.Tensor
    """(...) logit of the episode ending at t + 1."""


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def mixture_nll(
    out: MDNOutput, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-log Σ_k π_k N(target; μ_k, σ_k²), averaged over latent dimensions and the (masked) steps:
    the original's MDN loss. ``target`` (..., z); ``mask`` (...) of valid steps."""
    x = target.unsqueeze(-1)
    log_normal = -0.5 * ((x - out.mean) / out.log_std.exp()).square() - out.log_std - _LOG_SQRT_2PI
    nll = -torch.logsumexp(out.log_pi + log_normal, dim=-1).mean(-1)  # (...)
    if mask is None:
        return nll.mean()
    mask = mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def sample_mixture(
    out: MDNOutput, temperature: float, uniform: torch.Tensor, normal: torch.Tensor
) -> torch.Tensor:
    """z_{t+1} ~ the mixture at temperature τ, from given noise (so that batched and step-by-step
    rollouts can share it): per dimension the component is the first k whose cumulative weight
    reaches ``uniform`` (..., z), weights softmax(log π / τ); then z = μ_k + σ_k sqrt(τ)
    ``normal`` (..., z)."""
    pi = torch.softmax(out.log_pi / temperature, dim=-1)
    below = (pi.cumsum(-1) < uniform.unsqueeze(-1)).sum(-1, keepdim=True)
    k = below.clamp(max=pi.shape[-1] - 1)
    mean = out.mean.gather(-1, k).squeeze(-1)
    std = out.log_std.gather(-1, k).squeeze(-1).exp()
    return mean + std * math.sqrt(temperature) * normal


class MDNRNN(nn.Module):
    """M: LSTM on [z_t, a_t] → mixture of K Gaussians per dimension of z_{t+1}, r̂_{t+1}, and the
    episode-end logit (see the module docstring).

    Args:
        z_size: latent size.
        action_size: A.
        hidden_size: LSTM units (original: 256).
        mixtures: K (original: 5).
    """

    def __init__(
        self, z_size: int, action_size: int, hidden_size: int = 256, mixtures: int = 5
    ) -> None:
        super().__init__()
        self.z_size, self.action_size = z_size, action_size
        self.hidden_size, self.mixtures = hidden_size, mixtures
        self.lstm = nn.LSTM(z_size + action_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 3 * z_size * mixtures + 2)

    def initial(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        """The zero state for ``batch_size`` sequences."""
        device = device or self.head.weight.device
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return LSTMState(zeros, zeros.clone())

    def heads(self, h: torch.Tensor) -> MDNOutput:
        """The predictions from LSTM outputs (..., hidden_size)."""
        out = self.head(h)
        mix = out[..., 2:].reshape(*h.shape[:-1], self.z_size, 3, self.mixtures)
        log_pi = torch.log_softmax(mix[..., 0, :], dim=-1)
        return MDNOutput(log_pi, mix[..., 1, :], mix[..., 2, :], out[..., 0], out[..., 1])

    def forward(
        self, z: torch.Tensor, action: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[MDNOutput, LSTMState]:
        """Sequences z (B, T, z), a (B, T, A) from ``state`` (zeros when None) → the predictions
        for steps 1..T (B, T, ...) and the final state."""
        hx = None if state is None else (state.h.unsqueeze(0), state.c.unsqueeze(0))
        outputs, (h, c) = self.lstm(torch.cat([z, action], -1), hx)
        return self.heads(outputs), LSTMState(h.squeeze(0), c.squeeze(0))

    def step(
        self, z: torch.Tensor, action: torch.Tensor, state: LSTMState
    ) -> tuple[MDNOutput, LSTMState]:
        """One step: z_t (B, z), a_t (B, A), state → predictions for t + 1 (B, ...), new state."""
        out, state = self.forward(z.unsqueeze(1), action.unsqueeze(1), state)
        return MDNOutput(*(x.squeeze(1) for x in out)), state


# ----------------------------------------------------------------------------------- C
class ControllerWeights(NamedTuple):
    """A population of linear controllers: W (N, A, z + h), b (N, A)."""

    weight: torch.Tensor
    bias: torch.Tensor


def carracing_actions(a: torch.Tensor) -> torch.Tensor:
    """The original's CarRacing mapping (hardmaru/WorldModelsExperiments, ``carracing/model.py``,
    ``get_action``) of tanh outputs a (..., 3) to the env's actions steer = a_0, gas =
    (a_1 + 1) / 2, brake = clip(a_2, 0, 1), written in the [-1, 1] space that the env layer
    rescales affinely (x ↦ low + (x + 1) / 2 · (high - low)): steer and gas pass as they are,
    brake becomes 2 · clip(a_2, 0, 1) - 1."""
    if a.shape[-1] != 3:
        raise ValueError(
            f"the CarRacing action map needs 3 actions (steer, gas, brake), got {a.shape[-1]}"
        )
    return torch.cat([a[..., :2], 2 * a[..., 2:].clamp(0, 1) - 1], -1)


#: How C's tanh outputs become actions in [-1, 1]: by name (``controller.action_map``).
ACTION_MAPS = {"tanh": lambda a: a, "carracing": carracing_actions}


class LinearController:
    """C: a_t = map(tanh(W [z_t, h_t] + b)), θ = (W row-major, b) flat of :attr:`num_params`;
    ``action_map`` names ``map`` in :data:`ACTION_MAPS`."""

    def __init__(
        self, z_size: int, hidden_size: int, action_size: int, action_map: str = "tanh"
    ) -> None:
        if action_map not in ACTION_MAPS:
            raise ValueError(f"action_map {action_map!r}: expected one of {sorted(ACTION_MAPS)}")
        if action_map == "carracing" and action_size != 3:
            raise ValueError(
                f"the CarRacing action map needs 3 actions (steer, gas, brake), the env has "
                f"{action_size}"
            )
        self.z_size, self.hidden_size, self.action_size = z_size, hidden_size, action_size
        self.action_map = action_map

    @property
    def num_params(self) -> int:
        return (self.z_size + self.hidden_size) * self.action_size + self.action_size

    def weights(
        self, params: torch.Tensor | np.ndarray, device: torch.device | str = "cpu"
    ) -> ControllerWeights:
        """θ (N, P) or (P,) → :class:`ControllerWeights` with N rows (1 for a vector)."""
        params = torch.as_tensor(np.asarray(params), dtype=torch.float32, device=device)
        if params.ndim == 1:
            params = params.unsqueeze(0)
        if params.shape[-1] != self.num_params:
            raise ValueError(
                f"a controller has {self.num_params} parameters, got {params.shape[-1]}"
            )
        inputs = self.z_size + self.hidden_size
        split = inputs * self.action_size
        weight = params[:, :split].reshape(-1, self.action_size, inputs)
        return ControllerWeights(weight, params[:, split:])

    def act(self, weights: ControllerWeights, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """a = map(tanh(W_n [z_n, h_n] + b_n)) per row n: z (N, z), h (N, h) → (N, A)."""
        x = torch.cat([z, h], -1)
        a = torch.tanh(torch.einsum("nai,ni->na", weights.weight, x) + weights.bias)
        return ACTION_MAPS[self.action_map](a)
