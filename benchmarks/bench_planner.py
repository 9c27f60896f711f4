"""Time one CEM plan at the paper's sizes (H=12, I=10, J=1000, K=100) for 1 and 10 environments.

Uses the project's RSSM (``planetrl.models.make_transition("rssm", ...)``) and reward model
(``planetrl.models.reward.RewardModel``) at the paper's sizes, and the eager planner
(``planetrl.planning.cem``).

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
from torch import Tensor

from planetrl.models import make_transition
from planetrl.models.reward import RewardModel
from planetrl.models.state import State
from planetrl.planning import cem

PAPER = dict(horizon=12, iterations=10, candidates=1000, top_k=100)


def build_models(
    action_size: int, device: str | torch.device = "cpu"
) -> tuple[Any, Callable[[Tensor], Tensor], str]:
    """(transition, reward model, label): the project's RSSM and reward model at the paper's
    sizes (GRU 200, stochastic state 30, hidden 200; reward MLP 2 x 200 ReLU), in eval mode."""
    transition = make_transition("rssm", action_size=action_size, embed_size=1024)
    reward = RewardModel(transition.feature_size)
    label = "planetrl rssm + RewardModel"
    return transition.to(device).eval(), reward.to(device).eval(), label


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
        transition, reward, _ = build_models(action_size, device)
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
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transition, reward, label = build_models(args.action_size, args.device)
    print(
        f"model: {label}; device: {args.device}; threads: {torch.get_num_threads()}; "
        f"H={PAPER['horizon']} I={PAPER['iterations']} J={PAPER['candidates']} "
        f"K={PAPER['top_k']} "
        f"A={args.action_size}; median of {args.repeats} after {args.warmup} warm-up"
    )
    for num_envs in args.envs:
        ms = measure_plan_ms(
            num_envs,
            args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            models=(transition, reward),
        )
        print(f"  E={num_envs:3d}: {ms:9.1f} ms per plan  ({ms / num_envs:8.1f} ms per env)")


if __name__ == "__main__":
    main()
