"""Running controllers: in the dream (M as the environment, batched over the whole population ×
rollouts) and in the real environment (a policy for the shared episode driver).

The dream is the original's Doom procedure: the state is z_t and M's LSTM state; C acts on
[z_t, h_t]; M steps on (z_t, a_t); z_{t+1} is sampled from the mixture at temperature τ; the
reward is M's reward head (the original's Doom dream paid +1 per step alive instead); the episode
ends where M's episode-end logit is > 0 (as there) or after ``horizon`` steps. The original ran
one dream per process; here N = population × rollouts dreams are rows of one tensor, stepped
together (one LSTM call per step for all of them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from planetrl.worldmodels.models import (
    MDNRNN,
    VAE,
    ControllerWeights,
    LinearController,
    LSTMState,
    sample_mixture,
)

__all__ = [
    "DreamResult",
    "RandomControllerPolicy",
    "WorldModelsPolicy",
    "dream_rollout",
    "initial_latents",
]


@dataclass
class DreamResult:
    """What :func:`dream_rollout` returns."""

    returns: torch.Tensor
    """(N,) sum of M's predicted rewards until the episode ended."""
    lengths: torch.Tensor
    """(N,) steps taken before the episode ended (the ending step included)."""
    latents: torch.Tensor | None
    """With ``record``: (T + 1, N, z) the dreamt z_0..z_T (for decoding into a video)."""


@torch.no_grad()
def dream_rollout(
    mdn: MDNRNN,
    controller: LinearController,
    weights: ControllerWeights,
    z0: torch.Tensor,
    *,
    horizon: int,
    temperature: float,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> DreamResult:
    """N dreams at once, row n driven by controller n of ``weights`` from z0[n] (N, z).

    The noise of step t is drawn as one (N, z) uniform and one (N, z) normal tensor from
    ``generator`` whatever N's rows are doing, so row n of a batched rollout equals a rollout of
    row n alone given the same draws (see the tests).
    """
    n = z0.shape[0]
    state: LSTMState = mdn.initial(n, device=z0.device)
    z = z0
    alive = torch.ones(n, dtype=torch.bool, device=z0.device)
    returns = torch.zeros(n, device=z0.device)
    lengths = torch.zeros(n, dtype=torch.long, device=z0.device)
    latents = [z0] if record else None
    for _ in range(horizon):
        action = controller.act(weights, z, state.h)
        out, state = mdn.step(z, action, state)
        uniform = torch.rand(z.shape, generator=generator, device=z.device)
        normal = torch.randn(z.shape, generator=generator, device=z.device)
        z = sample_mixture(out, temperature, uniform, normal)
        returns += torch.where(alive, out.reward, torch.zeros_like(out.reward))
        lengths += alive.long()
        alive &= ~(out.done_logit > 0)
        if latents is not None:  # record
            latents.append(z)
        if not bool(alive.any()):
            break
    return DreamResult(returns, lengths, torch.stack(latents) if latents is not None else None)


@torch.no_grad()
def initial_latents(
    mean: torch.Tensor, logvar: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count`` initial z for dreams: a first frame's q(z | o_0) chosen uniformly among the
    episodes' (``mean``, ``logvar`` (E, z)), then sampled (the original's ``initial_z``)."""
    index = torch.randint(0, mean.shape[0], (count,), generator=generator, device=mean.device)
    eps = torch.randn((count, mean.shape[1]), generator=generator, device=mean.device)
    return mean[index] + torch.exp(0.5 * logvar[index]) * eps


class WorldModelsPolicy:
    """The agent in the real environment, batched over E environments for the episode driver:
    z_t ~ q(z | o_t) from V, a_t = C_n(z_t, h_t) for environment n, then M steps on (z_t, a_t)
    (the original's order). Environment n uses controller n of ``weights`` (the population's
    rollouts as environments of one run), or the one controller for all when it has one row.

    Args:
        vae, mdn, controller: V, M, C.
        weights: the controllers (N rows, N = 1 or >= E).
        generator: draws z_t's samples and the exploration noise.
        explore_noise: std of Gaussian noise added to the actions (clipped to [-1, 1]).
    """

    def __init__(
        self,
        vae: VAE,
        mdn: MDNRNN,
        controller: LinearController,
        weights: ControllerWeights,
        generator: torch.Generator | None = None,
        explore_noise: float = 0.0,
    ) -> None:
        self.vae, self.mdn, self.controller = vae, mdn, controller
        self.weights, self.generator, self.explore_noise = weights, generator, explore_noise
        self.device = next(mdn.parameters()).device
        self.state: LSTMState | None = None

    def reset(self, num_envs: int) -> None:
        rows = self.weights.weight.shape[0]
        if rows != 1 and rows < num_envs:
            raise ValueError(f"{rows} controllers for {num_envs} environments")
        self.state = self.mdn.initial(num_envs, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        e = len(obs)
        frames = self.vae.preprocess(torch.as_tensor(np.asarray(obs))).to(self.device)
        z = self.vae.encode(frames).sample(self.generator)
        w = self.weights
        if w.weight.shape[0] == 1:
            w = ControllerWeights(w.weight.expand(e, -1, -1), w.bias.expand(e, -1))
        else:
            w = ControllerWeights(w.weight[:e], w.bias[:e])
        assert self.state is not None  # reset(num_envs) first, as the episode driver does
        action = self.controller.act(w, z, self.state.h)
        if self.explore_noise:
            noise = torch.randn(action.shape, generator=self.generator, device=action.device)
            action = (action + self.explore_noise * noise).clamp(-1, 1)
        # M steps on the action the env is given (with its noise), as the replay records it.
        _, self.state = self.mdn.step(z, action, self.state)
        return action.cpu().numpy()


#: Tag of the streams of :class:`RandomControllerPolicy` (apart from the env's own reset).
_RANDOM_CONTROLLER = 0xC0A7_C4B1


class RandomControllerPolicy:
    """The original's data collection (hardmaru/WorldModelsExperiments, ``carracing/extract.py``):
    every episode acts with an agent of its own whose V, M and C weights are all drawn from a
    Cauchy distribution of scale s ~ U(0, ``scale``) (``init_random_model_params(stdev=
    np.random.rand() * 0.01)``, ``np.random.standard_cauchy · stdev``), z_t sampled from that
    V's q(z | o_t), a_t = C(z_t, h_t) through C's action map, M stepped on (z_t, a_t). With such
    small weights z_t is close to N(0, I) noise and h_t to 0, and the few large Cauchy draws
    decide how strongly each action dimension follows that noise, episode by episode. V's
    decoder is not drawn (it is not used); z is clamped to ±1e6 and a NaN replaced by 0 (a huge draw
    can overflow V's outputs), where the original's NumPy would have passed it on.

    Episode i draws everything (its scale, weights, z samples) from a generator seeded by its
    reset seed ``seeds[i]``, so its actions depend on its seed only (a batch cut short by a kill
    is finished with the same episodes). ``vae`` and ``mdn`` give the architecture (their
    weights are not used or changed).
    """

    def __init__(
        self,
        vae: VAE,
        mdn: MDNRNN,
        controller: LinearController,
        seeds: Sequence[int],
        scale: float,
    ) -> None:
        self.controller = controller
        self.device = next(mdn.parameters()).device
        self.agents = []
        for seed in seeds:
            rng = np.random.default_rng([int(seed), _RANDOM_CONTROLLER])
            stdev = float(rng.uniform(0.0, scale))
            v, m = copy.deepcopy(vae).eval(), copy.deepcopy(mdn).eval()
            used = [*v.encoder.parameters(), *v.mean.parameters(), *v.logvar.parameters()]
            with torch.no_grad():
                for p in [*used, *m.parameters()]:
                    p.copy_(torch.from_numpy(rng.standard_cauchy(tuple(p.shape)) * stdev))
            theta = rng.standard_cauchy(controller.num_params) * stdev
            generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
            self.agents.append((v, m, controller.weights(theta, self.device), generator))
        self.states: list[LSTMState] = []

    def reset(self, num_envs: int) -> None:
        if num_envs != len(self.agents):
            raise ValueError(
                f"RandomControllerPolicy was made for {len(self.agents)} episodes, got "
                f"{num_envs} environments"
            )
        self.states = [m.initial(1, device=self.device) for _, m, _, _ in self.agents]

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        if len(obs) != len(self.agents) or len(self.states) != len(self.agents):
            raise ValueError(
                f"RandomControllerPolicy was made for {len(self.agents)} episodes, got "
                f"{len(obs)} observations (reset(num_envs) first)"
            )
        actions = []
        for i, (v, m, weights, generator) in enumerate(self.agents):
            frame = VAE.preprocess(torch.as_tensor(np.asarray(obs[i : i + 1]))).to(self.device)
            z = v.encode(frame).sample(generator)
            # A large Cauchy draw can overflow q's std; keep z finite so actions stay numbers.
            z = torch.nan_to_num(z, nan=0.0).clamp(-1e6, 1e6)
            action = self.controller.act(weights, z, self.states[i].h)
            _, self.states[i] = m.step(z, action, self.states[i])
            actions.append(action)
        return torch.cat(actions).cpu().numpy()
