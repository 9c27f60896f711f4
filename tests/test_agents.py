"""The agent seam (:mod:`planetrl.agents`): a third agent registered by one line runs through
``train``, ``eval``, ``suite`` and ``compare``; registration errors; the run settings both
agents inherit from one declaration (World Models honours ``env_kwargs``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import pytest

from planetrl import agents
from planetrl.config import ConfigError, RunConfig, diff_configs

TESTS = Path(__file__).resolve().parent
TASK = "dmc:cartpole-balance"


@pytest.fixture
def toy(monkeypatch):
    """The toy agent registered the way a user registers one (an environment variable that the
    suite's Ray workers inherit), its module importable there too."""
    monkeypatch.setenv(agents.ENVIRONMENT, "toy=toy_agent:KIND")
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(TESTS) + (os.pathsep + path if path else ""))
    monkeypatch.syspath_prepend(str(TESTS))
    yield agents.kind("toy")
    agents._KINDS.pop("toy", None)


def test_builtin_agents_are_registered_in_order():
    assert agents.names()[:2] == ("planet", "worldmodels")
    assert agents.kind("planet").title == "PlaNet"
    assert agents.kind("worldmodels").planner(agents.kind("worldmodels").preset("small")) is None
    assert agents.kind("planet").planner(agents.kind("planet").preset("small")).horizon == 12


def test_registration_errors_are_clear(monkeypatch):
    monkeypatch.setenv(agents.ENVIRONMENT, "broken")
    with pytest.raises(ConfigError, match="not NAME=module:attribute"):
        agents.names()
    monkeypatch.setenv(agents.ENVIRONMENT, "ghost=no_such_module:KIND")
    with pytest.raises(ConfigError, match="agent 'ghost': cannot load no_such_module:KIND"):
        agents.kind("ghost")
    monkeypatch.setenv(agents.ENVIRONMENT, "fake=planetrl.training.kind:PLANET")
    with pytest.raises(ConfigError, match="is not an AgentKind named 'fake'"):
        agents.kind("fake")
    with pytest.raises(
        ConfigError, match="unknown agent 'dreamer'; accepted: planet, worldmodels, fake"
    ):
        agents.check_agent("dreamer")


def test_a_third_agent_trains_and_evaluates_through_the_cli(toy, tmp_path, capsys):
    from planetrl.cli import main

    logdir = tmp_path / "toy"
    assert (
        main(
            [
                "train",
                "--agent",
                "toy",
                "--preset",
                "small",
                "--logdir",
                str(logdir),
                "--train.episodes",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "done: 2 episodes, 2000 env steps" in capsys.readouterr().out
    assert json.loads((logdir / "config.json").read_text())["agent"] == "toy"
    assert main(["eval", "--logdir", str(logdir), "--episodes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"task {TASK} (toy): return" in out and "toy evaluation" in out
    assert main(["train", "--agent", "toy", "--preset", "paper"]) == 2
    assert "unknown preset 'paper'" in capsys.readouterr().err


@pytest.mark.ray
def test_a_third_agent_runs_in_a_suite_and_a_comparison(toy, tmp_path):
    pytest.importorskip("ray")
    from planetrl.suite import run_suite
    from planetrl.suite.compare import compare_suite, write_compare_report
    from planetrl.suite.report import write_report

    suite = compare_suite(
        TASK, ["toy"], env_steps=2000, seeds=1, eval_every_env_steps=1000, eval_episodes=2
    )
    assert suite.runs[0].agent == "toy"
    results = run_suite(suite, tmp_path, cpus_per_run=1, log=lambda _: None)
    record = results[suite.runs[0].name]
    assert record["agent"] == "toy" and record["env_steps"] == 2000
    write_compare_report(tmp_path, heldout=2, context=3, horizon=4, log=lambda _: None)
    params = list(csv.DictReader(open(tmp_path / "parameters.csv")))
    assert {(r["agent"], r["part"]) for r in params} == {("toy", "policy"), ("toy", "total")}
    stages = {
        r["stage"]: int(r["env_steps"]) for r in csv.DictReader(open(tmp_path / "stages.csv"))
    }
    assert stages["policy episodes"] == 2000
    rows = list(csv.DictReader(open(tmp_path / "open_loop.csv")))
    assert {r["prediction"] for r in rows} == {"last frame persists"}
    assert sorted({int(r["d"]) for r in rows}) == [1, 2, 3, 4]
    write_report(tmp_path)  # the suite report: no planner ceiling asked of the toy agent
    assert "| dmc:cartpole-balance | toy |" in (tmp_path / "results.md").read_text()


def test_both_agents_inherit_one_declaration_of_the_run_fields():
    from planetrl.config import Config
    from planetrl.worldmodels.config import WorldModelsConfig

    shared = {
        "task",
        "env_kwargs",
        "logdir",
        "preset",
        "seed",
        "device",
        "action_repeat",
        "render",
        "threads",
        "sibling_rewards",
    }
    assert {f.name for f in dataclasses.fields(RunConfig)} == shared
    for cls in (Config, WorldModelsConfig):
        assert issubclass(cls, RunConfig) and shared <= {f.name for f in dataclasses.fields(cls)}
        assert set(RunConfig.RULES) <= set(cls.RULES)
    config = agents.kind("worldmodels").preset("small")
    config.env_kwargs = {"time_limit": [1]}  # JSON, but the env will refuse it
    config.validate()
    config.env_kwargs = {"time_limit": float("nan")}
    with pytest.raises(ConfigError, match="env_kwargs must be a JSON object"):
        config.validate()


def test_world_models_honours_env_kwargs(tmp_path):
    from planetrl.driver import make_pool, run_episodes, uniform_policy
    from planetrl.worldmodels.trainer import action_size_of

    config = agents.kind("worldmodels").preset("small")
    config.task, config.render, config.action_repeat = TASK, "fast", 10
    config.env_kwargs = {"time_limit": 1.0}  # 100 physics steps of 0.01 s: 10 agent steps
    assert action_size_of(config) == 1
    with make_pool(config, 1, False) as pool:
        out = run_episodes(pool, uniform_policy(1, [0]), [0], keep=True)
    assert len(out.episodes[0]["reward"]) == 11  # o_0 and 10 steps
    config.env_kwargs = {"no_such_argument": 1}
    with pytest.raises(Exception, match="no_such_argument"):
        action_size_of(config)


def test_an_old_world_models_config_without_env_kwargs_still_loads_and_resumes(tmp_path):
    kind = agents.kind("worldmodels")
    config = kind.preset("small")
    data = kind.to_dict(config)
    del data["env_kwargs"]  # saved before the run fields were declared once
    (tmp_path / "config.json").write_text(json.dumps(data))
    old = kind.load_config(tmp_path / "config.json")
    assert old.env_kwargs == {} and diff_configs(old, config) == {}
