"""Tests of the latent-space planners (CEM with iCEM's options, random shooting) against a tiny
stub transition model.

The stub's state carries each environment's optimum a*_e (in ``deter``) and a step counter, and its
``stoch`` is the action last applied; the reward is -||a_tau - a*_e||^2 (optionally with a*_e
flipping sign every step). So a planner must find a different a*_e for every environment: pairing
a state with another environment's candidates or scores would show.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import ICEM_OPTIONS, OPTION_SETS
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from planetrl.models.base import TransitionModel
from planetrl.models.state import State
from planetrl.planning import (
    CEM_OPTIONS,
    ICEM,
    ICEM_DEFAULTS,
    CEMOptions,
    Plan,
    PlanInit,
    Planner,
    WarmStart,
    available_planners,
    cem,
    icem,
    make_planner,
    planner_from_config,
    random_shooting,
    register_planner,
)
from planetrl.planning.base import (
    colour_noise,
    planner_defaults,
    standard_normal,
    tile_state,
)
from planetrl.planning.cem import population_sizes


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
    cem(
        model,
        make_reward(2),
        state,
        horizon=2,
        iterations=2,
        candidates=7,
        top_k=3,
        generator=gen(0),
    )
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
        TargetStub(2),
        make_reward(2),
        make_state(TARGETS[:2]),
        horizon=3,
        min_action=low,
        max_action=high,
        generator=gen(5),
    )
    assert torch.allclose(action, TARGETS[:2].clamp(low, high), atol=0.05)


# --------------------------------------------------------------------------------------------
# Belief statistics, baselines, determinism
# --------------------------------------------------------------------------------------------


def test_std_shrinks_and_elite_return_grows_over_iterations():
    _, stats = cem(
        TargetStub(2),
        make_reward(2),
        make_state(TARGETS),
        horizon=4,
        iterations=6,
        candidates=300,
        top_k=30,
        generator=gen(6),
        return_stats=True,
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
                (
                    cem(
                        TargetStub(2),
                        reward,
                        state,
                        iterations=iterations,
                        candidates=200,
                        top_k=20,
                        horizon=6,
                        generator=gen(seed),
                    )
                    - TARGETS
                )
                .norm(dim=-1)
                .mean()
                for seed in range(3)
            ]
        ).mean()
    assert errors[8] < 0.5 * errors[1], errors


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_random_shooting_is_worse_than_cem_but_better_than_chance(distribution):
    state, reward = make_state(TARGETS), make_reward(2)
    rs_err, cem_err = [], []
    for seed in range(3):
        rs = random_shooting(
            TargetStub(2), reward, state, distribution=distribution, generator=gen(seed)
        )
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
        TargetStub(2),
        make_reward(2),
        make_state(TARGETS),
        horizon=1,
        candidates=2000,
        generator=gen(7),
        return_stats=True,
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
        action = planner(
            model, make_reward(2), state, horizon=2, candidates=32, generator=gen(0), **kwargs
        )
        assert action.dtype == torch.float64
        assert not action.requires_grad
    assert model.scale.grad is None


def test_reward_model_returning_a_trailing_singleton_dimension_is_accepted():
    reward = make_reward(2)
    action = cem(
        TargetStub(2),
        lambda f: reward(f).unsqueeze(-1),
        make_state(TARGETS),
        horizon=3,
        generator=gen(0),
    )
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
        cem(
            model,
            make_reward(action_size),
            make_state(targets),
            horizon=horizon,
            iterations=2,
            candidates=candidates,
            top_k=top_k,
            min_action=low,
            max_action=high,
            generator=gen(seed),
        ),
        random_shooting(
            model,
            make_reward(action_size),
            make_state(targets),
            horizon=horizon,
            candidates=candidates,
            min_action=low,
            max_action=high,
            generator=gen(seed),
        ),
        icem(
            model,
            make_reward(action_size),
            make_state(targets),
            horizon=horizon,
            iterations=3,
            candidates=candidates,
            top_k=top_k,
            min_action=low,
            max_action=high,
            generator=gen(seed),
        ),
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
        action = planner(
            transition, reward, state, horizon=4, candidates=23, generator=gen(0), **kwargs
        )
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


def test_one_list_of_planner_names():
    """The config's choices, the shared rule and the registry's built-ins are the same names."""
    import typing

    from planetrl.config import PlannerConfig
    from planetrl.rules import PLANNER_NAMES

    assert typing.get_args(typing.get_type_hints(PlannerConfig)["name"]) == PLANNER_NAMES
    assert set(PLANNER_NAMES) <= set(available_planners())  # tests may register more


def test_make_planner_names_options_and_errors():
    assert {"cem", "icem", "random"} <= set(available_planners())
    planner = make_planner("cem", horizon=3, iterations=5, candidates=200, top_k=20)
    assert isinstance(planner, Planner)
    state, reward = make_state(TARGETS), make_reward(2)
    action = planner(TargetStub(2), reward, state, generator=gen(0))
    assert torch.equal(
        action,
        cem(
            TargetStub(2),
            reward,
            state,
            horizon=3,
            iterations=5,
            candidates=200,
            top_k=20,
            generator=gen(0),
        ),
    )
    rs = make_planner("random", horizon=2, candidates=16)
    assert rs(TargetStub(2), reward, state).shape == (3, 2)

    with pytest.raises(ValueError, match="cem.*random"):
        make_planner("mppi")
    with pytest.raises(TypeError, match="top_k"):
        make_planner("random", top_k=10)
    with pytest.raises(TypeError, match="state"):
        make_planner("cem", state=state)
    with pytest.raises(ValueError, match="top_k"):
        make_planner("cem", top_k=2000)  # > the default J = 1000, caught before any planning
    with pytest.raises(ValueError, match="horizon"):
        make_planner("cem", horizon=0)


def test_planner_from_config_takes_the_options_from_the_planners_signature():
    from planetrl.config import PlannerConfig

    # Random shooting takes H and J only: the config's I and K are not passed.
    cfg = PlannerConfig(name="random", horizon=4, candidates=32, iterations=3, top_k=5)
    planner = planner_from_config(cfg)
    assert planner.function is random_shooting
    assert planner.options == dict(generator=None, horizon=4, candidates=32)
    # CEM: the sizes and every iCEM option that is set; None leaves the planner's own default.
    g = gen(0)
    planner = planner_from_config(PlannerConfig(horizon=3, momentum=0.2), generator=g)
    assert planner.function is cem and planner.options == dict(
        generator=g, horizon=3, iterations=10, candidates=1000, top_k=100, momentum=0.2
    )
    # icem is warm-started by default; the config can turn it off.
    warm = planner_from_config(PlannerConfig(name="icem", horizon=3))
    assert isinstance(warm, WarmStart) and warm.planner.function is icem
    assert not isinstance(
        planner_from_config(PlannerConfig(name="icem", warm_start=False)), WarmStart
    )
    # An option the planner does not take: a TypeError naming the accepted ones.
    with pytest.raises(TypeError, match="accepted options: horizon, candidates"):
        make_planner("random", top_k=5)


def test_cem_options_have_one_owner():
    """CEMOptions owns the options' names, defaults (cem's signature) and checks; ICEM the
    values of icem's signature."""
    defaults = planner_defaults("cem")
    assert CEMOptions(**{k: defaults[k] for k in CEM_OPTIONS}) == CEMOptions()
    icem_defaults = planner_defaults("icem")
    assert CEMOptions(**{k: icem_defaults[k] for k in CEM_OPTIONS}) == ICEM
    with pytest.raises(ValueError, match=r"keep_elites \(ξ\)"):
        CEMOptions(keep_elites=1.0)


def test_register_planner_makes_a_replacement_available():
    def zero_planner(transition, reward_model, state, *, scale: float = 0.0):
        return torch.full((state.shape[0], transition.action_size), scale)

    register_planner("test_zero", zero_planner)
    try:
        planner = make_planner("test_zero", scale=0.5)
        assert torch.equal(
            planner(TargetStub(2), make_reward(2), make_state(TARGETS)), torch.full((3, 2), 0.5)
        )
        assert "test_zero" in available_planners()
    finally:
        from planetrl.planning import base

        base._PLANNERS.pop("test_zero")


# --------------------------------------------------------------------------------------------
# iCEM's options (arXiv 2008.06389), the icem planner and the warm start
# --------------------------------------------------------------------------------------------


def reference_cem(
    transition, reward_model, state, *, horizon, iterations, candidates, top_k, generator
):
    """The CEM loop as it was before iCEM's options (a copy, bounds [-1, 1]): the default options
    must reproduce it bit for bit."""
    num_envs, action_size = state.shape[0], transition.action_size
    low = torch.full((action_size,), -1.0)
    high = torch.full((action_size,), 1.0)
    tiled = tile_state(state, candidates)
    env_index = torch.arange(num_envs).unsqueeze(1)
    shape = (num_envs, candidates, horizon, action_size)
    mean, std = torch.zeros(shape[:1] + shape[2:]), torch.ones(shape[:1] + shape[2:])
    for _ in range(iterations):
        noise = torch.randn(shape, generator=generator)
        actions = torch.clamp(mean.unsqueeze(1) + std.unsqueeze(1) * noise, low, high)
        flat = actions.reshape(num_envs * candidates, horizon, action_size)
        priors = transition.imagine(tiled, flat)
        returns = reward_model(transition.features(priors)).sum(1)
        returns = torch.nan_to_num(returns, nan=float("-inf")).reshape(num_envs, candidates)
        _, elite_index = torch.topk(returns, top_k, dim=1)
        elites = actions[env_index, elite_index]
        mean, std = elites.mean(dim=1), elites.std(dim=1, correction=0)
    return torch.clamp(mean[:, 0], low, high)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "sizes",
    [
        dict(horizon=4, iterations=3, candidates=50, top_k=5),
        dict(horizon=1, iterations=2, candidates=7, top_k=7),
    ],
)
def test_default_options_reproduce_the_old_cem_exactly(seed, sizes):
    model, reward, state = TargetStub(2), make_reward(2, alternate=True), make_state(TARGETS)
    old = reference_cem(model, reward, state, generator=gen(seed), **sizes)
    new = cem(model, reward, state, generator=gen(seed), **sizes)
    explicit = cem(
        model,
        reward,
        state,
        generator=gen(seed),
        noise_beta=0.0,
        keep_elites=0.0,
        population_decay=1.0,
        momentum=0.0,
        init_std=1.0,
        execute_best=False,
        mean_candidate=False,
        **sizes,
    )
    assert torch.equal(new, old) and torch.equal(explicit, old)


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_option_combination_has_the_same_call(options):
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    sizes = dict(horizon=3, iterations=4, candidates=40, top_k=10)
    action = cem(model, reward, state, generator=gen(0), **sizes, **options)
    assert action.shape == (3, 2) and (action.abs() <= 1).all()
    action2, stats = cem(
        model, reward, state, generator=gen(0), return_stats=True, **sizes, **options
    )
    assert torch.equal(action2, action)
    assert stats["mean"].shape == stats["std"].shape == (3, 3, 2)
    assert stats["best_return"].shape == stats["mean_std"].shape == (4, 3)
    plan = cem(
        model,
        reward,
        state,
        generator=gen(0),
        return_plan=True,
        return_stats=True,
        **sizes,
        **options,
    )
    assert isinstance(plan, Plan) and torch.equal(plan.action, action)
    assert torch.equal(plan.mean, stats["mean"]) and plan.stats is not None
    kept = int(options.get("keep_elites", 0.0) * 10 + 1e-9)
    assert plan.elites.shape == (3, kept, 3, 2)
    # Through the registry, with the options fixed, and warm-started from the plan.
    fixed = make_planner("cem", **sizes, **options)
    assert torch.equal(fixed(model, reward, state, generator=gen(0)), action)
    again = cem(model, reward, state, generator=gen(1), init=plan.shifted(), **sizes, **options)
    assert again.shape == (3, 2)
    # Still finds every environment's own optimum.
    solved = cem(
        model, reward, state, generator=gen(2), horizon=3, candidates=200, top_k=20, **options
    )
    assert torch.allclose(solved, TARGETS, atol=0.08), solved


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("warm", [False, True])
def test_one_environment_never_changes_another_ones_plan(options, warm):
    """Env 0's plan is a function of env 0's belief (and its own noise, the first rows of every
    draw): changing env 1's belief, over several warm-started steps, leaves it bit for bit."""
    sizes = dict(horizon=3, iterations=3, candidates=30, top_k=6)
    model, reward = TargetStub(2), make_reward(2, alternate=True)
    runs = []
    for other in (torch.tensor([-0.7, 0.2]), torch.tensor([0.9, 0.9])):
        planner = functools.partial(cem, generator=gen(4), **sizes, **options)
        planner = WarmStart(planner) if warm else planner
        actions = []
        for step in range(3):
            state = make_state(torch.stack([TARGETS[0], other + 0.1 * step]))
            state.deter[:, -1] = step  # the stub's step counter: the optimum shifts each step
            actions.append(planner(model, reward, state))
        runs.append(torch.stack(actions))
    assert torch.equal(runs[0][:, 0], runs[1][:, 0])
    assert not torch.equal(runs[0][:, 1], runs[1][:, 1])


def test_coloured_noise_with_beta_zero_is_white_noise():
    white = standard_normal(
        (3, 5, 8, 2), dtype=torch.float32, device=torch.device("cpu"), generator=gen(0)
    )
    assert colour_noise(white, 0.0, dim=2) is white
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    assert torch.equal(
        cem(model, reward, state, horizon=4, generator=gen(1), noise_beta=0.0),
        cem(model, reward, state, horizon=4, generator=gen(1)),
    )


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("horizon", [5, 12, 16])
def test_coloured_noise_statistics(beta, horizon):
    """Unit variance at every step; power spectral density ∝ 1/f^β (low frequencies dominate);
    positively correlated neighbouring steps, more so for larger β."""
    white = torch.randn(
        40000, horizon, 2, generator=gen(int(beta * 10) + horizon), dtype=torch.float64
    )
    noise = colour_noise(white, beta, dim=1)
    assert noise.shape == white.shape
    torch.testing.assert_close(
        noise.mean(0), torch.zeros(horizon, 2, dtype=torch.float64), atol=0.05, rtol=0
    )
    torch.testing.assert_close(
        noise.var(0), torch.ones(horizon, 2, dtype=torch.float64), atol=0.05, rtol=0
    )
    power = (torch.fft.rfft(noise, dim=1).abs() ** 2).mean(dim=(0, 2))  # periodogram (bins,)
    freqs = torch.fft.rfftfreq(horizon, dtype=torch.float64)
    expected = (freqs[1:] / freqs[1]) ** (-beta)  # relative to the lowest non-zero frequency
    torch.testing.assert_close(power[1:] / power[1], expected, rtol=0.1, atol=0)
    assert (power[1:-1] > power[2:]).all()  # low frequencies dominate
    lag1 = (noise[:, 1:] * noise[:, :-1]).mean()
    lag1_less = (
        colour_noise(white, beta / 2, dim=1)[:, 1:] * colour_noise(white, beta / 2, dim=1)[:, :-1]
    ).mean()
    assert lag1 > lag1_less > 0.0


def test_population_schedule():
    assert population_sizes(100, 10, 6, 1.5) == [100, 67, 44, 30, 20, 20]
    assert population_sizes(100, 10, 4, 1.0) == [100] * 4  # γ = 1: the paper
    assert population_sizes(10, 8, 3, 2.0) == [10, 10, 10]  # never above J, even when 2K > J
    assert population_sizes(1000, 100, 10, 1.25) == [
        1000,
        800,
        640,
        512,
        410,
        328,
        262,
        210,
        200,
        200,
    ]


def test_population_and_kept_elite_counts_in_the_rollouts():
    model = TargetStub(2)
    model.record = True
    reward = CountingReward(make_reward(2))
    plan = cem(
        model,
        reward,
        make_state(TARGETS),
        horizon=4,
        iterations=5,
        candidates=100,
        top_k=10,
        population_decay=1.5,
        keep_elites=0.3,
        generator=gen(0),
        return_plan=True,
    )
    # Kept elites are not scored again: the rollouts hold the fresh J_i candidates only.
    assert [actions.shape[0] for _, actions in model.calls] == [
        3 * j for j in [100, 67, 44, 30, 20]
    ]
    assert reward.shapes == [(3 * j, 4, 5) for j in [100, 67, 44, 30, 20]]
    assert plan.elites.shape == (3, 3, 4, 2)  # P = ⌊0.3 · 10⌋ = 3, best first
    # Warm-started: the previous step's P elites, shifted, join the first iteration's rollout.
    model.calls.clear()
    cem(
        model,
        reward,
        make_state(TARGETS),
        horizon=4,
        iterations=2,
        candidates=100,
        top_k=10,
        keep_elites=0.3,
        init=plan.shifted(),
        generator=gen(1),
    )
    first = model.calls[0][1].reshape(3, 103, 4, 2)
    assert [actions.shape[0] for _, actions in model.calls] == [3 * 103, 3 * 100]
    assert torch.equal(first[:, 100:, :3], plan.elites[:, :, 1:])  # shifted, env by env


def test_kept_elites_make_the_best_return_monotone():
    # The stub is deterministic: a kept elite keeps its return, so the best never gets worse.
    _, stats = cem(
        TargetStub(2),
        make_reward(2, alternate=True),
        make_state(TARGETS),
        horizon=6,
        iterations=8,
        candidates=30,
        top_k=10,
        keep_elites=0.3,
        generator=gen(3),
        return_stats=True,
    )
    assert (stats["best_return"][1:] >= stats["best_return"][:-1]).all()


def test_mean_candidate_and_execute_best():
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    model.record = True
    plan = cem(
        model,
        reward,
        state,
        horizon=3,
        iterations=3,
        candidates=20,
        top_k=5,
        mean_candidate=True,
        execute_best=True,
        generator=gen(0),
        return_plan=True,
        return_stats=True,
    )
    last = model.calls[-1][1].reshape(3, 20, 3, 2)
    before = cem(
        model,
        reward,
        state,
        horizon=3,
        iterations=2,
        candidates=20,
        top_k=5,
        generator=gen(0),
        return_stats=True,
    )[1]["mean"]
    assert torch.equal(last[:, 0], before)  # μ of iteration 2 is candidate 0 of iteration 3
    # The executed action is the first step of the best candidate of the last iteration.
    returns = (
        reward(model.features(model.imagine(tile_state(state, 20), last.reshape(60, 3, 2))))
        .sum(1)
        .reshape(3, 20)
    )
    best = last[torch.arange(3), returns.argmax(1)]
    assert torch.equal(plan.action, best[:, 0])
    assert torch.equal(plan.stats["best_return"][-1], returns.max(1).values)


def test_momentum_and_initial_std():
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    sizes = dict(horizon=3, candidates=40, top_k=8)
    # One iteration from σ_0: the refit is (1 - α) (elite mean, std) + α (0, σ_0).
    _, plain = cem(
        model,
        reward,
        state,
        iterations=1,
        init_std=0.5,
        generator=gen(0),
        return_stats=True,
        **sizes,
    )
    _, moved = cem(
        model,
        reward,
        state,
        iterations=1,
        init_std=0.5,
        momentum=0.25,
        generator=gen(0),
        return_stats=True,
        **sizes,
    )
    torch.testing.assert_close(moved["mean"], 0.75 * plain["mean"])
    torch.testing.assert_close(moved["std"], 0.75 * plain["std"] + 0.25 * 0.5)
    # σ_0 scales the first candidates (every candidate starts within σ_0-scaled noise of 0).
    model.record = True
    cem(model, reward, state, iterations=1, init_std=1e-3, generator=gen(0), **sizes)
    assert model.calls[-1][1].abs().max() < 0.01


def test_warm_start_starts_from_the_shifted_plan():
    """With a fake model whose optimum a*(-1)^τ moves by one step per environment step, the
    shifted plan is the next step's optimum: one iteration with a tiny σ_0 stays on it."""
    model, reward = TargetStub(2), make_reward(2, alternate=True)
    seen: list[PlanInit | None] = []

    def spy(*args, init=None, **kwargs):
        seen.append(init)
        return cem(*args, init=init, **kwargs)

    warm = WarmStart(
        functools.partial(
            spy, horizon=4, candidates=300, top_k=30, generator=gen(0), keep_elites=0.2
        )
    )
    warm.reset(3)
    state = make_state(TARGETS)
    first = warm(model, reward, state)  # a full, cold plan
    assert seen[0] is None
    plan = warm.previous
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1)
    assert torch.allclose(plan.mean, TARGETS.unsqueeze(1) * signs, atol=0.05)
    assert torch.equal(first, plan.action)
    state.deter[:, -1] = 1.0  # one environment step later: the optimum is -a*, a*, -a*, a*
    second = warm(model, reward, state, iterations=1, init_std=1e-4)
    init = seen[1]
    assert torch.equal(init.mean[:, :3], plan.mean[:, 1:]) and (init.mean[:, 3] == 0).all()
    assert torch.equal(init.elites, plan.elites[:, :, 1:])  # (E, P, H - 1, A), env by env
    assert torch.allclose(second, -TARGETS, atol=0.06)  # started from the shifted mean
    assert torch.allclose(warm.previous.mean[:, -1], torch.zeros(3, 2), atol=0.01)
    cold = cem(
        model,
        reward,
        state,
        horizon=4,
        iterations=1,
        candidates=300,
        top_k=30,
        init_std=1e-4,
        generator=gen(0),
    )
    assert cold.abs().max() < 0.01  # without the warm start it stays at the initial mean 0


def test_warm_start_reset_and_environment_count():
    model, reward = TargetStub(2), make_reward(2)
    warm = WarmStart(functools.partial(cem, horizon=3, candidates=20, top_k=4, generator=gen(0)))
    warm.reset(3)
    warm(model, reward, make_state(TARGETS))
    assert warm.previous is not None and warm.previous.mean.shape == (3, 3, 2)
    with pytest.raises(ValueError, match="E=3.*E=2.*reset"):
        warm(model, reward, make_state(TARGETS[:2]))
    warm.reset(2)
    assert warm.previous is None and warm.initialisation() is None
    assert warm(model, reward, make_state(TARGETS[:2])).shape == (2, 2)
    with pytest.raises(ValueError, match="num_envs"):
        warm.reset(0)
    with pytest.raises(ValueError, match="init"):
        warm(model, reward, make_state(TARGETS[:2]), init=None)
    with pytest.raises(ValueError, match="init= and return_plan="):
        WarmStart(random_shooting)
    with pytest.raises(ValueError, match="not a Plan"):
        WarmStart(lambda *a, **k: torch.zeros(3, 2))(model, reward, make_state(TARGETS))
    # Reset forgets: after reset the plan equals a fresh (cold) one on the same draws.
    a = WarmStart(functools.partial(cem, horizon=3, candidates=20, top_k=4, generator=gen(5)))
    a(model, reward, make_state(TARGETS))
    a.reset(3)
    a.planner.keywords["generator"].manual_seed(9)
    cold = cem(
        model, reward, make_state(TARGETS), horizon=3, candidates=20, top_k=4, generator=gen(9)
    )
    assert torch.equal(a(model, reward, make_state(TARGETS)), cold)


def test_icem_has_the_published_defaults_from_one_place():
    defaults = planner_defaults("icem")
    assert {k: defaults[k] for k in ICEM_OPTIONS} == ICEM_OPTIONS
    assert {k: planner_defaults("cem")[k] for k in ICEM_OPTIONS} == dict(
        noise_beta=0.0,
        keep_elites=0.0,
        population_decay=1.0,
        momentum=0.0,
        init_std=1.0,
        execute_best=False,
        mean_candidate=False,
    )
    assert ICEM_DEFAULTS == dict(
        noise_beta=3.0,
        keep_elites=0.3,
        population_decay=1.25,
        momentum=0.1,
        init_std=0.5,
        execute_best=True,
        mean_candidate=True,
        warm_start=True,
    )
    model, reward, state = TargetStub(2), make_reward(2), make_state(TARGETS)
    a = make_planner("icem", horizon=3, candidates=200, top_k=20)(
        model, reward, state, generator=gen(0)
    )
    b = cem(
        model, reward, state, horizon=3, candidates=200, top_k=20, generator=gen(0), **ICEM_OPTIONS
    )
    assert torch.equal(a, b) and torch.allclose(a, TARGETS, atol=0.05)
    c = icem(
        model, reward, state, horizon=3, candidates=200, top_k=20, generator=gen(0), noise_beta=0.0
    )  # any option can still be given
    assert not torch.equal(c, a)
    assert "icem" in available_planners()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(noise_beta=-0.5), r"noise_beta \(β\) must be a finite number >= 0"),
        (dict(noise_beta=float("nan")), "noise_beta"),
        (dict(keep_elites=1.0), r"keep_elites \(ξ\) must be a number in \[0, 1\)"),
        (dict(keep_elites=-0.1), "keep_elites"),
        (dict(population_decay=0.9), r"population_decay \(γ\) must be a finite number >= 1"),
        (dict(population_decay=float("inf")), "population_decay"),
        (dict(momentum=1.0), r"momentum \(α\) must be a number in \[0, 1\)"),
        (dict(init_std=0.0), r"init_std \(σ_0\) must be a finite number > 0"),
        (dict(execute_best="yes"), "execute_best must be True or False"),
        (dict(mean_candidate=1), "mean_candidate must be True or False"),
        (dict(init=PlanInit(torch.zeros(3, 5, 2))), r"init.mean must have shape"),
        (dict(init=PlanInit(torch.zeros(3, 12, 2), torch.zeros(3, 2, 12, 2))), "init.elites"),
    ],
)
def test_icem_options_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cem(TargetStub(2), make_reward(2), make_state(TARGETS), **kwargs)
    if "init" not in kwargs:
        with pytest.raises(ValueError, match=match):
            make_planner("icem", **kwargs)  # early, before any planning
