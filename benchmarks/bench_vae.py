"""World Models' V: one training step (the original's loss, Adam) with and without the fast paths
of its convolutions (``speed.channels_last``, ``speed.bf16``), side by side, interleaved.

    python benchmarks/bench_vae.py                    # paper sizes (z 32, depth 32), B=100
    python benchmarks/bench_vae.py --rounds 20 --batch 100 --variants plain channels_last bf16

Each round times every variant once on the same fresh frames (medians over rounds after one
warm-up round); the ratio is plain / variant from the same run. Prints the CPU, torch's threads
and the load. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from planetrl.run.fast_paths import Hardware  # noqa: E402
from planetrl.worldmodels.models import VAE  # noqa: E402

VARIANTS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "bf16+channels_last": {"bf16": True, "channels_last": True},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="frames per step (original: 100)")
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--z", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", default=["plain", "channels_last"])
    args = parser.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; accepted: {', '.join(VARIANTS)}")
    device = torch.device(args.device)
    hardware = Hardware.detect(device)
    torch.manual_seed(0)
    base = VAE(args.z, args.depth).to(device)
    models, optims = {}, {}
    for name in args.variants:
        models[name] = copy.deepcopy(base).use_fast_paths(**VARIANTS[name])
        optims[name] = torch.optim.Adam(models[name].parameters(), lr=1e-4)
    times: dict[str, list[float]] = {name: [] for name in models}
    gen = torch.Generator().manual_seed(1)
    for rnd in range(args.rounds + 1):
        frames = torch.rand(args.batch, 3, 64, 64, generator=gen).to(device)
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = model.loss(frames, 0.5, torch.Generator(device=device).manual_seed(rnd)).loss
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            optims[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if rnd:
                times[name].append(1000 * (time.perf_counter() - start))
    med = {name: statistics.median(t) for name, t in times.items()}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"V step, B={args.batch}, z={args.z}, depth={args.depth}, {args.rounds} rounds on "
        f"{hardware.name} ({device.type}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, load {load})"
    )
    print("| variant | median ms | plain / variant |")
    print("|---|---|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.1f} | {med[args.variants[0]] / ms:.2f}x |")


if __name__ == "__main__":
    main()
