"""The options of ``planetrl suite`` (parsed by tyro: ``planetrl suite --help`` is the manual)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import tyro


@dataclass
class SuiteArgs:
    """Train a benchmark suite on Ray (one run directory per task × variant × seed under --dir)
    and write its report (results.md/csv, curves.csv/png) beside the published figures.
    Rerunning the same command continues unfinished runs and skips finished ones."""

    name: tyro.conf.Positional[str]
    """The suite: dmc100k (the paper's six tasks at 100k env steps), ablation-transition
    (RSSM / SSM / GRU on cartpole-swingup), ablation-overshooting (D=1 against D=12),
    transfer-walker and transfer-cartpole (a walker-walk or cartpole-balance world model
    transferred to the sibling tasks, zero-shot and fine-tuned, against scratch)."""
    dir: Optional[str] = None
    """Suite directory (default runs/suite-NAME)."""
    preset: Literal["small", "paper", "quick"] = "small"
    """Configuration preset of every run."""
    seeds: int = 1
    """Seeds per task and variant (0 .. N-1)."""
    env_steps: Optional[int] = None
    """Budget of every run in env steps (agent steps × action repeat); default: the suite's
    own (100k; the transfer suites 50k per run)."""
    tasks: Optional[list[str]] = None
    """Tasks to run instead of the suite's own (e.g. --tasks dmc:cheetah-run dmc:walker-walk;
    for a transfer suite, the target tasks among the source's siblings)."""
    address: Optional[str] = None
    """An existing Ray cluster (`auto` for one started with `ray start --head` here); the suite
    directory must be on a file system every node sees. Default: a local cluster of this
    machine's CPUs."""
    cpus_per_run: Optional[float] = None
    """CPUs each run asks Ray for (default 2: one run at a time on a 2-core machine)."""
    gpus_per_run: Optional[float] = None
    """GPUs each run asks Ray for (default 1 where the cluster has GPUs, else 0)."""
    max_retries: int = 3
    """Restarts of a run whose worker process died; each resumes from its checkpoint."""
    report_only: bool = False
    """Train nothing: (re)write the report from what the run directories hold (with --attribute:
    attribute first)."""
    attribute: bool = False
    """After training, attribute shortfalls: per task, the planner's ceiling (the same CEM with
    the true simulator as its model); per finished run, the open-loop reward error over H on
    held-out episodes. Skips what is already computed; shown in the report. Safe beside a suite
    that is still training (with --report-only)."""
    attribute_episodes: int = 3
    """Episodes for each attribution measurement."""
    reuse: Optional[list[str]] = None
    """Directories of other suites whose runs are runs of this one (the same configuration,
    budget and evaluation schedule, field by field; e.g. --reuse DMC100K_DIR for
    ablation-transition's RSSM arm on cartpole-swingup): each such run is trained once, where the
    other suite keeps it, and read by both (recorded as `runs/<name>/reused.json`)."""
    merge: Optional[list[str]] = None
    """With --report-only: more directories of the same suite (its runs spread over machines)
    read into one report, written in --dir. A run found in several is read where it finished.
    Where they ran other presets, each variant is labelled with its preset."""
    export: Optional[str] = None
    """With --report-only: copy the small files of every run (config, metrics, finished,
    random, attempts, attribution, speed; no episodes or checkpoints), the ceilings and the
    suite file of --dir and --merge into this directory, and write the report there. It can be
    committed, and the report regenerated from it alone (--report-only --dir EXPORT)."""


@dataclass
class CompareArgs:
    """Train PlaNet and World Models on the same task, env-step budget and seeds (a suite of
    runs on Ray, one run directory per agent × seed under --dir), then write one report:
    return against env steps and wall-clock, parameters of each part, env steps of each stage,
    and the two dynamics models' open-loop errors on the same held-out episodes
    (compare.md, compare_curves.csv/png, parameters.csv, stages.csv, open_loop.csv/png).
    Rerunning the same command continues unfinished runs and skips finished ones."""

    task: str
    """The task, e.g. dmc:cartpole-swingup."""
    agents: str = "planet,worldmodels"
    """Comma-separated agents: planet, worldmodels."""
    env_steps: int = 100_000
    """Budget of every run in env steps (agent steps × action repeat)."""
    seeds: int = 1
    """Seeds per agent (0 .. N-1)."""
    dir: Optional[str] = None
    """Suite directory (default runs/compare-TASK)."""
    preset: Literal["small", "paper"] = "small"
    """Preset of both agents (each its own: `planetrl train [--agent worldmodels] --preset P
    --help`)."""
    eval_every_env_steps: int = 10_000
    """PlaNet's evaluation interval (World Models evaluates after each iteration)."""
    eval_episodes: int = 10
    """Evaluation episodes, without exploration noise, on the run's evaluation seeds."""
    heldout_episodes: int = 3
    """Uniformly random held-out episodes for the open-loop errors of the dynamics models."""
    context: int = 5
    """Frames the models see before predicting open loop."""
    horizon: int = 15
    """Steps predicted open loop (d = 1..H)."""
    address: Optional[str] = None
    """An existing Ray cluster (see `planetrl suite --help`)."""
    cpus_per_run: Optional[float] = None
    """CPUs each run asks Ray for (default 2: one run at a time on a 2-core machine)."""
    gpus_per_run: Optional[float] = None
    """GPUs each run asks Ray for (default 1 where the cluster has GPUs, else 0)."""
    max_retries: int = 3
    """Restarts of a run whose worker process died; each resumes from its checkpoint."""
    report_only: bool = False
    """Train nothing: (re)write the report from what the run directories hold."""
