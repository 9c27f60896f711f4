"""A second agent on the shared infrastructure: the episode driver, the replay and the checkpoint,
without any of PlaNet's code (world model, planner, agent, training loop).

The agent is a tiny linear policy on the mean colour of each frame, a_t = tanh(W m(o_t) + b),
with Gaussian exploration noise, trained by one made-up regression step per cycle (predict the
reward from the frame); what it learns does not matter, only that every piece of its state
survives a SIGKILL through the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from planetrl.atomic import atomic_write_json
from planetrl.driver import make_pool, run_episodes
from planetrl.replay import Replay
from planetrl.run.checkpoint import Checkpoint

ENV = SimpleNamespace(task="dmc:cartpole-balance", action_repeat=50, render="fast")  # 20 steps
PLANET = (
    "planetrl.training.loop",
    "planetrl.agent",
    "planetrl.models",
    "planetrl.planning",
    "planetrl.objective",
    "planetrl.speed",
)


class TinyAgent:
    """a_t = tanh(W m(o_t) + b) + N(0, 0.1²), m the mean colour (3,) of the frame in [0, 1]."""

    def __init__(self, action_size: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.policy = nn.Linear(3, action_size)
        self.reward_head = nn.Linear(3, 1)
        self.modules = nn.ModuleDict({"policy": self.policy, "reward_head": self.reward_head})
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=1e-2)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0
        self.steps_this_episode: np.ndarray | None = None

    @staticmethod
    def features(images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(-3, -2)) / 255.0  # (..., H, W, 3) -> (..., 3)

    def reset(self, num_envs: int) -> None:
        self.steps_this_episode = np.zeros(num_envs, np.int64)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        self.steps_this_episode += 1
        mean = torch.tanh(self.policy(self.features(torch.as_tensor(obs))))
        noise = 0.1 * torch.randn(mean.shape, generator=self.generator)
        return (mean + noise).clamp(-1, 1).numpy()

    def update(self, batch) -> float:
        predicted = self.reward_head(self.features(batch.image)).squeeze(-1)
        loss = (predicted - batch.reward).square().mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return float(loss.detach())

    def attach(self, checkpoint: Checkpoint, replay: Replay) -> Checkpoint:
        checkpoint.attach("modules", self.modules).attach("optimizer", self.optimizer)
        checkpoint.attach("generator", self.generator)
        checkpoint.attach(
            "updates",
            get=lambda: self.updates,
            set=lambda value: setattr(self, "updates", int(value)),
        )
        return checkpoint.attach("replay_rng", get=replay.rng_state, set=replay.set_rng_state)


def digest(checkpoint: Checkpoint) -> str:
    """A hash of everything the checkpoint would save."""
    return hashlib.sha256(repr(_plain(checkpoint.state())).encode()).hexdigest()


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().tobytes()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def setup(logdir: Path) -> tuple[TinyAgent, Replay, Checkpoint]:
    replay = Replay(logdir / "episodes", capacity=10_000, seed=0)
    agent = TinyAgent(action_size=1)
    checkpoint = agent.attach(Checkpoint(logdir / "checkpoint.pt"), replay)
    if checkpoint.exists():
        checkpoint.load()
    return agent, replay, checkpoint


def cycle(agent: TinyAgent, replay: Replay, checkpoint: Checkpoint, pool) -> None:
    """Collect two episodes with the driver, store them, update once, checkpoint."""
    seeds = [replay.next_index, replay.next_index + 1]
    out = run_episodes(pool, agent.act, seeds, reset=agent.reset, keep=True)
    assert out.episodes is not None and (agent.steps_this_episode == 20).all()
    for episode in out.episodes:
        replay.add(episode)
    agent.update(replay.sample(4, 6))
    checkpoint.save()


def child(logdir: str, stop_after: int) -> None:
    """Run cycles until ``stop_after`` updates, report the state's digest, then hang (killed)."""
    logdir = Path(logdir)
    agent, replay, checkpoint = setup(logdir)
    with make_pool(ENV, 2, parallel=False) as pool:
        while agent.updates < stop_after:
            cycle(agent, replay, checkpoint, pool)
    loaded = sorted(m for m in sys.modules if m.startswith(PLANET))
    atomic_write_json(
        logdir / "report.json",
        {"digest": digest(checkpoint), "updates": agent.updates, "planet": loaded},
    )
    time.sleep(600)


def test_a_second_agent_shares_driver_replay_and_checkpoint(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import test_second_agent as t; t.child({str(tmp_path)!r}, 2)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        deadline = time.time() + 240
        while not (tmp_path / "report.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the second agent did not report in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["planet"] == [], report["planet"]  # none of PlaNet's code was imported
    assert report["updates"] == 2

    # A fresh process's view: everything attached is restored exactly, the replay reloaded.
    agent, replay, checkpoint = setup(tmp_path)
    assert agent.updates == 2 and digest(checkpoint) == report["digest"]
    assert replay.num_episodes == 4 and replay.next_index == 4
    batch = replay.sample(3, 5)
    assert batch.image.dtype == torch.uint8 and batch.image.shape == (3, 5, 64, 64, 3)
    with make_pool(ENV, 2, parallel=False) as pool:
        cycle(agent, replay, checkpoint, pool)
    assert agent.updates == 3
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir())[-1] == "000005-21.npz"
