"""Ray's overhead: the same run through `planetrl train` and through `planetrl suite` (Ray core).

    python benchmarks/bench_suite_overhead.py --repeats 2 --episodes 3

Each repeat trains the same short run twice, in fresh directories, alternating the order (train,
suite, suite, train, ...) so that a drifting background load hits both alike. Both are timed as
a user sees them: the whole command, a new Python process each (imports, env workers, Ray's start
and shutdown for the suite). Prints the wall-clocks, the difference (Ray's fixed cost per call)
and the ratio, with the CPU model. The suite's own extra work, the random policy's returns on the
evaluation seeds, is skipped unless ``--with-random``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUITE_SCRIPT = textwrap.dedent("""
    import sys
    from planetrl.suite import RunSpec, Suite, run_suite
    overrides = {overrides!r}
    suite = Suite("overhead", "small", {steps}, {steps}, 1, [RunSpec({task!r}, 0)],
                  description="overhead", overrides=overrides)
    if {skip_random}:  # the random-policy baseline is suite work `planetrl train` does not do
        from pathlib import Path
        run_dir = Path({directory!r}) / "runs" / suite.runs[0].name
        run_dir.mkdir(parents=True)
        (run_dir / "random.json").write_text('{{"returns": [0.0]}}')
    run_suite(suite, {directory!r}, report=False, log=lambda _: None)
""")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="dmc:cartpole-balance")
    parser.add_argument("--episodes", type=int, default=3, help="episodes per run (1000 env steps)")
    parser.add_argument("--collect-interval", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    parser.add_argument(
        "--with-random",
        action="store_true",
        help="let the suite compute its random-policy baseline too (by default "
        "it is skipped, so the difference is Ray's alone)",
    )
    args = parser.parse_args(argv)
    from planetrl.suite.runner import cpu_model

    overrides = {
        "train.seed_episodes": 1,
        "train.collect_interval": args.collect_interval,
        "eval.every": 0,
        "eval.video": False,
        "speed.compile": "off",
    }
    steps = 1000 * args.episodes
    flags = [f"--{k.replace('_', '-')}" for k in overrides]
    times: dict[str, list[float]] = {"train": [], "suite": []}
    order = ["train", "suite"]
    for repeat in range(args.repeats):
        for kind in order if repeat % 2 == 0 else order[::-1]:
            directory = Path(tempfile.mkdtemp(prefix=f"overhead-{kind}-"))
            if kind == "train":
                cmd = [
                    sys.executable,
                    "-m",
                    "planetrl",
                    "train",
                    "--preset",
                    "small",
                    "--task",
                    args.task,
                    "--logdir",
                    str(directory),
                    "--no-progress",
                    "--train.max-episodes",
                    str(args.episodes),
                    "--train.max-env-steps",
                    str(steps),
                ]
                for flag, value in zip(flags, overrides.values()):
                    if isinstance(value, bool):  # tyro's boolean flags: --x / --no-x
                        cmd.append(flag if value else flag.replace(".", ".no-", 1))
                    else:
                        cmd += [flag, str(value)]
            else:
                script = SUITE_SCRIPT.format(
                    overrides=overrides,
                    steps=steps,
                    task=args.task,
                    directory=str(directory),
                    skip_random=not args.with_random,
                )
                cmd = [sys.executable, "-c", script]
            start = time.perf_counter()
            subprocess.run(
                cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            times[kind].append(time.perf_counter() - start)
            shutil.rmtree(directory, ignore_errors=True)
            print(f"{kind:>5}: {times[kind][-1]:.1f} s", flush=True)
    train_s, suite_s = statistics.median(times["train"]), statistics.median(times["suite"])
    result = {
        "cpu": cpu_model(),
        "task": args.task,
        "episodes": args.episodes,
        "collect_interval": args.collect_interval,
        "train_s": times["train"],
        "suite_s": times["suite"],
        "median_train_s": train_s,
        "median_suite_s": suite_s,
        "ray_fixed_cost_s": suite_s - train_s,
        "ratio": suite_s / train_s,
    }
    print(
        f"{cpu_model()}: train {train_s:.1f} s, suite on Ray {suite_s:.1f} s (medians of "
        f"{args.repeats}); Ray's cost {suite_s - train_s:+.1f} s per call, ratio "
        f"{suite_s / train_s:.3f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
