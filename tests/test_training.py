"""The training loop (Algorithm 1): cadence, artefacts, resume, SIGKILL, NaN handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from planetrl.config import Config, ConfigError, preset
from planetrl.run.checkpoint import CheckpointError, load_checkpoint
from planetrl.run.logger import read_metrics
from planetrl.training.loop import Trainer, train
from planetrl.training.update import NonFiniteLossError

TASK = "dmc:cartpole-balance"


def tiny_config(logdir: Path, **train) -> Config:
    """A few-second run: a tiny model, a tiny planner, short chunks."""
    c = preset("small")
    c.task, c.logdir, c.seed, c.render, c.device = TASK, str(logdir), 0, "fast", "cpu"
    c.model.deter_size, c.model.stoch_size, c.model.hidden_size = 16, 4, 16
    c.model.cnn_depth, c.model.reward_hidden = 4, 16
    c.planner.horizon, c.planner.iterations, c.planner.candidates, c.planner.top_k = 3, 2, 16, 4
    c.train.seed_episodes, c.train.collect_interval = 2, 3
    c.train.batch_size, c.train.chunk_length, c.train.max_episodes = 4, 8, 3
    c.eval.every, c.eval.episodes, c.eval.video, c.eval.parallel = 0, 2, False, False
    for key, value in train.items():
        setattr(c.train, key, value)
    return c


def episode_rows(logdir: Path) -> list[dict]:
    return [r for r in read_metrics(logdir / "metrics.jsonl") if "train/episodes" in r]


def test_seed_phase_and_collect_cadence(tmp_path):
    cfg = tiny_config(tmp_path, seed_episodes=2, collect_interval=3, max_episodes=4)
    summary = train(cfg, progress=False)
    assert summary["episodes"] == 4
    rows = episode_rows(tmp_path)
    # S random episodes with no update, then C updates before each planned episode.
    assert [r["train/updates"] for r in rows] == [0, 0, 3, 6]
    assert [r["train/episodes"] for r in rows] == [1, 2, 3, 4]
    # cartpole: 1000 env steps per episode, whatever the action repeat.
    assert [r["train/env_steps"] for r in rows] == [1000, 2000, 3000, 4000]
    assert "train/ms_per_plan" in rows[-1] and "train/ms_per_plan" not in rows[0]
    losses = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss/loss" in r]
    assert len(losses) == 2
    for key in ("loss/image_loss", "loss/reward_loss", "loss/kl", "train/ms_per_update"):
        assert any(key in r for r in losses), key


def test_end_to_end_artefacts_and_eval(tmp_path):
    cfg = tiny_config(tmp_path, max_episodes=3)
    cfg.eval.every, cfg.eval.video, cfg.eval.parallel = 1, True, True
    train(cfg, progress=False)
    assert (tmp_path / "config.json").exists()
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["updates"] == 3
    assert len(list((tmp_path / "episodes").glob("*.npz"))) == 3
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    videos = sorted(p.name for p in (tmp_path / "videos").glob("*.mp4"))
    assert any(v.startswith("eval_policy") for v in videos)
    assert any(v.startswith("open_loop") for v in videos)
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    assert len(evals) == 1 and evals[0]["eval/episodes"] == 2
    assert 0 <= evals[0]["eval/return"] <= 1000
    assert evals[0]["eval/open_loop_reward_mse_H"] >= 0


def test_resume_continues_counters_and_state(tmp_path):
    train(tiny_config(tmp_path, max_episodes=3), progress=False)
    before = load_checkpoint(tmp_path / "checkpoint.pt")
    trainer = Trainer(tiny_config(tmp_path, max_episodes=4), progress=False)
    assert (trainer.counters.episodes, trainer.counters.updates) == (3, 3)
    for name, value in trainer.world_model.state_dict().items():
        torch.testing.assert_close(value, before["model"][name])
    trainer.run()
    trainer.close()
    rows = episode_rows(tmp_path)
    assert [r["train/episodes"] for r in rows] == [1, 2, 3, 4]
    assert [r["train/updates"] for r in rows][-1] == 6


def test_resume_with_conflicting_config_is_refused(tmp_path):
    train(tiny_config(tmp_path, max_episodes=2), progress=False)
    cfg = tiny_config(tmp_path, max_episodes=3)
    cfg.planner.horizon = 5
    with pytest.raises(ConfigError, match="planner.horizon"):
        Trainer(cfg, progress=False)
    Trainer(cfg, allow_config_change=True, progress=False).close()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(tiny_config(tmp_path, max_episodes=2), progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        Trainer(tiny_config(tmp_path, max_episodes=3), progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    train(tiny_config(tmp_path, max_episodes=3), progress=False)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    import planetrl.training.update as update

    real = update.compute_loss

    def broken(*args, **kwargs):
        loss, metrics, posts = real(*args, **kwargs)
        metrics = dict(metrics, reward_loss=torch.tensor(float("nan")))
        return loss * float("nan"), metrics, posts

    monkeypatch.setattr(update, "compute_loss", broken)
    with pytest.raises(NonFiniteLossError, match="reward_loss"):
        train(tiny_config(tmp_path, max_episodes=5), progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def _train_cmd(logdir: Path, max_episodes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "planetrl",
        "train",
        "--preset",
        "small",
        "--task",
        TASK,
        "--logdir",
        str(logdir),
        "--no-progress",
        "--render",
        "fast",
        "--device",
        "cpu",
        "--model.deter-size",
        "16",
        "--model.stoch-size",
        "4",
        "--model.hidden-size",
        "16",
        "--model.cnn-depth",
        "4",
        "--model.reward-hidden",
        "16",
        "--planner.horizon",
        "3",
        "--planner.iterations",
        "2",
        "--planner.candidates",
        "16",
        "--planner.top-k",
        "4",
        "--train.seed-episodes",
        "2",
        "--train.collect-interval",
        "3",
        "--train.batch-size",
        "4",
        "--train.chunk-length",
        "8",
        "--train.max-episodes",
        str(max_episodes),
        "--eval.every",
        "0",
    ]


def test_sigkill_at_any_moment_resumes(tmp_path):
    """Kill the process at several moments (seed phase, updates, collection, checkpointing);
    each restart continues: counters continuous, every episode file readable, no lost replay."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    episodes = tmp_path / "episodes"
    # The moments are counted from the first episode file of each start, not from the start: a
    # loaded machine can take longer than any fixed delay just to import torch and MuJoCo.
    for delay in (0.0, 1.5, 3.0):
        before = len(list(episodes.glob("*.npz")))
        proc = subprocess.Popen(
            _train_cmd(tmp_path, 50), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.time() + 300
        while len(list(episodes.glob("*.npz"))) <= before and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    files_before = sorted(p.name for p in (tmp_path / "episodes").glob("*.npz"))
    assert files_before, "the runs were killed before any episode was written"
    n = len(files_before)
    result = subprocess.run(_train_cmd(tmp_path, n + 2), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "episodes").glob("*.npz"))
    assert files[:n] == files_before and len(files) == n + 2
    assert [int(f.split("-")[0]) for f in files] == list(range(len(files)))
    rows = episode_rows(tmp_path)
    last = {}
    for r in rows:  # a row per episode; a killed run may have logged one that a rerun relogs
        last[r["train/episodes"]] = r
    assert sorted(last) == list(range(1, n + 3))
    steps = [last[k]["train/env_steps"] for k in sorted(last)]
    assert steps == [1000 * k for k in range(1, n + 3)]
    assert not list((tmp_path / "episodes").glob("*.tmp*"))
    from planetrl.replay import Replay

    assert Replay(tmp_path / "episodes", capacity=10**6).num_episodes == n + 2


def test_cli_errors_are_one_clear_line(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "planetrl", *args], capture_output=True, text=True
        )

    r = run("train", "--task", "dmc:cartpole-swingupp", "--logdir", str(tmp_path / "x"))
    assert r.returncode == 2 and "swingup" in r.stderr and "Traceback" not in r.stderr
    r = run("train", "--logdir", str(tmp_path / "y"), "--planner.top-k", "5000")
    assert r.returncode == 2 and "top_k" in r.stderr and "Traceback" not in r.stderr
    for bad in (["--train.batch-size", "abc"], ["--bogus", "1"], ["--model.transition", "foo"]):
        r = run("train", "--logdir", str(tmp_path / "z"), *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and bad[0] in r.stderr, r.stderr
    r = run("train", "--preset", "huge")
    assert r.returncode == 2 and "paper, small" in r.stderr
    r = run("eval", "--logdir", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no config" in r.stderr and "Traceback" not in r.stderr
    for bad in (["--episodes", "abc"], ["--bogus", "1"], ["--episodes", "0"]):
        r = run("eval", "--logdir", str(tmp_path / "missing"), *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and bad[0] in r.stderr, r.stderr
    r = run("eval")
    assert r.returncode == 2 and "--logdir" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run("frobnicate")
    assert r.returncode == 2 and "train" in r.stderr
    r = run("train", "--help")
    assert r.returncode == 0 and "--planner.candidates" in r.stdout and "J," in r.stdout


def test_cli_error_line_follows_the_shape_not_the_words():
    """The one-line message is read from the shape of the parser's output (frame, rules,
    ``error:``), so a reworded or recoloured tyro message, or plain argparse, still gives it."""
    from planetrl.cli import one_line_error

    framed = "\n".join(
        [
            "\x1b[31m╭─ Value error ─────────────────╮\x1b[0m",
            "│ Error parsing --train.batch-size: │",
            "│ invalid literal 'abc'             │",
            "│ ──────────────────────────────── │",
            "│ Some new section: --train.batch-size INT │",
            "╰───────────────────────────────────╯",
        ]
    )
    assert one_line_error(framed) == "Error parsing --train.batch-size: invalid literal 'abc'"
    plain = "usage: planetrl eval [-h] --logdir LOGDIR\nplanetrl eval: error: unrecognized: --x"
    assert one_line_error(plain) == "unrecognized: --x"
    assert one_line_error("something odd\nhappened --y") == "happened --y"
    assert one_line_error("") == "invalid arguments"
    assert len(one_line_error("│ " + "x " * 500 + "│")) <= 400


def test_eval_command(tmp_path):
    train(tiny_config(tmp_path, max_episodes=3), progress=False)
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
            "--video",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "return" in r.stdout and (tmp_path / "videos" / "eval-seed12345.mp4").exists()


def test_parallel_collection_batches_the_planner(tmp_path):
    """collect_envs=E: E episodes per C updates, stepped together, planned for in one batch."""
    cfg = tiny_config(tmp_path, seed_episodes=3, collect_interval=2, max_episodes=7, collect_envs=2)
    cfg.eval.every = 4
    summary = train(cfg, progress=False)
    assert summary["episodes"] == 7
    rows = episode_rows(tmp_path)
    # seed phase: 2 + 1 random episodes; then 2 per cycle, the last cycle cut to the budget.
    assert [r["train/updates"] for r in rows] == [0, 0, 0, 2, 2, 4, 4]
    files = sorted((tmp_path / "episodes").glob("*.npz"))
    assert len(files) == 7
    from planetrl.replay import load_episode

    first_frames = [load_episode(f)["image"][0] for f in files[3:5]]
    assert not np.array_equal(*first_frames)  # two different seeds, not one env twice
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    assert len(evals) == 1  # episode 4 was crossed once (5 -> 7 does not cross 8)


def test_open_loop_reward_error_over_the_planning_horizon():
    """The open-loop reward MSE filters `context` steps, then imagines under the true actions;
    `horizon` keeps only the first H imagined steps."""
    from types import SimpleNamespace

    from planetrl.models import WorldModel

    torch.manual_seed(0)
    wm = WorldModel(
        1, cnn_depth=4, embed_size=128, deter_size=8, stoch_size=4, hidden_size=8, reward_hidden=8
    ).eval()
    wm.transition.mean_only = True
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(
        image=torch.rand(3, 12, 3, 64, 64, generator=g) - 0.5,
        action=torch.rand(3, 12, 1, generator=g) * 2 - 1,
        reward=torch.rand(3, 12, generator=g),
        is_first=torch.zeros(3, 12, dtype=torch.bool),
    )
    batch.is_first[2, 9] = True  # chunk 2 crosses a reset after the context: left out
    with torch.no_grad():
        posts, _ = wm.transition.observe(
            wm.encoder(batch.image[:2, :5]), batch.action[:2, :5], batch.is_first[:2, :5]
        )
        priors = wm.transition.imagine(posts[:, -1], batch.action[:2, 5:])
        predicted = wm.reward(wm.transition.features(priors))
        squared = (predicted - batch.reward[:2, 5:]).square()
        assert wm.open_loop_reward_error(batch) == pytest.approx(float(squared.mean()), rel=1e-5)
        # Chunk 2's reset (t=9) is past context + 3, so all three chunks count over 3 steps.
        posts, _ = wm.transition.observe(
            wm.encoder(batch.image[:, :5]), batch.action[:, :5], batch.is_first[:, :5]
        )
        priors = wm.transition.imagine(posts[:, -1], batch.action[:, 5:8])
        predicted = wm.reward(wm.transition.features(priors))
        squared = (predicted - batch.reward[:, 5:8]).square()
        assert wm.open_loop_reward_error(batch, horizon=3) == pytest.approx(
            float(squared.mean()), rel=1e-5
        )
        full3 = wm.open_loop_reward_error(
            SimpleNamespace(
                **{k: getattr(batch, k)[:, :8] for k in ("image", "action", "reward", "is_first")}
            )
        )
        assert wm.open_loop_reward_error(batch, horizon=3) == pytest.approx(full3)
        with pytest.raises(ValueError, match="horizon"):
            wm.open_loop_reward_error(batch, horizon=0)


def test_open_loop_diagnostics_draw_their_own_samples():
    """The diagnostics sample the latent states from a stream of their own: repeatable for a
    seed, and torch's global stream and the training mode are left as they were."""
    from types import SimpleNamespace

    from planetrl.models import WorldModel

    torch.manual_seed(0)
    wm = WorldModel(
        1, cnn_depth=4, embed_size=128, deter_size=8, stoch_size=4, hidden_size=8, reward_hidden=8
    )
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(
        image=torch.rand(2, 8, 3, 64, 64, generator=g) - 0.5,
        action=torch.rand(2, 8, 1, generator=g) * 2 - 1,
        reward=torch.rand(2, 8, generator=g),
        is_first=torch.zeros(2, 8, dtype=torch.bool),
    )
    state = torch.get_rng_state()
    first = wm.open_loop_reward_error(batch, seed=3)
    video = wm.open_loop_prediction(batch.image, batch.action, batch.is_first, seed=3)
    assert torch.equal(torch.get_rng_state(), state) and wm.training
    assert wm.open_loop_reward_error(batch, seed=3) == first
    assert torch.equal(
        wm.open_loop_prediction(batch.image, batch.action, batch.is_first, seed=3), video
    )
    assert wm.open_loop_reward_error(batch, seed=4) != first


def test_videos_do_not_change_the_training_sample_stream(tmp_path):
    """An evaluation with videos on draws the training run's next batch, latent samples and
    planner noise exactly as one with videos off (the open-loop video samples its own chunks)."""
    streams = {}
    for video in (False, True):
        cfg = tiny_config(tmp_path / f"video-{video}", max_episodes=2)
        cfg.eval.video = video
        trainer = Trainer(cfg, progress=False)
        try:
            trainer.run()  # the two seed episodes
            trainer.evaluate_now()
            assert any((trainer.logdir / "videos").glob("open_loop*")) == video
            batch = trainer.replay.sample(4, 8)
            streams[video] = (
                batch.image,
                batch.action,
                torch.rand(5),
                torch.rand(5, generator=trainer.generator),
                torch.rand(5, generator=trainer.plan_generator),
            )
        finally:
            trainer.close()
    for off, on in zip(streams[False], streams[True]):
        assert torch.equal(off, on)


def test_fast_path_decision_is_saved_and_printed(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_episodes=2)
    cfg.speed.bf16 = "off"
    train(cfg, progress=False)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["bf16"] is False and saved["reasons"]["bf16"] == "forced off"
    # a 2-episode run plans far too little for compiling to pay
    assert saved["compile"] is False and saved["reasons"]["compile"].startswith("auto")
    assert saved["hardware"]["device_type"] == "cpu"
    out = capsys.readouterr().out
    assert "fast paths" in out and "threads" in out and "forced off" in out


def test_expected_plans_follow_the_budget(tmp_path):
    from planetrl.training.loop import Counters, expected_plans

    cfg = tiny_config(tmp_path, seed_episodes=5, max_episodes=105)  # cartpole: R=8, 125 plans
    cfg.eval.every, cfg.eval.episodes = 10, 5
    plans, graphs = expected_plans(cfg, Counters(), 1000)
    assert plans == int(100 * 125 + 10 * 125 * 0.75 * 5) and graphs == 2
    plans, _ = expected_plans(cfg, Counters(episodes=55, env_steps=55_000), 1000)
    assert plans == int(50 * 125 + 5 * 125 * 0.75 * 5)
    cfg.train.max_env_steps = 15_000  # 10 planned episodes after the 5 random ones
    plans, _ = expected_plans(cfg, Counters(), 1000)
    assert plans == int(10 * 125 + 1 * 125 * 0.75 * 5)


def test_progress_shows_every_phase(tmp_path, monkeypatch):
    from planetrl.run import progress

    phases: list[str] = []
    monkeypatch.setattr(
        progress.Progress, "phase", lambda self, text, force=False: phases.append(text)
    )
    cfg = tiny_config(tmp_path, seed_episodes=1, collect_interval=3, max_episodes=2)
    cfg.eval.every = 1
    train(cfg, progress=True)
    assert [p for p in phases if p.startswith("update")] == [
        "update 0/3",
        "update 1/3",
        "update 2/3",
        "update 3/3",
    ]
    assert sum(p.startswith("random episode 1: step") for p in phases) == 125  # 1000 / R=8
    assert sum(p.startswith("collect 2: step") for p in phases) == 125
    assert any(p.startswith("eval (2 episodes): step") for p in phases)


def test_eval_command_honours_threads(tmp_path):
    train(tiny_config(tmp_path, max_episodes=2), progress=False)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "planetrl",
            "eval",
            "--logdir",
            str(tmp_path),
            "--episodes",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "threads       1" in r.stdout and "fixed by threads=1" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "planetrl", "eval", "--logdir", str(tmp_path), "--threads", "-1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--threads must be >= 0" in r.stderr


def test_a_row_cut_by_a_kill_does_not_swallow_the_next_one(tmp_path):
    from planetrl.run.logger import Logger

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')  # torn
    logger = Logger(tmp_path, tensorboard=False)
    logger.scalars(3, {"a": 3.0})
    logger.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 3]
    Logger(tmp_path, tensorboard=False).close()  # a whole last line: nothing added
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3


def test_an_evaluation_cut_off_by_a_kill_runs_on_resume(tmp_path):
    """The evaluation due after the last episode is recorded in the checkpoint; a run resumed
    after it was missed runs it, although no episode is left to collect."""
    cfg = tiny_config(tmp_path, seed_episodes=2, max_episodes=3)
    train(cfg, progress=False)  # eval.every = 0: no evaluation
    assert not [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    cfg.eval.every = 1  # now one is due at episode 3 (the seed episodes are never evaluated)
    summary = train(cfg, progress=False)
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    assert [r["step"] for r in evals] == [3000] and summary["eval"] is not None
    train(cfg, progress=False)  # nothing is due any more
    assert len([r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]) == 1


def _on_the_grid(seen: torch.Tensor, raw: np.ndarray, bits: int) -> tuple[bool, float]:
    """Whether the model input ``seen`` (..., 3, H, W) lies in the ``bits``-bit bins of the frames
    ``raw`` (..., H, W, 3), and the fraction of values that also lie in their 5-bit sub-bin
    (1 for 5-bit preprocessing, about 2^(bits - 5) when the noise spans the whole bin)."""
    level = torch.floor((seen.float() + 0.5) * 256).long().movedim(-3, -1).numpy()
    raw = raw.astype(np.int64)
    in_bin = bool(np.all(level >> (8 - bits) == raw >> (8 - bits)))
    return in_bin, float(np.mean(level >> 3 == raw >> 3))


def test_training_and_acting_see_the_same_bits(tmp_path):
    """model.bits sets the preprocessing of what the model trains on (replay batches) and of what
    the agent acts on, alike (the replay used to preprocess at 5 bits whatever the setting)."""
    from planetrl.agent import Agent

    cfg = tiny_config(tmp_path, seed_episodes=2, max_episodes=2)
    cfg.model.bits = 3
    trainer = Trainer(cfg, progress=False)
    try:
        trainer.run()
        seen: list[torch.Tensor] = []
        trainer.world_model.encoder.register_forward_pre_hook(
            lambda module, args: seen.append(args[0].detach().clone())
        )
        t = cfg.train
        state = trainer.replay.rng_state()
        raw = trainer.replay.sample_raw(t.batch_size, t.chunk_length)["image"]
        trainer.replay.set_rng_state(state)
        trainer.update()
        in_bin, fine = _on_the_grid(seen[0], raw, 3)
        assert in_bin and fine < 0.5, fine  # 3-bit bins, noise over the whole bin
        obs = raw[:, 0]
        agent = Agent(trainer.world_model, trainer.planner, generator=torch.Generator())
        agent.reset(len(obs))
        agent.act(obs)
        in_bin, fine = _on_the_grid(seen[1], obs, 3)
        assert in_bin and fine < 0.5, fine
    finally:
        trainer.close()


def test_videos_are_optional_without_imageio_ffmpeg(tmp_path, monkeypatch, capsys):
    """imageio-ffmpeg missing (the offline bundle leaves it out): one message, training and eval
    go on, videos reach TensorBoard as GIFs and `eval --video` writes a GIF instead of an mp4."""
    from planetrl import cli
    from planetrl.run import logger

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # `import imageio_ffmpeg` fails
    monkeypatch.setattr(logger, "_NO_MP4_NOTED", False)
    assert not logger.mp4_available()
    cfg = tiny_config(tmp_path, max_episodes=3)
    cfg.eval.every, cfg.eval.video, cfg.eval.parallel = 1, True, False
    train(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("imageio-ffmpeg is not installed") == 1, err
    assert "TensorBoard GIFs only" in err
    assert not list((tmp_path / "videos").glob("*.mp4"))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/return" in r]
    assert len(evals) == 1 and 0 <= evals[0]["eval/return"] <= 1000
    code = cli.main(
        [
            "eval",
            "--logdir",
            str(tmp_path),
            "--episodes",
            "1",
            "--video",
            "--device",
            "cpu",
            "--serial",
            "--no-progress",
        ]
    )
    assert code == 0
    gif = tmp_path / "videos" / "eval-seed12345.gif"
    assert gif.exists() and gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert not (tmp_path / "videos" / "eval-seed12345.mp4").exists()


def test_chunks_longer_than_the_data_are_a_clear_error(tmp_path):
    """Episodes shorter than L (a task that terminates early) stop the run with a ConfigError
    naming the options to change, which the CLI prints as one line."""
    cfg = tiny_config(tmp_path, seed_episodes=1, max_episodes=2, chunk_length=200)
    with pytest.raises(ConfigError, match="--train.chunk-length below L=200"):
        train(cfg, progress=False)


def test_random_episodes_do_not_depend_on_their_batch():
    """uniform_policy draws each episode's actions from a stream of its own seed: episode 1 of
    a batch of two is the episode collected alone on seed 1 (what a resumed, cut-short batch
    collects), and two seeds give different actions."""
    from planetrl.driver import make_pool, run_episodes, uniform_policy

    config = tiny_config(Path("unused"))
    config.action_repeat = 50
    with make_pool(config, 2, parallel=False) as pool:
        both = run_episodes(pool, uniform_policy(1, [7, 8]), [7, 8], keep=True).episodes
        alone = run_episodes(pool, uniform_policy(1, [8]), [8], keep=True).episodes
    for key in ("action", "reward", "image"):
        assert np.array_equal(both[1][key], alone[0][key]), key
    assert not np.array_equal(both[0]["action"], both[1]["action"])
    with pytest.raises(ValueError, match="made for 2 episodes"):
        uniform_policy(1, [7, 8])(np.zeros((3, 1)))
