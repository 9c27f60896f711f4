"""Time one CEM plan at the paper's sizes (H=12, I=10, J=1000, K=100) for 1 and 10 environments.

Uses the project's RSSM (``planetrl.models.make_transition("rssm", ...)``) and reward model
(``planetrl.models.reward.RewardModel``) when they exist; otherwise (or with ``--model standin``)
a stand-in of the same size defined here: a GRU cell with 200 units, 30-dimensional stochastic
state, hidden layers of 200 units, and a reward MLP on the 230 features.

    python benchmarks/bench_planner.py                  # 1 and 10 envs on CPU
    python benchmarks/bench_planner.py --device cuda --envs 1 10 50

Importable: ``measure_plan_ms(num_envs, device) -> median milliseconds of one plan``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from planetrl.models.base import TransitionModel
from planetrl.models.state import State
from planetrl.planning import cem

PAPER = dict(horizon=12, iterations=10, candidates=1000, top_k=100)


class StandInRSSM(TransitionModel):
    """An RSSM-sized prior for timing only: h_t = GRU(h_{t-1}, MLP(s_{t-1}, a_{t-1})),
    s_t ~ N(mu(h_t), sigma(h_t)). Only the open-loop parts the planner uses are implemented."""

    def __init__(self, action_size: int, deter: int = 200, stoch: int = 30, hidden: int = 200,
                 embed_size: int = 1024, min_std: float = 0.1):
        super().__init__()
        self.action_size, self.embed_size = action_size, embed_size
        self.deter_size, self.stoch_size = deter, stoch
        self.feature_size = deter + stoch
        self.min_std = min_std
        self.inp = nn.Linear(stoch + action_size, hidden)
        self.cell = nn.GRUCell(hidden, deter)
        self.prior_hidden = nn.Linear(deter, hidden)
        self.prior_out = nn.Linear(hidden, 2 * stoch)

    def initial(self, batch: int, device: torch.device | None = None) -> State:
        z = lambda n: torch.zeros(batch, n, device=device)  # noqa: E731
        return State(z(self.deter_size), z(self.stoch_size), z(self.stoch_size), z(self.stoch_size))

    def img_step(self, prev: State, prev_action: Tensor) -> State:
        x = F.elu(self.inp(torch.cat([prev.stoch, prev_action], -1)))
        deter = self.cell(x, prev.deter)
        mean, std = self.prior_out(F.elu(self.prior_hidden(deter))).chunk(2, -1)
        std = F.softplus(std) + self.min_std
        return State(deter, mean + std * torch.randn_like(std), mean, std)

    def obs_step(self, prev, prev_action, embed, is_first=None):
        raise NotImplementedError("timing stand-in: open loop only")

    # The base class's one-step hooks (whichever set it declares abstract).
    def _img_step(self, prev: State, action_in: Tensor) -> State:
        return self.img_step(prev, action_in)

    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor):
        raise NotImplementedError("timing stand-in: open loop only")

    def features(self, state: State) -> Tensor:
        return torch.cat([state.deter, state.stoch], -1)

    def kl(self, post: State, prior: State) -> Tensor:
        raise NotImplementedError("timing stand-in: open loop only")

    def imagine(self, state: State, actions: Tensor) -> State:
        priors, current = [], state
        for t in range(actions.shape[1]):
            current = self.img_step(current, actions[:, t])
            priors.append(current)
        return State.stack(priors, dim=1)


class StandInReward(nn.Module):
    def __init__(self, feature_size: int, hidden: int = 200, layers: int = 2):
        super().__init__()
        sizes = [feature_size] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*body, nn.Linear(hidden, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features).squeeze(-1)


def _project_models(action_size: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]] | None:
    """The project's RSSM and reward model, or None where they are not there (yet)."""
    try:
        from planetrl.models import make_transition  # type: ignore[attr-defined]
        from planetrl.models.reward import RewardModel  # type: ignore[import-not-found]
    except ImportError:
        return None
    transition = make_transition("rssm", action_size=action_size, embed_size=1024)
    try:
        reward = RewardModel(transition.feature_size)
    except TypeError:
        reward = RewardModel(feature_size=transition.feature_size)
    return transition, reward


def build_models(action_size: int, device: str | torch.device = "cpu", model: str = "auto"
                 ) -> tuple[Any, Callable[[Tensor], Tensor], str]:
    """(transition, reward model, label); ``model`` is "auto", "planetrl" or "standin"."""
    if model not in ("auto", "planetrl", "standin"):
        raise ValueError(f"model must be 'auto', 'planetrl' or 'standin', got {model!r}")
    pair, label = None, "stand-in RSSM (GRU 200, stoch 30, hidden 200; reward MLP 2x200 ReLU)"
    if model != "standin":
        pair = _project_models(action_size)
        if pair is None and model == "planetrl":
            raise RuntimeError(
                "planetrl.models.make_transition / planetrl.models.reward.RewardModel not available"
            )
        if pair is not None:
            label = "planetrl rssm + RewardModel"
    if pair is None:
        pair = StandInRSSM(action_size), StandInReward(230)
    transition, reward = pair
    transition = transition.to(device).eval()
    if isinstance(reward, nn.Module):
        reward = reward.to(device).eval()
    return transition, reward, label


def _random_state(
    transition: Any, num_envs: int, device: torch.device, generator: torch.Generator
) -> State:
    """A fresh random belief (E,) shaped like the model's initial state (never zeros)."""
    template = transition.initial(num_envs, device=device)

    def fill(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=generator).to(device=device, dtype=t.dtype)

    state = template.map(fill)
    return State(state.deter, state.stoch, state.mean, state.std.abs() + 0.1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_plan_ms(
    num_envs: int,
    device: str | torch.device = "cpu",
    *,
    action_size: int = 6,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    model: str = "auto",
    models: tuple[Any, Callable[[Tensor], Tensor]] | None = None,
    **planner_kwargs: Any,
) -> float:
    """Median wall-clock milliseconds of one ``cem`` plan for ``num_envs`` environments.

    Paper sizes by default (H=12, I=10, J=1000, K=100; override via ``planner_kwargs``). Each
    timed run plans from a fresh random latent state; ``warmup`` untimed runs come first.
    ``models`` = (transition, reward_model) skips building them.
    """
    device = torch.device(device)
    if models is None:
        transition, reward, _ = build_models(action_size, device, model)
    else:
        transition, reward = models
    options = {**PAPER, **planner_kwargs}
    generator = torch.Generator().manual_seed(seed)
    times = []
    for run in range(warmup + repeats):
        state = _random_state(transition, num_envs, device, generator)
        _sync(device)
        start = time.perf_counter()
        action = cem(transition, reward, state, **options)
        _sync(device)
        elapsed = (time.perf_counter() - start) * 1000.0
        assert action.shape == (num_envs, transition.action_size)
        if run >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--action-size", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--model", default="auto", choices=["auto", "planetrl", "standin"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transition, reward, label = build_models(args.action_size, args.device, args.model)
    print(f"model: {label}; device: {args.device}; threads: {torch.get_num_threads()}; "
          f"H={PAPER['horizon']} I={PAPER['iterations']} J={PAPER['candidates']} "
          f"K={PAPER['top_k']} "
          f"A={args.action_size}; median of {args.repeats} after {args.warmup} warm-up")
    for num_envs in args.envs:
        ms = measure_plan_ms(num_envs, args.device, repeats=args.repeats, warmup=args.warmup,
                             models=(transition, reward))
        print(f"  E={num_envs:3d}: {ms:9.1f} ms per plan  ({ms / num_envs:8.1f} ms per env)")


if __name__ == "__main__":
    main()
