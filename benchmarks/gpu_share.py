"""Many runs on one GPU: training throughput of K runs sharing the device against one run alone,
and the same K under CUDA MPS where the node allows it (issue 29, "many runs on one GPU").

    python benchmarks/gpu_share.py --runs 4 --minutes 2 --out $OUT/share      # on a GPU node
    python benchmarks/gpu_share.py --device cpu --preset quick --runs 2 --minutes 0.3   # a CPU try

Each setting starts its runs at once (``planetrl train``, the preset on ``--task``, no
evaluation, ``train.max_minutes`` each, seeds 0..K-1, extra flags from ``--set``), waits for
them, and reads their ``metrics.jsonl``: the updates and env steps each finished in its minutes.
Throughput is the sum over the runs per minute of wall-clock, against one run alone (the first
setting), so ``K runs: 2.6x`` means 2.6 times the training of one run in the same time: what
``planetrl suite --gpus-per-run 1/K`` gets. MPS: ``nvidia-cuda-mps-control -d`` before the
setting and ``quit`` after; where it is missing or refused, the row says why. Writes
``share.md`` and ``share.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planetrl.run.logger import read_metrics  # noqa: E402


def launch(logdir: Path, args: argparse.Namespace, seed: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "planetrl",
        "train",
        "--preset",
        args.preset,
        "--task",
        args.task,
        "--logdir",
        str(logdir),
        "--device",
        args.device,
        "--seed",
        str(seed),
        "--no-progress",
        "--train.max-minutes",
        str(args.minutes),
        "--eval.every",
        "0",
        *shlex.split(args.set),
    ]
    log = open(logdir.parent / f"{logdir.name}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def measure(logdir: Path) -> dict[str, float]:
    """Updates and env steps a finished run made, and its minutes from first to last row."""
    path = logdir / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    updates = max((r.get("train/updates", 0) for r in rows), default=0)
    steps = max((r.get("step", 0) for r in rows), default=0)
    minutes = (rows[-1]["time"] - rows[0]["time"]) / 60 if len(rows) > 1 else 0.0
    return {"updates": float(updates), "env_steps": float(steps), "minutes": minutes}


def mps(action: str) -> str | None:
    """Start (``start``) or stop (``stop``) the MPS daemon; None when it worked, else why not."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return "nvidia-cuda-mps-control not found"
    try:
        if action == "start":
            run = subprocess.run([control, "-d"], capture_output=True, text=True, timeout=30)
        else:
            run = subprocess.run(
                [control], input="quit\n", capture_output=True, text=True, timeout=30
            )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{type(err).__name__}: {err}"
    if run.returncode:
        return f"exit {run.returncode}: {(run.stderr or run.stdout).strip()[-300:]}"
    time.sleep(2)
    return None


def setting(name: str, count: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    folder = out / name.replace(" ", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    procs = [launch(folder / f"run{i}", args, i) for i in range(count)]
    codes = [p.wait() for p in procs]
    wall = (time.perf_counter() - start) / 60
    runs = [measure(folder / f"run{i}") for i in range(count)]
    return {
        "setting": name,
        "runs": count,
        "exit_codes": codes,
        "wall_minutes": wall,
        "updates": sum(r["updates"] for r in runs),
        "env_steps": sum(r["env_steps"] for r in runs),
        "updates_per_minute": sum(r["updates"] for r in runs) / max(wall, 1e-9),
        "per_run": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="K runs sharing the device")
    parser.add_argument("--minutes", type=float, default=2.0, help="training minutes per run")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--task", default="dmc:cartpole-swingup")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-mps", action="store_true", help="skip the MPS setting")
    parser.add_argument(
        "--set",
        default="",
        help="more `planetrl train` flags in one string, e.g. --set='--speed.bf16 on'",
    )
    parser.add_argument("--out", default="gpu_share_out")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.minutes <= 0:
        raise SystemExit("--runs must be >= 2 and --minutes > 0")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        setting("1 run alone", 1, args, out),
        setting(f"{args.runs} runs", args.runs, args, out),
    ]
    if args.device.startswith("cuda") and not args.no_mps:
        why = mps("start")
        if why is None:
            try:
                rows.append(setting(f"{args.runs} runs, MPS", args.runs, args, out))
            finally:
                stopped = mps("stop")
                if stopped:
                    print(f"MPS did not stop: {stopped}", flush=True)
        else:
            rows.append({"setting": f"{args.runs} runs, MPS", "skipped": why})
    base = rows[0]["updates_per_minute"]
    lines = [
        f"{args.preset} preset on {args.task}, {args.minutes} min per run, device {args.device}",
        f"({os.cpu_count()} CPUs)",
        "",
        "| setting | wall min | updates | env steps | updates / min | vs one run alone |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['setting']} | skipped: {r['skipped']} | | | | |")
            continue
        ratio = r["updates_per_minute"] / base if base else float("nan")
        failed = "" if not any(r["exit_codes"]) else f" (exit codes {r['exit_codes']})"
        lines.append(
            f"| {r['setting']}{failed} | {r['wall_minutes']:.2f} | {r['updates']:.0f} | "
            f"{r['env_steps']:.0f} | {r['updates_per_minute']:.1f} | {ratio:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    (out / "share.md").write_text(text)
    (out / "share.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
