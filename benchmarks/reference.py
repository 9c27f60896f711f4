"""A plain eager reference of PlaNet's compute, written independently of planetrl's modules (only
their weights are copied in), to time planetrl's paths against and to check that they compute the
same numbers.

- :class:`ReferenceRSSM`: the RSSM cell as the paper states it, with ``torch.cat`` inputs, an
  ``nn.GRUCell`` and separate Linear layers, no precomputation;
- :func:`reference_cem`: CEM the textbook way, the reward model applied inside the time loop;
- :func:`reference_loss`: the ELBO with free nats (image and reward Gaussian NLL, KL per step),
  the encoder and the decoder as plain ``F.conv2d`` / ``F.conv_transpose2d`` stacks (the decoder's
  first layer as a transposed convolution of a 1x1 map, as in the paper).

Random draws follow planetrl's convention (so that a planetrl path and the reference can be fed
the same numbers): CEM candidate noise (E, J, H, A) per iteration from ``generator``, then one
prior-noise draw (N, S) per step from the default generator; in the loss, per step the prior's
noise then the posterior's.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReferenceRSSM(nn.Module):
    """h_t = GRU(ReLU(W [s_{t-1}; a_{t-1}] + b), h_{t-1}); p(s_t | h_t) and q(s_t | h_t, e_t) are
    Gaussians with std = softplus(.) + min_std from one hidden ReLU layer."""

    def __init__(self, rssm) -> None:
        super().__init__()
        self.deter_size, self.stoch_size = rssm.deter_size, rssm.stoch_size
        self.action_size = rssm.action_size
        self.min_std = float(rssm.prior_head.min_std)
        self.fc_in = copy.deepcopy(rssm.img_in.linear)  # on [s; a]
        self.gru = copy.deepcopy(rssm.cell)
        self.fc_prior = copy.deepcopy(rssm.prior_hidden)
        self.out_prior = copy.deepcopy(rssm.prior_head.linear)
        self.fc_post = copy.deepcopy(rssm.post_hidden.linear)  # on [h; e]
        self.out_post = copy.deepcopy(rssm.post_head.linear)

    def gaussian(self, layer: nn.Linear, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, std = layer(x).chunk(2, -1)
        return mean, F.softplus(std) + self.min_std

    def prior(self, h: Tensor, s: Tensor, a: Tensor):
        h = self.gru(F.relu(self.fc_in(torch.cat([s, a], -1))), h)
        mean, std = self.gaussian(self.out_prior, F.relu(self.fc_prior(h)))
        return h, mean + std * torch.randn_like(std), mean, std

    def posterior(self, h: Tensor, e: Tensor):
        mean, std = self.gaussian(self.out_post, F.relu(self.fc_post(torch.cat([h, e], -1))))
        return mean + std * torch.randn_like(std), mean, std


class ReferenceReward(nn.Module):
    def __init__(self, reward_model) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            copy.deepcopy(m) for m in reward_model.net if isinstance(m, nn.Linear)
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


@torch.no_grad()
def reference_cem(
    rssm: ReferenceRSSM,
    reward: ReferenceReward,
    deter: Tensor,
    stoch: Tensor,
    *,
    horizon: int,
    iterations: int,
    candidates: int,
    top_k: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CEM over action sequences from the beliefs (h, s) (E, .): returns the first action (E, A)."""
    E, J, H, A = deter.shape[0], candidates, horizon, rssm.action_size
    mean = torch.zeros(E, H, A, device=deter.device)
    std = torch.ones(E, H, A, device=deter.device)
    for _ in range(iterations):
        if generator is None:
            z = torch.randn(E, J, H, A, device=deter.device)
        else:
            z = torch.randn(E, J, H, A, generator=generator, device=generator.device)
            z = z.to(deter.device)
        actions = (mean[:, None] + std[:, None] * z).clamp(-1.0, 1.0)
        h = deter.repeat_interleave(J, 0)
        s = stoch.repeat_interleave(J, 0)
        flat = actions.reshape(E * J, H, A)
        returns = torch.zeros(E * J, device=deter.device)
        for t in range(H):
            h, s, _, _ = rssm.prior(h, s, flat[:, t])
            returns += reward(torch.cat([h, s], -1))
        returns = returns.reshape(E, J)
        best = returns.topk(top_k, dim=1).indices
        elites = torch.stack([actions[e, best[e]] for e in range(E)])
        mean = elites.mean(1)
        std = elites.std(1, unbiased=False)
    return mean[:, 0]


class ReferenceWorldModel(nn.Module):
    """Encoder, RSSM, decoder and reward model with the weights of a planetrl ``WorldModel``."""

    def __init__(self, world_model) -> None:
        super().__init__()
        self.enc = nn.ModuleList(
            copy.deepcopy(m) for m in world_model.encoder.convs if isinstance(m, nn.Conv2d)
        )
        dec = world_model.decoder
        self.dec_fc = copy.deepcopy(dec.fc)
        self.dec1_weight = nn.Parameter(dec.deconv1.weight.detach().clone())
        self.dec1_bias = nn.Parameter(dec.deconv1.bias.detach().clone())
        self.dec = nn.ModuleList(
            copy.deepcopy(m) for m in dec.deconvs if isinstance(m, nn.ConvTranspose2d)
        )
        self.rssm = ReferenceRSSM(world_model.transition)
        self.reward = ReferenceReward(world_model.reward)

    def encode(self, images: Tensor) -> Tensor:
        x = images
        for conv in self.enc:
            x = F.relu(conv(x))
        return x.flatten(1)

    def decode(self, features: Tensor) -> Tensor:
        x = self.dec_fc(features)[:, :, None, None]
        x = F.relu(F.conv_transpose2d(x, self.dec1_weight, self.dec1_bias, stride=2))
        for i, deconv in enumerate(self.dec):
            x = deconv(x)
            if i < len(self.dec) - 1:
                x = F.relu(x)
        return x


def _kl(mq: Tensor, sq: Tensor, mp: Tensor, sp: Tensor) -> Tensor:
    return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)


def reference_loss(model: ReferenceWorldModel, batch, free_nats: float = 3.0) -> Tensor:
    """The ELBO (image NLL + reward NLL + max(KL, free nats)), mean over batch and time."""
    images, actions, rewards, is_first = batch.image, batch.action, batch.reward, batch.is_first
    B, L = images.shape[:2]
    embeds = model.encode(images.reshape(B * L, 3, 64, 64)).reshape(B, L, -1)
    h = images.new_zeros(B, model.rssm.deter_size)
    s = images.new_zeros(B, model.rssm.stoch_size)
    features, kls = [], []
    for t in range(L):
        keep = (~is_first[:, t]).float()[:, None]
        h, s = h * keep, s * keep
        h, _, mp, sp = model.rssm.prior(h, s, actions[:, t] * keep)
        s, mq, sq = model.rssm.posterior(h, embeds[:, t])
        features.append(torch.cat([h, s], -1))
        kls.append(_kl(mq, sq, mp, sp))
    features = torch.stack(features, 1)
    kl = torch.stack(kls, 1)
    recon = model.decode(features.reshape(B * L, -1)).reshape(B, L, 3, 64, 64)
    image_nll = 0.5 * (recon - images).pow(2).sum((2, 3, 4)) + 3 * 64 * 64 * 0.5 * math.log(
        2 * math.pi
    )
    reward_nll = 0.5 * (model.reward(features) - rewards).pow(2) + 0.5 * math.log(2 * math.pi)
    return image_nll.mean() + reward_nll.mean() + kl.clamp_min(free_nats).mean()
