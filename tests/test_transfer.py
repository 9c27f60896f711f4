"""Transfer (planetrl.training.transfer): a run whose world model starts from another run's
(``init_from``), with some parts kept and some frozen, and the clear errors of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import tiny_config

from planetrl.cli import main
from planetrl.config import ConfigError
from planetrl.envs.dmc import sibling_tasks
from planetrl.run.checkpoint import load_checkpoint
from planetrl.run.logger import read_metrics
from planetrl.suite import builtin, run_suite
from planetrl.suite.spec import (
    TRANSFER_ENV_STEPS,
    RunSpec,
    Suite,
    run_config,
    source_order,
    transfer,
)
from planetrl.training import transfer as transfer_module
from planetrl.training.loop import Trainer, load_run, train

SOURCE_TASK = "dmc:cartpole-balance"  # siblings: balance_sparse, swingup, swingup_sparse
TARGET_TASK = "dmc:cartpole-swingup"


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny cartpole-balance run that learned its siblings' reward heads too."""
    logdir = tmp_path_factory.mktemp("source")
    config = tiny_config(logdir)
    config.task, config.sibling_rewards = SOURCE_TASK, True
    train(config, progress=False)
    return logdir


def target_config(logdir, source, max_episodes=3, **init):
    config = tiny_config(logdir, max_episodes=max_episodes)
    config.task, config.init_from = TARGET_TASK, str(source)
    for key, value in init.items():
        setattr(config, key, value)
    return config


def states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_starts_from_the_source_model_with_its_head_for_the_new_task(tmp_path, source_run):
    _, source = load_run(source_run, device="cpu")
    config = target_config(tmp_path, source_run)  # Trainer() builds; nothing runs
    config.sibling_rewards = True  # balance, balance_sparse, swingup_sparse heads here
    trainer = Trainer(config, progress=False)
    try:
        model = trainer.world_model
        for part in ("encoder", "transition", "decoder"):
            assert same(states(getattr(model, part)), states(getattr(source, part))), part
        # swingup's head is the source's sibling head; balance's is the source's own reward
        assert same(states(model.reward), states(source.task_rewards[TARGET_TASK]))
        assert same(states(model.task_rewards[SOURCE_TASK]), states(source.reward))
        for task in sibling_tasks(TARGET_TASK):
            if task != SOURCE_TASK:
                assert same(states(model.task_rewards[task]), states(source.task_rewards[task]))
    finally:
        trainer.close()
    record = json.loads((tmp_path / transfer_module.INIT_FILE).read_text())
    payload = load_checkpoint(source_run / "checkpoint.pt")
    assert record["source_task"] == SOURCE_TASK
    assert record["source_env_steps"] == payload["env_steps"] > 0
    assert record["kept"]["reward"]["reward"] == f"task_rewards.{TARGET_TASK}"
    assert record["kept"]["reward"][f"task_rewards.{SOURCE_TASK}"] == "reward"
    assert record["frozen"] == []


def test_frozen_parts_never_move_and_the_rest_trains(tmp_path, source_run):
    _, source = load_run(source_run, device="cpu")
    config = target_config(tmp_path, source_run, init_freeze="encoder,transition,decoder")
    summary = train(config, progress=False)
    assert summary["updates"] > 0
    _, model = load_run(tmp_path, device="cpu")
    for part in ("encoder", "transition", "decoder"):
        assert same(states(getattr(model, part)), states(getattr(source, part))), part
    assert not same(states(model.reward), states(source.task_rewards[TARGET_TASK]))


def test_parts_not_kept_start_fresh_and_a_missing_head_is_fresh(tmp_path, source_run):
    """Keep the transition only: the encoder is this seed's fresh one. A source without a head
    for the task (trained without sibling rewards) leaves the reward fresh under `all`."""
    _, source = load_run(source_run, device="cpu")
    config = target_config(tmp_path, source_run, init_keep="transition")
    trainer = Trainer(config, progress=False)
    try:
        assert same(states(trainer.world_model.transition), states(source.transition))
        assert not same(states(trainer.world_model.encoder), states(source.encoder))
    finally:
        trainer.close()

    plain = tmp_path / "plain-source"
    plain_config = tiny_config(plain, max_episodes=2)
    plain_config.task = SOURCE_TASK
    train(plain_config, progress=False)
    config = target_config(tmp_path / "from-plain", plain)
    trainer = Trainer(config, progress=False)
    trainer.close()
    record = json.loads((tmp_path / "from-plain" / transfer_module.INIT_FILE).read_text())
    assert record["kept"]["reward"] == {"reward": None}
    assert "fresh" in transfer_module.describe(record)
    # a head the source lacks cannot be frozen at its random start
    config = target_config(tmp_path / "frozen-fresh", plain, init_freeze="reward")
    with pytest.raises(ConfigError, match="random start"):
        Trainer(config, progress=False)


def test_a_resumed_run_continues_from_its_own_checkpoint(tmp_path, source_run, monkeypatch):
    config = target_config(tmp_path, source_run, max_episodes=3)
    train(config, progress=False)

    def never(*args, **kwargs):
        raise AssertionError("a resumed run must not be initialised from its source again")

    monkeypatch.setattr(transfer_module, "initialise", never)
    resumed = target_config(tmp_path, source_run, max_episodes=4)
    resumed.init_from = f"{source_run}/"  # another spelling (a moved suite): still resumes
    assert train(resumed, progress=False)["episodes"] == 4


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda c: setattr(c.model, "deter_size", 32),
            r"model\.deter_size: source 16 != this run 32",
        ),
        (lambda c: setattr(c, "task", "dmc:reacher-easy"), r"shape .*another action size"),
        (lambda c: setattr(c, "init_from", "/nonexistent/run"), "not a PlaNet run directory"),
        (lambda c: setattr(c, "init_from", c.logdir), "this run's own directory"),
    ],
    ids=["model-size", "action-size", "no-run", "own-dir"],
)
def test_a_source_that_cannot_start_this_run_is_a_clear_error(
    tmp_path, source_run, change, message
):
    config = target_config(tmp_path / "run", source_run)
    change(config)
    with pytest.raises(ConfigError, match=message):
        train(config, progress=False)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"init_keep": "encoder,bogus"}, "unknown world-model part.*'bogus'"),
        ({"init_keep": "encoder", "init_freeze": "transition"}, "not in init_keep: transition"),
        ({"init_freeze": "all"}, "freezes every part"),
        ({"init_keep": ""}, "names no part"),
        ({"init_keep": "continuation"}, "continuation is off"),
        ({"init_from": "", "init_freeze": "encoder"}, "need init_from"),
        ({"init_from": "", "init_keep": "encoder"}, "need init_from"),
        ({"init_keep": "all,encoder"}, "'all' stands alone"),
    ],
)
def test_bad_init_options_are_rejected_by_the_config(tmp_path, fields, message):
    config = target_config(tmp_path, "somewhere")
    for key, value in fields.items():
        setattr(config, key, value)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_the_cli_takes_the_init_flags_and_names_a_bad_part(tmp_path, capsys):
    code = main(["train", "--logdir", str(tmp_path), "--init-from", str(tmp_path / "src"),
                 "--init-keep", "encoder,wings"])  # fmt: skip
    assert code == 2
    assert "'wings'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- suites
def test_the_transfer_suites_pair_each_transferred_run_with_one_from_scratch(tmp_path):
    suite = builtin("transfer-walker", seeds=2)
    assert suite.env_steps == TRANSFER_ENV_STEPS
    variants = [(r.task, r.variant, r.seed) for r in suite.runs]
    for seed in range(2):
        assert ("dmc:walker-walk", "source", seed) in variants
        for task in ("dmc:walker-stand", "dmc:walker-run"):
            assert (task, "transfer", seed) in variants and (task, "scratch", seed) in variants
    by_name = {r.name: r for r in suite.runs}
    for run in suite.runs:
        config = run_config(suite, run, tmp_path)
        if run.variant == "source":
            assert config.sibling_rewards and not config.init_from
        elif run.variant == "transfer":
            source = by_name[run.init_from_run]
            assert source.variant == "source" and source.seed == run.seed
            assert config.init_from == str(tmp_path / "runs" / source.name)
            assert (config.init_keep, config.init_freeze) == ("all", "")
        else:
            assert not config.init_from and not config.sibling_rewards
    assert Suite.from_dict(suite.to_dict()).runs == suite.runs
    chosen = builtin("transfer-cartpole", tasks=["dmc:cartpole-swingup"])
    assert {r.task for r in chosen.runs} == {"dmc:cartpole-balance", "dmc:cartpole-swingup"}
    with pytest.raises(ConfigError, match="no sibling of dmc:walker-walk.*walker-stand"):
        builtin("transfer-walker", tasks=["dmc:cheetah-run"])


def test_a_run_comes_after_the_run_it_starts_from_and_a_cycle_is_an_error(tmp_path):
    source = RunSpec("dmc:cartpole-balance", 0, "source")
    target = RunSpec("dmc:cartpole-swingup", 0, "transfer", init_from_run=source.name)
    assert source_order([target, source]) == [source, target]
    a = RunSpec("dmc:cartpole-balance", 0, "a", init_from_run="dmc-cartpole-balance__b__seed0")
    b = RunSpec("dmc:cartpole-balance", 0, "b", init_from_run=a.name)
    with pytest.raises(ConfigError, match="cycle"):
        source_order([a, b])
    lost = Suite("s", "small", 1000, 1000, 1, [target])
    with pytest.raises(ConfigError, match="no run of suite 's'"):
        run_config(lost, target, tmp_path)


@pytest.mark.ray
def test_a_transfer_suite_on_ray_trains_the_source_first_and_evaluates_zero_shot(tmp_path):
    """All runs go to Ray at once; the transferred run waits for its source to finish, starts
    from its final model, and is evaluated at 0 env steps, then like the scratch run."""
    pytest.importorskip("ray")
    from test_suite import TINY

    suite = transfer(
        "dmc:cartpole-balance", "transfer-tiny", seeds=1, env_steps=2000,
        tasks=["dmc:cartpole-swingup"],
    )  # fmt: skip
    suite.overrides, suite.eval_every_env_steps, suite.eval_episodes = dict(TINY), 1000, 1
    run_suite(suite, tmp_path, cpus_per_run=1, log=lambda _: None)
    runs = {r.variant: tmp_path / "runs" / r.name for r in suite.runs}
    record = json.loads((runs["transfer"] / transfer_module.INIT_FILE).read_text())
    assert record["source_env_steps"] == 2000  # the source's final model
    evals = {
        variant: [r["step"] for r in read_metrics(path / "metrics.jsonl") if "eval/return" in r]
        for variant, path in runs.items()
    }
    assert evals["transfer"] == [0, 2000] and evals["scratch"] == [2000]
    curves = (tmp_path / "curves.csv").read_text()
    assert "dmc:cartpole-swingup,transfer,0,1," in curves
    report = (tmp_path / "results.md").read_text()
    assert "## Transfer: a learned world model on a sibling task" in report
    row = next(line for line in report.splitlines() if line.startswith("| dmc:cartpole-swingup ("))
    assert "| dmc:cartpole-balance |" in row and row.count("(1)") == 3  # one seed each
    table = (tmp_path / "transfer.csv").read_text().splitlines()
    assert table[0].startswith("task,variant,source,baseline,zero_shot")


def test_the_transfer_table_reads_zero_shot_final_and_scratch_over_seeds():
    from planetrl.suite.report import RunResult
    from planetrl.suite.transfer import transfer_markdown, transfer_rows

    suite = transfer("dmc:walker-walk", "transfer-walker", seeds=3, tasks=["dmc:walker-run"])
    finals = {"source": [600, 620, 640], "transfer": [300, 320, 340], "scratch": [100, 90, 110]}
    results = []
    for run in suite.runs:
        score = finals[run.variant][run.seed]
        curve = {50_000: (float(score), 5.0)}
        if run.variant == "transfer":
            curve[0] = (float(100 + run.seed), 3.0)  # zero-shot
        done = {"wall_clock_s": 1.0} if run.seed < 3 else None
        results.append(RunResult(run.name, run.task, run.variant, run.seed, curve, finished=done))
    (row,) = transfer_rows(suite, results)
    assert (row["task"], row["variant"], row["source"], row["baseline"]) == (
        "dmc:walker-run", "transfer", "dmc:walker-walk", "scratch"
    )  # fmt: skip
    assert row["zero_shot"] == pytest.approx(101) and row["zero_shot_seeds"] == 3
    assert row["transfer"] == pytest.approx(320) and row["scratch"] == pytest.approx(100)
    assert row["transfer_lo"] <= 320 <= row["transfer_hi"] and row["transfer_hi"] <= 340
    assert row["p_transfer_better"] == pytest.approx(1.0) and row["env_steps"] == 50_000
    text = "\n".join(transfer_markdown([row]))
    assert "| dmc:walker-run (transfer) | dmc:walker-walk | 101 [" in text
    assert transfer_rows(builtin("dmc100k", tasks=["dmc:cartpole-swingup"]), results) == []
