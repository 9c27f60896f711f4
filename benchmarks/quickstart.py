"""The README's quick start, measured: runs its command as a user would (``planetrl train --preset
quick --task dmc:cartpole-balance``), times it, measures the random policy on the run's own
evaluation seeds, and writes the files every figure the README quotes is read from.

    python benchmarks/quickstart.py --seed 0 --logdir /tmp/qs0 --out docs/results/quickstart/seed0

Writes into ``--out``: ``curve.csv`` (episodes, env steps, minutes since the start, evaluation
mean and std), ``summary.json`` (wall-clock, the last evaluation, the random policy, CPU model,
commit), and the run's ``config.json`` and ``metrics.jsonl``. Time it with the machine otherwise
idle: the figure is a wall-clock.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planetrl.config import from_dict  # noqa: E402
from planetrl.driver import random_policy_returns  # noqa: E402
from planetrl.run.directory import eval_seed  # noqa: E402
from planetrl.run.logger import read_metrics  # noqa: E402
from planetrl.suite.runner import code_version, cpu_model  # noqa: E402

TASK = "dmc:cartpole-balance"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", required=True, help="the run directory (a fresh one)")
    parser.add_argument("--out", required=True, help="where the small files go")
    args = parser.parse_args(argv)
    logdir, out = Path(args.logdir), Path(args.out)
    if logdir.exists():
        parser.error(f"--logdir {logdir} exists: the quick start is timed from a fresh run")
    planetrl = Path(sys.executable).with_name("planetrl")
    command = [
        str(planetrl),
        "train",
        "--preset",
        "quick",
        "--task",
        TASK,
        "--logdir",
        str(logdir),
        "--seed",
        str(args.seed),
    ]
    start = time.time()
    subprocess.run(command, check=True)
    minutes = (time.time() - start) / 60
    config = from_dict(json.loads((logdir / "config.json").read_text()))
    seed = eval_seed(config)
    random = random_policy_returns(
        config, episodes=config.eval.episodes, seed=seed, parallel=config.eval.parallel
    )
    rows = read_metrics(logdir / "metrics.jsonl")
    first = rows[0]["time"] if rows else start
    curve = [
        dict(
            episodes=r["step"] // 1000,
            env_steps=r["step"],
            minutes=(r["time"] - start) / 60,
            return_mean=r["eval/return"],
            return_std=r.get("eval/return_std"),
        )
        for r in rows
        if "eval/return" in r
    ]
    out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(curve[0]))
    writer.writeheader()
    writer.writerows(curve)
    (out / "curve.csv").write_text(text.getvalue())
    summary = {
        "command": " ".join(["planetrl", *command[1:]]),
        "minutes": minutes,
        "minutes_to_first_log": (first - start) / 60,
        "last_eval": curve[-1],
        "random_mean": float(np.mean(random)),
        "random_std": float(np.std(random)),
        "random_returns": random,
        "eval_seed": seed,
        "cpu": cpu_model(),
        "commit": code_version(),
        "date": time.strftime("%Y-%m-%d", time.gmtime(start)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for name in ("config.json", "metrics.jsonl"):
        shutil.copyfile(logdir / name, out / name)
    last = curve[-1]
    print(
        f"quick start, seed {args.seed}: {minutes:.1f} min on {summary['cpu']}; last "
        f"evaluation {last['return_mean']:.0f} ± {last['return_std']:.0f} at "
        f"{last['env_steps']:,} env steps; random {summary['random_mean']:.0f} ± "
        f"{summary['random_std']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
