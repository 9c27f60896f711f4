"""Threads under contention: how planning and updating degrade when another process wants the cores.

    python benchmarks/bench_threads.py                 # small preset, all settings, both cases
    python benchmarks/bench_threads.py --preset paper --repeats 3

Each setting runs in a fresh Python process (OpenMP reads its environment when torch loads):
torch threads T in {1, all cores} x OpenMP wait policy in {default (spin), passive} x
{idle, one competing busy process}. Reported: median ms per plan (lean CEM, E=1, the preset's
J, H, I; the dtype ``speed.bf16: auto`` picks on this CPU) and per update (B x L of the preset,
channels_last + the same bf16 choice). The competing process is a pure-Python busy loop: the
cheapest stand-in for an env worker, a second training run or a browser tab.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import dataclasses, json, statistics, sys, time, types
import torch
sys.path.insert(0, {root!r})
from planetrl import planning, speed
from planetrl.config import preset
from planetrl.models import WorldModel
from planetrl.objective import compute_loss
from planetrl.training.loop import build_world_model

threads = {threads}
if threads:
    torch.set_num_threads(threads)
cfg = preset({preset!r})
cfg.speed.compile = "off"
decision = speed.resolve(cfg.speed, "cpu")
torch.manual_seed(0)
wm = speed.optimise_world_model(build_world_model(cfg, 6), decision, "cpu")
opt = torch.optim.Adam(wm.parameters(), lr=1e-3, eps=1e-4)
planner = speed.accelerate(
    planning.planner_from_config(cfg.planner, generator=torch.Generator().manual_seed(0)),
    decision, "cpu")
state = wm.transition.initial(1).map(lambda x: torch.randn(x.shape))
B, L = cfg.train.batch_size, cfg.train.chunk_length
is_first = torch.zeros(B, L, dtype=torch.bool); is_first[:, 0] = True
batch = types.SimpleNamespace(image=torch.rand(B, L, 3, 64, 64) - 0.5,
                              action=torch.rand(B, L, 6) * 2 - 1, reward=torch.randn(B, L),
                              is_first=is_first)
def update():
    loss = compute_loss(wm, batch, **dataclasses.asdict(cfg.loss))[0]
    opt.zero_grad(); loss.backward(); opt.step()
def plan():
    with torch.no_grad():
        planner(wm.transition, wm.reward, state)
out = {{}}
for name, fn, reps in (("plan", plan, {plan_reps}), ("update", update, {update_reps})):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); times.append(1000 * (time.perf_counter() - t))
    out[name] = statistics.median(times)
out["bf16"] = decision.bf16
out["threads"] = torch.get_num_threads()
print(json.dumps(out))
"""


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(preset: str, threads: int, policy: str | None, plan_reps: int, update_reps: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    code = CHILD.format(
        root=str(ROOT), threads=threads, preset=preset, plan_reps=plan_reps, update_reps=update_reps
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per setting")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_all import machine

    cores = os.cpu_count() or 1
    print(f"machine: {machine()}\n")
    print("| case | torch threads | OMP_WAIT_POLICY | ms per plan (E=1) | ms per update |")
    print("|---|---|---|---|---|")
    for case in ("idle", "1 busy process"):
        for threads in sorted({1, cores}):
            for policy in (None, "passive"):
                competitor = busy() if case != "idle" else None
                try:
                    time.sleep(0.5 if competitor else 0)
                    r = run(args.preset, threads, policy, 4 * args.repeats, args.repeats)
                finally:
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                print(
                    f"| {case} | {r['threads']} | {policy or 'default (active)'} | "
                    f"{r['plan']:.1f} | {r['update']:.0f} |",
                    flush=True,
                )
    print(f"\n({args.preset} preset, bf16 {'on' if r['bf16'] else 'off'} as auto decides here)")


if __name__ == "__main__":
    main()
