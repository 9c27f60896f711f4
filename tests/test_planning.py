"""Tests of the latent-space planners (CEM, random shooting) against a tiny stub transition model.

The stub's state carries each environment's optimum a*_e (in ``deter``) and a step counter, and its
``stoch`` is the action last applied; the reward is -||a_tau - a*_e||^2 (optionally with a*_e
flipping sign every step). So a planner must find a different a*_e for every environment: pairing
a state with another environment's candidates or scores would show.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from planetrl.models.base import TransitionModel
from planetrl.models.state import State
from planetrl.planning import (
    Planner,
    available_planners,
    cem,
    make_planner,
    random_shooting,
    register_planner,
)
from planetrl.planning.base import tile_state


class TargetStub(TransitionModel):
    """deter = [a*_e (A), step counter (1)]; stoch = mean = last action;
    features = [deter, stoch]."""

    def __init__(self, action_size: int = 2):
        super().__init__()
        self.action_size = action_size
        self.embed_size = 0
        self.feature_size = 2 * action_size + 1
        self.deter_size, self.stoch_size = action_size + 1, action_size
        self.scale = torch.nn.Parameter(torch.ones(()))  # a parameter, to check no_grad
        self.calls: list[tuple[State, Tensor]] = []
        self.record = False

    def initial(self, batch: int, device: torch.device | None = None) -> State:
        zeros = torch.zeros(batch, self.action_size, device=device)
        deter = torch.zeros(batch, self.action_size + 1, device=device)
        return State(deter, zeros, zeros, zeros + 1)

    def img_step(self, prev: State, prev_action: Tensor) -> State:
        a = self.action_size
        deter = torch.cat([prev.deter[..., :a], prev.deter[..., a:] + 1], -1)
        stoch = prev_action * self.scale
        return State(deter, stoch, stoch, torch.ones_like(stoch))

    def obs_step(self, prev, prev_action, embed, is_first=None):
        prior = self.img_step(prev, prev_action)
        return prior, prior

    # The base class's one-step hooks (whichever set it declares abstract), as the public steps.
    def _img_step(self, prev: State, action_in: Tensor) -> State:
        return self.img_step(prev, action_in)

    def _obs_step(self, prev: State, action_in: Tensor, embed_in: Tensor):
        return self.obs_step(prev, action_in, embed_in)

    def features(self, state: State) -> Tensor:
        return torch.cat([state.deter, state.stoch], -1)

    def kl(self, post: State, prior: State) -> Tensor:
        return torch.zeros(post.shape)

    def imagine(self, state: State, actions: Tensor) -> State:
        if self.record:
            self.calls.append((state, actions.clone()))
        priors, current = [], state
        for t in range(actions.shape[1]):
            current = self.img_step(current, actions[:, t])
            priors.append(current)
        return State.stack(priors, dim=1)


def make_state(targets: Tensor) -> State:
    """A stub belief (E,) whose optimum is ``targets`` (E, A)."""
    num, size = targets.shape
    deter = torch.cat([targets, torch.zeros(num, 1, dtype=targets.dtype)], -1)
    stoch = torch.zeros_like(targets)
    return State(deter, stoch, stoch, torch.ones_like(stoch))


def make_reward(action_size: int, alternate: bool = False):
    """reward(features) = -||a_tau - a*_tau||^2, a*_tau = a* or (alternate) a* * (-1)^tau."""

    def reward(features: Tensor) -> Tensor:
        target = features[..., :action_size]
        step = features[..., action_size]  # 1 after the first step
        if alternate:
            sign = 1.0 - 2.0 * torch.remainder(step - 1, 2)
            target = target * sign.unsqueeze(-1)
        action = features[..., action_size + 1 :]
        return -((action - target) ** 2).sum(-1)

    return reward


class CountingReward:
    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, features: Tensor) -> Tensor:
        self.shapes.append(tuple(features.shape))
        return self.fn(features)


TARGETS = torch.tensor([[0.5, -0.3], [-0.7, 0.2], [0.1, 0.9]])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# CEM finds each environment's own optimum
# --------------------------------------------------------------------------------------------


def test_cem_finds_a_different_optimum_per_environment():
    model = TargetStub(2)
    action = cem(model, make_reward(2), make_state(TARGETS), generator=gen(0))
    assert action.shape == (3, 2)
    assert torch.allclose(action, TARGETS, atol=0.05), action


@pytest.mark.parametrize("candidates,top_k", [(53, 8), (101, 10), (250, 25)])
def test_cem_never_mixes_environments_with_odd_candidate_counts(candidates, top_k):
    # Far-apart optima: pairing a state with another env's candidates or scores would be visible.
    targets = torch.tensor([[0.8], [-0.8], [0.0], [0.4], [-0.4]])
    action = cem(
        TargetStub(1),
        make_reward(1),
        make_state(targets),
        horizon=2,
        iterations=6,
        candidates=candidates,
        top_k=top_k,
        generator=gen(1),
    )
    assert torch.allclose(action, targets, atol=0.1), action  # optima are 0.4 apart


def test_tiling_is_env_major_and_matches_the_action_order():
    model = TargetStub(2)
    model.record = True
    state = make_state(TARGETS)
    cem(model, make_reward(2), state, horizon=2, iterations=2, candidates=7, top_k=3,
        generator=gen(0))
    assert len(model.calls) == 2
    for tiled, actions in model.calls:
        assert tiled.shape == (21,) and actions.shape == (21, 2, 2)
        for row in range(21):
            assert torch.equal(tiled.deter[row], state.deter[row // 7])
    # The helper itself, on a state whose rows are distinguishable in every field.
    e = torch.arange(4.0).unsqueeze(1)
    tiled = tile_state(State(e, e + 10, e + 20, e + 30), 3)
    assert tiled.deter.squeeze(1).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.equal(tiled.std, tiled.deter + 30)


def test_one_rollout_and_one_reward_call_per_iteration():
    model = TargetStub(2)
    model.record = True
    reward = CountingReward(make_reward(2))
    cem(model, reward, make_state(TARGETS), horizon=4, iterations=3, candidates=50, top_k=5)
    assert len(model.calls) == 3
    assert reward.shapes == [(150, 4, 5)] * 3  # all E*J candidates, all H steps, F = 5


def test_cem_plans_a_time_dependent_sequence():
    action, stats = cem(
        TargetStub(2),
        make_reward(2, alternate=True),
        make_state(TARGETS),
        horizon=4,
        generator=gen(2),
        return_stats=True,
    )
    assert torch.allclose(action, TARGETS, atol=0.05)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1)
    assert torch.allclose(stats["mean"], TARGETS.unsqueeze(1) * signs, atol=0.05)
    assert torch.equal(action, stats["mean"][:, 0])


def test_optimum_outside_the_bounds_is_clipped():
    targets = torch.tensor([[1.7, -3.0], [-0.2, 0.4]])
    action = cem(TargetStub(2), make_reward(2), make_state(targets), horizon=3, generator=gen(3))
    assert torch.allclose(action, targets.clamp(-1, 1), atol=0.05), action
    assert (action.abs() <= 1).all()


def test_all_candidates_and_the_action_stay_within_per_dimension_bounds():
    low, high = torch.tensor([-0.2, -1.0]), torch.tensor([0.5, 0.3])
    model = TargetStub(2)
    model.record = True
    for planner in (cem, random_shooting):
        action = planner(
            model,
            make_reward(2),
            make_state(TARGETS),
            horizon=3,
            candidates=200,
            min_action=low,
            max_action=high,
            generator=gen(4),
        )
        assert ((action >= low) & (action <= high)).all()
    assert len(model.calls) == 11  # 10 CEM iterations, 1 random-shooting rollout
    for _, actions in model.calls:
        assert ((actions >= low) & (actions <= high)).all()
    # Env 0's optimum (0.5, -0.3) lies on the bound, env 1's (-0.7, 0.2) clips to (-0.2, 0.2).
    action = cem(
        TargetStub(2), make_reward(2), make_state(TARGETS[:2]), horizon=3,
        min_action=low, max_action=high, generator=gen(5),
    )
    assert torch.allclose(action, TARGETS[:2].clamp(low, high), atol=0.05)


# --------------------------------------------------------------------------------------------
# Belief statistics, baselines, determinism
# --------------------------------------------------------------------------------------------


def test_std_shrinks_and_elite_return_grows_over_iterations():
    _, stats = cem(
        TargetStub(2), make_reward(2), make_state(TARGETS), horizon=4, iterations=6,
        candidates=300, top_k=30, generator=gen(6), return_stats=True,
    )
    assert stats["mean_std"].shape == (6, 3) and stats["elite_return"].shape == (6, 3)
    assert (stats["mean_std"] < 1).all()
    assert (stats["mean_std"][1:] < stats["mean_std"][:-1]).all()
    assert (stats["elite_return"][-1] > stats["elite_return"][0]).all()
    assert (stats["best_return"] >= stats["elite_return"]).all()
    assert (stats["elite_return"] >= stats["mean_return"]).all()
    assert stats["std"].shape == stats["mean"].shape == (3, 4, 2)


def test_more_iterations_plan_better():
    state, reward = make_state(TARGETS), make_reward(2)
    errors = {}
    for iterations in (1, 8):
        errors[iterations] = torch.stack(
            [
                (cem(TargetStub(2), reward, state, iterations=iterations, candidates=200, top_k=20,
                     horizon=6, generator=gen(seed)) - TARGETS).norm(dim=-1).mean()
                for seed in range(3)
            ]
        ).mean()
    assert errors[8] < 0.5 * errors[1], errors


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_random_shooting_is_worse_than_cem_but_better_than_chance(distribution):
    state, reward = make_state(TARGETS), make_reward(2)
    rs_err, cem_err = [], []
    for seed in range(3):
        rs = random_shooting(TargetStub(2), reward, state, distribution=distribution,
                             generator=gen(seed))
        assert rs.shape == (3, 2) and (rs.abs() <= 1).all()
        rs_err.append((rs - TARGETS).norm(dim=-1).mean())
        plan = cem(TargetStub(2), reward, state, generator=gen(seed))
        cem_err.append((plan - TARGETS).norm(dim=-1).mean())
    assert sum(cem_err) < 0.5 * sum(rs_err)
    # Much better than a random action would be on average (about 1.2 away from these targets).
    assert sum(rs_err) / 3 < 0.9


def test_random_shooting_with_a_single_step_finds_each_optimum():
    # With H = 1 and many candidates, the best candidate is close to each env's own a*.
    action, stats = random_shooting(
        TargetStub(2), make_reward(2), make_state(TARGETS), horizon=1, candidates=2000,
        generator=gen(7), return_stats=True,
    )
    assert torch.allclose(action, TARGETS, atol=0.1)
    assert torch.equal(action, stats["best_actions"][:, 0])
    assert (stats["best_return"] >= stats["mean_return"]).all()


def test_repeatable_with_a_generator_and_leaves_the_global_rng_alone():
    state, reward = make_state(TARGETS), make_reward(2)
    for planner, kwargs in ((cem, dict(top_k=8)), (random_shooting, {})):
        kwargs = dict(horizon=3, candidates=64, **kwargs)
        before = torch.random.get_rng_state()
        first = planner(TargetStub(2), reward, state, generator=gen(11), **kwargs)
        assert torch.equal(torch.random.get_rng_state(), before)
        second = planner(TargetStub(2), reward, state, generator=gen(11), **kwargs)
        other = planner(TargetStub(2), reward, state, generator=gen(12), **kwargs)
        assert torch.equal(first, second)
        assert not torch.equal(first, other)
        torch.manual_seed(5)
        a = planner(TargetStub(2), reward, state, **kwargs)
        torch.manual_seed(5)
        assert torch.equal(a, planner(TargetStub(2), reward, state, **kwargs))


def test_inference_only_and_dtype_follows_the_state():
    state = make_state(TARGETS.double())
    model = TargetStub(2).double()
    for planner, kwargs in ((cem, dict(top_k=4)), (random_shooting, {})):
        action = planner(model, make_reward(2), state, horizon=2, candidates=32, generator=gen(0),
                         **kwargs)
        assert action.dtype == torch.float64
        assert not action.requires_grad
    assert model.scale.grad is None


def test_reward_model_returning_a_trailing_singleton_dimension_is_accepted():
    reward = make_reward(2)
    action = cem(TargetStub(2), lambda f: reward(f).unsqueeze(-1), make_state(TARGETS), horizon=3,
                 generator=gen(0))
    assert torch.allclose(action, TARGETS, atol=0.05)


@settings(max_examples=25, deadline=None)
@given(
    num_envs=st.integers(1, 4),
    candidates=st.integers(1, 20),
    horizon=st.integers(1, 4),
    action_size=st.integers(1, 3),
    data=st.data(),
)
def test_shapes_and_bounds_for_any_sizes(num_envs, candidates, horizon, action_size, data):
    top_k = data.draw(st.integers(1, candidates))
    low = data.draw(st.floats(-2.0, 0.9))
    high = data.draw(st.floats(low + 0.05, 2.0))
    seed = data.draw(st.integers(0, 2**16))
    targets = torch.rand(num_envs, action_size, generator=gen(seed)) * 4 - 2
    model = TargetStub(action_size)
    for action in (
        cem(model, make_reward(action_size), make_state(targets), horizon=horizon, iterations=2,
            candidates=candidates, top_k=top_k, min_action=low, max_action=high,
            generator=gen(seed)),
        random_shooting(model, make_reward(action_size), make_state(targets), horizon=horizon,
                        candidates=candidates, min_action=low, max_action=high,
                        generator=gen(seed)),
    ):
        assert action.shape == (num_envs, action_size)
        assert torch.isfinite(action).all()
        assert ((action >= low) & (action <= high)).all()


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(top_k=11, candidates=10), "top_k"),
        (dict(horizon=0), "horizon"),
        (dict(iterations=-1), "iterations"),
        (dict(candidates=2.5), "candidates"),
        (dict(top_k=True), "top_k"),
        (dict(action_size=3), "action_size"),
        (dict(min_action=1.0, max_action=1.0), "min_action"),
        (dict(min_action=torch.zeros(3)), "min_action"),
        (dict(max_action=float("nan")), "max_action"),
    ],
)
def test_cem_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cem(TargetStub(2), make_reward(2), make_state(TARGETS), **kwargs)


def test_bad_states_and_model_outputs_are_rejected():
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    for planner, kwargs in ((cem, dict(top_k=2)), (random_shooting, {})):
        with pytest.raises(ValueError, match="one batch dimension"):
            planner(model, reward, state.map(lambda t: t.unsqueeze(0)))
        with pytest.raises(ValueError, match="one batch dimension"):
            planner(model, reward, state[0])
        with pytest.raises(ValueError, match="State"):
            planner(model, reward, state.deter)
        with pytest.raises(ValueError, match="stoch"):
            planner(model, reward, State(state.deter, state.stoch[:2], state.mean, state.std))
        with pytest.raises(ValueError, match="reward_model"):
            planner(model, lambda f: reward(f).sum(-1), state, horizon=2, candidates=4, **kwargs)
    with pytest.raises(ValueError, match="distribution"):
        random_shooting(model, reward, state, distribution="cauchy")
    with pytest.raises(ValueError, match="candidates"):
        random_shooting(model, reward, state, candidates=0)


# --------------------------------------------------------------------------------------------
# The project's transition models, where they exist
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rssm", "ssm", "gru"])
def test_plans_with_the_project_models(kind):
    models = pytest.importorskip("planetrl.models")
    if not hasattr(models, "make_transition") or not hasattr(models, "RewardModel"):
        pytest.skip("planetrl.models.make_transition / RewardModel not there yet")
    torch.manual_seed(0)
    transition = models.make_transition(
        kind, action_size=3, embed_size=8, deter_size=16, stoch_size=4, hidden_size=16
    )
    reward = models.RewardModel(transition.feature_size, hidden=16)
    initial = transition.initial(4)
    state = initial.map(lambda t: torch.randn(t.shape))
    state = State(state.deter, state.stoch, state.mean, state.std.abs() + 0.1)
    for planner, kwargs in ((cem, dict(iterations=3, top_k=5)), (random_shooting, {})):
        action = planner(transition, reward, state, horizon=4, candidates=23, generator=gen(0),
                         **kwargs)
        assert action.shape == (4, 3) and (action.abs() <= 1).all()
        assert not action.requires_grad
    # Repeatable given the planner's generator and the model's own sampling seed.
    torch.manual_seed(1)
    first = cem(transition, reward, state, horizon=3, candidates=20, top_k=4, generator=gen(2))
    torch.manual_seed(1)
    second = cem(transition, reward, state, horizon=3, candidates=20, top_k=4, generator=gen(2))
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------
# make_planner
# --------------------------------------------------------------------------------------------


def test_make_planner_names_options_and_errors():
    assert {"cem", "random_shooting", "random"} <= set(available_planners())
    planner = make_planner("cem", horizon=3, iterations=5, candidates=200, top_k=20)
    assert isinstance(planner, Planner)
    state, reward = make_state(TARGETS), make_reward(2)
    action = planner(TargetStub(2), reward, state, generator=gen(0))
    assert torch.equal(action, cem(TargetStub(2), reward, state, horizon=3, iterations=5,
                                   candidates=200, top_k=20, generator=gen(0)))
    rs = make_planner("random", horizon=2, candidates=16)
    assert rs(TargetStub(2), reward, state).shape == (3, 2)

    with pytest.raises(ValueError, match="cem.*random"):
        make_planner("mppi")
    with pytest.raises(TypeError, match="top_k"):
        make_planner("random_shooting", top_k=10)
    with pytest.raises(TypeError, match="state"):
        make_planner("cem", state=state)
    with pytest.raises(ValueError, match="top_k"):
        make_planner("cem", top_k=2000)  # > the default J = 1000, caught before any planning
    with pytest.raises(ValueError, match="horizon"):
        make_planner("cem", horizon=0)


def test_register_planner_makes_a_replacement_available():
    def zero_planner(transition, reward_model, state, *, scale: float = 0.0):
        return torch.full((state.shape[0], transition.action_size), scale)

    register_planner("test_zero", zero_planner)
    try:
        planner = make_planner("test_zero", scale=0.5)
        assert torch.equal(planner(TargetStub(2), make_reward(2), make_state(TARGETS)),
                           torch.full((3, 2), 0.5))
        assert "test_zero" in available_planners()
    finally:
        from planetrl.planning import base

        base._PLANNERS.pop("test_zero")
