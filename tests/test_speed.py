"""The fast paths of planetrl.speed compute the eager function (fresh random inputs each time).

Tolerances: float32 paths match the eager code to 1e-5 (the lean CEM draws the same random
numbers in the same order, so its plan is the eager plan); bfloat16 paths are compared with the
float32 ones on the same random draws: the planned action within 0.15 (actions live in [-1, 1];
CEM's top-K selection amplifies rounding, see docs/benchmarks.md) and the loss within 1% relative.
CUDA-only parts run only where CUDA is available; their CPU counterparts (the same static-buffer
code without capture) are tested everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import types

import pytest
import torch
from conftest import ICEM_OPTIONS, OPTION_SETS

from planetrl import planning, speed
from planetrl.config import Config, ConfigError, PlannerConfig, SpeedConfig
from planetrl.models import WorldModel, make_transition
from planetrl.models.reward import RewardModel
from planetrl.models.state import State
from planetrl.objective import compute_loss
from planetrl.planning import CEMOptions, cem
from planetrl.speed import lean

CUDA = torch.cuda.is_available()
OPTIONS = dict(horizon=5, iterations=3, candidates=64, top_k=8)
PLANNER = PlannerConfig(**OPTIONS)
OFF = SpeedConfig(compile=False, bf16=False, channels_last=False, cuda_graphs=False)


def make(planner_cfg, speed_cfg, device="cpu", generator=None):
    """The configured planner with the fast paths, as the training loop builds it: planning
    builds it, speed wraps it."""
    planner = planning.planner_from_config(planner_cfg, generator=generator)
    return speed.accelerate(planner, speed_cfg, device)


def models(seed: int, action_size: int = 3, device: str = "cpu", kind: str = "rssm"):
    torch.manual_seed(seed)
    transition = make_transition(
        kind, action_size, 64, deter_size=40, stoch_size=8, hidden_size=32
    ).to(device)
    reward = RewardModel(transition.feature_size, 32, 2).to(device)
    return transition.eval(), reward.eval()


def belief(transition, num_envs: int, seed: int, device: str = "cpu") -> State:
    g = torch.Generator().manual_seed(seed)
    state = transition.initial(num_envs).map(lambda x: torch.randn(x.shape, generator=g))
    state = State(state.deter, state.stoch, state.mean, state.std.abs() + 0.1)
    return state.to(device)


def plan(planner, transition, reward, state, seed: int, device: str = "cpu"):
    """Run ``planner`` with the default generators seeded (the prior noise) and return it."""
    torch.manual_seed(seed)
    if device != "cpu":
        torch.cuda.manual_seed(seed)
    return planner(transition, reward, state)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_lean_cem_is_eager_cem_float32(num_envs):
    transition, reward = models(num_envs)
    state = belief(transition, num_envs, seed=10 + num_envs)
    eager = functools.partial(cem, generator=torch.Generator().manual_seed(5), **OPTIONS)
    fast = functools.partial(lean.lean_cem, generator=torch.Generator().manual_seed(5), **OPTIONS)
    a = plan(eager, transition, reward, state, seed=7)
    b = plan(fast, transition, reward, state, seed=7)
    assert b.shape == (num_envs, 3)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_rollout_variants_agree():
    transition, reward = models(1)
    prior = transition.prior_weights().cast()
    rew = lean.reward_layers(reward, None)
    N, H = 50, 4
    args = (
        torch.randn(N, 40),
        torch.randn(N, 8),
        torch.randn(N, H, 32),
        torch.randn(H, N, 8),
        prior,
        rew,
    )
    fused = lean.rollout_returns(*args, gru_cell=True)
    gates = lean.rollout_returns(*args, gru_cell=False)
    torch.testing.assert_close(gates, fused, atol=1e-4, rtol=1e-5)


def test_the_lean_rollout_and_img_step_share_the_rssm_prior_step():
    """The fast rollout steps with the RSSM's own prior step: with the same noise, its returns
    are those of the eager ``imagine`` + reward model (no weights read by name in speed/)."""
    transition, reward = models(2)
    N, H = 6, 4
    state = belief(transition, N, seed=1)
    actions = torch.rand(N, H, 3) * 2 - 1
    torch.manual_seed(3)
    priors = transition.imagine(state, actions)
    expected = reward(transition.features(priors)).sum(1)
    torch.manual_seed(3)
    eps = torch.stack([torch.randn(N, 8) for _ in range(H)])
    for gru_cell in (True, False):
        returns = lean.rollout_returns(
            state.deter,
            state.stoch,
            transition.prepare_actions(actions),
            eps,
            transition.prior_weights().cast(),
            lean.reward_layers(reward, None),
            gru_cell=gru_cell,
        )
        torch.testing.assert_close(returns, expected, atol=1e-5, rtol=1e-5)


def test_flags_off_give_the_eager_planner():
    transition, reward = models(2)
    state = belief(transition, 2, seed=3)
    # cuda_graphs is ignored on CPU; channels_last does not touch the planner
    for cfg in (OFF, SpeedConfig(compile="off", bf16="off", channels_last="on", cuda_graphs="on")):
        planner = make(PLANNER, cfg, "cpu", torch.Generator().manual_seed(1))
        assert isinstance(planner, planning.ConfiguredPlanner) and planner.function is cem
        reference = functools.partial(cem, generator=torch.Generator().manual_seed(1), **OPTIONS)
        torch.testing.assert_close(
            plan(planner, transition, reward, state, 4),
            plan(reference, transition, reward, state, 4),
            atol=0,
            rtol=0,
        )
    random_cfg = PlannerConfig(name="random", horizon=5, candidates=64)
    planner = make(random_cfg, SpeedConfig(bf16=True), "cpu")
    assert isinstance(planner, planning.ConfiguredPlanner) and planner.name == "random"


def test_bf16_planner_close_to_float32():
    transition, reward = models(3)
    state = belief(transition, 2, seed=5)
    fp32 = make(
        PLANNER,
        SpeedConfig(bf16=False, compile=False, cuda_graphs=True),
        "cpu",
        torch.Generator().manual_seed(2),
    )
    assert isinstance(fp32, planning.ConfiguredPlanner)  # cuda_graphs alone: nothing on CPU
    bf16 = make(
        PLANNER, SpeedConfig(bf16=True, cuda_graphs=False), "cpu", torch.Generator().manual_seed(2)
    )
    a = plan(fp32, transition, reward, state, 6)
    b = plan(bf16, transition, reward, state, 6)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert (b - a).abs().max() < 0.15


@pytest.mark.parametrize("kind", ["ssm", "gru"])
def test_unsupported_models_fall_back_to_eager(kind):
    transition, reward = models(4, kind=kind)
    assert not lean.supports(transition, reward)
    state = belief(transition, 2, seed=8)
    planner = make(PLANNER, SpeedConfig(bf16=True), "cpu", torch.Generator().manual_seed(3))
    reference = functools.partial(cem, generator=torch.Generator().manual_seed(3), **OPTIONS)
    # The fallback is the eager CEM under bf16 autocast, its action cast back to float32: the
    # same function exactly (a tolerance against the float32 plan is no test: bf16 rounding can
    # change the elites, and it did on a Xeon with AMX, by 0.8).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = plan(reference, transition, reward, state, 9).float()
    b = plan(planner, transition, reward, state, 9)
    assert b.shape == a.shape and b.dtype == torch.float32
    torch.testing.assert_close(b, a, atol=0, rtol=0)


def test_static_planner_without_graphs_is_eager():
    """The CUDA-graph planner's static-buffer code, minus the capture, on CPU."""
    transition, reward = models(5)
    fast = functools.partial(lean.lean_cem, generator=torch.Generator().manual_seed(4), **OPTIONS)
    eager = functools.partial(cem, generator=torch.Generator().manual_seed(4), **OPTIONS)
    static = speed.StaticPlanner(fast, eager, OPTIONS, generator=None, use_graphs=False)
    for num_envs in (1, 3, 1):  # a new E builds new buffers; the old ones are reused
        state = belief(transition, num_envs, seed=20 + num_envs)
        torch.testing.assert_close(
            plan(static, transition, reward, state, 11),
            plan(eager, transition, reward, state, 11),
            atol=1e-5,
            rtol=0,
        )
    assert len(static._entries) == 2


def _batch(B: int, L: int, A: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, L, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, L // 2] = True
    return types.SimpleNamespace(
        image=torch.rand(B, L, 3, 64, 64, generator=g) - 0.5,
        action=torch.rand(B, L, A, generator=g) * 2 - 1,
        reward=torch.randn(B, L, generator=g),
        is_first=is_first,
    )


def _loss_and_grads(model, batch, seed):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    loss, _, _ = compute_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "cfg, tol",
    [
        (SpeedConfig(channels_last=True, bf16=False, cuda_graphs=False), 1e-5),
        (SpeedConfig(bf16=True, channels_last=False, cuda_graphs=False), 1e-2),
        (SpeedConfig(bf16=True, channels_last=True, cuda_graphs=False), 1e-2),
    ],
)
def test_update_fast_paths_match_eager(cfg, tol):
    torch.manual_seed(0)
    reference = WorldModel(
        2,
        cnn_depth=4,
        embed_size=128,
        deter_size=20,
        stoch_size=6,
        hidden_size=16,
        reward_hidden=16,
    )
    fast = WorldModel(
        2,
        cnn_depth=4,
        embed_size=128,
        deter_size=20,
        stoch_size=6,
        hidden_size=16,
        reward_hidden=16,
    )
    fast.load_state_dict(reference.state_dict())
    params = [id(p) for p in fast.parameters()]
    assert speed.optimise_world_model(fast, cfg, "cpu") is fast
    assert [id(p) for p in fast.parameters()] == params  # the optimiser keeps working
    assert list(fast.state_dict()) == list(reference.state_dict())
    batch = _batch(3, 6, 2, seed=1)
    loss_ref, grads_ref = _loss_and_grads(reference, batch, seed=2)
    loss_fast, grads_fast = _loss_and_grads(fast, batch, seed=2)
    assert abs(loss_fast - loss_ref) <= tol * abs(loss_ref)
    # Gradients: relative to each tensor's norm (bf16: the encoder/decoder ones to ~5%).
    for name, g in grads_ref.items():
        err = (grads_fast[name] - g).norm() / g.norm().clamp_min(1e-12)
        assert err < (1e-4 if tol < 1e-4 else 0.1), (name, float(err))


def test_optimise_all_off_is_untouched():
    torch.manual_seed(0)
    model = WorldModel(
        2,
        cnn_depth=4,
        embed_size=128,
        deter_size=20,
        stoch_size=6,
        hidden_size=16,
        reward_hidden=16,
    )
    speed.optimise_world_model(model, OFF, "cpu")
    assert model.encoder.autocast_dtype is None and not model.encoder.channels_last
    assert model.decoder.autocast_dtype is None and not model.decoder.channels_last


# ------------------------------------------------------------------------------------------ CUDA
cuda_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")


@cuda_only
@pytest.mark.parametrize("num_envs", [1, 4])
def test_cuda_lean_cem_float32_is_eager(num_envs):
    transition, reward = models(6, device="cuda")
    state = belief(transition, num_envs, seed=1, device="cuda")
    gen = lambda: torch.Generator(device="cuda").manual_seed(3)  # noqa: E731
    a = plan(
        functools.partial(cem, generator=gen(), **OPTIONS), transition, reward, state, 2, "cuda"
    )
    b = plan(
        functools.partial(lean.lean_cem, generator=gen(), **OPTIONS),
        transition,
        reward,
        state,
        2,
        "cuda",
    )
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def _generator_of(planner) -> torch.Generator:
    if isinstance(planner, speed.StaticPlanner):
        return planner.generator
    if isinstance(planner, planning.ConfiguredPlanner):
        return planner.options["generator"]
    return planner.fast.keywords["generator"]


def _assert_same_distribution(graphed, plain, transition, reward, state, calls=200):
    """The first actions of ``calls`` plans of each: every element's mean within 5 standard
    errors of the other's, and its spread within a factor 1.5."""
    xs = torch.stack([graphed(transition, reward, state) for _ in range(calls)]).flatten(1)
    ys = torch.stack([plain(transition, reward, state) for _ in range(calls)]).flatten(1)
    z = (xs.mean(0) - ys.mean(0)) / ((xs.var(0) + ys.var(0)) / calls).sqrt().clamp_min(1e-6)
    assert z.abs().max() < 5, (xs.mean(0), ys.mean(0))
    ratio = xs.std(0) / ys.std(0).clamp_min(1e-6)
    assert ((ratio > 1 / 1.5) & (ratio < 1.5)).all(), ratio


@cuda_only
@pytest.mark.parametrize("bf16", [False, True])
def test_cuda_graph_planner_draws_like_uncaptured(bf16):
    """A replayed graph draws fresh noise at every call, reproducibly after reseeding, and its
    plans follow the uncaptured planner's distribution. Not the same draws: on an H200 (torch
    2.11, CUDA 13) the graph's philox offsets do not line up with the eager draws', so the same
    seeds give other candidates (benchmarks/cuda_graph_rng.py measured both)."""
    transition, reward = models(7, device="cuda")
    cfg = SpeedConfig(bf16=bf16, cuda_graphs=True)
    graphed = make(PLANNER, cfg, "cuda", torch.Generator(device="cuda").manual_seed(1))
    assert isinstance(graphed, speed.StaticPlanner)
    plain = make(
        PLANNER,
        SpeedConfig(bf16=bf16, cuda_graphs=False),
        "cuda",
        torch.Generator(device="cuda").manual_seed(1),
    )
    for num_envs in (1, 3):
        state = belief(transition, num_envs, seed=num_envs, device="cuda")
        first = plan(graphed, transition, reward, state, 5, "cuda")  # builds + captures
        assert first.shape == (num_envs, 3) and torch.isfinite(first).all()
        # Fresh noise at every replay: another plan from the same belief differs.
        assert not torch.equal(graphed(transition, reward, state), first)
        # Reseeding both generators reproduces a replay exactly.
        _generator_of(graphed).manual_seed(9)
        a = plan(graphed, transition, reward, state, 5, "cuda")
        _generator_of(graphed).manual_seed(9)
        torch.testing.assert_close(
            plan(graphed, transition, reward, state, 5, "cuda"), a, atol=0, rtol=0
        )
        _assert_same_distribution(graphed, plain, transition, reward, state)
    # The graph reads the live parameters: after an in-place update it still plans like eager.
    with torch.no_grad():
        reward.net[-1].weight.mul_(-1.0)
    state = belief(transition, 1, seed=1, device="cuda")
    _assert_same_distribution(graphed, plain, transition, reward, state)


@cuda_only
def test_cuda_update_bf16_close():
    torch.manual_seed(0)
    reference = WorldModel(2, cnn_depth=8).cuda()
    fast = WorldModel(2, cnn_depth=8).cuda()
    fast.load_state_dict(reference.state_dict())
    speed.optimise_world_model(fast, SpeedConfig(bf16=True, channels_last=True), "cuda")
    batch = _batch(4, 8, 2, seed=3)
    batch = types.SimpleNamespace(**{k: v.cuda() for k, v in vars(batch).items()})
    loss_ref, _ = _loss_and_grads(reference, batch, seed=1)
    loss_fast, _ = _loss_and_grads(fast, batch, seed=1)
    assert abs(loss_fast - loss_ref) <= 1e-2 * abs(loss_ref)


@pytest.mark.slow  # torch.compile takes ~20-45 s on 2 cores
def test_compiled_planner_matches_eager():
    """``compile``: the torch.compile'd rollout gives the eager plan (float32, same draws)."""
    transition, reward = models(8)
    state = belief(transition, 2, seed=12)
    compiled = make(
        PLANNER,
        SpeedConfig(compile=True, cuda_graphs=False),
        "cpu",
        torch.Generator().manual_seed(6),
    )
    reference = functools.partial(cem, generator=torch.Generator().manual_seed(6), **OPTIONS)
    torch.testing.assert_close(
        plan(compiled, transition, reward, state, 13),
        plan(reference, transition, reward, state, 13),
        atol=1e-4,
        rtol=0,
    )


# ------------------------------------------------------------------- iCEM options, warm start


def flags(**on: bool):
    """Speed flags, all off unless given (decided already: no hardware detection)."""
    values = {**dict(compile=False, bf16=False, channels_last=False, cuda_graphs=False), **on}
    if hasattr(speed, "SpeedDecision"):
        return speed.SpeedDecision(**values)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize("warm", [False, True])
def test_lean_cem_is_eager_cem_float32_for_every_option(options, warm):
    """Same loop, same draws: equal plans, also over warm-started steps (kept elites shifted)."""
    transition, reward = models(11)
    actions = {}
    for name, planner in (
        ("eager", functools.partial(cem, **options)),
        ("lean", functools.partial(lean.lean_cem, options=CEMOptions(**options))),
    ):
        planner = functools.partial(planner, generator=torch.Generator().manual_seed(5), **OPTIONS)
        planner = speed.WarmStart(planner) if warm else planner
        actions[name] = [
            plan(planner, transition, reward, belief(transition, 3, seed=30 + t), seed=40 + t)
            for t in range(3)
        ]
    for a, b in zip(actions["eager"], actions["lean"]):
        assert b.shape == (3, 3)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_lean_cem_returns_the_plan_and_stats_as_eager():
    transition, reward = models(12)
    state = belief(transition, 2, seed=4)
    results = []
    for fn in (
        functools.partial(cem, **ICEM_OPTIONS),
        functools.partial(lean.lean_cem, options=CEMOptions(**ICEM_OPTIONS)),
    ):
        torch.manual_seed(1)
        results.append(
            fn(
                transition,
                reward,
                state,
                generator=torch.Generator().manual_seed(2),
                return_plan=True,
                return_stats=True,
                **OPTIONS,
            )
        )
    eager, fast = results
    for field in ("action", "mean", "std", "elites"):
        torch.testing.assert_close(getattr(fast, field), getattr(eager, field), atol=1e-5, rtol=0)
    assert fast.elites.shape == (2, 2, 5, 3)  # ⌊0.3 · 8⌋ = 2 kept elites
    assert set(fast.stats) == set(eager.stats)


def test_predrawn_noise_needs_a_constant_population():
    transition, reward = models(13)
    state = belief(transition, 2, seed=1)
    noise = torch.randn(3, 2, 64, 5, 3)
    action = lean.lean_cem(transition, reward, state, noise=noise, **OPTIONS)
    assert action.shape == (2, 3)
    with pytest.raises(ValueError, match="constant population"):
        lean.lean_cem(
            transition,
            reward,
            state,
            noise=noise,
            options=CEMOptions(population_decay=1.5),
            **OPTIONS,
        )


def test_config_passes_the_icem_options_to_eager_and_lean_planners():
    # icem: iCEM's defaults (warm start on), one option overridden by the config.
    cfg = PlannerConfig(name="icem", noise_beta=1.0, **OPTIONS)
    eager = make(cfg, flags(), "cpu", torch.Generator().manual_seed(1))
    assert isinstance(eager, speed.WarmStart)
    assert eager.planner.name == "icem"
    assert eager.planner.options == dict(
        generator=eager.planner.options["generator"], noise_beta=1.0, **OPTIONS
    )
    # the resolved options: iCEM's defaults under the config's
    assert eager.planner.resolved["keep_elites"] == 0.3
    assert eager.planner.resolved["noise_beta"] == 1.0
    fast = make(cfg, flags(bf16=True), "cpu", torch.Generator().manual_seed(1))
    assert isinstance(fast, speed.WarmStart) and isinstance(fast.planner, speed._Fallback)
    keywords = fast.planner.fast.keywords
    assert keywords["options"] == CEMOptions(**{**ICEM_OPTIONS, "noise_beta": 1.0})
    assert keywords["dtype"] is torch.bfloat16
    assert fast.planner.eager.name == "icem"  # speed wrapped what planning built
    # The lean planner of the config in float32 computes the eager one's function.
    transition, reward = models(14)
    fp32 = speed.WarmStart(
        functools.partial(
            lean.lean_cem,
            **{**keywords, "dtype": None, "generator": torch.Generator().manual_seed(1)},
        )
    )
    for t in range(2):
        state = belief(transition, 2, seed=t)
        torch.testing.assert_close(
            plan(fp32, transition, reward, state, 7 + t),
            plan(eager, transition, reward, state, 7 + t),
            atol=1e-5,
            rtol=0,
        )
    # bf16 lean planner under the warm start: runs, close to float32 in shape and bounds.
    a = plan(fast, transition, reward, belief(transition, 2, seed=3), 9)
    assert a.shape == (2, 3) and a.dtype == torch.float32 and (a.abs() <= 1).all()
    # cem: paper CEM unless the config turns an option on; warm start only when asked for.
    plain = make(PlannerConfig(**OPTIONS), flags(), "cpu")
    assert isinstance(plain, planning.ConfiguredPlanner) and plain.function is cem
    assert set(plain.options) == {"generator", *OPTIONS}
    warm = make(PlannerConfig(warm_start=True, keep_elites=0.25, **OPTIONS), flags(), "cpu")
    assert isinstance(warm, speed.WarmStart) and warm.planner.options["keep_elites"] == 0.25
    cold_icem = make(PlannerConfig(name="icem", warm_start=False, **OPTIONS), flags(), "cpu")
    assert isinstance(cold_icem, planning.ConfiguredPlanner)


def test_speed_wraps_the_planner_planning_built():
    """speed builds no planner: it returns planning's planner, or wraps it (the eager fallback is
    the very object planning built, the warm start stays around the fast planner)."""
    eager = planning.planner_from_config(PLANNER, generator=torch.Generator().manual_seed(0))
    assert speed.accelerate(eager, flags(), "cpu") is eager
    fast = speed.accelerate(eager, flags(bf16=True), "cpu")
    assert isinstance(fast, speed._Fallback) and fast.eager is eager
    assert fast.fast.keywords["generator"] is eager.options["generator"]
    warm = planning.planner_from_config(PlannerConfig(name="icem", **OPTIONS))
    fast = speed.accelerate(warm, flags(bf16=True), "cpu")
    assert isinstance(fast, speed.WarmStart) and fast.planner.eager is warm.planner
    shooting = planning.planner_from_config(PlannerConfig(name="random", horizon=5))
    assert speed.accelerate(shooting, flags(bf16=True, compile=True), "cpu") is shooting
    # A planner with per-call options the lean one does not take stays eager.
    stats = functools.partial(cem, return_stats=True, **OPTIONS)
    assert speed.accelerate(stats, flags(bf16=True), "cpu") is stats


def test_cuda_graphs_only_for_the_plain_cem():
    """Built, not run (no CUDA needed): the graph planner for the paper's CEM only."""
    on = flags(cuda_graphs=True)
    assert isinstance(make(PLANNER, on, "cuda"), speed.StaticPlanner)
    explicit = PlannerConfig(noise_beta=0.0, keep_elites=0.0, warm_start=False, **OPTIONS)
    assert isinstance(make(explicit, on, "cuda"), speed.StaticPlanner)
    for cfg in (
        PlannerConfig(name="icem", **OPTIONS),
        PlannerConfig(noise_beta=1.0, **OPTIONS),
        PlannerConfig(warm_start=True, **OPTIONS),
    ):
        planner = make(cfg, on, "cuda")
        inner = planner.planner if isinstance(planner, speed.WarmStart) else planner
        assert isinstance(inner, speed._Fallback), cfg


def test_static_planner_reset_keeps_its_graphs():
    transition, reward = models(15)
    fast = functools.partial(lean.lean_cem, **OPTIONS)
    static = speed.StaticPlanner(fast, functools.partial(cem, **OPTIONS), OPTIONS, use_graphs=False)
    static(transition, reward, belief(transition, 2, seed=0))
    static.reset(2)  # Agent.reset: a new episode, nothing to forget
    assert len(static._entries) == 1
    static.clear()
    assert len(static._entries) == 0


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("noise_beta", -1.0, r"planner.noise_beta \(β\) must be a finite number >= 0"),
        ("keep_elites", 1.0, r"planner.keep_elites \(ξ\) must be a number in \[0, 1\)"),
        ("population_decay", 0.5, r"planner.population_decay \(γ\) must be"),
        ("momentum", float("nan"), r"planner.momentum \(α\)"),
        ("init_std", 0.0, r"planner.init_std \(σ_0\) must be a finite number > 0"),
        ("execute_best", "yes", "planner.execute_best must be True or False"),
        ("warm_start", 1, "planner.warm_start must be True, False or None"),
    ],
)
def test_config_rejects_bad_planner_options(field, value, match):
    config = Config()
    config.planner = dataclasses.replace(config.planner, name="icem", **{field: value})
    with pytest.raises(ConfigError, match=match):
        config.validate()


def test_config_planner_options_only_for_cem_and_icem():
    config = Config()
    config.planner = PlannerConfig(name="random", noise_beta=2.0)
    with pytest.raises(ConfigError, match="planner.noise_beta applies to the cem and icem"):
        config.validate()
    for name in ("cem", "icem"):
        config.planner = PlannerConfig(name=name, noise_beta=2.0, warm_start=True)
        config.validate()
