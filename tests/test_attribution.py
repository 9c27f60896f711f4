"""Shortfall attribution: the simulator as the planner's model, the held-out open-loop error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from planetrl.config import PlannerConfig
from planetrl.suite.attribution import SimulatorModel, attribute_run, planner_ceiling


@pytest.mark.parametrize("task,repeat", [("dmc:cartpole-swingup", 8), ("dmc:walker-walk", 2)])
def test_simulator_scores_a_sequence_with_what_the_episode_then_pays(task, repeat):
    """The score of a_{t:t+H} from the current state equals the rewards the real episode pays
    for executing it, and scoring leaves the real episode's state untouched."""
    model = SimulatorModel(task, seed=3, action_repeat=repeat)
    model.reset()
    for action in np.random.default_rng(0).uniform(-1, 1, (5, model.action_size)):
        model.step(action)  # somewhere into the episode
    state = model.physics.get_state().copy()
    actions = np.random.default_rng(1).uniform(-1, 1, (6, model.action_size))
    candidates = torch.as_tensor(np.stack([actions, -actions]))[None]  # (1, 2, H, A)
    scores = model.score(candidates)
    np.testing.assert_array_equal(model.physics.get_state(), state)
    paid = sum(model.step(a)[0] for a in actions)
    assert scores.shape == (1, 2)
    assert float(scores[0, 0]) == pytest.approx(paid, rel=1e-6, abs=1e-6)


def test_simulator_planner_beats_random_on_balance():
    planner = PlannerConfig(horizon=4, iterations=2, candidates=16, top_k=4)
    out = planner_ceiling("dmc:cartpole-balance", planner, episodes=1, seed=0, action_repeat=8)
    # random actions keep the pole up for about a third of the reward; the true model nearly all
    assert out["mean"] > 700 and out["planner"] == {"H": 4, "I": 2, "J": 16, "K": 4, "R": 8}


def test_simulator_model_rejects_gym_tasks():
    with pytest.raises(ValueError, match="needs a DMC task"):
        SimulatorModel("gym:Pendulum-v1", seed=0, action_repeat=1)


def test_attribute_run_writes_both_parts(tmp_path, monkeypatch):
    from test_training import tiny_config  # noqa: I001 (tests dir is on sys.path)

    from planetrl.training.loop import train

    cfg = tiny_config(tmp_path, seed_episodes=1, max_episodes=2)
    train(cfg, progress=False)
    record = attribute_run(tmp_path, episodes=1, device="cpu", log=lambda _: None)
    saved = json.loads((tmp_path / "attribution.json").read_text())
    assert saved == json.loads(json.dumps(record))
    heldout = saved["heldout_open_loop"]
    assert heldout["horizon"] == cfg.planner.horizon and heldout["chunks"] > 10
    assert np.isfinite(heldout["mse"]) and heldout["mse"] >= 0
