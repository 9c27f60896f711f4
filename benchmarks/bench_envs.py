"""Environment throughput: agent steps/s and simulator steps/s, paper vs fast rendering.

Usage::

    python benchmarks/bench_envs.py --task dmc:cartpole-swingup --steps 100 --envs 2

For each render mode ("paper", "fast") it measures one env (``make_env``) and N envs in parallel
processes (``EnvPool``), stepping uniform random actions in [-1, 1] and resetting finished
episodes. An *agent step* is one ``step()`` call (one rendered frame); it advances the simulator
R times (action repeat), so simulator steps/s ≈ R × agent steps/s. Env construction and the
first reset are timed separately (``startup_s``) and excluded from the rates.

:func:`measure_env_rate` is importable for combined benchmark tables.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from planetrl.envs import EnvPool, default_action_repeat, make_env


def measure_env_rate(
    task: str,
    render: str,
    num_envs: int,
    steps: int,
    *,
    action_repeat: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Step ``num_envs`` envs of ``task`` for ``steps`` agent steps each; return the rates.

    ``num_envs == 1`` uses a single ``make_env`` env in this process; ``num_envs > 1`` uses an
    asynchronous :class:`~planetrl.envs.EnvPool` (one process per env).

    Returns:
        dict with ``task, render, num_envs, action_repeat, agent_steps, env_steps, seconds,
        startup_s, agent_steps_per_s, env_steps_per_s`` (rates summed over all envs).
    """
    repeat = default_action_repeat(task) if action_repeat is None else action_repeat
    rng = np.random.default_rng(seed)
    agent_steps = env_steps = 0
    start = time.perf_counter()
    if num_envs == 1:
        env = make_env(task, action_repeat=repeat, seed=seed, render=render)
        try:
            env.reset()
            shape = env.action_space.shape
            startup = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, shape))
                agent_steps += 1
                env_steps += int(info.get("env_steps", 1))
                if terminated or truncated:
                    env.reset()
            seconds = time.perf_counter() - start
        finally:
            env.close()
    else:
        with EnvPool(task, num_envs, seed=seed, render=render, action_repeat=repeat) as pool:
            pool.reset()
            shape = (num_envs, *pool.single_action_space.shape)
            startup = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, infos = pool.step(rng.uniform(-1, 1, shape))
                agent_steps += num_envs
                env_steps += sum(int(info.get("env_steps", 1)) for info in infos)
                done = np.flatnonzero(terminated | truncated)
                if done.size:
                    pool.reset(indices=done.tolist())
            seconds = time.perf_counter() - start
    return {
        "task": task,
        "render": render,
        "num_envs": num_envs,
        "action_repeat": repeat,
        "agent_steps": agent_steps,
        "env_steps": env_steps,
        "seconds": seconds,
        "startup_s": startup,
        "agent_steps_per_s": agent_steps / seconds,
        "env_steps_per_s": env_steps / seconds,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`measure_env_rate` results."""
    header = (
        f"{'render':<7} {'envs':>4} {'R':>3} {'agent steps/s':>14} {'env steps/s':>12} "
        f"{'startup s':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['render']:<7} {row['num_envs']:>4} {row['action_repeat']:>3} "
            f"{row['agent_steps_per_s']:>14.1f} {row['env_steps_per_s']:>12.1f} "
            f"{row['startup_s']:>10.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="dmc:cartpole-swingup")
    parser.add_argument("--steps", type=int, default=100, help="agent steps per env")
    parser.add_argument("--envs", type=int, default=2, help="N for the parallel (EnvPool) rows")
    parser.add_argument("--action-repeat", type=int, default=None)
    parser.add_argument("--renders", nargs="+", default=["paper", "fast"])
    args = parser.parse_args(argv)
    rows = []
    for render in args.renders:
        for num_envs in sorted({1, args.envs}):
            rows.append(
                measure_env_rate(
                    args.task, render, num_envs, args.steps, action_repeat=args.action_repeat
                )
            )
    print(f"task {args.task}, {args.steps} agent steps per env, random actions")
    print(format_table(rows))


if __name__ == "__main__":
    main()
