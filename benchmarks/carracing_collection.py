"""What World Models' first-iteration data covers on CarRacing, per collection policy
(``collect.policy``: ``uniform``, ``brownian``, ``random-controller``): the distance the car
travels, the share of the track's tiles it visits, the return, and how often it brakes and how
hard it steers, over the same env seeds for every policy.

    python benchmarks/carracing_collection.py --episodes 20 --out docs/results/carracing-collection

Each episode runs CarRacing-v3 as a run collects it (``planetrl.envs`` at 64 × 64, action repeat
1, the registered 1,000-step limit) with the policy the trainer builds for that seed
(``planetrl.run.directory.collect_seed`` of run seed 0; ``random-controller`` with the `paper`
preset's V, M and C sizes and the CarRacing action map). Measured from the env's own state:
``car.hull.position`` summed step to step (metres of path), ``tile_visited_count`` over the
track's tiles. Writes ``episodes.csv`` (one row per policy and episode) and ``summary.json``
(per policy: mean ± std over episodes; the CPU model, the commit).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planetrl.driver import brownian_policy, uniform_policy  # noqa: E402
from planetrl.envs.gym import make_gym_pixel_env  # noqa: E402
from planetrl.run.directory import collect_seed  # noqa: E402
from planetrl.suite.runner import code_version, cpu_model  # noqa: E402
from planetrl.worldmodels.config import preset  # noqa: E402
from planetrl.worldmodels.rollout import RandomControllerPolicy  # noqa: E402
from planetrl.worldmodels.trainer import build_models  # noqa: E402

POLICIES = ("uniform", "brownian", "random-controller")
FIELDS = ("distance_m", "tiles_visited", "return", "steps", "brake_share", "mean_abs_steer")


def make_policy(name: str, seed: int, parts):
    """(act, reset) for one episode, built as the trainer's ``_first_policy`` builds it."""
    config = preset("paper")
    if name == "uniform":
        return uniform_policy(3, [seed]), None
    if name == "brownian":
        return brownian_policy(3, [seed], config.collect.brownian_dt), None
    vae, mdn, controller = parts
    policy = RandomControllerPolicy(vae, mdn, controller, [seed], config.collect.random_scale)
    return policy.act, policy.reset


def run_episode(name: str, seed: int, parts) -> dict[str, float]:
    env = make_gym_pixel_env("CarRacing-v3", seed=seed)
    try:
        obs, _ = env.reset(seed=seed)
        act, reset = make_policy(name, seed, parts)
        if reset is not None:
            reset(1)
        car_env = env.unwrapped
        position = np.array(car_env.car.hull.position)
        distance, total, steps, brakes, steer = 0.0, 0.0, 0, 0, 0.0
        done = False
        while not done:
            action = act(obs[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            native = env.env.action(action)  # what CarRacing was given
            brakes += int(native[2] > 0)
            steer += abs(float(native[0]))
            now = np.array(car_env.car.hull.position)
            distance += float(np.linalg.norm(now - position))
            position = now
            total += float(reward)
            steps += 1
            done = terminated or truncated
        return {
            "distance_m": distance,
            "tiles_visited": car_env.tile_visited_count / len(car_env.track),
            "return": total,
            "steps": steps,
            "brake_share": brakes / steps,
            "mean_abs_steer": steer / steps,
        }
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = preset("paper")
    config.task = "gym:CarRacing-v3"
    parts = build_models(config, 3, torch.device("cpu"))
    seeds = [collect_seed(config, i) for i in range(args.episodes)]
    rows = []
    start = time.time()
    for name in args.policies:
        for index, seed in enumerate(seeds):
            row = {"policy": name, "episode": index, "seed": seed, **run_episode(name, seed, parts)}
            rows.append(row)
            print(
                f"{name:<17} episode {index:>3}: {row['distance_m']:7.1f} m, "
                f"{100 * row['tiles_visited']:5.1f}% of tiles, return {row['return']:7.1f}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["policy", "episode", "seed", *FIELDS])
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "task": "gym:CarRacing-v3",
        "episodes_per_policy": args.episodes,
        "seeds": seeds,
        "cpu": cpu_model(),
        "commit": code_version(),
        "wall_clock_s": round(time.time() - start, 1),
        "policies": {
            name: {
                field: {
                    "mean": float(np.mean([r[field] for r in rows if r["policy"] == name])),
                    "std": float(np.std([r[field] for r in rows if r["policy"] == name])),
                }
                for field in FIELDS
            }
            for name in args.policies
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
