"""One run, two suites (``--reuse``): ablation-transition's RSSM arm is dmc100k's cartpole-swingup
run of the same seed and preset, so it is trained once and read by both; runs that differ in
any field are not shared."""

from __future__ import annotations

import json

import pytest

from planetrl.suite import builtin
from planetrl.suite.layout import REUSED_FILE, REUSED_FROM_FILE, RUNS_DIR, run_dir
from planetrl.suite.report import export, load_sources, write_report
from planetrl.suite.runner import link_reused_runs, run_suite
from planetrl.suite.spec import merge_suite, same_run

pytest.importorskip("rliable.library")


@pytest.fixture(autouse=True)
def _few_resamples(few_resamples):
    """Every test here with conftest's fewer bootstrap resamples."""


def finish(path, env_steps=100_000, final=321.0):
    """What a trained run leaves for the report."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"step": env_steps, "eval/return": final, "eval/return_std": 9.0, "time": 1.0}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "random.json").write_text(json.dumps({"returns": [10.0, 12.0]}))
    (path / "finished.json").write_text(
        json.dumps({"env_steps": env_steps, "budget_env_steps": env_steps, "wall_clock_s": 1.0})
    )


def test_the_rssm_arm_is_dmc100ks_swingup_run(tmp_path):
    dmc = builtin("dmc100k", preset="small", seeds=2)
    ablation = builtin("ablation-transition", preset="small", seeds=2)
    rssm = [r for r in ablation.runs if r.variant == "rssm"]
    swingup = [r for r in dmc.runs if r.task == "dmc:cartpole-swingup"]
    assert len(rssm) == len(swingup) == 2
    for mine, theirs in zip(
        sorted(rssm, key=lambda r: r.seed), sorted(swingup, key=lambda r: r.seed)
    ):
        assert same_run(ablation, mine, dmc, theirs)
    # any other arm, seed, preset or budget is another run
    ssm = next(r for r in ablation.runs if r.variant == "ssm")
    assert not same_run(ablation, ssm, dmc, swingup[0])
    assert not same_run(ablation, rssm[0], dmc, swingup[1])
    paper = builtin("dmc100k", preset="paper", seeds=1)
    assert not same_run(ablation, rssm[0], paper, paper.runs[0])
    shorter = builtin("ablation-transition", preset="small", seeds=1, env_steps=50_000)
    assert not same_run(shorter, shorter.runs[0], dmc, swingup[0])
    # the small preset overshoots to D = 12: that arm of ablation-overshooting is dmc100k's too
    overshooting = builtin("ablation-overshooting", preset="small", seeds=1)
    arms = {r.variant: same_run(overshooting, r, dmc, swingup[0]) for r in overshooting.runs}
    assert arms == {"D1": False, "D12": True}


@pytest.mark.ray
def test_reused_runs_are_trained_once_and_read_by_both_suites(tmp_path):
    dmc_dir, ablation_dir = tmp_path / "dmc100k", tmp_path / "ablation"
    dmc = builtin("dmc100k", preset="small", seeds=1, tasks=["dmc:cartpole-swingup"])
    merge_suite(dmc_dir, dmc)
    finish(run_dir(dmc_dir, dmc.runs[0].name), final=404.0)
    ablation = builtin("ablation-transition", preset="small", seeds=1)
    merge_suite(ablation_dir, ablation)
    for run in ablation.runs:  # the other arms: trained here (as if finished)
        if run.variant != "rssm":
            finish(run_dir(ablation_dir, run.name), final=100.0)
    logged: list[str] = []
    # every run finished or reused: nothing goes to Ray
    run_suite(ablation, ablation_dir, reuse=[dmc_dir], report=True, log=logged.append)
    rssm = next(r for r in ablation.runs if r.variant == "rssm")
    pointer = ablation_dir / RUNS_DIR / rssm.name / REUSED_FILE
    assert json.loads(pointer.read_text())["run"] == dmc.runs[0].name
    assert run_dir(ablation_dir, rssm.name) == (dmc_dir / RUNS_DIR / dmc.runs[0].name).resolve()
    assert any("finished, skipped" in line and rssm.name in line for line in logged)
    report = (ablation_dir / "results.md").read_text()
    assert "Runs shared with other suites" in report and dmc.runs[0].name in report
    assert "404" in report
    # a second call links nothing again; a run started here keeps its own directory
    assert link_reused_runs(ablation, ablation_dir, [dmc_dir]) == []
    # an export holds the files themselves and where they came from, and reports the same
    out = export(load_sources(ablation_dir), tmp_path / "export")
    exported = out / RUNS_DIR / rssm.name
    assert (exported / "metrics.jsonl").exists() and not (exported / REUSED_FILE).exists()
    assert json.loads((exported / REUSED_FROM_FILE).read_text())["suite"] == "dmc100k"
    write_report(out)
    assert "Runs shared with other suites" in (out / "results.md").read_text()
