"""A third agent that planetrl does not know, registered by one line (``PLANETRL_AGENTS=
toy=toy_agent:KIND``) and nothing else: the test that the agent seam is the only one.

The agent is a linear policy on the mean colour of each frame, a_t = tanh(W m(o_t) + b), nudged
by a made-up regression step per episode; what it learns does not matter. Its "dynamics model"
for the comparison predicts that the last context frame persists and that rewards are the last
context reward. It uses the shared infrastructure only (driver, episode files, run config).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from planetrl.agents import AgentKind, Evaluation
from planetrl.config import (
    ConfigError,
    RunConfig,
    Section,
    build_config,
    read_config_file,
    save_config,
    to_dict,
)
from planetrl.driver import make_pool, run_episodes
from planetrl.episodes import list_episode_files, save_episode
from planetrl.rules import BOOL, POSITIVE_INT, Rule
from planetrl.run.directory import eval_seed


@dataclass
class ToyTrain(Section):
    episodes: int = 2
    """Episodes to collect."""
    RULES: ClassVar[dict[str, Rule]] = {"episodes": POSITIVE_INT}


@dataclass
class ToyEval(Section):
    every: int = 1
    """Evaluate every this many episodes."""
    episodes: int = 2
    parallel: bool = False
    RULES: ClassVar[dict[str, Rule]] = {
        "every": POSITIVE_INT,
        "episodes": POSITIVE_INT,
        "parallel": BOOL,
    }


@dataclass
class ToyConfig(RunConfig):
    """A toy run (the run and env fields: :class:`RunConfig`)."""

    agent: Literal["toy"] = "toy"
    preset: Literal["small"] = "small"
    train: ToyTrain = field(default_factory=ToyTrain)
    eval: ToyEval = field(default_factory=ToyEval)
    SECTIONS: ClassVar[dict[str, type[Section]]] = {"train": ToyTrain, "eval": ToyEval}
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"logdir", "train.episodes"})


class Policy(nn.Module):
    def __init__(self, action_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3, action_size)

    def forward(self, frames: np.ndarray) -> np.ndarray:
        colour = torch.as_tensor(frames, dtype=torch.float32).mean((-3, -2)) / 255.0
        return torch.tanh(self.linear(colour)).detach().numpy()


def _policy(run_dir: Path, action_size: int) -> Policy:
    policy = Policy(action_size)
    path = run_dir / "checkpoint.pt"
    if path.exists():
        policy.load_state_dict(torch.load(path, weights_only=True))
    return policy


class ToyKind(AgentKind):
    name = "toy"
    title = "Toy"
    presets = ("small",)
    config_class = ToyConfig
    description = "Train the toy agent."

    def preset(self, name: str) -> ToyConfig:
        if name not in self.presets:
            raise ConfigError(f"unknown preset {name!r}; accepted: small")
        return ToyConfig(task="dmc:cartpole-balance", render="fast", action_repeat=50)

    def from_dict(self, data: dict[str, Any]) -> ToyConfig:
        return build_config(ToyConfig, data)

    def to_dict(self, config: Any) -> dict[str, Any]:
        return to_dict(config)

    def load_config(self, path: str | Path) -> ToyConfig:
        return self.from_dict(read_config_file(path))

    def budget(
        self,
        config: Any,
        *,
        env_steps: int,
        episode_env_steps: int,
        eval_every_env_steps: int,
        eval_episodes: int,
    ) -> ToyConfig:
        config.train.episodes = max(1, -(-env_steps // episode_env_steps))
        config.eval.every = max(1, round(eval_every_env_steps / episode_env_steps))
        config.eval.episodes = eval_episodes
        return config.validate()

    def _evaluate(
        self, config: ToyConfig, policy: Policy, episodes: int, seed: int, record: bool = False
    ):
        with make_pool(config, episodes, config.eval.parallel) as pool:
            seeds = [seed + i for i in range(episodes)]
            out = run_episodes(pool, policy, seeds, record=record)
        return out

    def train(
        self, config: Any, *, allow_config_change: bool = False, progress: bool = True
    ) -> dict[str, Any]:
        run_dir = Path(config.logdir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")
        folder = run_dir / "episodes"
        with make_pool(config, 1, False) as pool:
            policy = _policy(run_dir, pool.single_action_space.shape[0])
            optimiser = torch.optim.SGD(policy.parameters(), lr=0.01)
            done = len(list_episode_files(folder)) if folder.exists() else 0
            last: dict[str, Any] | None = None
            while done < config.train.episodes:
                out = run_episodes(pool, policy, [config.seed * 100 + done], keep=True)
                episode = out.episodes[0]
                colour = torch.as_tensor(episode["image"], dtype=torch.float32).mean((1, 2)) / 255
                loss = (
                    (
                        policy.linear(colour).sum(-1)
                        - torch.as_tensor(episode["reward"], dtype=torch.float32)
                    )
                    .square()
                    .mean()
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                save_episode(folder, done, episode)
                torch.save(policy.state_dict(), run_dir / "checkpoint.pt")
                done += 1
                steps = done * 1000
                rows = [{"step": steps, "time": time.time(), "train/return": out.returns[0]}]
                if done % config.eval.every == 0:
                    returns = self._evaluate(
                        config, policy, config.eval.episodes, eval_seed(config)
                    ).returns
                    last = {
                        "eval/return": float(np.mean(returns)),
                        "eval/return_std": float(np.std(returns)),
                        "eval/episodes": len(returns),
                    }
                    rows.append({"step": steps, "time": time.time(), **last})
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
        return {"episodes": done, "env_steps": done * 1000, "eval": last}

    def evaluate(
        self, logdir, *, episodes, seed, device, parallel, record, threads, on_step=None, log=print
    ) -> Evaluation:
        config = self.load_config(Path(logdir) / "config.json")
        with make_pool(config, 1, False) as pool:
            size = pool.single_action_space.shape[0]
        out = self._evaluate(config, _policy(Path(logdir), size), episodes, seed, record)
        return Evaluation(config.task, list(out.returns), out.frames, "toy evaluation")

    def load_models(self, run_dir: Path, device: str = "cpu"):
        if not (Path(run_dir) / "checkpoint.pt").exists():
            return None
        config = self.load_config(Path(run_dir) / "config.json")
        with make_pool(config, 1, False) as pool:
            size = pool.single_action_space.shape[0]
        return config, _policy(Path(run_dir), size)

    def parameters(self, loaded) -> list[tuple[str, int]]:
        return [("policy", sum(p.numel() for p in loaded[1].parameters()))]

    def stages(self, loaded, episodes) -> list[tuple[str, int]]:
        return [("policy episodes", sum(s for _, s in episodes))]

    def open_loop(self, loaded, data, context, seed):
        image = torch.as_tensor(data["image"][:, context - 1 : context]).float() / 255
        horizon = data["image"].shape[1] - context
        frames = image.movedim(-1, -3).expand(-1, horizon, -1, -1, -1)
        reward = torch.as_tensor(data["reward"][:, context - 1 : context]).float()
        return [("last frame persists", frames, reward.expand(-1, horizon))]


KIND = ToyKind()
