"""A suite's report over seeds: rliable's intervals and aggregates, verdicts against published
figures, ``--merge`` of directories, ``--export`` of the small files, and the committed report
regenerated from its committed files."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from planetrl.suite import RunSpec, Suite, stats
from planetrl.suite.layout import run_dir
from planetrl.suite.report import export, load_sources, write_report
from planetrl.suite.runner import merge_suite

rly = pytest.importorskip("rliable.library")
metrics = pytest.importorskip("rliable.metrics")

TASKS = ("dmc:cartpole-swingup", "dmc:walker-walk")
REPO = Path(__file__).resolve().parents[1]


def score(task: str, variant: str, seed: int) -> float:
    """A synthetic last evaluation: distinct per run, the "better" variant higher."""
    base = {"dmc:cartpole-swingup": 300.0, "dmc:walker-walk": 100.0}[task]
    return base + 37.0 * seed + (150.0 if variant == "better" else 0.0) + 11.0 * (seed % 2)


def fake_suite(
    directory: Path,
    seeds=(0, 1, 2),
    variants=("default", "better"),
    preset: str = "small",
    finished: bool = True,
    env_steps: int = 20_000,
) -> Suite:
    """A suite directory whose runs hold what a trained run leaves for the report."""
    runs = [RunSpec(t, s, v) for t in TASKS for v in variants for s in seeds]
    suite = Suite("dmc100k", preset, env_steps, 10_000, 10, runs, description="synthetic")
    merge_suite(directory, suite)
    for run in runs:
        path = run_dir(directory, run.name)
        path.mkdir(parents=True, exist_ok=True)
        final = score(run.task, run.variant, run.seed)
        rows = [
            {"step": 10_000, "eval/return": final / 2, "eval/return_std": 5.0, "time": 1.0},
            {"step": 20_000, "eval/return": final, "eval/return_std": 7.0, "time": 2.0},
        ]
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (path / "random.json").write_text(json.dumps({"returns": [10.0, 12.0]}))
        (path / "config.json").write_text("{}")
        (path / "checkpoint.pt").write_bytes(b"not exported")
        if finished:
            (path / "finished.json").write_text(
                json.dumps(
                    {
                        "env_steps": env_steps,
                        "budget_env_steps": env_steps,
                        "wall_clock_s": 600.0,
                        "cpu": "test CPU",
                        "commit": "0" * 40,
                    }
                )
            )
    return suite


def matrix(variant: str, seeds=(0, 1, 2)) -> np.ndarray:
    return np.array([[score(t, variant, s) / 1000 for t in TASKS] for s in seeds])


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def _few_resamples(few_resamples):
    """Every test here with conftest's fewer bootstrap resamples."""


def direct(scores, func, reps: int | None = None):
    """rliable called directly, under the seed the report uses."""
    np.random.seed(stats.SEED)
    return rly.get_interval_estimates({"x": scores}, func, reps=reps or stats.REPS)


def test_per_task_intervals_and_aggregates_match_rliable(tmp_path):
    fake_suite(tmp_path)
    write_report(tmp_path)
    seeds = {(r["task"], r["variant"]): r for r in read_csv(tmp_path / "seeds.csv")}
    values = np.array([[score(task, "default", s) for task in TASKS] for s in range(3)])
    point, ci = direct(values, lambda s: np.mean(s, axis=0))  # tasks are the strata
    for j, task in enumerate(TASKS):
        row = seeds[(task, "default")]
        assert float(row["mean"]) == pytest.approx(point["x"][j])
        assert float(row["ci_lo"]) == pytest.approx(ci["x"][0, j])
        assert float(row["ci_hi"]) == pytest.approx(ci["x"][1, j])
        assert float(row["ci_lo"]) < float(row["mean"]) < float(row["ci_hi"])
        assert row["seeds"] == "3" and row["seed_list"] == "0 1 2"

    aggregates = {(r["variant"], r["metric"]): r for r in read_csv(tmp_path / "aggregates.csv")}
    point, ci = direct(
        matrix("better"),
        lambda s: np.array(
            [metrics.aggregate_iqm(s), metrics.aggregate_median(s), metrics.aggregate_mean(s)]
        ),
    )
    for i, name in enumerate(stats.AGGREGATES):
        row = aggregates[("better", name)]
        assert float(row["value"]) == pytest.approx(point["x"][i])
        assert (float(row["ci_lo"]), float(row["ci_hi"])) == pytest.approx(tuple(ci["x"][:, i]))
        assert row["tasks"] == "2" and row["runs_per_task"] == "3"

    improvement = {(r["x"], r["y"]): r for r in read_csv(tmp_path / "improvement.csv")}
    np.random.seed(stats.SEED)
    point, ci = rly.get_interval_estimates(
        {"x": (matrix("better"), matrix("default"))},
        metrics.probability_of_improvement,
        reps=stats.IMPROVEMENT_REPS,
    )
    row = improvement[("better", "default")]
    assert float(row["probability"]) == pytest.approx(float(point["x"]))
    assert float(row["ci_lo"]) == pytest.approx(float(np.ravel(ci["x"])[0]))
    # every "better" run beats every "default" run on the same task
    assert float(row["probability"]) == 1.0
    assert float(improvement[("default", "better")]["probability"]) == 0.0

    profile = [r for r in read_csv(tmp_path / "profile.csv") if r["variant"] == "default"]
    np.random.seed(stats.SEED)
    expected, _ = rly.create_performance_profile(
        {"x": matrix("default")}, stats.TAUS, reps=stats.PROFILE_REPS
    )
    assert [float(r["fraction"]) for r in profile] == pytest.approx(list(expected["x"]))

    text = (tmp_path / "results.md").read_text()
    assert "## Over seeds (rliable)" in text and "P(X > Y)" in text
    assert (tmp_path / "aggregates.png").stat().st_size > 0
    curves = [
        r
        for r in read_csv(tmp_path / "curves.csv")
        if r["variant"] == "default" and r["env_steps"] == "20000" and r["task"] == TASKS[0]
    ]
    assert float(curves[0]["ci_lo"]) < float(curves[0]["mean"]) < float(curves[0]["ci_hi"])


def test_the_report_is_the_same_every_time_and_leaves_numpys_state(tmp_path):
    fake_suite(tmp_path)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    write_report(tmp_path)
    assert (np.random.get_state()[1] == before).all()
    first = {
        name: (tmp_path / name).read_bytes()
        for name in (
            "results.md",
            "seeds.csv",
            "aggregates.csv",
            "curves.csv",
            "aggregates.png",
            "curves.png",
        )
    }
    write_report(tmp_path)
    assert first == {name: (tmp_path / name).read_bytes() for name in first}


def test_unfinished_runs_count_in_curves_not_in_statistics(tmp_path):
    fake_suite(tmp_path, finished=False)
    paths = write_report(tmp_path)
    assert not (tmp_path / "seeds.csv").exists() and tmp_path / "seeds.csv" not in paths
    assert "Over seeds" not in (tmp_path / "results.md").read_text()
    assert (tmp_path / "curves.csv").exists()


@pytest.mark.parametrize("seed2_finished_others", [True, False])
def test_a_row_never_mixes_budgets(tmp_path, seed2_finished_others):
    """Seed 2 has evaluated only at 10k. With seeds 0 and 1 finished at 20k the row is their
    mean at 20k; with none finished, every seed's evaluation at 10k (the budget all reached)."""
    fake_suite(tmp_path, variants=("default",), finished=seed2_finished_others)
    for task in TASKS:
        path = run_dir(tmp_path, RunSpec(task, 2, "default").name)
        rows = (path / "metrics.jsonl").read_text().splitlines()
        (path / "metrics.jsonl").write_text(rows[0] + "\n")
        (path / "finished.json").unlink(missing_ok=True)
    write_report(tmp_path)
    row = next(r for r in read_csv(tmp_path / "results.csv") if r["task"] == TASKS[0])
    if seed2_finished_others:
        expected, steps = [score(TASKS[0], "default", s) for s in (0, 1)], "20000"
    else:
        expected, steps = [score(TASKS[0], "default", s) / 2 for s in (0, 1, 2)], "10000"
    assert row["env_steps"] == steps and row["seeds"] == str(len(expected))
    assert float(row["mean"]) == pytest.approx(np.mean(expected))
    assert float(row["std"]) == pytest.approx(np.std(expected))


def test_a_bare_cpu_name_gets_its_vector_extension_from_speed_json(tmp_path):
    """Runs that recorded only "AMD EPYC" are told apart by their speed.json (AVX2 against
    AVX-512); a name that already carries its details is left as it is."""
    fake_suite(tmp_path, seeds=(0,), variants=("default",))
    flags = {TASKS[0]: ["avx", "avx2", "fma"], TASKS[1]: ["avx2", "avx512_bf16", "avx512f"]}
    for task, task_flags in flags.items():
        path = run_dir(tmp_path, RunSpec(task, 0, "default").name)
        speed = {"hardware": {"cpu_flags": task_flags, "name": "AMD EPYC"}}
        (path / "speed.json").write_text(json.dumps(speed))
    write_report(tmp_path)
    cpus = {r["task"]: r["cpu"] for r in read_csv(tmp_path / "results.csv")}
    assert cpus == {TASKS[0]: "test CPU (AVX2)", TASKS[1]: "test CPU (AVX512-BF16)"}
    for task in TASKS:  # a detailed name is kept
        path = run_dir(tmp_path, RunSpec(task, 0, "default").name)
        record = json.loads((path / "finished.json").read_text())
        record["cpu"] = "AMD EPYC (family 25 model 1, Zen 3, AVX2)"
        (path / "finished.json").write_text(json.dumps(record))
    write_report(tmp_path)
    cpus = {r["task"]: r["cpu"] for r in read_csv(tmp_path / "results.csv")}
    assert set(cpus.values()) == {"AMD EPYC (family 25 model 1, Zen 3, AVX2)"}


def test_one_seed_has_no_interval_and_says_so(tmp_path):
    fake_suite(tmp_path, seeds=(0,), variants=("default",), env_steps=100_000)
    write_report(tmp_path)
    row = read_csv(tmp_path / "seeds.csv")[0]
    assert row["ci_lo"] == row["mean"] == row["ci_hi"]
    assert "(1 seed)" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "lo, hi, mean, std, seeds, expected",
    [
        (300, 400, 200, 30, 10, "above"),  # 200 + 1.96 * 30 / sqrt(10) = 218.6 < 300
        (300, 400, 297, 39, None, "within noise"),  # n unknown: 297 + 1.96 * 39 = 373 > 300
        (390, 420, 297, 39, None, "above"),
        (50, 120, 224, 48, None, "below"),  # 224 - 1.96 * 48 = 130 > 120
        (150, 200, 0, 0, None, "above"),  # a published 0 ± 0
        (0, 0, 0, 0, None, "within noise"),
    ],
)
def test_verdict_against_a_published_figure(lo, hi, mean, std, seeds, expected):
    ours = stats.Interval((lo + hi) / 2, lo, hi, 3)
    assert stats.verdict(ours, mean, std, seeds) == expected


def test_stats_reject_malformed_input():
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_interval([])
    with pytest.raises(ValueError, match="runs × tasks"):
        stats.aggregate_intervals(np.zeros(3))
    with pytest.raises(ValueError, match="same tasks"):
        stats.improvement(np.zeros((3, 2)), np.zeros((3, 3)))


def test_merge_reads_one_suite_from_several_directories(tmp_path):
    whole, a, b = tmp_path / "whole", tmp_path / "a", tmp_path / "b"
    fake_suite(whole)
    fake_suite(a)
    fake_suite(b)
    # a holds seeds 0-1 finished, b only seed 2 finished: the merge is the whole suite
    for directory, unfinished in ((a, (2,)), (b, (0, 1))):
        for path in (directory / "runs").iterdir():
            if any(path.name.endswith(f"seed{s}") for s in unfinished):
                (path / "finished.json").unlink()
    write_report(whole)
    write_report(a, merge=[b])
    for name in ("seeds.csv", "aggregates.csv", "improvement.csv", "results.csv"):
        assert (a / name).read_text() == (whole / name).read_text(), name


def test_merge_rejects_another_suite_and_labels_presets(tmp_path):
    fake_suite(tmp_path / "a")
    fake_suite(tmp_path / "b", env_steps=30_000)
    with pytest.raises(ValueError, match="env_steps is 30000"):
        write_report(tmp_path / "a", merge=[tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match="not a suite directory"):
        write_report(tmp_path / "a", merge=[tmp_path / "nowhere"])
    fake_suite(tmp_path / "c", variants=("default",), preset="paper")
    write_report(tmp_path / "a", merge=[tmp_path / "c"])
    variants = {r["variant"] for r in read_csv(tmp_path / "a" / "seeds.csv")}
    assert variants == {"small", "small/better", "paper"}
    improvement = {(r["x"], r["y"]) for r in read_csv(tmp_path / "a" / "improvement.csv")}
    assert ("small/better", "paper") in improvement
    with pytest.raises(ValueError, match="one preset"):
        export(load_sources(tmp_path / "a", [tmp_path / "c"]), tmp_path / "out")


def test_export_copies_small_files_and_regenerates_the_same_report(tmp_path):
    suite_dir, out = tmp_path / "suite", tmp_path / "out"
    fake_suite(suite_dir)
    (suite_dir / "ceiling").mkdir()
    (suite_dir / "ceiling" / "x.json").write_text('{"mean": 1, "std": 0}')
    write_report(suite_dir)
    export(load_sources(suite_dir), out)
    write_report(out)
    run = next((out / "runs").iterdir())
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "metrics.jsonl",
        "finished.json",
        "random.json",
    }
    assert (out / "ceiling" / "x.json").exists()
    for name in ("results.md", "seeds.csv", "aggregates.csv", "curves.csv", "curves.png"):
        assert filecmp.cmp(suite_dir / name, out / name, shallow=False), name
    with pytest.raises(ValueError, match="one of the directories read"):
        export(load_sources(suite_dir), suite_dir)


def test_cli_merge_and_export_need_report_only(capsys):
    from planetrl.cli import main

    assert main(["suite", "dmc100k", "--merge", "x"]) == 2
    assert "use them with --report-only" in capsys.readouterr().err


COMMITTED = sorted(p.parent for p in (REPO / "docs" / "results").glob("*/suite.json"))


@pytest.mark.parametrize("committed", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_reports_regenerate_from_their_committed_files(committed, tmp_path, monkeypatch):
    """Every committed suite directory under docs/results (its runs' small files and suite.json)
    regenerates the committed report exactly (the figures are not edited by hand)."""
    monkeypatch.undo()  # the report's own resample counts
    copy = tmp_path / committed.name
    shutil.copytree(committed, copy)
    write_report(copy)
    for name in (
        "results.md",
        "results.csv",
        "curves.csv",
        "seeds.csv",
        "aggregates.csv",
        "improvement.csv",
    ):
        if (committed / name).exists():
            assert (copy / name).read_text() == (committed / name).read_text(), name
