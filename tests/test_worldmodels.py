"""World Models (planetrl.worldmodels): the losses on hand-made tensors, the mixture NLL against
torch.distributions, the batched dream against a step-by-step one, CMA-ES on a toy objective and
its traps, tiny end-to-end runs in both modes, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D

from planetrl.run.checkpoint import load_checkpoint
from planetrl.run.logger import read_metrics
from planetrl.worldmodels.config import ConfigError, preset
from planetrl.worldmodels.es import CMAES
from planetrl.worldmodels.models import (
    MDNRNN,
    VAE,
    LinearController,
    MDNOutput,
    Posterior,
    mixture_nll,
    sample_mixture,
    vae_loss,
)
from planetrl.worldmodels.rollout import dream_rollout
from planetrl.worldmodels.trainer import WorldModelsTrainer, train

TASK = "dmc:cartpole-balance"


# ------------------------------------------------------------------------------ V
def test_vae_loss_on_hand_made_tensors():
    frames = torch.full((2, 3, 64, 64), 0.5)
    recon = torch.full((2, 3, 64, 64), 0.25)
    z = 4
    # mean 2 in every dimension, unit variance: KL = 0.5 Σ mean² = 8 per frame, above 0.5 z = 2
    above = Posterior(torch.full((2, z), 2.0), torch.zeros(2, z))
    terms = vae_loss(frames, recon, above, kl_tolerance=0.5)
    assert terms.reconstruction.item() == pytest.approx(64 * 64 * 3 * 0.0625)  # Σ (0.25)²
    assert terms.kl.item() == pytest.approx(8.0) and terms.raw_kl.item() == pytest.approx(8.0)
    assert terms.loss.item() == pytest.approx(768.0 + 8.0)
    # below the tolerance the KL term is the constant 0.5 z, and passes no gradient
    mean = torch.full((2, z), 0.1, requires_grad=True)
    below = vae_loss(frames, recon, Posterior(mean, torch.zeros(2, z)), kl_tolerance=0.5)
    assert below.kl.item() == pytest.approx(2.0)
    assert below.raw_kl.item() == pytest.approx(0.5 * z * 0.01)
    below.kl.backward()
    assert torch.count_nonzero(mean.grad) == 0


def test_vae_shapes_and_reparameterised_sample():
    vae = VAE(z_size=32, depth=32)
    images = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    frames = VAE.preprocess(images)
    assert frames.shape == (5, 3, 64, 64) and 0 <= frames.min() and frames.max() <= 1
    posterior = vae.encode(frames)
    assert posterior.mean.shape == (5, 32)
    assert vae.decode(posterior.mean).shape == (5, 3, 64, 64)
    assert VAE.postprocess(frames).dtype == np.uint8
    assert np.array_equal(VAE.postprocess(frames), images.numpy())
    g = torch.Generator().manual_seed(0)
    eps = torch.randn((5, 32), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(posterior.sample(g), posterior.mean + posterior.std * eps)
    # the original's layer sizes
    assert [m.out_channels for m in vae.encoder if isinstance(m, torch.nn.Conv2d)] == [
        32,
        64,
        128,
        256,
    ]
    with pytest.raises(TypeError, match="uint8"):
        VAE.preprocess(frames)


# ------------------------------------------------------------------------------ M
@pytest.mark.parametrize("flags, tol", [({"channels_last": True}, 1e-5), ({"bf16": True}, 0.05)])
def test_vae_fast_paths_compute_the_same_function(flags, tol):
    """V's convolutions in channels_last (the same function) and in bf16 autocast (close): the
    loss and its gradients against the plain float32 VAE on the same frames and noise."""
    torch.manual_seed(0)
    plain = VAE(z_size=8, depth=8)
    fast = VAE(z_size=8, depth=8)
    fast.load_state_dict(plain.state_dict())
    ids = [id(p) for p in fast.parameters()]
    assert fast.use_fast_paths(**flags) is fast and [id(p) for p in fast.parameters()] == ids
    frames = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for model in (plain, fast):
        model.zero_grad()
        loss = model.loss(frames, 0.5, torch.Generator().manual_seed(2)).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[1] == pytest.approx(losses[0], rel=tol)
    errors = {
        name: float((grads[1][name] - g).norm() / g.norm().clamp_min(1e-12))
        for name, g in grads[0].items()
    }
    if tol < 1e-4:
        assert max(errors.values()) < 1e-4, errors
    else:  # bf16: the whole gradient close; a first layer's small one within bf16's noise
        flat = [torch.cat([g.flatten() for g in grads[i].values()]) for i in (0, 1)]
        assert float((flat[1] - flat[0]).norm() / flat[0].norm()) < 0.05
        assert max(errors.values()) < 0.6, errors


def test_mixture_nll_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    B, T, Z, K = 3, 4, 5, 6
    logits = torch.randn(B, T, Z, K, generator=g)
    mean = torch.randn(B, T, Z, K, generator=g)
    log_std = 0.5 * torch.randn(B, T, Z, K, generator=g)
    target = torch.randn(B, T, Z, generator=g)
    out = MDNOutput(
        torch.log_softmax(logits, -1), mean, log_std, torch.zeros(B, T), torch.zeros(B, T)
    )
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(mean, log_std.exp()))
    direct = -mixture.log_prob(target)  # (B, T, Z)
    assert mixture_nll(out, target).item() == pytest.approx(direct.mean().item(), rel=1e-5)
    mask = torch.zeros(B, T)
    mask[0, :2] = 1
    mask[2, 1] = 1
    expected = direct.mean(-1)[mask.bool()].mean()
    assert mixture_nll(out, target, mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mdn_heads_and_temperature_sampling():
    mdn = MDNRNN(z_size=4, action_size=2, hidden_size=8, mixtures=3)
    out, state = mdn(torch.zeros(2, 5, 4), torch.zeros(2, 5, 2))
    assert out.log_pi.shape == (2, 5, 4, 3) and out.reward.shape == (2, 5)
    assert torch.allclose(out.log_pi.exp().sum(-1), torch.ones(2, 5, 4))
    assert state.h.shape == (2, 8)
    # one step equals the same step of a sequence
    step_out, _ = mdn.step(torch.zeros(2, 4), torch.zeros(2, 2), mdn.initial(2))
    assert torch.allclose(step_out.mean, out.mean[:, 0], atol=1e-6)
    # τ scales the std by sqrt(τ); the component is the first whose cumulative weight reaches u
    one = MDNOutput(
        torch.zeros(1, 1, 1),
        torch.full((1, 1, 1), 3.0),
        torch.full((1, 1, 1), 0.0),
        torch.zeros(1),
        torch.zeros(1),
    )
    z = sample_mixture(one, 4.0, torch.rand(1, 1), torch.ones(1, 1))
    assert z.item() == pytest.approx(3.0 + 2.0)
    two = MDNOutput(
        torch.log(torch.tensor([[[0.25, 0.75]]])),
        torch.tensor([[[-1.0, 1.0]]]),
        torch.full((1, 1, 2), -20.0),
        torch.zeros(1),
        torch.zeros(1),
    )
    assert sample_mixture(two, 1.0, torch.tensor([[0.2]]), torch.zeros(1, 1)).item() == -1.0
    assert sample_mixture(two, 1.0, torch.tensor([[0.3]]), torch.zeros(1, 1)).item() == 1.0
    # a high temperature flattens the weights: 0.3 now picks the first component (π ≈ 0.5, 0.5)
    assert sample_mixture(two, 100.0, torch.tensor([[0.3]]), torch.zeros(1, 1)).item() == -1.0


# ------------------------------------------------------------------------------ C and the dream
def test_controller_has_the_original_parameter_count():
    c = LinearController(32, 256, 3)
    assert c.num_params == 867
    params = torch.randn(4, 867)
    w = c.weights(params)
    z, h = torch.randn(4, 32), torch.randn(4, 256)
    a = c.act(w, z, h)
    manual = torch.tanh(params[1, :864].reshape(3, 288) @ torch.cat([z[1], h[1]]) + params[1, 864:])
    assert torch.allclose(a[1], manual, atol=1e-5) and a.abs().max() <= 1
    with pytest.raises(ValueError, match="867"):
        c.weights(torch.zeros(866))


def _dream_models():
    torch.manual_seed(0)
    mdn = MDNRNN(z_size=6, action_size=2, hidden_size=16, mixtures=3)
    with torch.no_grad():  # episode ends within the horizon for some rows, not for others
        mdn.head.bias[1] = -1.0
        mdn.head.weight[1] *= 20
    return mdn, LinearController(6, 16, 2)


def test_batched_dream_equals_step_by_step():
    mdn, controller = _dream_models()
    n, horizon = 12, 15
    params = torch.randn(n, controller.num_params, generator=torch.Generator().manual_seed(1))
    z0 = torch.randn(n, 6, generator=torch.Generator().manual_seed(2))
    batched = dream_rollout(
        mdn,
        controller,
        controller.weights(params),
        z0,
        horizon=horizon,
        temperature=1.15,
        generator=torch.Generator().manual_seed(3),
    )
    lengths = batched.lengths.tolist()
    assert min(lengths) < horizon, "no dream ended early: the test would not cover episode ends"
    assert max(lengths) == horizon

    for i in range(n):  # one dream at a time, the same noise draws (rows i of each step's draw)
        g = torch.Generator().manual_seed(3)
        w = controller.weights(params[i])
        state, z = mdn.initial(1), z0[i : i + 1]
        total, steps = 0.0, 0
        with torch.no_grad():
            for _ in range(horizon):
                action = controller.act(w, z, state.h)
                out, state = mdn.step(z, action, state)
                uniform, normal = torch.rand((n, 6), generator=g), torch.randn((n, 6), generator=g)
                z = sample_mixture(out, 1.15, uniform[i : i + 1], normal[i : i + 1])
                total += out.reward.item()
                steps += 1
                if out.done_logit.item() > 0:
                    break
        assert steps == lengths[i]
        assert total == pytest.approx(batched.returns[i].item(), abs=1e-4)


# ------------------------------------------------------------------------------ CMA-ES
def test_cmaes_reaches_the_optimum_of_a_quadratic():
    target = np.linspace(-1, 1, 8)
    es = CMAES(8, population=12, sigma_init=0.5, seed=3)
    for _ in range(120):
        x = es.ask()
        es.tell(x, -np.square(x - target).sum(1))  # returns, maximised
    assert np.abs(es.mean - target).max() < 1e-3
    assert es.best_fitness > -1e-5 and es.generation == 120


def test_cmaes_traps_global_rng_flat_fitness_and_pickling():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    es = CMAES(5, population=6, sigma_init=0.3, seed=7)
    for _ in range(5):  # flat returns: cma's tolflatfitness would stop after one generation
        es.tell(es.ask(), np.zeros(6))
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global RNG untouched
    assert es.generation == 5 and es.ask().shape == (6, 5)
    # a pickled and restored strategy draws exactly what the original draws next
    for _ in range(3):
        x = es.ask()
        es.tell(x, -np.square(x).sum(1))
    restored = CMAES.from_state_dict(pickle.loads(pickle.dumps(es.state_dict())))
    assert np.array_equal(restored.ask(), es.ask())
    # the same seed, the same run
    a, b = (
        CMAES(5, population=6, sigma_init=0.3, seed=9),
        CMAES(5, population=6, sigma_init=0.3, seed=9),
    )
    assert np.array_equal(a.ask(), b.ask())
    # weight decay: fitness = return - decay · mean(θ²)
    d = CMAES(2, population=4, sigma_init=0.1, seed=1, weight_decay=0.5)
    assert d.fitness(np.array([[2.0, 0.0]]), np.array([1.0]))[0] == pytest.approx(0.0)
    assert not Path("outcmaes").exists()


# ------------------------------------------------------------------------------ config
def test_config_presets_and_errors():
    paper = preset("paper")
    assert (
        paper.vae.z_size,
        paper.vae.kl_tolerance,
        paper.mdn.hidden_size,
        paper.mdn.mixtures,
        paper.controller.population,
        paper.controller.rollouts,
    ) == (32, 0.5, 256, 5, 64, 16)
    paper.validate()
    preset("small").validate()
    bad = preset("small")
    bad.controller.temperature = 0.0
    with pytest.raises(ConfigError, match="controller.temperature"):
        bad.validate()
    with pytest.raises(ConfigError, match="paper, small"):
        preset("huge")
    # PlaNet's quick start preset is PlaNet's only: World Models says which of its own exist.
    with pytest.raises(ConfigError, match=r"unknown preset 'quick'; accepted: paper, small$"):
        preset("quick")


def test_cli_names_the_agents_presets(capsys):
    from planetrl.cli import main

    assert main(["train", "--agent", "worldmodels", "--preset", "quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'quick'; accepted: paper, small (--agent worldmodels)" in err


# ------------------------------------------------------------------------------ end to end
def tiny_config(logdir: Path, mode: str = "dream", **controller):
    c = preset("small")
    c.task, c.logdir, c.device, c.action_repeat, c.threads = TASK, str(logdir), "cpu", 50, 1
    c.vae.z_size, c.vae.depth, c.vae.batch_size, c.vae.epochs = 4, 4, 8, 1
    c.mdn.hidden_size, c.mdn.mixtures, c.mdn.batch_size = 16, 2, 4
    c.mdn.sequence_length, c.mdn.updates = 8, 4
    c.collect.episodes, c.collect.envs, c.collect.parallel = 2, 2, False
    c.controller.mode, c.controller.population, c.controller.rollouts = mode, 4, 2
    c.controller.generations, c.controller.envs, c.controller.parallel = 2, 4, False
    c.eval.every, c.eval.episodes, c.eval.parallel, c.eval.video = 0, 2, False, False
    c.eval.retest_episodes = 3
    for key, value in controller.items():
        setattr(c.controller, key, value)
    return c


@pytest.mark.parametrize("mode", ["dream", "real"])
def test_tiny_run_end_to_end(tmp_path, mode):
    config = tiny_config(
        tmp_path, mode, population=2 if mode == "real" else 4, rollouts=1 if mode == "real" else 2
    )
    config.eval.video = mode == "dream"
    summary = train(config, progress=False)
    assert summary["iterations"] == 1 and summary["episodes"] == 2
    assert summary["eval"] is not None and np.isfinite(summary["eval"]["eval/return"])
    rows = read_metrics(tmp_path / "metrics.jsonl")
    keys = set().union(*rows)
    assert {
        "train/return",
        "vae/loss",
        "mdn/z_nll",
        "mdn/reward_mse",
        "es/return_mean",
        "eval/return",
    } <= keys
    # env steps: 2 collected episodes of 1000; real mode adds 2 generations × 2 rollouts
    assert summary["env_steps"] == (2000 if mode == "dream" else 6000)
    assert json.loads((tmp_path / "config.json").read_text())["agent"] == "worldmodels"
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert set(speed) == {"bf16", "channels_last", "reasons", "hardware"}
    assert speed["channels_last"] is True  # auto: on, as PlaNet's
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (
        payload["run"]["stage"] == "done"
        and len(payload["run"]["controller"]) == LinearController(4, 16, 1).num_params
    )
    if mode == "dream":
        names = sorted(p.name for p in (tmp_path / "videos").iterdir())
        assert [n.split("-")[0] for n in names] == ["eval_real_vae_dream", "vae_reconstruction"]
        # the eval command on the run directory
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "planetrl",
                "eval",
                "--logdir",
                str(tmp_path),
                "--episodes",
                "2",
                "--serial",
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "worldmodels" in r.stdout, r.stderr[-2000:]
        assert "threads       1    (fixed by threads=1)" in r.stdout


@pytest.mark.parametrize("threads", [0, 1])
def test_threads_setting_reaches_the_update_stages(tmp_path, threads):
    """threads=N fixes torch's threads; 0 (auto) uses the free cores, re-read during the stages
    (planetrl.threads); both are logged beside the ms per update."""
    from planetrl.threads import available_cores

    config = tiny_config(tmp_path)
    config.threads = threads
    before = torch.get_num_threads()
    try:
        train(config, progress=False)
    finally:
        torch.set_num_threads(before)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    used = [r[k] for r in rows for k in ("vae/threads", "mdn/threads") if k in r]
    assert used and all(1 <= t <= available_cores() for t in used)
    if threads:
        assert set(used) == {threads}


def test_iterative_procedure_collects_with_the_controller(tmp_path):
    config = tiny_config(tmp_path)
    config.collect.iterations = 2
    summary = train(config, progress=False)
    assert summary["iterations"] == 2 and summary["episodes"] == 4
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    # one evaluation per iteration (eval.every = 0), then the re-test of the kept controller
    assert [(r["eval/iteration"], r.get("eval/retest", 0)) for r in evals] == [
        (0, 0),
        (1, 0),
        (1, 1),
    ]
    assert evals[-1]["eval/episodes"] == 3


def test_resume_refuses_a_changed_config(tmp_path):
    train(tiny_config(tmp_path), progress=False)
    changed = tiny_config(tmp_path)
    changed.vae.z_size = 8
    with pytest.raises(ConfigError, match="vae.z_size"):
        WorldModelsTrainer(changed, progress=False)


def _cmd(logdir: Path, generations: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "planetrl",
        "train",
        "--agent",
        "worldmodels",
        "--preset",
        "small",
        "--task",
        TASK,
        "--logdir",
        str(logdir),
        "--no-progress",
        "--device",
        "cpu",
        "--action-repeat",
        "50",
        "--threads",
        "1",
        "--vae.z-size",
        "4",
        "--vae.depth",
        "4",
        "--vae.batch-size",
        "8",
        "--vae.epochs",
        "3",
        "--mdn.hidden-size",
        "16",
        "--mdn.mixtures",
        "2",
        "--mdn.batch-size",
        "4",
        "--mdn.sequence-length",
        "8",
        "--mdn.updates",
        "30",
        "--collect.episodes",
        "2",
        "--collect.envs",
        "2",
        "--collect.no-parallel",
        "--controller.population",
        "6",
        "--controller.rollouts",
        "2",
        "--controller.generations",
        str(generations),
        "--eval.every",
        "0",
        "--eval.episodes",
        "1",
        "--eval.retest-episodes",
        "2",
        "--eval.no-parallel",
        "--eval.no-video",
    ]


def _rows_with(path: Path, key: str) -> int:
    return sum(key in row for row in read_metrics(path)) if path.exists() else 0


def _kill_after_a_new_row(
    cmd: list[str], env: dict, metrics: Path, key: str, timeout: float = 240
) -> None:
    """Start ``cmd``, SIGKILL it as soon as metrics.jsonl has a new row with ``key``."""
    before = _rows_with(metrics, key)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + timeout
        while _rows_with(metrics, key) <= before:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, f"no new {key} row in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_at_any_stage_resumes_to_the_same_result(tmp_path):
    """A run killed at several moments (collection, V, M, CMA-ES) and resumed ends with exactly
    the V, M and controller of a run that was never interrupted."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = subprocess.run(_cmd(whole, 60), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    stages = []
    for key in ("train/return", "vae/loss", "mdn/loss", "es/generation"):
        _kill_after_a_new_row(_cmd(killed, 60), env, killed / "metrics.jsonl", key)
        if (killed / "checkpoint.pt").exists():  # the first kill may come before any
            stages.append(load_checkpoint(killed / "checkpoint.pt")["run"]["stage"])
    assert stages and stages[-1] == "controller", stages
    r = subprocess.run(_cmd(killed, 60), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert b["run"]["stage"] == "done"
    assert np.array_equal(np.array(a["run"]["controller"]), np.array(b["run"]["controller"]))
    for part in ("vae", "mdn"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    files = sorted(p.name for p in (killed / "episodes").iterdir())
    assert files == ["000000-21.npz", "000001-21.npz"]


def test_a_batch_cut_between_its_episodes_resumes_to_the_same_result(tmp_path):
    """The moment a kill can fall between two episode files of one collected batch (what the
    SIGKILL test above hits only sometimes): a run whose replay holds the batch's first episode
    and no checkpoint collects the second alone, the same episode, and ends as the whole run."""
    import shutil

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(tiny_config(whole), progress=False)
    (cut / "episodes").mkdir(parents=True)
    first = sorted((whole / "episodes").iterdir())[0]
    shutil.copy(first, cut / "episodes" / first.name)
    train(tiny_config(cut), progress=False)
    for a, b in zip(sorted((whole / "episodes").iterdir()), sorted((cut / "episodes").iterdir())):
        assert a.read_bytes() == b.read_bytes(), a.name
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(cut / "checkpoint.pt")
    assert np.array_equal(np.array(a["run"]["controller"]), np.array(b["run"]["controller"]))


def test_worldmodels_imports_none_of_planets_code():
    planet = (
        "planetrl.training.loop",
        "planetrl.agent",
        "planetrl.models",
        "planetrl.planning",
        "planetrl.objective",
        "planetrl.speed",
    )
    code = (
        "import sys, planetrl.worldmodels.trainer; "
        f"print([m for m in sys.modules if m.startswith({planet!r})])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-1000:])
