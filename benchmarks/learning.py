"""Learning benchmark: train on a 2-core CPU (or a GPU) for a wall-clock budget, evaluate every few
episodes, and write the learning curve against the random-policy baseline.

    python benchmarks/learning.py --task dmc:cartpole-balance --minutes 20
    python benchmarks/learning.py --task dmc:cartpole-swingup --minutes 90
    python benchmarks/learning.py --task dmc:cartpole-swingup --preset paper --device cuda \
        --minutes 8

Writes into the run directory (default ``runs/bench-<task>-<preset>``): ``curve.csv`` (env steps,
wall-clock minutes, eval mean and std), ``curve.png`` (return vs env steps and vs wall-clock, the
random baseline as a band), ``summary.json``; plus everything a training run writes. Evaluation:
``--eval-episodes`` (>= 5) episodes, no exploration noise, fixed seeds; the random baseline is
measured on the same seeds. Rerunning the same command resumes the run (the clock restarts).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planetrl.config import preset  # noqa: E402
from planetrl.driver import random_policy_returns  # noqa: E402
from planetrl.run.logger import read_metrics  # noqa: E402
from planetrl.training.loop import Trainer  # noqa: E402


def write_curve(
    logdir: Path, baseline: list[float], target: float | None, title: str
) -> list[dict]:
    rows = read_metrics(logdir / "metrics.jsonl")
    start = rows[0]["time"] if rows else time.time()
    evals = [r for r in rows if "eval/return" in r]
    curve = [
        {
            "env_steps": r["step"],
            "minutes": (r["time"] - start) / 60,
            "return_mean": r["eval/return"],
            "return_std": r["eval/return_std"],
        }
        for r in evals
    ]
    with open(logdir / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["env_steps", "minutes", "return_mean", "return_std"])
        writer.writeheader()
        writer.writerows(curve)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    base_mean, base_std = float(np.mean(baseline)), float(np.std(baseline))
    for ax, key, label in (
        (axes[0], "env_steps", "env steps"),
        (axes[1], "minutes", "wall-clock (min)"),
    ):
        x = np.array([c[key] for c in curve])
        y = np.array([c["return_mean"] for c in curve])
        s = np.array([c["return_std"] for c in curve])
        if len(x):
            ax.plot(x, y, "o-", label="PlaNet (eval, no noise)")
            ax.fill_between(x, y - s, y + s, alpha=0.2)
        ax.axhline(base_mean, color="gray", ls="--", label=f"random policy {base_mean:.0f}")
        ax.axhspan(base_mean - base_std, base_mean + base_std, color="gray", alpha=0.15)
        if target is not None:
            ax.axhline(target, color="green", ls=":", label=f"target {target:.0f}")
        ax.set_xlabel(label)
        ax.set_ylabel("return")
        ax.set_ylim(0, 1000)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(logdir / "curve.png", dpi=100)
    plt.close(fig)
    return curve


def parse_value(text: str, current):
    """``text`` as the type of ``current`` where it has one (int, float, bool: true/false), else
    None for ``none``, a number when it reads as one, or the string (e.g. ``speed.bf16=on``)."""
    if isinstance(current, bool) or text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    if isinstance(current, (int, float)):
        return type(current)(text)
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="dmc:cartpole-balance")
    parser.add_argument("--preset", default="small", choices=["small", "paper"])
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget")
    parser.add_argument("--max-episodes", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=0, help="0 = the preset's")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--target", type=float, default=None, help="drawn on the plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--logdir", default=None)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="extra config overrides, e.g. planner.candidates=500",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (logs); a line per evaluation instead",
    )
    args = parser.parse_args(argv)
    if args.eval_episodes < 5:
        parser.error("--eval-episodes must be >= 5 (a learning claim needs several episodes)")

    config = preset(args.preset)
    config.task, config.seed, config.device = args.task, args.seed, args.device
    config.logdir = args.logdir or f"runs/bench-{args.task.replace(':', '-')}-{args.preset}"
    config.train.max_minutes = args.minutes
    config.train.max_episodes = args.max_episodes
    config.eval.episodes = args.eval_episodes
    config.eval.video = False
    if args.eval_every:
        config.eval.every = args.eval_every
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        target = getattr(config, section) if section else config
        current = getattr(target, name)
        setattr(target, name, parse_value(value, current))
    logdir = Path(config.logdir)

    seed = 1_000_000 + 1000 * config.seed  # the seeds Trainer.evaluate_now uses
    baseline = random_policy_returns(config, episodes=args.eval_episodes, seed=seed)
    print(f"random policy on {args.task}: {np.mean(baseline):.1f} ± {np.std(baseline):.1f}")

    trainer = Trainer(config, progress=not args.no_progress, allow_config_change=True)
    started = time.time()
    interrupted = False
    try:
        summary = trainer.run()
        evals = [r for r in read_metrics(logdir / "metrics.jsonl") if "eval/return" in r]
        if (
            summary["eval"] is not None
            and evals
            and evals[-1]["step"] == trainer.counters.env_steps
        ):
            last = summary["eval"]  # the run just evaluated at its last step
        else:
            last = trainer.evaluate_now()  # a final evaluation at the end of the budget
    except KeyboardInterrupt:  # SIGINT (e.g. `timeout -s INT`): the curve of what was evaluated
        interrupted = True
        print("learning.py: interrupted; writing the curve of the evaluations done", flush=True)
        evals = [r for r in read_metrics(logdir / "metrics.jsonl") if "eval/return" in r]
        last = evals[-1] if evals else {"eval/return": None, "eval/return_std": None}
    finally:
        trainer.close()
    minutes = (time.time() - started) / 60
    curve = write_curve(logdir, baseline, args.target, f"{args.task} ({args.preset} preset)")
    best = max(curve, key=lambda c: c["return_mean"]) if curve else None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    summary = {
        "task": args.task,
        "preset": args.preset,
        "minutes": minutes,
        "episodes": trainer.counters.episodes,
        "env_steps": trainer.counters.env_steps,
        "final_return_mean": last["eval/return"],
        "final_return_std": last["eval/return_std"],
        "interrupted": interrupted,
        "best": best,
        "random_mean": float(np.mean(baseline)),
        "random_std": float(np.std(baseline)),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores",
    }
    (logdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
