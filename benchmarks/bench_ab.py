"""Paired A/B of two checkouts of planetrl on this machine: is one slower?

    python benchmarks/bench_ab.py --base /tmp/wt-base --new . --rounds 8

One long-lived worker process per checkout (its own ``planetrl`` first on ``sys.path``) builds a
small-preset Trainer on cartpole-swingup with 2 random episodes, then the two are asked in turn,
alternating the order each round, to time the same work: 10 plans for 1 environment, 2 plans for
10, 3 updates (B×L of the preset). Timing both within seconds of each other makes a drifting
background load hit both alike; the per-round ratio new/base and its median are the result. Fast
paths: bf16 and channels_last on, compile off (a compile would dominate a short run). Still,
run it on a quiet machine: at a load above the core count the ratios spread from 0.4 to 3.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import sys, time, tempfile
sys.path.insert(0, sys.argv[1])
import torch
from planetrl.config import preset
from planetrl.training.loop import Trainer
torch.set_num_threads(int(sys.argv[2]))
cfg = preset("small")
cfg.task, cfg.logdir, cfg.device = "dmc:cartpole-swingup", tempfile.mkdtemp(), "cpu"
cfg.speed.compile, cfg.speed.bf16, cfg.speed.channels_last = "off", "on", "on"
cfg.train.seed_episodes = cfg.train.max_episodes = 2
cfg.threads = int(sys.argv[2])
cfg.eval.video = False
trainer = Trainer(cfg, progress=False)
trainer.run()
wm = trainer.world_model
states = {E: wm.transition.initial(E) for E in (1, 10)}
print("ready", flush=True)
for line in sys.stdin:
    what, n = line.split()
    start = time.perf_counter()
    for _ in range(int(n)):
        if what == "update":
            trainer.update()
        else:
            with torch.no_grad():
                trainer.planner(wm.transition, wm.reward, states[10 if what == "plan10" else 1])
    print(time.perf_counter() - start, flush=True)
"""

JOBS = (("plan", 10), ("plan10", 2), ("update", 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="checkout A (e.g. a git worktree)")
    parser.add_argument("--new", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sides = {}
    for name, root in (("base", args.base), ("new", args.new)):
        sides[name] = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(Path(root).resolve()), str(args.threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd="/",
        )
    for proc in sides.values():
        while proc.stdout.readline().strip() != "ready":
            if proc.poll() is not None:
                raise SystemExit("a worker failed to start")
    times = {(side, job): [] for side in sides for job, _ in JOBS}
    for r in range(args.rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        for job, n in JOBS:
            for side in order:
                sides[side].stdin.write(f"{job} {n}\n")
                sides[side].stdin.flush()
                times[(side, job)].append(1000 * float(sides[side].stdout.readline()) / n)
    for proc in sides.values():
        proc.stdin.close()
        proc.wait()
    from planetrl.suite.runner import cpu_model

    print(
        f"{cpu_model()}, {args.threads} threads, {args.rounds} rounds: median ms per call, "
        "new/base per round"
    )
    print("| measure | base ms | new ms | ratio new/base (median) | min | max |")
    print("|---|---|---|---|---|---|")
    for job, _ in JOBS:
        base, new = times[("base", job)], times[("new", job)]
        ratios = [b and n / b for b, n in zip(base, new)]
        print(
            f"| {job} | {statistics.median(base):.1f} | {statistics.median(new):.1f} | "
            f"{statistics.median(ratios):.3f} | {min(ratios):.2f} | {max(ratios):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
