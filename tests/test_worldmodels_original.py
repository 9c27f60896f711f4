"""World Models as the original does it (hardmaru/WorldModelsExperiments, ``carracing/``):
CarRacing's action mapping, the data-collection policies, the action M is stepped on, the env
seed streams, fitness seeds per generation, the best-evaluated controller kept and re-tested."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_worldmodels import tiny_config

from planetrl.driver import brownian_policy, make_pool, uniform_policy
from planetrl.run import directory as rundir
from planetrl.run.checkpoint import load_checkpoint
from planetrl.run.logger import read_metrics
from planetrl.worldmodels.config import action_map_of, preset
from planetrl.worldmodels.models import MDNRNN, VAE, LinearController, carracing_actions
from planetrl.worldmodels.rollout import RandomControllerPolicy, WorldModelsPolicy
from planetrl.worldmodels.trainer import build_models, evaluate_controller, fitness_seeds, train


# --------------------------------------------------------------------------- D1: actions
def _original_get_action(a: np.ndarray) -> np.ndarray:
    """carracing/model.py: action = tanh(...); action[1] = (action[1]+1)/2;
    action[2] = clip(action[2], 0, 1)."""
    out = a.copy()
    out[..., 1] = (out[..., 1] + 1.0) / 2.0
    out[..., 2] = np.clip(out[..., 2], 0.0, 1.0)
    return out


def test_carracing_actions_reach_the_env_as_the_original_maps_them():
    from planetrl.envs.gym import make_gym_pixel_env

    env = make_gym_pixel_env("CarRacing-v3", seed=0)
    try:
        rescale = env.env  # GymPixelEnv(RescaleAction(CarRacing)): [-1, 1] -> the env's bounds
        assert np.allclose(rescale.env.action_space.low, [-1, 0, 0])
        values = (-1.0, -0.3, 0.0, 0.4, 1.0)
        grid = np.array([[s, g, b] for s in values for g in values for b in values])
        ours = carracing_actions(torch.tensor(grid, dtype=torch.float32)).numpy()
        native = np.stack([rescale.action(a) for a in ours])
        assert np.allclose(native, _original_get_action(grid), atol=1e-6)
    finally:
        env.close()
    # θ = 0: straight ahead at half gas, no brake (the affine map alone would brake at 0.5)
    controller = LinearController(4, 8, 3, "carracing")
    w = controller.weights(np.zeros(controller.num_params))
    a = controller.act(w, torch.zeros(1, 4), torch.zeros(1, 8)).numpy()[0]
    assert np.allclose((a + 1) / 2 * np.array([2, 1, 1]) + np.array([-1, 0, 0]), [0, 0.5, 0])


def test_the_action_map_is_resolved_from_the_task_and_checked():
    cfg = preset("paper")
    for task, expected in [
        ("gym:CarRacing-v3", "carracing"),
        ("gym:gymnasium.envs.box2d:CarRacing-v3", "carracing"),
        ("gym:LunarLanderContinuous-v3", "tanh"),
        ("dmc:cartpole-swingup", "tanh"),
    ]:
        cfg.task = task
        assert action_map_of(cfg) == expected, task
    cfg.controller.action_map = "tanh"
    cfg.task = "gym:CarRacing-v3"
    assert action_map_of(cfg) == "tanh"
    with pytest.raises(ValueError, match="3 actions"):
        LinearController(4, 8, 1, "carracing")
    with pytest.raises(ValueError, match="expected one of"):
        LinearController(4, 8, 3, "sigmoid")


# ------------------------------------------------------------------------ D3: collection
def _small_parts(action_size: int = 3, action_map: str = "carracing"):
    torch.manual_seed(0)
    vae, mdn = VAE(z_size=4, depth=4), MDNRNN(4, action_size, hidden_size=8, mixtures=2)
    return vae, mdn, LinearController(4, 8, action_size, action_map)


def _frames(n: int, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (steps, n, 64, 64, 3), dtype=np.uint8)


def _roll(make, seeds, frames):
    act, reset_fn = make(seeds)
    if reset_fn is not None:
        reset_fn(len(seeds))
    return np.stack([act(f[: len(seeds)]) for f in frames])


@pytest.mark.parametrize("policy", ["uniform", "brownian", "random-controller"])
def test_a_collection_episode_depends_on_its_seed_only(policy):
    vae, mdn, controller = _small_parts()

    def make(seeds):
        if policy == "uniform":
            return uniform_policy(3, seeds), None
        if policy == "brownian":
            return brownian_policy(3, seeds, 0.02), None
        p = RandomControllerPolicy(vae, mdn, controller, seeds, 0.01)
        return p.act, p.reset

    before = [p.detach().clone() for p in [*vae.parameters(), *mdn.parameters()]]
    frames = _frames(2, 12)
    both = _roll(make, [11, 12], frames)
    # episode 12 alone, seeing the frames it saw as row 1 of the batch
    alone = _roll(make, [12], frames[:, 1:])
    assert np.array_equal(both[:, 1], alone[:, 0])
    assert not np.array_equal(both[:, 0], both[:, 1])
    assert np.all(np.abs(both) <= 1) and np.all(np.isfinite(both))
    if policy == "random-controller":  # the run's V and M only lend their architecture
        after = list(vae.parameters()) + list(mdn.parameters())
        assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_brownian_steps_are_sqrt_dt_gaussian_until_clipped():
    act = brownian_policy(2, list(range(200)), dt=0.02)
    obs = np.zeros((200, 1))
    a0, a1 = act(obs), act(obs)
    assert np.all((a0 >= -1) & (a0 <= 1))
    inside = (np.abs(a1) < 1).all(axis=1)
    steps = (a1 - a0)[inside]
    assert steps.std() == pytest.approx(np.sqrt(0.02), rel=0.15)
    assert abs(steps.mean()) < 0.03
    with pytest.raises(ValueError, match="dt must be > 0"):
        brownian_policy(2, [0], dt=0.0)


def test_random_controllers_act_as_the_originals_do():
    """Per episode, Cauchy weights of scale s ~ U(0, 0.01): steering and gas near their
    centres in most episodes, the brake released (native 0) on about half the steps or more,
    every action finite even when a huge draw overflows V's std."""
    vae, mdn, controller = _small_parts()
    policy = RandomControllerPolicy(vae, mdn, controller, list(range(40)), 0.01)
    policy.reset(40)
    actions = np.stack([policy.act(f) for f in _frames(40, 20)])  # (T, E, 3)
    assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= 1)
    brake_native = (actions[..., 2] + 1) / 2
    assert (brake_native == 0).mean() >= 0.4
    huge = RandomControllerPolicy(vae, mdn, controller, [0, 1], 1e6)
    huge.reset(2)
    assert np.all(np.isfinite(huge.act(_frames(2, 1)[0])))


# ------------------------------------------------------------------- D4: what M is fed
def test_m_is_stepped_on_the_noisy_action_the_env_is_given():
    vae, mdn, controller = _small_parts(2, "tanh")
    theta = torch.randn(controller.num_params, generator=torch.Generator().manual_seed(1))
    weights = controller.weights(theta)
    policy = WorldModelsPolicy(
        vae, mdn, controller, weights, generator=torch.Generator().manual_seed(5), explore_noise=0.5
    )
    policy.reset(3)
    obs = _frames(3, 1)[0]
    action = policy.act(obs)
    # by hand: the same draws in the same order (z, then the noise)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z = vae.encode(VAE.preprocess(torch.as_tensor(obs))).sample(g)
        w = type(weights)(weights.weight.expand(3, -1, -1), weights.bias.expand(3, -1))
        clean = controller.act(w, z, mdn.initial(3).h)
        noisy = (clean + 0.5 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
        _, state = mdn.step(z, noisy, mdn.initial(3))
    assert np.allclose(action, noisy.numpy(), atol=1e-6)
    assert not np.allclose(action, clean.numpy())
    assert policy.state is not None and torch.allclose(policy.state.h, state.h, atol=1e-6)


# ------------------------------------------------------------------------ D5, D7: seeds
class _Seed:
    def __init__(self, seed: int) -> None:
        self.seed = seed


@pytest.mark.parametrize("run_seed", [0, 9, 10, 11, 100])
def test_a_runs_env_seed_streams_are_disjoint(run_seed):
    cfg = _Seed(run_seed)
    collect = np.array([rundir.collect_seed(cfg, i) for i in range(0, 120_000)])
    start = rundir.eval_seed(cfg)
    evaluation = np.arange(start, start + 1024)
    retest = np.arange(rundir.retest_seed(cfg), rundir.retest_seed(cfg) + 1000)
    low, high = rundir.fitness_seed(cfg, 0), rundir.fitness_seed(cfg, 921_599)  # 1,800 × 512
    assert len(np.unique(collect)) == len(collect)
    assert not np.isin(collect, evaluation).any()
    assert not np.isin(retest, np.concatenate([collect, evaluation])).any()
    others = np.concatenate([collect, evaluation, retest])
    assert not ((others >= low) & (others <= high)).any()
    assert retest.max() < 2**32
    # unchanged wherever no evaluation seed was hit: older runs resume with the same episodes
    assert rundir.collect_seed(cfg, 7) == run_seed * 100_003 + 7


def test_collection_no_longer_replays_evaluation_episodes_at_seed_10():
    cfg = _Seed(10)
    assert 10 * 100_003 + 9_970 == rundir.eval_seed(cfg)  # the old formula's collision
    assert rundir.collect_seed(cfg, 9_970) != rundir.eval_seed(cfg)
    with pytest.raises(Exception, match="too large"):
        rundir.fitness_seed(_Seed(3000), 0)


def test_fitness_seeds_are_fresh_every_generation_and_shared_in_pairs():
    cfg = preset("paper")
    first, second = fitness_seeds(cfg, 1, 64), fitness_seeds(cfg, 2, 64)
    assert first.shape == (64, 16)
    assert np.array_equal(first[:32], first[32:])  # candidates i and i + 32 share their tracks
    assert len(np.unique(first)) == 32 * 16  # otherwise all different
    assert not np.isin(second, first).any()
    odd = fitness_seeds(cfg, 1, 5)
    assert np.array_equal(odd[:2], odd[3:]) and not np.isin(odd[2], odd[[0, 1]]).any()


# ------------------------------------------------------------ D6: the controller kept
def test_the_best_evaluated_mean_is_kept_and_re_tested_on_fresh_seeds(tmp_path):
    config = tiny_config(tmp_path, "dream", generations=5)
    config.eval.every, config.eval.episodes, config.eval.retest_episodes = 1, 2, 4
    train(config, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    evals = [r for r in rows if "eval/return" in r and not r.get("eval/retest")]
    retest = [r for r in rows if r.get("eval/retest")]
    assert [r["eval/generation"] for r in evals] == [1, 2, 3, 4, 5]
    best = max(evals, key=lambda r: r["eval/return"])  # the first of equals is kept
    kept = next(r for r in rows if "es/kept_generation" in r)
    assert kept["es/kept_generation"] == best["eval/generation"]
    assert len(retest) == 1 and rows.index(retest[0]) == max(
        i for i, r in enumerate(rows) if "eval/return" in r
    )
    assert retest[0]["eval/episodes"] == 4
    assert retest[0]["eval/generation"] == best["eval/generation"]

    # the checkpoint's controller is the one evaluated best: same return on the eval seeds
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["run"]["stage"] == "done"
    vae, mdn, controller = build_models(config, 1, torch.device("cpu"))
    vae.load_state_dict(payload["vae"])
    mdn.load_state_dict(payload["mdn"])
    vae.eval()
    mdn.eval()
    with make_pool(config, 2, parallel=False) as pool:
        returns, _ = evaluate_controller(
            config, vae, mdn, controller, payload["run"]["controller"], pool, episodes=2
        )
        assert np.mean(returns) == pytest.approx(best["eval/return"])
    with make_pool(config, 4, parallel=False) as pool:  # the re-test's batch of 4
        fresh, _ = evaluate_controller(
            config,
            vae,
            mdn,
            controller,
            payload["run"]["controller"],
            pool,
            episodes=4,
            seed=rundir.retest_seed(config),
        )
    assert np.mean(fresh) == pytest.approx(retest[0]["eval/return"])


# ------------------------------------------------------------- D2: bounded memory
@pytest.mark.parametrize("memory_steps", [0, 50, 7])
def test_v_sees_every_frame_once_per_epoch_in_blocks_within_memory(memory_steps):
    from planetrl.worldmodels.data import FrameSchedule

    lengths = [21, 30, 5, 44, 21, 12]
    schedule = FrameSchedule(lengths, memory_steps, batch_size=8, key=(3, 0))
    starts = np.cumsum([0, *lengths])
    for epoch in range(3):
        seen: list[int] = []
        first = sum(schedule.batches_per_epoch(e) for e in range(epoch))
        for update in range(first, first + schedule.batches_per_epoch(epoch)):
            (e, number), files, frames = schedule.batch(update)
            assert e == epoch
            block = sum(lengths[p] for p in files)
            assert len(files) == 1 or block <= (memory_steps or sum(lengths))
            assert len(frames) == min(8, block) and frames.max() < block
            offsets = np.cumsum([0, *(lengths[p] for p in files)])
            which = np.searchsorted(offsets, frames, side="right") - 1
            seen += [int(starts[files[w]] + f - offsets[w]) for w, f in zip(which, frames)]
        # every frame at most once; all but each block's remainder (< one batch) seen
        assert len(seen) == len(set(seen))
        blocks = schedule.blocks(epoch)
        assert sum(lengths) - len(seen) < 8 * len(blocks)
    again = FrameSchedule(lengths, memory_steps, batch_size=8, key=(3, 0))
    last = sum(schedule.batches_per_epoch(e) for e in range(3)) - 1
    assert np.array_equal(again.batch(last)[2], schedule.batch(last)[2])  # a function of k
    other = FrameSchedule(lengths, memory_steps, batch_size=8, key=(3, 1))
    assert not all(np.array_equal(other.batch(k)[2], schedule.batch(k)[2]) for k in range(6))


def test_a_run_in_bounded_memory_streams_the_episode_files(tmp_path):
    """With collect.memory_steps below the replay's size, the replay keeps only its newest
    episodes in memory, V's batches come from the files in blocks (the same batches for a
    resumed trainer), M encodes every episode, and the run ends as usual."""
    from planetrl.worldmodels.trainer import WorldModelsTrainer

    config = tiny_config(tmp_path, "dream")
    config.collect.episodes, config.collect.memory_steps = 4, 25  # 4 episodes of 21 frames
    config.vae.epochs = 2
    summary = train(config, progress=False)
    assert summary["episodes"] == 4
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert any("vae/loss" in r for r in rows) and any("mdn/z_nll" in r for r in rows)
    fresh = WorldModelsTrainer(config, progress=False)
    try:
        assert fresh.replay.num_episodes == 1 and fresh.replay.total_episodes == 4
        assert len(fresh.encoded()) == 4 and all(len(e.mean) == 21 for e in fresh.encoded())
        batches = [fresh.vae_batch(k) for k in range(6)]
        assert all(b.shape == (8, 64, 64, 3) for b in batches)
    finally:
        fresh.close()
    resumed = WorldModelsTrainer(config, allow_config_change=True, progress=False)
    try:
        assert np.array_equal(resumed.vae_batch(5), batches[5])
    finally:
        resumed.close()
