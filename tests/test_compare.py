"""`planetrl compare`: both agents through the suite runner (Ray), the report's tables and plots,
and the open-loop comparison of the two dynamics models on a tiny trained pair."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from planetrl.config import ConfigError
from planetrl.suite import Suite, run_config
from planetrl.suite.compare import (
    compare_suite,
    open_loop_rows,
    write_compare_report,
)
from planetrl.suite.runner import _config_dict, train_run
from planetrl.worldmodels.diagnostics import mixture_mean, open_loop_prediction
from planetrl.worldmodels.models import MDNRNN, VAE

TASK = "dmc:cartpole-balance"
REPEAT = 50  # 20 agent steps per episode of 1000 env steps

PLANET = {
    "render": "fast",
    "device": "cpu",
    "action_repeat": REPEAT,
    "model.deter_size": 16,
    "model.stoch_size": 4,
    "model.hidden_size": 16,
    "model.cnn_depth": 4,
    "model.reward_hidden": 16,
    "planner.horizon": 3,
    "planner.iterations": 2,
    "planner.candidates": 16,
    "planner.top_k": 4,
    "train.seed_episodes": 1,
    "train.collect_interval": 2,
    "train.batch_size": 4,
    "train.chunk_length": 8,
    "eval.video": False,
    "eval.parallel": False,
    "loss.overshooting_distance": 1,
    "speed.compile": "off",
}
WORLDMODELS = {
    "render": "fast",
    "device": "cpu",
    "action_repeat": REPEAT,
    "threads": 1,
    "vae.z_size": 4,
    "vae.depth": 4,
    "vae.batch_size": 8,
    "vae.epochs": 1.0,
    "mdn.hidden_size": 16,
    "mdn.mixtures": 2,
    "mdn.batch_size": 4,
    "mdn.sequence_length": 8,
    "mdn.updates": 4,
    "collect.episodes": 1,
    "collect.envs": 1,
    "collect.parallel": False,
    "controller.population": 4,
    "controller.rollouts": 2,
    "controller.generations": 2,
    "controller.envs": 4,
    "controller.parallel": False,
    "eval.video": False,
    "eval.parallel": False,
}


def tiny_compare(env_steps: int = 2000, seeds: int = 1) -> Suite:
    return compare_suite(
        TASK,
        env_steps=env_steps,
        seeds=seeds,
        eval_every_env_steps=1000,
        eval_episodes=2,
        overrides={"planet": PLANET, "worldmodels": WORLDMODELS},
    )


def test_compare_suite_configs_follow_the_budget(tmp_path):
    suite = compare_suite("dmc:cartpole-swingup", env_steps=100_000, seeds=2)
    assert [(r.agent, r.seed, r.variant) for r in suite.runs] == [
        ("planet", 0, "planet"),
        ("planet", 1, "planet"),
        ("worldmodels", 0, "worldmodels"),
        ("worldmodels", 1, "worldmodels"),
    ]
    assert Suite.from_dict(json.loads(json.dumps(suite.to_dict()))).runs == suite.runs
    planet = run_config(suite, suite.runs[0], tmp_path)
    assert planet.train.max_env_steps == 100_000 and planet.eval.every == 10
    wm = run_config(suite, suite.runs[2], tmp_path)
    assert wm.agent == "worldmodels" and wm.controller.mode == "dream"
    # 100 episodes in iterations of the small preset's 20, evaluated after each
    assert (wm.collect.iterations, wm.collect.episodes, wm.eval.every) == (5, 20, 0)
    assert _config_dict(wm)["agent"] == "worldmodels"
    # real mode: the fitness rollouts are paid from the budget
    real = compare_suite(
        "dmc:cartpole-swingup",
        ["worldmodels"],
        env_steps=100_000,
        overrides={
            "worldmodels": {
                "controller.mode": "real",
                "controller.population": 4,
                "controller.rollouts": 2,
            }
        },
    )
    cfg = run_config(real, real.runs[0], tmp_path)
    assert cfg.collect.episodes == 20 and cfg.controller.generations == 10
    with pytest.raises(ConfigError, match="per generation"):
        paper = compare_suite(
            "dmc:cartpole-swingup", ["worldmodels"], preset="paper", env_steps=10_000
        )
        run_config(paper, paper.runs[0], tmp_path)
    with pytest.raises(ConfigError, match="unknown agents"):
        compare_suite(TASK, ["planet", "dreamer"])
    with pytest.raises(ConfigError, match="unknown config field"):
        bad = compare_suite(TASK, ["worldmodels"], overrides={"worldmodels": {"mdn.nope": 1}})
        run_config(bad, bad.runs[0], tmp_path)


def test_worldmodels_open_loop_prediction_shapes_and_modes():
    torch.manual_seed(0)
    vae, mdn = VAE(4, 4).eval(), MDNRNN(4, 1, 8, 2).eval()
    images = np.random.default_rng(0).integers(0, 255, (3, 7, 64, 64, 3), dtype=np.uint8)
    actions = np.random.default_rng(1).uniform(-1, 1, (3, 7, 1)).astype(np.float32)
    g = torch.Generator().manual_seed(0)
    a = open_loop_prediction(vae, mdn, images, actions, context=3, mode="sample", generator=g)
    assert a.frames.shape == (3, 4, 3, 64, 64) and a.reward.shape == (3, 4)
    b = open_loop_prediction(vae, mdn, images, actions, context=3, mode="mean")
    c = open_loop_prediction(vae, mdn, images, actions, context=3, mode="mean")
    assert torch.equal(b.frames, c.frames) and not torch.equal(a.frames, b.frames)
    # d = 1 only depends on the context: the same in both modes
    assert torch.allclose(a.reward[:, 0], b.reward[:, 0])
    # the prediction of step `context` is M's output after reading the context's (z, a)
    z = vae.encode(VAE.preprocess(torch.as_tensor(images[:, :3]))).mean
    out, _ = mdn(z, torch.as_tensor(actions[:, 1:4]))
    assert torch.allclose(b.reward[:, 0], out.reward[:, -1])
    assert torch.allclose(
        vae.decode(mixture_mean(type(out)(*(x[:, -1] for x in out)))), b.frames[:, 0]
    )
    with pytest.raises(ValueError, match="context"):
        open_loop_prediction(vae, mdn, images, actions, context=7)


def test_open_loop_comparison_on_a_tiny_trained_pair(tmp_path):
    """Both agents trained directly (no Ray), then the open-loop rows of each on the same
    held-out chunks: finite, d = 1..H, RSSM against both MDN-RNN predictions."""
    from planetrl.suite.compare import _load_models, chunks, heldout_episodes

    suite = tiny_compare(env_steps=2000)
    loaded = {}
    for run in suite.runs:
        config = run_config(suite, run, tmp_path)
        record = train_run(_config_dict(config), budget=suite.env_steps)
        assert record["agent"] == run.agent and record["env_steps"] == 2000
        loaded[run.agent] = _load_models(run, Path(config.logdir))
    data = chunks(
        heldout_episodes(tmp_path, loaded["planet"][0], 2, log=lambda _: None), context=3, horizon=4
    )
    assert data["image"].shape[:2] == (2 * 4, 7)  # 20 steps: chunks at 0, 4, 8, 12
    rows = [row for run in suite.runs for row in open_loop_rows(run, loaded[run.agent], data, 3)]
    predictions = {(r["agent"], r["prediction"]) for r in rows}
    assert predictions == {
        ("planet", "RSSM imagined (prior samples)"),
        ("worldmodels", "MDN-RNN sampled at τ=1"),
        ("worldmodels", "MDN-RNN mixture mean"),
    }
    assert sorted({r["d"] for r in rows}) == [1, 2, 3, 4]
    assert all(np.isfinite(r["frame_mse"]) and 0 <= r["frame_mse"] <= 1 for r in rows)
    assert all(np.isfinite(r["reward_mse"]) for r in rows)
    # the held-out episodes are recorded once and reused
    again = heldout_episodes(tmp_path, loaded["planet"][0], 2, log=lambda _: None)
    assert np.array_equal(again[0]["image"][:7], data["image"][0])
    assert len(list((tmp_path / "heldout").iterdir())) == 2


@pytest.mark.ray
def test_tiny_compare_on_ray_writes_the_report(tmp_path):
    pytest.importorskip("ray")
    from planetrl.cli import main
    from planetrl.suite import run_suite

    suite = tiny_compare(env_steps=2000)
    results = run_suite(suite, tmp_path, log=lambda _: None)
    assert sorted(results) == sorted(r.name for r in suite.runs)
    paths = write_compare_report(tmp_path, heldout=2, context=3, horizon=4, log=lambda _: None)
    names = {p.name for p in paths}
    assert {
        "compare.md",
        "compare_curves.csv",
        "compare_curves.png",
        "parameters.csv",
        "stages.csv",
        "open_loop.csv",
        "open_loop.png",
    } <= names
    curves = list(csv.DictReader(open(tmp_path / "compare_curves.csv")))
    planet = [r for r in curves if r["agent"] == "planet"]
    wm = [r for r in curves if r["agent"] == "worldmodels"]
    assert [int(r["env_steps"]) for r in planet] == [2000]  # after the seed episode
    assert [int(r["env_steps"]) for r in wm] == [1000, 2000]  # after each iteration
    assert all(float(r["wall_clock_s"]) > 0 for r in curves)
    params = {
        (r["agent"], r["part"]): int(r["parameters"])
        for r in csv.DictReader(open(tmp_path / "parameters.csv"))
    }
    assert params[("worldmodels", "C (linear controller)")] == (4 + 16) * 1 + 1
    assert params[("planet", "total")] == sum(
        v for (a, p), v in params.items() if a == "planet" and p != "total"
    )
    stages = {
        (r["agent"], r["stage"]): int(r["env_steps"])
        for r in csv.DictReader(open(tmp_path / "stages.csv"))
    }
    assert stages[("planet", "random seed episodes")] == 1000
    assert stages[("planet", "planner episodes (exploration noise)")] == 1000
    assert stages[("worldmodels", "random episodes (iteration 0)")] == 1000
    assert (
        stages[("worldmodels", "controller episodes (exploration noise, iterations > 0)")] == 1000
    )
    assert stages[("worldmodels", "total (the budget)")] == 2000
    table = (tmp_path / "compare.md").read_text()
    assert table.startswith(f"# planet against worldmodels on {TASK} (")
    assert "1 seed)" in table.splitlines()[0]
    rows = [
        line for line in table.splitlines() if line.startswith(("| planet |", "| worldmodels |"))
    ]
    first_wm = next(i for i, line in enumerate(rows) if line.startswith("| worldmodels |"))
    last_planet = max(i for i, line in enumerate(rows) if line.startswith("| planet |"))
    assert rows[0].startswith("| planet |") and first_wm < last_planet  # PlaNet first per table
    assert "RSSM imagined" in table and "MDN-RNN mixture mean" in table and "d=4" in table
    assert (tmp_path / "open_loop.png").stat().st_size > 1000
    # the open-loop errors are kept per run; the report is rewritten without training
    assert all((tmp_path / "runs" / r.name / "open_loop.json").exists() for r in suite.runs)
    # the CLI: finished runs are skipped, the report is rewritten
    code = main(
        [
            "compare",
            "--task",
            TASK,
            "--env-steps",
            "2000",
            "--dir",
            str(tmp_path),
            "--eval-every-env-steps",
            "1000",
            "--eval-episodes",
            "2",
            "--report-only",
            "--heldout-episodes",
            "2",
            "--context",
            "3",
            "--horizon",
            "4",
        ]
    )
    assert code == 0


def test_cli_compare_rejects_bad_input(capsys):
    from planetrl.cli import main

    assert main(["compare", "--task", TASK, "--agents", "planet,dreamer"]) == 2
    assert "unknown agents" in capsys.readouterr().err
    assert main(["compare", "--task", TASK, "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["compare", "--task", TASK, "--horizon", "0"]) == 2
    assert "--horizon" in capsys.readouterr().err
    assert main(["compare"]) == 2
