"""Evaluate runs with and without the continuation head on the same seeds, against the random
policy (docs/results.md, "Continuation head"). For a run with the head it also plans with the
same model without the discount (``planning_reward`` = the reward model alone), which separates
what the planner's discount does from what the extra loss term does to the model, and prints the
head's mean p(c_t = 1) on the run's stored terminal and other steps (is it calibrated at all).

    python benchmarks/continuation.py RUN_DIR [RUN_DIR ...] [--episodes 10]

Prints one row per (run, planner) and the random policy: mean ± std of the returns over the
episodes, on the run's evaluation seeds (``planetrl.training.loop.eval_seed``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from planetrl.driver import random_policy_returns
from planetrl.training.loop import build_planner, eval_seed, evaluate, load_run


class _Undiscounted:
    """A world model whose planner reward is the reward model alone (the head ignored)."""

    def __init__(self, world_model):
        self._wm = world_model

    def __getattr__(self, name):
        return getattr(self._wm, name)

    @property
    def planning_reward(self):
        return self._wm.reward


@torch.no_grad()
def head_calibration(run: str, world_model) -> dict[str, float]:
    """Mean p(c_t = 1) of the head on the run's stored episodes (posterior features, filtered
    over each whole episode), on terminal steps and on the other steps."""
    from pathlib import Path

    from planetrl.episodes import list_episode_files, load_episode

    terminal, other = [], []
    for file in list_episode_files(Path(run) / "episodes"):
        episode = load_episode(file.path)
        image = world_model.preprocess(torch.as_tensor(episode["image"])[None], noise=False)
        action = torch.as_tensor(episode["action"])[None]
        is_first = torch.as_tensor(episode["is_first"])[None]
        posts, _ = world_model.transition.observe(world_model.encoder(image), action, is_first)
        p = world_model.continuation.probability(world_model.transition.features(posts))[0]
        ends = torch.as_tensor(episode["is_terminal"])
        terminal += p[ends].tolist()
        other += p[~ends].tolist()
    return {
        "p_continue_terminal": float(np.mean(terminal)) if terminal else float("nan"),
        "p_continue_other": float(np.mean(other)) if other else float("nan"),
        "terminal_steps": len(terminal),
        "other_steps": len(other),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    config = None
    for run in args.runs:
        config, world_model = load_run(run, device="cpu")
        seed = eval_seed(config)
        variants = [("planned as trained", world_model)]
        if world_model.continuation is not None:
            print(json.dumps({"run": run, **head_calibration(run, world_model)}), flush=True)
            variants.append(("head ignored by the planner", _Undiscounted(world_model)))
        for name, model in variants:
            planner = build_planner(config, torch.Generator().manual_seed(seed), "cpu")
            returns, _, timing = evaluate(
                config, model, episodes=args.episodes, seed=seed, planner=planner, parallel=False
            )
            rows.append(
                {
                    "run": run,
                    "planner": name,
                    "mean": float(np.mean(returns)),
                    "std": float(np.std(returns)),
                    "returns": [float(r) for r in returns],
                    "ms_per_plan": timing["eval/ms_per_plan"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    assert config is not None
    returns = random_policy_returns(
        config, episodes=args.episodes, seed=eval_seed(config), parallel=False
    )
    rows.append(
        {
            "run": "random policy",
            "planner": "-",
            "mean": float(np.mean(returns)),
            "std": float(np.std(returns)),
            "returns": [float(r) for r in returns],
        }
    )
    print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
