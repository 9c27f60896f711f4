"""Suites: the built-in specs, the published-figures data file, runs on Ray, resume and report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from planetrl.config import ConfigError, preset, set_field
from planetrl.envs import PAPER_ACTION_REPEAT, default_action_repeat
from planetrl.run.logger import read_metrics
from planetrl.suite import (
    DMC_TASKS,
    PublishedDataError,
    RunSpec,
    Suite,
    builtin,
    load_published,
    published_at,
    run_config,
    run_suite,
)
from planetrl.suite.report import write_report
from planetrl.suite.runner import SuiteError, merge_suite

TINY = {
    "render": "fast",
    "device": "cpu",
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


def tiny_suite(env_steps: int = 3000, seeds: int = 2) -> Suite:
    """cartpole-balance (1000 env steps per episode): evaluation after every episode."""
    runs = [RunSpec("dmc:cartpole-balance", seed) for seed in range(seeds)]
    return Suite("tiny", "small", env_steps, 1000, 2, runs, description="tiny", overrides=TINY)


# ------------------------------------------------------------------------------- published data
def test_published_figures_parse_and_cover_the_six_tasks():
    rows = load_published()
    for task in DMC_TASKS:
        agents = {r.agent: r for r in published_at(task, 100_000, rows)}
        assert {"PlaNet", "Dreamer", "CURL", "DrQ", "DreamerV3"} <= set(agents), task
        assert all(r.source for r in agents.values())
    # Two rows checked by hand against the papers (CURL Table 1; PlaNet Table 1).
    planet = {
        r.task: (r.mean, r.std)
        for r in published_at("dmc:cartpole-swingup", 100_000, rows)
        for _ in [0]
        if r.agent == "PlaNet"
    }
    assert planet["dmc:cartpole-swingup"] == (297, 39)
    paper = {r.task: r.mean for r in rows if r.agent == "PlaNet (paper)"}
    assert paper == {
        "dmc:cartpole-swingup": 821,
        "dmc:reacher-easy": 832,
        "dmc:cheetah-run": 662,
        "dmc:finger-spin": 700,
        "dmc:ball_in_cup-catch": 930,
        "dmc:walker-walk": 951,
    }


HEADER = "agent,task,env_steps,mean,std,seeds,source,verified,note\n"


@pytest.mark.parametrize(
    "line,message",
    [
        ("PlaNet,dmc:cartpole-swingup,100000,abc,1,10,src,yes,\n", "could not convert"),
        ("PlaNet,dmc:nope-swingup,100000,1,1,10,src,yes,\n", "no DMC domain"),
        ("PlaNet,dmc:cartpole-swingup,100000,1,1,10,,yes,\n", "a source"),
        ("PlaNet,dmc:cartpole-swingup,100000,1,1,10,src,maybe,\n", "verified"),
        ("PlaNet,dmc:cartpole-swingup,100000,1,-1,10,src,yes,\n", "std >= 0"),
        ("PlaNet,dmc:cartpole-swingup,100000,1,1,10,src\n", "fields"),
    ],
)
def test_published_figures_reject_malformed_rows(tmp_path, line, message):
    path = tmp_path / "p.csv"
    path.write_text("# comment\n" + HEADER + line)
    with pytest.raises(PublishedDataError, match=message) as err:
        load_published(path)
    assert "p.csv:3" in str(err.value) or "fields" in message


def test_published_figures_reject_duplicates_and_bad_header(tmp_path):
    path = tmp_path / "p.csv"
    row = "PlaNet,dmc:cartpole-swingup,100000,1,1,,src,yes,\n"
    path.write_text(HEADER + row + row)
    with pytest.raises(PublishedDataError, match="a second row"):
        load_published(path)
    path.write_text("agent,task\n" + row)
    with pytest.raises(PublishedDataError, match="header"):
        load_published(path)


# ---------------------------------------------------------------------------------------- specs
def test_dmc100k_is_the_papers_benchmark(tmp_path):
    suite = builtin("dmc100k", preset="small", seeds=2)
    assert [r.task for r in suite.runs] == [t for t in DMC_TASKS for _ in range(2)]
    assert len({r.name for r in suite.runs}) == len(suite.runs)
    for run in suite.runs:
        config = run_config(suite, run, tmp_path)
        assert config.train.max_env_steps == 100_000 and config.train.max_episodes == 100
        assert config.eval.every == 10 and config.eval.episodes == 10  # every 10k env steps
        assert config.logdir == str(tmp_path / "runs" / run.name)
        domain = run.task.split(":")[1].split("-")[0]
        assert config.action_repeat == 0  # the default: the paper's repeat per domain
        assert default_action_repeat(run.task) == PAPER_ACTION_REPEAT[domain]
    assert {r.task: default_action_repeat(r.task) for r in suite.runs} == {
        "dmc:cartpole-swingup": 8,
        "dmc:reacher-easy": 4,
        "dmc:cheetah-run": 4,
        "dmc:finger-spin": 2,
        "dmc:ball_in_cup-catch": 4,
        "dmc:walker-walk": 2,
    }


def test_ablation_suites_set_their_arms(tmp_path):
    suite = builtin("ablation-transition", seeds=1)
    arms = {r.variant: run_config(suite, r, tmp_path).model.transition for r in suite.runs}
    assert arms == {"rssm": "rssm", "ssm": "ssm", "gru": "gru"}
    suite = builtin("ablation-overshooting", seeds=1, tasks=["dmc:cartpole-balance"])
    distances = {
        r.variant: run_config(suite, r, tmp_path).loss.overshooting_distance for r in suite.runs
    }
    assert distances == {"D1": 1, "D12": 12}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(seeds=0), "--seeds"),
        (dict(env_steps=0), "--env-steps"),
        (dict(preset="big"), "unknown preset"),
        (dict(tasks=["dmc:cartpole-swingpu"]), "Did you mean"),
    ],
)
def test_builtin_suites_reject_bad_input(kwargs, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        builtin("dmc100k", **kwargs)
    with pytest.raises(ConfigError, match="accepted: dmc100k"):
        builtin("dmc1k")


def test_set_field_names_the_accepted_fields():
    config = preset("small")
    set_field(config, "planner.candidates", 7)
    assert config.planner.candidates == 7
    with pytest.raises(ConfigError, match="accepted in section 'planner'.*candidates"):
        set_field(config, "planner.candidate", 7)
    with pytest.raises(ConfigError, match="unknown config section"):
        set_field(config, "plan.candidates", 7)


def test_suite_directory_keeps_its_settings(tmp_path):
    merge_suite(tmp_path, tiny_suite(seeds=1))
    merged = merge_suite(tmp_path, tiny_suite(seeds=2, env_steps=4000))  # more seeds, more steps
    assert len(merged.runs) == 2 and merged.env_steps == 4000
    other = tiny_suite()
    other.eval_episodes = 3
    with pytest.raises(SuiteError, match="eval_episodes"):
        merge_suite(tmp_path, other)


# ------------------------------------------------------------------------------------------ Ray
@pytest.mark.ray
def test_two_run_suite_on_ray_then_rerun_skips_finished(tmp_path):
    pytest.importorskip("ray")
    suite = tiny_suite()
    results = run_suite(suite, tmp_path, log=lambda _: None)
    assert sorted(results) == sorted(r.name for r in suite.runs)
    for run in suite.runs:
        run_dir = tmp_path / "runs" / run.name
        finished = json.loads((run_dir / "finished.json").read_text())
        assert finished["env_steps"] == 3000 and finished["commit"] and finished["cpu"]
        evals = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "eval/return" in r]
        assert evals == [2000, 3000]  # every episode after the seed episode
        assert len(json.loads((run_dir / "random.json").read_text())["returns"]) == 2
    table = (tmp_path / "results.md").read_text()
    assert "dmc:cartpole-balance" in table and "2 (2)" in table
    assert (tmp_path / "curves.png").stat().st_size > 1000
    curve = (tmp_path / "curves.csv").read_text().splitlines()
    assert curve[0].startswith("task,variant,env_steps,seeds,mean,std")
    assert any(",random policy,0,2," in line for line in curve)
    lines: list[str] = []
    assert run_suite(suite, tmp_path, log=lines.append) == {}  # all finished: Ray not started
    assert sum("finished, skipped" in line for line in lines) == 2


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_suite import tiny_suite
    from planetrl.suite import run_suite
    run_suite(tiny_suite(env_steps={steps}, seeds=1), {directory!r}, report=False)
""")


def _run_dir(directory: Path) -> Path:
    return directory / "runs" / tiny_suite(seeds=1).runs[0].name


def _ray_workers(exclude: frozenset[int] = frozenset()) -> list[int]:
    """Ray workers running a suite's run (``ray::train_run``), other than ``exclude`` (those of
    suites already running on this machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and int(entry.name) not in exclude
                and b"ray::train_run" in (entry / "cmdline").read_bytes()
            ):
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def _wait_for_no_ray_workers(exclude: frozenset[int], timeout: float = 30.0) -> None:
    """Ray's local cluster shares the driver's fate; its workers go within seconds."""
    deadline = time.time() + timeout
    while _ray_workers(exclude) and time.time() < deadline:
        time.sleep(0.2)
    assert not _ray_workers(exclude), "a Ray worker outlived its killed driver"


@pytest.mark.ray
def test_a_killed_suite_continues_where_its_run_stopped(tmp_path):
    pytest.importorskip("ray")
    script = SCRIPT.format(tests=str(Path(__file__).parent), steps=5000, directory=str(tmp_path))
    others = frozenset(_ray_workers())
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = _run_dir(tmp_path) / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "the run never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, Ray and its worker: everything
    proc.wait()
    _wait_for_no_ray_workers(others)
    assert not (_run_dir(tmp_path) / "finished.json").exists()
    run_suite(tiny_suite(env_steps=5000, seeds=1), tmp_path, log=lambda _: None)
    finished = json.loads((_run_dir(tmp_path) / "finished.json").read_text())
    assert finished["episodes"] == 5 and finished["env_steps"] == 5000
    rows = read_metrics(_run_dir(tmp_path) / "metrics.jsonl")
    assert sorted({r["step"] for r in rows if "eval/return" in r}) == [2000, 3000, 4000, 5000]


def test_report_from_partial_runs(tmp_path):
    """The report can be written while runs are unfinished (runs with no evaluation yet)."""
    merge_suite(tmp_path, tiny_suite())
    paths = write_report(tmp_path)
    assert (tmp_path / "results.md") in paths
    assert "2 (0)" in (tmp_path / "results.md").read_text()


def test_cli_suite_rejects_bad_input(capsys):
    from planetrl.cli import main

    assert main(["suite", "dmc1k"]) == 2
    assert "accepted: dmc100k" in capsys.readouterr().err
    assert main(["suite", "dmc100k", "--seeds", "0"]) == 2
    assert "--seeds must be a positive integer" in capsys.readouterr().err
    assert main(["suite", "dmc100k", "--seeds", "x"]) == 2
    assert "planetrl suite --help" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_retries_a_run_whose_worker_died(tmp_path):
    """Kill only the Ray worker training the run: Ray restarts the task, which resumes."""
    pytest.importorskip("ray")
    script = SCRIPT.format(tests=str(Path(__file__).parent), steps=4000, directory=str(tmp_path))
    others = frozenset(_ray_workers())
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        checkpoint = _run_dir(tmp_path) / "checkpoint.pt"
        deadline = time.time() + 120
        while not (checkpoint.exists() and _ray_workers(others)) and time.time() < deadline:
            time.sleep(0.2)
        workers = _ray_workers(others)
        assert checkpoint.exists() and workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = json.loads((_run_dir(tmp_path) / "finished.json").read_text())
    assert finished["env_steps"] == 4000
    attempts = (_run_dir(tmp_path) / "attempts.jsonl").read_text().splitlines()
    assert sum("seconds" in line for line in attempts) == 1  # the killed attempt never ended
    assert len(attempts) == 3
    assert finished["wall_clock_s"] > 0


@pytest.mark.ray
def test_report_shows_the_attribution(tmp_path):
    from planetrl.suite.attribution import attribute_suite

    suite = tiny_suite(env_steps=2000, seeds=1)
    suite.overrides = {
        **TINY,
        "planner.horizon": 2,
        "planner.candidates": 8,
        "planner.top_k": 2,
        "planner.iterations": 1,
    }
    run_suite(suite, tmp_path, log=lambda _: None)
    attribute_suite(suite, tmp_path, episodes=1, device="cpu", log=lambda _: None)
    write_report(tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "## Attribution" in table
    row = [line for line in table.splitlines() if line.startswith("| dmc:cartpole-balance")][-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] != "–" and float(cells[4]) >= 0  # ceiling, held-out MSE


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n"
            "flags\t\t: fpu avx avx2\n\nprocessor\t: 1\n",
            "AMD EPYC (family 25 model 1, Zen 3, AVX2)",
        ),
        (
            "vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
            "flags\t\t: avx2 avx512f avx512_bf16\n",
            "AMD EPYC (family 26 model 2, Zen 5, AVX512-BF16)",
        ),
        (
            "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
            "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\nflags\t\t: avx2 avx512f "
            "amx_tile\n",
            "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (family 6 model 143, AMX)",
        ),
    ],
)
def test_cpu_model_names_family_model_and_vector_extensions(text, expected):
    from planetrl.suite.runner import cpu_model

    assert cpu_model(text) == expected
