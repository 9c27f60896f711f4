"""The optional continuation head (``model.continuation``, off by default = PlaNet): its loss on
hand-made tensors, the planner's discounted score against a direct computation (eager, lean and
the static-buffer planner), the off path unchanged, and a tiny training run on an env with true
terminations (``tests/custom_env.py``)."""

from __future__ import annotations

import dataclasses
import functools
import math
from types import SimpleNamespace

import pytest
import torch

from planetrl import planning, speed
from planetrl.config import Config, ConfigError, PlannerConfig, SpeedConfig
from planetrl.models import ContinuationModel, DiscountedReward, WorldModel, make_transition
from planetrl.models.continuation import continuation_weights
from planetrl.models.reward import RewardModel
from planetrl.models.state import State
from planetrl.objective import compute_loss
from planetrl.planning import cem
from planetrl.planning.base import rollout_returns, tile_state
from planetrl.speed import lean

A = 2
SIZES = dict(
    cnn_depth=4, embed_size=128, deter_size=10, stoch_size=4, hidden_size=8, reward_hidden=8
)
OPTIONS = dict(horizon=5, iterations=3, candidates=64, top_k=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def batch_with_ends(batch: int = 2, length: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    is_terminal = torch.zeros(batch, length, dtype=torch.bool)
    is_terminal[0, 3] = True  # episode ends at step 3 ...
    is_first[0, 4] = True  # ... and the next one starts
    action = torch.rand(batch, length, A, generator=g) * 2 - 1
    action[is_first] = 0
    return SimpleNamespace(
        image=torch.rand(batch, length, 3, 64, 64, generator=g) - 0.5,
        action=action,
        reward=torch.randn(batch, length, generator=g),
        is_first=is_first,
        is_terminal=is_terminal,
    )


# -- the model --------------------------------------------------------------------------------
def test_off_is_planets_model_exactly():
    torch.manual_seed(0)
    off = WorldModel(A, **SIZES)
    torch.manual_seed(0)
    default = WorldModel(A, **SIZES, continuation=False)
    torch.manual_seed(0)
    on = WorldModel(A, **SIZES, continuation=True)
    assert off.continuation is None and off.planning_reward is off.reward
    keys = set(off.state_dict())
    assert keys == set(default.state_dict())
    assert not any("continuation" in k for k in keys)
    # The head is built last: every other parameter is drawn as without it.
    added = {k for k in on.state_dict() if k.startswith("continuation.")}
    assert set(on.state_dict()) - keys == added
    for key in keys:
        assert torch.equal(off.state_dict()[key], on.state_dict()[key]), key
    assert isinstance(on.continuation, ContinuationModel)
    assert isinstance(on.planning_reward, DiscountedReward)
    assert on.planning_reward is on.planning_reward  # one object (CUDA-graph caches key on it)
    assert on.planning_reward.reward is on.reward


def test_config_field_and_rules():
    config = Config()
    assert config.model.continuation is False
    config.model.continuation = True
    config.validate()
    config.model.continuation = 1
    with pytest.raises(ConfigError, match="model.continuation"):
        config.validate()
    config = Config()
    config.loss.continuation_scale = -1.0
    with pytest.raises(ConfigError, match="loss.continuation_scale"):
        config.validate()
    # the sections go to their constructors whole
    WorldModel(A, **dict(dataclasses.asdict(config.model), continuation=True, cnn_depth=4))


# -- the loss ---------------------------------------------------------------------------------
def test_continuation_loss_is_the_bernoulli_nll_on_hand_made_tensors():
    torch.manual_seed(0)
    wm = WorldModel(A, **SIZES, continuation=True)
    batch = batch_with_ends()
    # A head that reads nothing: constant logit l = 2 (the last layer's bias).
    with torch.no_grad():
        for p in wm.continuation.parameters():
            p.zero_()
        wm.continuation.net[-1].bias.fill_(2.0)
    torch.manual_seed(1)
    loss, metrics, _ = compute_loss(wm, batch, continuation_scale=3.0)
    p = 1 / (1 + math.exp(-2.0))
    steps = batch.is_first.numel()
    expected = -(1 * math.log(1 - p) + (steps - 1) * math.log(p)) / steps  # one terminal step
    assert metrics["continuation_loss"].item() == pytest.approx(expected, rel=1e-6)
    # It enters the loss with its weight, and nothing else changes.
    torch.manual_seed(1)
    loss0, metrics0, _ = compute_loss(wm, batch, continuation_scale=0.0)
    assert (loss - loss0).item() == pytest.approx(3.0 * expected, rel=1e-4)
    for key in ("image_loss", "reward_loss", "kl"):
        assert torch.equal(metrics[key], metrics0[key])


def test_continuation_loss_trains_the_head_only_through_features():
    torch.manual_seed(0)
    wm = WorldModel(A, **SIZES, continuation=True)
    loss, _, _ = compute_loss(
        wm,
        batch_with_ends(),
        continuation_scale=1.0,
        image_scale=0.0,
        reward_scale=0.0,
        kl_scale=0.0,
    )
    loss.backward()
    assert wm.continuation.net[-1].weight.grad.abs().sum() > 0
    assert wm.encoder.parameters().__next__().grad is not None  # through the posterior features
    assert wm.reward.net[-1].weight.grad is None or wm.reward.net[-1].weight.grad.abs().sum() == 0


def test_off_loss_is_unchanged_and_needs_no_is_terminal():
    torch.manual_seed(0)
    wm = WorldModel(A, **SIZES)
    batch = batch_with_ends()
    del batch.is_terminal
    torch.manual_seed(1)
    loss, metrics, _ = compute_loss(wm, batch)
    torch.manual_seed(1)
    loss2, _, _ = compute_loss(wm, batch, continuation_scale=100.0)  # unused without the head
    assert "continuation_loss" not in metrics and torch.equal(loss, loss2)


def test_the_head_needs_is_terminal():
    torch.manual_seed(0)
    wm = WorldModel(A, **SIZES, continuation=True)
    batch = batch_with_ends()
    del batch.is_terminal
    with pytest.raises(ValueError, match="needs is_terminal"):
        compute_loss(wm, batch)


def test_the_head_learns_where_episodes_end():
    """Hand-made: every chunk ends on a distinct frame with a termination; the head learns to
    predict the end there (and only there) from the posterior features."""
    torch.manual_seed(0)
    wm = WorldModel(A, **dict(SIZES, reward_hidden=32), continuation=True)
    batch = batch_with_ends(batch=4, length=8)
    batch.is_first[:] = False
    batch.is_first[:, 0] = True
    batch.is_terminal = torch.zeros(4, 8, dtype=torch.bool)
    batch.is_terminal[:, -1] = True
    batch.image[:, -1] = 0.5  # a distinct terminal frame
    optimiser = torch.optim.Adam(wm.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _, posts = compute_loss(wm, batch, continuation_scale=10.0, image_scale=0.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        p = wm.continuation.probability(wm.transition.features(posts))
    assert p[:, -1].max() < 0.2 and p[:, :-1].min() > 0.8


# -- the planner's score --------------------------------------------------------------------------
def test_continuation_weights():
    p = torch.tensor([[0.5, 0.2, 1.0, 0.3]])
    torch.testing.assert_close(continuation_weights(p), torch.tensor([[1.0, 0.5, 0.1, 0.1]]))


def models(seed: int, kind: str = "rssm"):
    torch.manual_seed(seed)
    transition = make_transition(kind, 3, 64, deter_size=40, stoch_size=8, hidden_size=32)
    reward = RewardModel(transition.feature_size, 32, 2)
    continuation = ContinuationModel(transition.feature_size, 32, 2)
    return transition.eval(), DiscountedReward(reward.eval(), continuation.eval())


def belief(transition, num_envs: int, seed: int) -> State:
    g = torch.Generator().manual_seed(seed)
    state = transition.initial(num_envs).map(lambda x: torch.randn(x.shape, generator=g))
    return State(state.deter, state.stoch, state.mean, state.std.abs() + 0.1)


@torch.no_grad()
def test_discounted_score_against_a_direct_computation():
    transition, scoring = models(0)
    state = belief(transition, 3, seed=1)
    actions = torch.rand(3 * 4, 5, 3) * 2 - 1
    tiled = tile_state(state, 4)
    torch.manual_seed(2)
    returns = rollout_returns(transition, scoring, tiled, actions)
    torch.manual_seed(2)
    features = transition.features(transition.imagine(tiled, actions))  # (N, H, F)
    expected = torch.zeros(12)
    for n in range(12):
        alive = 1.0
        for t in range(5):  # R = sum_t (prod_{tau < t} p(c_tau)) r_t
            expected[n] += alive * scoring.reward(features[n, t])
            alive = alive * torch.sigmoid(scoring.continuation(features[n, t]))
    torch.testing.assert_close(returns, expected, atol=1e-5, rtol=1e-5)
    # a head that is sure the episode goes on is PlaNet's score
    sure = ContinuationModel(transition.feature_size, 32, 2)
    with torch.no_grad():
        sure.net[-1].weight.zero_()
        sure.net[-1].bias.fill_(50.0)
    torch.manual_seed(2)
    plain = rollout_returns(transition, scoring.reward, tiled, actions)
    torch.manual_seed(2)
    discounted = rollout_returns(transition, DiscountedReward(scoring.reward, sure), tiled, actions)
    torch.testing.assert_close(discounted, plain)


def test_a_predicted_end_changes_the_plan():
    """The planner avoids actions whose imagined rewards come after a predicted end."""

    class Toy:  # the state is the position; x_{t+1} = x_t + a_t (1-D); features = the position
        action_size = 1

        def imagine(self, state, actions):
            x = state.deter.unsqueeze(1) + actions.cumsum(1)
            return State(x, x, x, torch.ones_like(x))

        def features(self, state):
            return state.deter

    def reward(f):  # further right, more reward ...
        return f.squeeze(-1)

    def ends(f):  # ... but the episode ends at 0.5
        return 20.0 * (0.5 - f.squeeze(-1))

    cont = SimpleNamespace(probability=lambda f: torch.sigmoid(ends(f)))
    scoring = DiscountedReward(reward, cont)
    state = State(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1))
    kwargs = dict(horizon=4, iterations=5, candidates=300, top_k=30, action_size=1)
    right = cem(Toy(), reward, state, generator=torch.Generator().manual_seed(0), **kwargs)
    careful = cem(Toy(), scoring, state, generator=torch.Generator().manual_seed(0), **kwargs)
    assert right.item() > 0.5 and careful.item() < right.item() - 0.3


@pytest.mark.parametrize("num_envs", [1, 3])
def test_lean_planner_scores_the_same_discounted_return(num_envs):
    transition, scoring = models(num_envs)
    assert lean.supports(transition, scoring)
    state = belief(transition, num_envs, seed=10 + num_envs)
    eager = functools.partial(cem, generator=torch.Generator().manual_seed(5), **OPTIONS)
    fast = functools.partial(lean.lean_cem, generator=torch.Generator().manual_seed(5), **OPTIONS)
    torch.manual_seed(7)
    a = eager(transition, scoring, state, return_stats=True)
    torch.manual_seed(7)
    b = fast(transition, scoring, state, return_stats=True)
    torch.testing.assert_close(b[0], a[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(b[1]["best_return"], a[1]["best_return"], atol=1e-4, rtol=1e-5)
    # and it is not PlaNet's score
    torch.manual_seed(7)
    c = fast(transition, scoring.reward, state, return_stats=True)
    assert not torch.allclose(c[1]["best_return"], b[1]["best_return"])


def test_lean_rollout_with_the_head_against_eager():
    transition, scoring = models(3)
    state = belief(transition, 2, seed=4)
    N, H = 2 * 6, 5
    actions = torch.rand(N, H, 3) * 2 - 1
    tiled = tile_state(state, 6)
    torch.manual_seed(9)
    expected = rollout_returns(transition, scoring, tiled, actions)
    torch.manual_seed(9)
    eps = torch.stack([torch.randn(N, transition.stoch_size) for _ in range(H)])
    rew, cont = lean.scoring_layers(scoring, None)
    for gru_cell in (True, False):
        returns = lean.rollout_returns(
            tiled.deter,
            tiled.stoch,
            transition.prepare_actions(actions),
            eps,
            transition.prior_weights().cast(),
            rew,
            gru_cell=gru_cell,
            continuation=cont,
        )
        torch.testing.assert_close(returns, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "speed_cfg",
    [
        SpeedConfig(compile=False, bf16=True, channels_last=False, cuda_graphs=False),
        SpeedConfig(compile=False, bf16=False, channels_last=False, cuda_graphs=True),
    ],
)
def test_accelerated_planners_take_the_head(speed_cfg, monkeypatch):
    """The configured fast paths on CPU (bf16 lean planner) and the CUDA-graph planner's
    static-buffer code without capture score with the head (float32 = the eager plan)."""
    transition, scoring = models(5)
    state = belief(transition, 2, seed=6)
    calls = []
    real = lean.rollout_returns

    def spy(*args, **kwargs):
        calls.append("continuation" in kwargs)
        return real(*args, **kwargs)

    eager = planning.planner_from_config(
        PlannerConfig(**OPTIONS), generator=torch.Generator().manual_seed(3)
    )
    torch.manual_seed(8)
    expected = eager(transition, scoring, state)
    if speed_cfg.cuda_graphs == "on":
        fast = functools.partial(
            lean.lean_cem, generator=torch.Generator().manual_seed(3), rollout=spy, **OPTIONS
        )
        planner = speed.StaticPlanner(fast, eager, OPTIONS, use_graphs=False)
        torch.manual_seed(8)
        action = planner(transition, scoring, state)
        torch.testing.assert_close(action, expected, atol=1e-5, rtol=0)
    else:
        monkeypatch.setattr(speed, "rollout_returns", spy)  # the eager-CPU lean rollout
        planner = speed.accelerate(
            planning.planner_from_config(
                PlannerConfig(**OPTIONS), generator=torch.Generator().manual_seed(3)
            ),
            speed_cfg,
            "cpu",
        )
        torch.manual_seed(8)
        action = planner(transition, scoring, state)
        assert action.shape == (2, 3) and action.dtype == torch.float32
        assert (action - expected).abs().max() < 0.5  # bf16 rollouts; see test_speed
    assert calls and all(calls)


# -- a tiny training run on an env that terminates --------------------------------------------
def test_tiny_training_run_with_the_head_on_a_terminating_env(tmp_path):
    import custom_env  # tests/ is on sys.path under pytest
    from test_gym_conventions import CUSTOM, _tiny_config

    from planetrl.training.loop import Trainer, load_run

    config = _tiny_config(tmp_path, CUSTOM)
    config.env_kwargs = {"speed": 0.3}  # episodes end early by termination
    config.model.continuation = True
    config.train.seed_episodes, config.train.max_episodes = 3, 4
    config.eval.every, config.eval.episodes = 4, 2
    trainer = Trainer(config, progress=False)
    try:
        assert trainer.world_model.continuation is not None
        assert isinstance(trainer.world_model.planning_reward, DiscountedReward)
        summary = trainer.run()
    finally:
        trainer.close()
    assert summary["episodes"] == 4
    from planetrl.episodes import list_episode_files, load_episode

    files = list_episode_files(tmp_path / "episodes")
    assert any(load_episode(f.path)["is_terminal"].any() for f in files), (
        "no episode ended by termination: the head saw no end"
    )
    assert custom_env.ENV_ID in config.task
    metrics = (tmp_path / "metrics.jsonl").read_text()
    assert "continuation_loss" in metrics
    _, world_model = load_run(tmp_path, device="cpu")
    assert world_model.continuation is not None
