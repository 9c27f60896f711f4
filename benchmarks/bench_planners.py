"""Return against ms per plan: planners side by side on one trained world model.

    python benchmarks/bench_planners.py --logdir runs/swingup --episodes 10
    python benchmarks/bench_planners.py --logdir runs/x --variant "cem-J100:candidates=100,top_k=10"

Every variant plans with the same trained model (a `planetrl train` run directory: equal env
steps, equal data) on the same evaluation seeds, without exploration noise, through the same code
as `planetrl eval` (the run's `auto` fast paths, compile off so that no variant pays or skips a
compile). Reported per variant: the evaluation return (mean ± std over the episodes), ms per plan
for one environment (median of timed calls on a filtered belief) and the latent rollout steps per
plan, sum_i J_i * H (what the plan's FLOPs scale with). Variants are `name:key=value,...` with
`PlannerConfig` fields; the defaults compare the run's planner with cheaper CEM, warm-started CEM
and iCEM (Pinneri et al., 2020) at equal and at a quarter of the rollouts.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_all import machine  # noqa: E402

from planetrl import speed  # noqa: E402
from planetrl.driver import random_policy_returns  # noqa: E402
from planetrl.planning.base import planner_defaults  # noqa: E402
from planetrl.run.fast_paths import SpeedDecision  # noqa: E402
from planetrl.threads import ThreadGovernor  # noqa: E402
from planetrl.training.loop import build_planner, evaluate, load_run  # noqa: E402


def default_variants(J: int, I: int, K: int) -> list[str]:  # noqa: E741
    j4, k4 = max(J // 2, 2), max(K // 2, 1)
    i2 = max(I // 2, 1)
    return [
        "cem (the run's)",
        "cem warm-start:warm_start=True",
        "icem:name=icem",
        f"cem quarter:candidates={j4},top_k={k4},iterations={i2}",
        f"cem quarter warm-start:candidates={j4},top_k={k4},iterations={i2},warm_start=True",
        f"icem quarter:name=icem,candidates={j4},top_k={k4},iterations={i2}",
    ]


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def apply_variant(config, spec: str):
    name, _, body = spec.partition(":")
    cfg = copy.deepcopy(config)
    fields = {f.name for f in dataclasses.fields(cfg.planner)}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown planner field {key!r} in {spec!r}; fields: {sorted(fields)}")
        setattr(cfg.planner, key, parse_value(value))
    cfg.validate()
    return name, cfg


def rollout_steps(planner_cfg) -> int:
    """sum_i J_i * H of one plan (J_i shrinking by γ when population_decay > 1)."""
    decay = planner_cfg.population_decay
    if decay is None and planner_cfg.name in ("cem", "icem"):
        decay = planner_defaults(planner_cfg.name).get("population_decay", 1.0)
    decay = decay or 1.0
    J, K, H = planner_cfg.candidates, planner_cfg.top_k, planner_cfg.horizon
    return sum(max(round(J * decay**-i), min(2 * K, J)) for i in range(planner_cfg.iterations)) * H


def ms_per_plan(cfg, world_model, fast, repeats: int = 10) -> float:
    device = next(world_model.parameters()).device
    planner = build_planner(cfg, torch.Generator().manual_seed(0), device, fast)
    g = torch.Generator().manual_seed(1)
    state = world_model.transition.initial(1, device=device)
    state = state.map(lambda x: 0.5 * torch.randn(x.shape, generator=g))
    if hasattr(planner, "reset"):
        planner.reset(1)
    with torch.no_grad():
        planner(world_model.transition, world_model.reward, state)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            planner(world_model.transition, world_model.reward, state)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="name:field=value,... (repeatable); default: a CEM/iCEM sweep",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    config, world_model = load_run(args.logdir, device="cpu")
    ThreadGovernor(config.threads).adjust()
    auto = speed.resolve(config.speed, "cpu")
    fast = SpeedDecision(
        compile=False,
        bf16=auto.bf16,
        channels_last=auto.channels_last,
        cuda_graphs=False,
        reasons=auto.reasons,
    )
    p = config.planner
    variants = args.variant or default_variants(p.candidates, p.iterations, p.top_k)
    episodes = sorted((Path(args.logdir) / "episodes").glob("*.npz"))
    print(f"machine: {machine()}")
    print(
        f"run {args.logdir}: task {config.task}, {len(episodes)} episodes of training data; "
        f"bf16 {'on' if fast.bf16 else 'off'}, compile off; {args.episodes} evaluation "
        f"episodes per variant (seeds {args.seed}..{args.seed + args.episodes - 1})\n"
    )
    print("| planner | H, I, J, K | rollout steps per plan | ms per plan (E=1) | return |")
    print("|---|---|---|---|---|")
    rows = []
    for spec in variants:
        name, cfg = apply_variant(config, spec)
        c = cfg.planner
        ms = ms_per_plan(cfg, world_model, fast)
        planner = build_planner(cfg, torch.Generator().manual_seed(args.seed), "cpu", fast)
        returns, _, timing = evaluate(
            cfg, world_model, episodes=args.episodes, seed=args.seed, planner=planner, parallel=True
        )
        row = {
            "planner": name,
            "spec": spec,
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "returns": returns,
            "ms_per_plan": ms,
            "rollout_steps": rollout_steps(c),
            "eval_ms_per_plan_batched": timing["eval/ms_per_plan"],
        }
        rows.append(row)
        print(
            f"| {name} | {c.horizon}, {c.iterations}, {c.candidates}, {c.top_k} | "
            f"{row['rollout_steps']} | {ms:.0f} | {row['return_mean']:.0f} ± "
            f"{row['return_std']:.0f} |",
            flush=True,
        )
    randoms = random_policy_returns(config, episodes=args.episodes, seed=args.seed)
    print(f"| random policy | | 0 | 0 | {np.mean(randoms):.0f} ± {np.std(randoms):.0f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "logdir": args.logdir,
                    "task": config.task,
                    "rows": rows,
                    "random": randoms,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
