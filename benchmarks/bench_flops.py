"""How close a plan and an update come to the machine's peak.

    python benchmarks/bench_flops.py                     # both presets, the fast paths `auto` picks
    python benchmarks/bench_flops.py --presets small --speed none

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions,
forward and backward; pointwise work is not counted, so the fractions are lower bounds on useful
work). The peak is measured, not taken from a data sheet: the best of a few large square matmuls
(N=2048) in float32, and in bfloat16, with the same threads. Reported per preset: GFLOP per plan
(E=1) and per update, the achieved GFLOP/s and the fraction of the measured fp32 (and bf16) peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_all import machine, random_batch, random_belief  # noqa: E402

from planetrl import planning, speed  # noqa: E402
from planetrl.config import preset  # noqa: E402
from planetrl.objective import compute_loss  # noqa: E402
from planetrl.run.fast_paths import FLAGS, Hardware, SpeedDecision  # noqa: E402
from planetrl.training.loop import Counters, build_world_model, decide_speed  # noqa: E402

ACTION_SIZE = 6


def peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure(fn, repeats: int) -> tuple[float, float]:
    """(GFLOP counted in one call, median seconds per call)."""
    fn()
    with FlopCounterMode(display=False) as counter:
        fn()
    flops = counter.get_total_flops()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flops / 1e9, statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--speed", default="auto", help="`auto`, `none` or comma-separated flags")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    fp32 = peak_gflops(torch.float32)
    # bf16 peak only where bf16 is native: emulated, a 2048^3 matmul takes minutes
    bf16 = peak_gflops(torch.bfloat16) if Hardware.detect(device).native_bf16 else float("nan")
    print(f"machine: {machine()}")
    print(
        f"measured peak (2048^3 matmul): fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s "
        f"(nan: bf16 not native here)\n"
    )
    print("| preset | what | fast flags | GFLOP | ms | GFLOP/s | of fp32 peak | of bf16 peak |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.presets:
        cfg = preset(name)
        torch.manual_seed(0)
        wm = build_world_model(cfg, ACTION_SIZE)
        if args.speed == "auto":
            # compile off: FlopCounterMode cannot count inside a compiled graph
            auto = decide_speed(cfg, wm, device, Counters())
            fast = SpeedDecision(
                compile=False, bf16=auto.bf16, channels_last=auto.channels_last, cuda_graphs=False
            )
        else:
            names = set() if args.speed == "none" else set(args.speed.split(","))
            fast = SpeedDecision(**{n: n in names for n in FLAGS})
        flags = ",".join(n for n in FLAGS if getattr(fast, n)) or "none"
        speed.optimise_world_model(wm, fast, device)
        opt = torch.optim.Adam(wm.parameters(), lr=1e-3, eps=1e-4)
        t = cfg.train
        batch = random_batch(t.batch_size, t.chunk_length, device, seed=1)

        def update():
            loss = compute_loss(wm, batch, **dataclasses.asdict(cfg.loss))[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        planner = speed.accelerate(
            planning.planner_from_config(cfg.planner, generator=torch.Generator().manual_seed(0)),
            fast,
            device,
        )
        state = random_belief(wm.transition, 1, device, seed=2)

        def plan():
            with torch.no_grad():
                planner(wm.transition, wm.reward, state)

        p = cfg.planner
        rows = (
            (f"plan E=1 (J{p.candidates} H{p.horizon} I{p.iterations})", plan),
            (
                f"update B{t.batch_size}×L{t.chunk_length}, decode {cfg.loss.decode_fraction:g}, "
                f"D={cfg.loss.overshooting_distance}",
                update,
            ),
        )
        for what, fn in rows:
            gflop, seconds = measure(fn, args.repeats)
            rate = gflop / seconds
            print(
                f"| {name} | {what} | {flags} | {gflop:.1f} | {1000 * seconds:.0f} | "
                f"{rate:.0f} | {rate / fp32:.0%} | {rate / bf16:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
