"""Gymnasium's conventions end to end (issue 15): ``gym:<module>:<id>`` tasks, ``env_kwargs``,
env factories, wrappers that record their arguments (``check_env`` and ``gymnasium.make(spec)``
on every kind of task), the extras named in dependency errors, envs closed at exit, true
terminations in the replay, and the README's "Your own environment" example through the CLI."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import custom_env  # tests/ is on sys.path under pytest; registers PlanetrlCustom/Dot-v0
import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from PIL import Image

from planetrl.envs import EnvPool, check_task, make_env, parse_task

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CUSTOM = f"gym:custom_env:{custom_env.ENV_ID}"
KINDS = ["dmc:cartpole-swingup", "gym:InvertedPendulum-v5", CUSTOM]


def _subprocess_env() -> dict[str, str]:
    """This checkout and tests/ first on the path of a child process (as a user's PYTHONPATH)."""
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path.rstrip(os.pathsep), PYTHONUNBUFFERED="1")


# -- task names --------------------------------------------------------------------------------
def test_module_form_parses_like_gymnasium() -> None:
    spec = parse_task("gym:gymnasium.envs.mujoco:Hopper-v5")
    assert (spec.suite, spec.module, spec.gym_id) == ("gym", "gymnasium.envs.mujoco", "Hopper-v5")
    spec = parse_task(CUSTOM)
    assert (spec.module, spec.gym_id) == ("custom_env", "PlanetrlCustom/Dot-v0")
    assert parse_task("gym:InvertedPendulum-v5").module is None
    assert check_task("gym:gymnasium.envs.mujoco:Hopper-v5").gym_id == "Hopper-v5"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("gym:no_such_module_xyz:Foo-v0", "could not be imported.*PYTHONPATH"),
        (
            "gym:custom_env:PlanetrlCustom/Nope-v0",
            "not a registered Gymnasium environment after importing 'custom_env'",
        ),
        ("gym:not a module:Foo-v0", "not a Python module name"),
        ("gym:custom_env:", "Empty Gymnasium id"),
    ],
)
def test_module_form_errors(task: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_task(task)
    with pytest.raises(ValueError):
        make_env(task)


# -- Gymnasium's checker and recreatable specs, on every kind of task ---------------------------
@pytest.mark.parametrize("task", KINDS)
def test_check_env_passes_and_spec_recreates(task: str) -> None:
    env = make_env(task, render="fast", seed=3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any other warning of the checker fails the test
            warnings.filterwarnings("ignore", message=".*different from the unwrapped version")
            check_env(env)
        spec = env.spec
        assert spec is not None and spec.additional_wrappers
        names = [w.name for w in spec.additional_wrappers]
        assert names[-2:] == ["ActionRepeat", "ValidateAction"]
        assert all(w.kwargs is not None for w in spec.additional_wrappers)
        again = gymnasium.make(spec)
        try:
            np.testing.assert_array_equal(again.reset(seed=5)[0], env.reset(seed=5)[0])
            action = np.full(env.action_space.shape, 0.5, np.float32)
            np.testing.assert_array_equal(again.step(action)[0], env.step(action)[0])
            assert again.get_wrapper_attr("action_repeat") == env.get_wrapper_attr("action_repeat")
        finally:
            again.close()
    finally:
        env.close()


# -- env_kwargs ----------------------------------------------------------------------------------
def test_env_kwargs_reach_the_env() -> None:
    env = make_env(CUSTOM, env_kwargs={"speed": 0.5, "size": 16})
    try:
        assert env.unwrapped.speed == 0.5 and env.unwrapped.size == 16
        assert env.reset(seed=0)[0].shape == (64, 64, 3)  # resized to the observation size
        assert env.spec.kwargs["speed"] == 0.5  # and recorded in the spec
    finally:
        env.close()
    dmc = make_env(
        "dmc:cartpole-swingup", render="fast", action_repeat=1, env_kwargs={"time_limit": 0.05}
    )  # 5 physics steps of 0.01 s
    try:
        dmc.reset(seed=0)
        ends = [dmc.step(np.zeros(1))[3] for _ in range(5)]
        assert ends == [False] * 4 + [True]
    finally:
        dmc.close()


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        (CUSTOM, {"render_mode": "human"}, "may not set 'render_mode'"),
        (CUSTOM, {"colour": "red"}, "does not accept env_kwargs"),
        ("dmc:cartpole-swingup", {"random": 3}, "may not set 'random'"),
        ("dmc:cartpole-swingup", {"colour": "red"}, "does not accept env_kwargs"),
        (CUSTOM, [("speed", 1)], "must be a dict"),
    ],
)
def test_bad_env_kwargs(task, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_env(task, env_kwargs=kwargs)


def test_config_env_kwargs_must_be_json() -> None:
    from planetrl.config import Config, ConfigError

    Config(env_kwargs={"speed": 0.5, "list": [1, 2]}).validate()
    with pytest.raises(ConfigError, match="env_kwargs must be a JSON object"):
        Config(env_kwargs={"f": np.float32}).validate()


# -- worker processes: by name and by factory ---------------------------------------------------
def test_envpool_workers_import_the_module_and_get_kwargs() -> None:
    with EnvPool(CUSTOM, 2, seed=1, env_kwargs={"speed": 0.3}) as pool:
        assert len(set(pool.worker_pids)) == 2
        obs, _ = pool.reset([4, 5])
        assert obs.shape == (2, 64, 64, 3)
        obs, reward, *_ = pool.step(np.full((2, 2), 0.5, np.float32))
    reference = make_env(CUSTOM, env_kwargs={"speed": 0.3})
    try:
        reference.reset(seed=4)
        np.testing.assert_array_equal(reference.step(np.full(2, 0.5))[0], obs[0])
    finally:
        reference.close()


def test_env_fn_factories() -> None:
    env = make_env("fn:dot", env_fn=custom_env.make_dot, seed=0)
    try:
        assert env.observation_space.shape == (64, 64, 3) and env.action_space.shape == (2,)
        assert env.get_wrapper_attr("source") == "observation"  # its observations are pixels
        env.reset()
        env.step(np.zeros(2))
    finally:
        env.close()
    factory = functools.partial(custom_env.make_dot, speed=0.2)
    with EnvPool("fn:dot", 2, env_fn=factory) as pool:  # pickled to the workers
        obs, _ = pool.reset([0, 1])
        pool.step(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="cannot be pickled.*module-level function"):
        EnvPool("fn:dot", 2, env_fn=lambda: custom_env.DotEnv())
    with EnvPool("fn:dot", 2, asynchronous=False, env_fn=lambda: custom_env.DotEnv()) as pool:
        pool.reset([0, 1])  # in-process: no pickling needed


@pytest.mark.parametrize(
    ("task", "env_fn", "message"),
    [
        ("fn:x", lambda: "not an env", "must return a gymnasium.Env"),
        ("fn:x", lambda: gymnasium.make("Pendulum-v1"), "without pixel observations"),
        ("fn:x", lambda: gymnasium.make("CartPole-v1", render_mode="rgb_array"), "Discrete"),
        ("fn:x", None, "names an env built by a factory"),
        ("dmc:cartpole-swingup", custom_env.make_dot, "must be an 'fn:<label>' name"),
    ],
)
def test_env_fn_errors(task, env_fn, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_env(task, env_fn=env_fn)


def test_trainer_with_env_fn(tmp_path) -> None:
    from planetrl.config import load_config
    from planetrl.training.loop import Trainer, load_run

    config = _tiny_config(tmp_path, "dmc:cartpole-swingup")
    trainer = Trainer(config, progress=False, env_fn=functools.partial(custom_env.make_dot, 0.3))
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    assert summary["episodes"] == 2
    assert load_config(tmp_path / "config.json").task == "fn:custom_env.make_dot"
    with pytest.raises(ValueError, match="pass env_fn=... again"):
        load_run(tmp_path, device="cpu")
    load_run(tmp_path, device="cpu", env_fn=custom_env.make_dot)


# -- extras ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gym_id", "extra"), [("CarRacing-v3", "box2d"), ("Pendulum-v1", "classic")]
)
def test_missing_dependency_names_the_extra(monkeypatch, gym_id, extra) -> None:
    def missing(*args, **kwargs):
        raise gymnasium.error.DependencyNotInstalled("pygame is not installed")

    monkeypatch.setattr(gymnasium, "make", missing)
    with pytest.raises(ImportError, match=rf"pip install 'planetrl\[{extra}\]'"):
        make_env(f"gym:{gym_id}")


@pytest.mark.parametrize("gym_id", ["Pendulum-v1", "CarRacing-v3"])
def test_extra_envs_render_when_installed(gym_id) -> None:
    pytest.importorskip("pygame")
    if gym_id == "CarRacing-v3":
        pytest.importorskip("Box2D")
    env = make_env(f"gym:{gym_id}", seed=0)
    try:
        obs, _ = env.reset()
        assert obs.shape == (64, 64, 3) and obs.std() > 0
        obs, *_ = env.step(np.zeros(env.action_space.shape))
        # CarRacing's observations are its 96 x 96 view: those, not a second 600 x 400 render;
        # Pendulum's are a state vector: its rgb_array render.
        expected = "observation" if gym_id == "CarRacing-v3" else "render"
        assert env.get_wrapper_attr("source") == expected
        if gym_id == "CarRacing-v3":
            inner = env.unwrapped
            np.testing.assert_array_equal(
                obs,
                np.asarray(Image.fromarray(inner.state).resize((64, 64), Image.Resampling.LANCZOS)),
            )
    finally:
        env.close()


# -- no tracebacks at exit ----------------------------------------------------------------------
def test_unclosed_envs_exit_cleanly() -> None:
    script = (
        "from planetrl.envs import make_env\n"
        "envs = [make_env(t, render='fast') for t in "
        "('gym:InvertedPendulum-v5', 'dmc:cartpole-swingup', 'gym:InvertedPendulum-v5')]\n"
        "for env in envs:\n"
        "    env.reset(seed=0); env.render(); env.step(env.action_space.sample())\n"
        "print('made', len(envs))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=_subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "made 3" in result.stdout, result.stderr[-2000:]
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, (
        result.stderr[-2000:]
    )


# -- true terminations --------------------------------------------------------------------------
def test_terminations_are_stored_and_bound_the_model(tmp_path) -> None:
    """Episodes that end by termination (the dot leaves the arena) are stored with is_terminal
    on their last step only; in the replay the next episode starts with is_first, where the
    model resets its state, so no transition is learned across the end."""
    from planetrl.driver import run_episodes, uniform_policy
    from planetrl.replay import Replay

    with EnvPool(CUSTOM, 2, asynchronous=False, env_kwargs={"speed": 0.6}) as pool:
        act = uniform_policy(2, [0, 1])
        out = run_episodes(pool, act, [0, 1], keep=True)
    replay = Replay(tmp_path / "episodes", capacity=10_000, seed=0)
    for episode in out.episodes:
        length = len(episode["reward"])
        assert length - 1 < 50, "the episode should have terminated before the time limit"
        assert episode["is_terminal"][-1] and not episode["is_terminal"][:-1].any()
        assert episode["is_first"][0] and not episode["is_first"][1:].any()
        replay.add(episode)
    total = sum(len(e["reward"]) for e in out.episodes)
    batch = replay.sample_raw(8, total, rng=np.random.default_rng(0))
    assert batch["is_terminal"].any()
    for terminal, first in zip(batch["is_terminal"], batch["is_first"]):
        ends = np.flatnonzero(terminal[:-1])  # a terminal step inside the chunk ...
        assert first[ends + 1].all()  # ... is followed by the start of the next episode
        assert terminal.sum() == first[1:].sum() + terminal[-1]  # no other starts or ends


# -- the README example: a custom env trained by the CLI ------------------------------------------
def _tiny_config(logdir: Path, task: str):
    from planetrl.config import preset

    c = preset("small")
    c.task, c.logdir, c.seed, c.render, c.device = task, str(logdir), 0, "fast", "cpu"
    c.model.deter_size, c.model.stoch_size, c.model.hidden_size = 16, 4, 16
    c.model.cnn_depth, c.model.reward_hidden = 4, 16
    c.planner.horizon, c.planner.iterations, c.planner.candidates, c.planner.top_k = 3, 2, 16, 4
    c.train.seed_episodes, c.train.collect_interval = 1, 2
    c.train.batch_size, c.train.chunk_length, c.train.max_episodes = 4, 8, 2
    c.eval.every, c.eval.episodes, c.eval.video, c.eval.parallel = 0, 2, False, False
    for name in ("compile", "bf16", "channels_last", "cuda_graphs"):
        setattr(c.speed, name, "off")
    return c


def test_readme_custom_env_through_the_cli(tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "planetrl",
        "train",
        "--task",
        CUSTOM,
        "--preset",
        "small",
        "--env-kwargs",
        '{"speed": 0.2}',
        "--logdir",
        str(tmp_path),
        "--no-progress",
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
        "1",
        "--train.collect-interval",
        "2",
        "--train.batch-size",
        "4",
        "--train.chunk-length",
        "8",
        "--train.max-episodes",
        "2",
        "--eval.every",
        "2",
        "--eval.episodes",
        "2",
        "--eval.no-video",
        "--speed.compile",
        "off",
    ]
    result = subprocess.run(
        command,
        env=_subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done: 2 episodes" in result.stdout
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    import json

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["task"] == CUSTOM and saved["env_kwargs"] == {"speed": 0.2}
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "planetrl",
            "eval",
            "--logdir",
            str(tmp_path),
            "--episodes",
            "2",
            "--device",
            "cpu",
            "--no-progress",
        ],
        env=_subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"task {CUSTOM}: return" in evaluated.stdout
