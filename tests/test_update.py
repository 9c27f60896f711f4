"""The update (planetrl.training.update): the static-buffer update against the eager step, its
non-finite check, the batch prefetcher against sampling in the loop, and, on CUDA, the captured
update against the eager one (run by benchmarks/gpu_check.sh)."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
from test_training import tiny_config

from planetrl.config import SpeedConfig, preset
from planetrl.models import WorldModel
from planetrl.replay import Batch, Replay
from planetrl.run.fast_paths import Hardware, decide
from planetrl.training.loop import Trainer
from planetrl.training.update import (
    BatchPrefetcher,
    GraphedUpdate,
    NonFiniteLossError,
    gradient_step,
    make_update,
)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
SIZES = dict(cnn_depth=4, deter_size=20, stoch_size=6, hidden_size=16, reward_hidden=16)


def _config(**loss):
    config = preset("small")
    config.train.grad_clip = 1000.0
    for key, value in loss.items():
        section, _, name = key.partition(".")
        setattr(getattr(config, section), name, value)
    return config


def _uint8_batch(B=3, L=8, A=2, seed=0, tasks=()) -> Batch:
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, L, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, L // 2] = True
    return Batch(
        image=torch.randint(0, 256, (B, L, 64, 64, 3), generator=g, dtype=torch.uint8),
        action=torch.rand(B, L, A, generator=g) * 2 - 1,
        reward=torch.randn(B, L, generator=g),
        is_first=is_first,
        is_terminal=torch.zeros(B, L, dtype=torch.bool),
        task_rewards={t: torch.randn(B, L, generator=g) for t in tasks},
    )


def _on(batch: Batch, device) -> Batch:
    return Batch(
        image=batch.image.to(device),
        action=batch.action.to(device),
        reward=batch.reward.to(device),
        is_first=batch.is_first.to(device),
        is_terminal=batch.is_terminal.to(device),
        task_rewards={k: v.to(device) for k, v in batch.task_rewards.items()},
    )


def _pair(tasks=(), device="cpu"):
    torch.manual_seed(0)
    model = WorldModel(2, task_rewards=tasks, **SIZES).to(device)
    twin = copy.deepcopy(model)
    make_adam = lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-4)  # noqa: E731
    return (model, make_adam(model)), (twin, make_adam(twin))


VARIANTS = {
    "preset": {},
    "overshooting": {"loss.overshooting_distance": 3, "loss.overshooting_kl_scale": 1.0},
    "shift+kl_balance": {"train.augment_shift": 2, "loss.kl_balance": 0.8},
    "sibling heads": {},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_static_buffer_update_is_the_eager_step(variant):
    """Without capture, GraphedUpdate runs the same step as gradient_step: the same losses and
    the same parameters after several steps, the generators drawn in the same order."""
    config = _config(**VARIANTS[variant])
    tasks = ("cartpole-balance",) if variant == "sibling heads" else ()
    (eager_model, eager_opt), (static_model, static_opt) = _pair(tasks)
    static = GraphedUpdate(static_model, static_opt, config, use_graphs=False)
    assert static.describe() == "static buffers, no capture"
    eager_gen, static_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(4):
        batch = _uint8_batch(seed=step, tasks=tasks)
        torch.manual_seed(10 + step)
        expected = gradient_step(eager_model, eager_opt, batch, config, eager_gen)
        torch.manual_seed(10 + step)
        got = static(batch, static_gen)
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for (name, p), q in zip(eager_model.named_parameters(), static_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert eager_gen.get_state().equal(static_gen.get_state())


def test_a_non_finite_loss_stops_the_static_update_before_any_parameter_moves():
    config = _config()
    (model, optimizer), _ = _pair()
    update = GraphedUpdate(model, optimizer, config, use_graphs=False)
    update(_uint8_batch(seed=0), torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.parameters()]
    bad = _uint8_batch(seed=1)
    bad.reward[0, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite loss at update 7: reward_loss=nan"):
        update(bad, torch.Generator().manual_seed(1), where="update 7")
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q)


def test_the_static_update_refuses_another_batch_shape():
    config = _config()
    (model, optimizer), _ = _pair()
    update = GraphedUpdate(model, optimizer, config, use_graphs=False)
    update(_uint8_batch(B=3), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"built for \(3, 8, 3, 64, 64\)"):
        update(_uint8_batch(B=2), torch.Generator().manual_seed(0))


def test_the_captured_update_needs_a_warm_up_step():
    (model, optimizer), _ = _pair()
    with pytest.raises(ValueError, match="warmup must be an int >= 1"):
        GraphedUpdate(model, optimizer, _config(), warmup=0)


def test_make_update_is_the_eager_step_on_a_cpu():
    config = _config()
    (model, optimizer), _ = _pair()
    optimizer.param_groups[0]["capturable"] = True  # e.g. a state saved by a captured run
    on = decide(SpeedConfig(update_graph="on"), Hardware("cpu", "test"))
    assert on.update_graph  # forced on: still nothing to capture on a CPU
    update = make_update(model, optimizer, config, on)
    assert not isinstance(update, GraphedUpdate)
    assert optimizer.param_groups[0]["capturable"] is False
    assert np.isfinite(update(_uint8_batch(), torch.Generator())["loss"])
    steps = [state["step"] for state in optimizer.state.values()]
    assert steps and all(s.device.type == "cpu" and s.dtype == torch.float32 for s in steps)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_update_graph_auto_is_off_until_measured(device):
    decision = decide(SpeedConfig(), Hardware(device, "test", cuda_bf16=True))
    assert decision.update_graph is False
    assert decision.reasons["update_graph"].startswith("auto: ")
    assert decide(SpeedConfig(update_graph="on"), Hardware(device, "t")).update_graph is True


def _replay(tmp_path, episodes=3, steps=20):
    replay = Replay(tmp_path, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        replay.add(
            {
                "image": rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
                "action": rng.uniform(-1, 1, (steps + 1, 2)).astype(np.float32),
                "reward": rng.normal(size=steps + 1).astype(np.float32),
                "is_first": np.eye(1, steps + 1, dtype=bool)[0],
                "is_terminal": np.zeros(steps + 1, dtype=bool),
            }
        )
    return replay


def test_the_prefetcher_gives_the_batches_of_sampling_in_the_loop(tmp_path):
    ahead, inline = _replay(tmp_path / "a"), _replay(tmp_path / "b")
    with BatchPrefetcher(lambda: ahead.sample(4, 6), 5) as batches:
        got = list(batches)
    expected = [inline.sample(4, 6) for _ in range(5)]
    assert len(got) == 5
    for a, b in zip(got, expected):
        assert torch.equal(a.image, b.image) and torch.equal(a.reward, b.reward)
    # and the replay's generator is where sampling in the loop left it
    assert torch.equal(ahead.sample(4, 6).image, inline.sample(4, 6).image)


def test_the_prefetcher_raises_a_sampling_error_where_its_batch_was_due():
    calls = []

    def sample():
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("no 50 consecutive steps")
        return _uint8_batch(B=1, L=2)

    seen = 0
    with pytest.raises(ValueError, match="no 50 consecutive"):
        with BatchPrefetcher(sample, 5) as batches:
            for _ in batches:
                seen += 1
    assert seen == 2 and len(calls) == 3  # nothing sampled after the error


def test_leaving_the_prefetcher_early_stops_its_thread():
    with BatchPrefetcher(lambda: _uint8_batch(B=1, L=2), 100, depth=1) as batches:
        next(batches)
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())


def test_the_run_reports_its_update_path(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_episodes=3), progress=False)
    try:
        trainer.run()
    finally:
        trainer.close()
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert speed["update"] == "eager" and speed["update_graph"] is False
    assert "cpu device" in speed["reasons"]["update_graph"].lower()


# ------------------------------------------------------------------------------- CUDA only
@cuda_only
@pytest.mark.parametrize("variant", ["preset", "overshooting"])
def test_the_captured_update_matches_the_eager_one_on_cuda(variant):
    """The captured graphs against the eager step, the posterior at its mean (the graph's
    samples come from another stream of the same distribution): the same losses and parameters
    to float tolerance over warm-up, capture and replays."""
    # every frame decoded: the eager step's randperm and the graph's keys would pick others
    config = _config(**VARIANTS[variant], **{"loss.decode_fraction": 1.0})
    (eager_model, eager_opt), (graph_model, graph_opt) = _pair(device="cuda")
    for model in (eager_model, graph_model):
        model.transition.mean_only = True
    update = GraphedUpdate(graph_model, graph_opt, config, warmup=2)
    assert update.describe() == "to be captured after 2 eager steps"
    eager_gen, graph_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(6):
        batch = _on(_uint8_batch(seed=step), "cuda")
        expected = gradient_step(eager_model, eager_opt, batch, config, eager_gen)
        got = update(batch, graph_gen)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), (step, key)
    assert update.captured and update.fallback is None, update.describe()
    assert update.describe() == "captured (two CUDA graphs)"
    for (name, p), q in zip(eager_model.named_parameters(), graph_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


@cuda_only
def test_a_run_with_the_captured_update_on_cuda(tmp_path):
    config = tiny_config(tmp_path, max_episodes=4, collect_interval=6)
    config.device, config.speed.update_graph = "cuda", "on"
    trainer = Trainer(config, progress=False)
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    assert summary["updates"] == 12
    assert isinstance(trainer.update_step, GraphedUpdate) and trainer.update_step.captured
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert speed["update"] == "captured (two CUDA graphs)" and speed["update_graph"] is True


@pytest.mark.parametrize("transition", ["rssm", "ssm", "gru"])
def test_the_filter_without_its_host_sync_is_the_same_filter(transition):
    """What a capture runs (the reset at every step, no host sync to find the resets) equals
    the filter that resets only where an episode starts."""
    torch.manual_seed(0)
    model = WorldModel(2, transition=transition, **SIZES)
    batch = _uint8_batch(seed=4)
    embeds = model.encoder(model.preprocess(batch.image, torch.Generator().manual_seed(0)))
    outs = []
    for every in (False, True):
        torch.manual_seed(1)
        outs.append(
            model.transition.observe(embeds, batch.action, batch.is_first, reset_every_step=every)
        )
    for a, b in zip(outs[0], outs[1]):  # (posteriors, priors)
        for name in ("deter", "stoch", "mean", "std"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
