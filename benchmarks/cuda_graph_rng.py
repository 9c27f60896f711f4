"""Does the CUDA-graph planner (:class:`planetrl.speed.StaticPlanner`) draw like the plain one?

    python benchmarks/cuda_graph_rng.py     # on CUDA; without it the same steps, no graphs

A replayed graph must draw fresh noise at every call (else CEM plans with the same candidates
forever) and its plans must follow the same distribution as the uncaptured planner's. Exact
equality after reseeding is a stronger property that depends on how the graph's philox offsets
line up with eager draws; it is reported, not required. Checks, on small random models, fp32:

1. fresh: consecutive replays on the same belief give different first actions;
2. reseed: reseeding both generators before two replays gives the same action twice;
3. equal: after the same reseeding, graphed and uncaptured give the same action;
4. distribution: over many calls on one belief, the mean and std of each action dimension of the
   graphed planner against the uncaptured one (z-score of the difference of means).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planetrl import planning, speed  # noqa: E402
from planetrl.config import PlannerConfig, SpeedConfig  # noqa: E402
from planetrl.models import make_transition  # noqa: E402
from planetrl.models.reward import RewardModel  # noqa: E402
from planetrl.models.state import State  # noqa: E402


def main() -> int:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        print("cuda_graph_rng: no CUDA device: the same checks on the CPU, without graphs")
    torch.manual_seed(7)
    transition = (
        make_transition("rssm", 3, 64, deter_size=40, stoch_size=8, hidden_size=32).to(dev).eval()
    )
    reward = RewardModel(transition.feature_size, 32, 2).to(dev).eval()
    g = torch.Generator().manual_seed(1)
    s = transition.initial(1).map(lambda x: torch.randn(x.shape, generator=g))
    state = State(s.deter, s.stoch, s.mean, s.std.abs() + 0.1).to(dev)
    cfg = PlannerConfig(horizon=6, iterations=4, candidates=200, top_k=20)

    def make(graphs: bool):
        gen = torch.Generator(device=dev).manual_seed(1)
        planner = planning.planner_from_config(cfg, generator=gen)
        fast = speed.accelerate(
            planner,
            SpeedConfig(compile=False, bf16=False, channels_last=False, cuda_graphs=graphs),
            dev,
        )
        return fast, gen

    graphed, g_gen = make(True)
    plain, p_gen = make(False)
    plain_name = (
        getattr(plain, "func", plain).__name__
        if isinstance(plain, functools.partial)
        else type(plain).__name__
    )
    print(f"graphed planner: {type(graphed).__name__}; plain: {plain_name}")
    with torch.no_grad():
        first = graphed(transition, reward, state)  # build + capture
        calls = [graphed(transition, reward, state) for _ in range(5)]
        distinct = len({tuple(c.flatten().tolist()) for c in [first, *calls]})
        print(
            f"1 fresh: {distinct} distinct actions in 6 consecutive replays "
            f"({'ok' if distinct == 6 else 'FAIL: the graph replays the same noise'})"
        )

        def seeded(planner, gen, seed=9):
            torch.manual_seed(seed)
            if dev.type == "cuda":
                torch.cuda.manual_seed(seed)
            gen.manual_seed(seed)
            return planner(transition, reward, state)

        a, b = seeded(graphed, g_gen), seeded(graphed, g_gen)
        print(
            f"2 reseed: graphed twice after the same reseeding, max |diff| "
            f"{(a - b).abs().max():.2e}"
        )
        c = seeded(plain, p_gen)
        print(
            f"3 equal: graphed vs uncaptured after the same reseeding, max |diff| "
            f"{(a - c).abs().max():.2e} (graphed {a.flatten().tolist()}, "
            f"uncaptured {c.flatten().tolist()})"
        )
        n = 400 if dev.type == "cuda" else 50
        xs = torch.stack([graphed(transition, reward, state).flatten() for _ in range(n)])
        ys = torch.stack([plain(transition, reward, state).flatten() for _ in range(n)])
        z = (xs.mean(0) - ys.mean(0)) / (xs.var(0) / n + ys.var(0) / n).sqrt()
        print(
            f"4 distribution over {n} calls each: mean graphed {xs.mean(0).tolist()}, "
            f"uncaptured {ys.mean(0).tolist()}; std graphed {xs.std(0).tolist()}, "
            f"uncaptured {ys.std(0).tolist()}; z of the mean difference {z.tolist()} "
            f"({'ok' if z.abs().max() < 4 else 'FAIL: different distributions'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
