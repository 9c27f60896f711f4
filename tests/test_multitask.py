"""One agent for several tasks (planetrl.envs.multitask, PlaNet paper section 5): the tasks in
turn by episode seed, actions padded to the largest space, each task's own action repeat, and
the run's counters and per-task evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from test_training import tiny_config

from planetrl.driver import action_repeats, episode_action_repeat
from planetrl.envs import default_action_repeat, make_env, parse_task
from planetrl.envs.multitask import returns_by_task, split_tasks, task_for_seed
from planetrl.run.logger import read_metrics
from planetrl.training.loop import train

PAIR = "multi:dmc:cartpole-balance,dmc:reacher-easy"  # A = 1 and 2; R = 8 and 4


def test_the_env_takes_the_tasks_in_turn_with_padded_actions_and_their_own_repeat():
    env = make_env(PAIR, render="fast", size=16)
    try:
        assert env.action_space.shape == (2,) and env.observation_space.shape == (16, 16, 3)
        for seed, task, steps in ((4, "dmc:cartpole-balance", 125), (7, "dmc:reacher-easy", 250)):
            _, info = env.reset(seed=seed)
            assert info["task"] == task == task_for_seed(split_tasks(PAIR), seed)
            alone = make_env(task, render="fast", size=16)
            alone.reset(seed=seed)
            total, count, done = 0, 0, False
            while not done:
                action = np.full(2, 0.5, np.float32)
                _, reward, terminated, truncated, info = env.step(action)
                # the same episode as the task's own env, given the action's first A_k entries
                _, own, _, _, own_info = alone.step(action[: alone.action_space.shape[0]])
                assert reward == own and info["task"] == task
                total += info["env_steps"]
                count += 1
                done = terminated or truncated
            alone.close()
            assert count == steps and total == 1000
    finally:
        env.close()


def test_multitask_names_and_their_errors():
    assert parse_task(PAIR).suite == "multi" and default_action_repeat(PAIR) == 0
    with pytest.raises(ValueError, match="two or more tasks"):
        parse_task("multi:dmc:cartpole-balance")
    with pytest.raises(ValueError, match="names a task twice"):
        parse_task("multi:dmc:cartpole-balance,dmc:cartpole-balance")
    with pytest.raises(ValueError, match="Did you mean|no task"):
        parse_task("multi:dmc:cartpole-balanse,dmc:reacher-easy")
    with pytest.raises(ValueError, match="cannot be one of its tasks"):
        parse_task("multi:dmc:cartpole-balance,fn:mine")
    with pytest.raises(ValueError, match="not taken by a multi-task env"):
        make_env(PAIR, sibling_rewards=True)
    assert returns_by_task(split_tasks(PAIR), 10, [1.0, 2.0, 3.0, 4.0]) == {
        "dmc:cartpole-balance": [1.0, 3.0],
        "dmc:reacher-easy": [2.0, 4.0],
    }


def test_a_multitask_run_counts_each_tasks_env_steps_and_evaluates_per_task(tmp_path):
    config = tiny_config(tmp_path, max_episodes=4)
    config.task = PAIR
    config.eval.every, config.eval.episodes = 4, 2
    assert action_repeats(config) == (8, 4)
    summary = train(config, progress=False)
    assert summary["env_steps"] == 4000  # 2 × 1000 per task, whatever the lengths
    lengths = sorted(int(p.name.split("-")[1][:-4]) for p in (tmp_path / "episodes").iterdir())
    assert lengths == [126, 126, 251, 251]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    trained = [r for r in rows if "train/return" in r]
    assert [r["train/env_steps"] for r in trained] == [1000, 2000, 3000, 4000]
    tasks = [next(k for k in r if k.startswith("train/return/"))[13:] for r in trained]
    assert tasks[0] != tasks[1] and tasks[:2] == tasks[2:]  # one episode of each, in turn
    (last,) = [r for r in rows if "eval/return" in r]
    for task in split_tasks(PAIR):
        assert f"eval/return/{task}" in last
    assert np.mean([last[f"eval/return/{t}"] for t in split_tasks(PAIR)]) == pytest.approx(
        last["eval/return"]
    )
    assert episode_action_repeat(config, 1) in (8, 4)


def test_a_multitask_run_needs_as_many_eval_episodes_per_task(tmp_path):
    from planetrl.config import ConfigError

    config = tiny_config(tmp_path)
    config.task, config.eval.episodes = PAIR, 3
    with pytest.raises(ConfigError, match="multiple of the number of tasks"):
        train(config, progress=False)


def test_world_models_refuses_a_multitask_name(tmp_path):
    from test_worldmodels import tiny_config as wm_config

    from planetrl.config import ConfigError
    from planetrl.worldmodels.trainer import WorldModelsTrainer

    config = wm_config(tmp_path)
    config.task = PAIR
    with pytest.raises(ConfigError, match="PlaNet's experiment"):
        WorldModelsTrainer(config, progress=False)


# ------------------------------------------------------------------------------------- suite
def test_the_multitask_suite_gives_its_run_the_budget_of_each_task(tmp_path):
    from planetrl.suite import builtin
    from planetrl.suite.spec import run_budget, run_config, same_run

    suite = builtin("multitask", seeds=2)
    multi = [r for r in suite.runs if r.variant == "multitask"]
    single = [r for r in suite.runs if r.variant == "single"]
    assert [r.task for r in multi] == ["multi:dmc:cartpole-swingup,dmc:reacher-easy"] * 2
    assert sorted({r.task for r in single}) == ["dmc:cartpole-swingup", "dmc:reacher-easy"]
    config = run_config(suite, multi[0], tmp_path)
    assert run_budget(suite, multi[0]) == 200_000 == config.train.max_env_steps
    assert config.train.max_episodes == 200 and config.eval.episodes == 20
    assert config.eval.every == 20  # every 10k env steps of each task
    # the single-task runs are dmc100k's: --reuse trains them once
    dmc = builtin("dmc100k", seeds=2)
    for run in single:
        assert any(same_run(suite, run, dmc, other) for other in dmc.runs), run.name
    with pytest.raises(Exception, match="two or more tasks"):
        builtin("multitask", tasks=["dmc:cartpole-swingup"])


def test_a_multitask_run_is_reported_per_task_at_each_tasks_env_steps(tmp_path):
    """The suite's run body (train_run, what each Ray task runs) and the report, without Ray."""
    from test_suite import TINY

    from planetrl.suite import builtin
    from planetrl.suite.report import write_report
    from planetrl.suite.runner import _config_dict, train_run
    from planetrl.suite.spec import merge_suite, run_budget, run_config

    suite = builtin(
        "multitask", seeds=1, env_steps=2000, tasks=["dmc:cartpole-balance", "dmc:reacher-easy"]
    )
    suite.overrides, suite.eval_every_env_steps, suite.eval_episodes = dict(TINY), 1000, 1
    multi = next(r for r in suite.runs if r.variant == "multitask")
    merge_suite(tmp_path, suite)
    config = run_config(suite, multi, tmp_path)
    record = train_run(_config_dict(config), run_budget(suite, multi))
    assert record["env_steps"] == record["budget_env_steps"] == 4000  # 2000 for each task
    write_report(tmp_path)
    curves = (tmp_path / "curves.csv").read_text()
    for task in ("dmc:cartpole-balance", "dmc:reacher-easy"):
        assert f"{task},multitask,1000,1," in curves and f"{task},multitask,2000,1," in curves
        assert f"{task},random policy,0,1," in curves  # its share of the random episodes
    table = (tmp_path / "results.md").read_text()
    assert "| dmc:reacher-easy | multitask |" in table
    assert "| dmc:reacher-easy | single | – |" in table  # not trained here
