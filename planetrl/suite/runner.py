"""Run a suite's runs on Ray, resumably.

Why Ray core (``ray.remote`` tasks) and not Ray Tune: every run is already a resumable planetrl
run directory (checkpoint, episodes, metrics) with a fixed configuration; Tune's trials,
searchers and its own checkpoint syncing would duplicate that state and hide the run directories
behind its layout. A remote task per run keeps ``planetrl train``'s run directory as the one
source of truth, and Ray supplies what the suite needs from it: placement by resources (CPUs,
GPUs), a local cluster or ``--address`` for an existing one, and retries of a task whose worker
died (the retry resumes from the run directory's checkpoint).

The suite directory's layout: :mod:`planetrl.suite.layout`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, cast

from planetrl.agents import kind, of_config
from planetrl.atomic import atomic_write_text
from planetrl.config import ConfigError
from planetrl.driver import random_policy_returns
from planetrl.run.directory import eval_seed
from planetrl.run.fast_paths import widest_vector_extension
from planetrl.run.logger import read_metrics
from planetrl.suite.layout import (
    ATTEMPTS_FILE,
    FINISHED_FILE,
    RANDOM_FILE,
    REUSED_FILE,
    RUNS_DIR,
    is_finished,
)
from planetrl.suite.report import write_report
from planetrl.suite.spec import (
    RunSpec,
    Suite,
    SuiteError,
    load_suite,
    merge_suite,
    run_budget,
    run_config,
    same_run,
    source_order,
)

# AMD's CPUID family -> [(first model, last model, microarchitecture)]: a virtual machine's model
# name is often just "AMD EPYC", so the record adds what family and model say.
_AMD_CORES = {
    23: [(0x00, 0x2F, "Zen/Zen+"), (0x30, 0xFF, "Zen 2")],
    25: [
        (0x00, 0x0F, "Zen 3"),
        (0x10, 0x1F, "Zen 4"),
        (0x20, 0x5F, "Zen 3"),
        (0x60, 0xAF, "Zen 4"),
    ],
    26: [(0x00, 0xFF, "Zen 5")],
}


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU, for the record beside every figure: ``/proc/cpuinfo``'s model name, with the
    CPUID family and model, AMD's microarchitecture, and the widest vector extensions (AMX,
    AVX512-BF16, AVX-512 or AVX2), e.g. ``AMD EPYC (family 25 model 1, Zen 3, AVX2)``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    details = []
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
        details.append(f"family {family} model {model}")
        if fields.get("vendor_id") == "AuthenticAMD" or name.startswith("AMD"):
            details += [
                core for first, last, core in _AMD_CORES.get(family, []) if first <= model <= last
            ][:1]
    except (KeyError, ValueError):
        pass
    widest = widest_vector_extension(fields.get("flags", "").split())
    if widest:
        details.append(widest)
    return f"{name} ({', '.join(details)})" if details else name


def code_version() -> str:
    """The planetrl git commit the code runs from (``+dirty`` with local changes), or
    ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "planetrl"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def train_run(
    config_data: dict[str, Any], budget: int | None = None, *after: Any
) -> dict[str, Any]:
    """Train (or continue) one run to its budget; the body of the Ray task, also callable directly.
    ``after``: ignored; the records of the runs this one starts from, which Ray passes once they
    finished (an ``ObjectRef`` argument makes the task wait for them).

    Computes the random policy's returns on the run's evaluation seeds first (once), then trains
    the run with its agent's :meth:`~planetrl.agents.AgentKind.train` (``config_data["agent"]``,
    PlaNet where absent), then writes ``finished.json``. Killed at any point, calling it again
    continues where the run directory says. ``budget``: the suite's env-step budget, recorded in
    ``finished.json`` (a staged agent's run may end a little short of it: its config spends what
    whole generations can).
    """

    agent = str(config_data.get("agent", "planet"))
    trainer = kind(agent)
    config = trainer.from_dict(config_data)
    run_dir = Path(config.logdir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    attempts = run_dir / ATTEMPTS_FILE
    _append_line(attempts, {"start": start, "cpu": cpu_model()})
    random_path = run_dir / RANDOM_FILE
    if not random_path.exists():
        seed = eval_seed(config)
        evaluation = cast(Any, config).eval  # every agent's config has one (RunConfig has not)
        returns = random_policy_returns(
            config, episodes=evaluation.episodes, seed=seed, parallel=evaluation.parallel
        )
        atomic_write_text(
            random_path,
            json.dumps({"seed": seed, "episodes": len(returns), "returns": returns}, indent=1)
            + "\n",
        )
    summary = trainer.train(config, progress=False)
    _append_line(attempts, {"start": start, "seconds": time.time() - start, "cpu": cpu_model()})
    total = wall_clock(run_dir)
    record = {
        "agent": agent,
        **{k: v for k, v in summary.items() if k != "eval"},
        "budget_env_steps": budget if budget is not None else summary.get("env_steps"),
        "last_eval": summary.get("eval"),
        "wall_clock_s": total,
        "cpu": cpu_model(),
        "commit": code_version(),
        "host": platform.node(),
        "finished": time.time(),
    }
    atomic_write_text(run_dir / FINISHED_FILE, json.dumps(record, indent=1) + "\n")
    return record


def _append_line(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def wall_clock(run_dir: Path) -> float:
    """Seconds spent on a run over all its attempts (``attempts.jsonl``): a completed attempt
    counts its duration; one that was killed counts until the last row it logged."""

    rows = []
    for line in (run_dir / ATTEMPTS_FILE).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    ended = {row["start"]: row["seconds"] for row in rows if "seconds" in row}
    starts = sorted({row["start"] for row in rows})
    metrics = run_dir / "metrics.jsonl"
    times = [row["time"] for row in read_metrics(metrics)] if metrics.exists() else []
    total = 0.0
    for start, following in zip(starts, [*starts[1:], float("inf")]):
        if start in ended:
            total += ended[start]
        else:
            logged = [t for t in times if start <= t < following]
            total += (max(logged) - start) if logged else 0.0
    return total


def run_suite(
    suite: Suite,
    directory: str | Path,
    *,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    max_retries: int = 3,
    report: bool = True,
    reuse: tuple[str | Path, ...] | list = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train every unfinished run of ``suite`` under ``directory`` on Ray; finished runs are
    skipped, unfinished ones continue from their run directories. Returns {run name: record}.

    ``reuse``: other suite directories whose runs are the same runs as some of this suite's
    (:func:`~planetrl.suite.spec.same_run`); each such run is recorded as reused
    (``reused.json``, :func:`~planetrl.suite.layout.run_dir`) instead of being trained twice: it
    is trained, if unfinished, and read in the other directory.

    Args:
        address: an existing Ray cluster (``ray.init(address=...)``; the suite directory must be
            on a file system every node sees). None starts a local one with this machine's CPUs.
        cpus_per_run: CPUs each run asks for; default 2 (one plans/updates with 2 threads while
            its env workers step): one run at a time on a 2-core machine.
        gpus_per_run: GPUs each run asks for; default 1 where the cluster has GPUs, else 0.
        max_retries: how often Ray restarts a run whose worker process died (each retry resumes).
    """
    directory = Path(directory)
    suite = merge_suite(directory, suite)
    link_reused_runs(suite, directory, reuse, log)
    configs: dict[str, dict[str, Any]] = {}
    pending: list[RunSpec] = []
    for run in source_order(suite.runs):
        config = run_config(suite, run, directory)
        run_dir = Path(config.logdir)
        configs[run.name] = _config_dict(config)
        if is_finished(run_dir, run_budget(suite, run)):
            log(f"suite {suite.name}: {run.name} finished, skipped")
        else:
            pending.append(run)
    results: dict[str, Any] = {}
    if pending:
        results = _run_on_ray(
            pending,
            configs,
            budgets={run.name: run_budget(suite, run) for run in pending},
            address=address,
            cpus_per_run=cpus_per_run,
            gpus_per_run=gpus_per_run,
            max_retries=max_retries,
            on_finish=(lambda: _report(directory, log)) if report else None,
            log=log,
        )
    if report:
        _report(directory, log)
    return results


def link_reused_runs(
    suite: Suite,
    directory: Path,
    reuse: tuple[str | Path, ...] | list,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Record every run of ``suite`` that is one of the runs of a suite in ``reuse`` as reused
    (its ``reused.json``, written atomically); returns their names. A run that has a directory of
    its own already (it was started here) is not replaced."""
    others = [(Path(d).resolve(), load_suite(d)) for d in reuse]
    linked = []
    for run in suite.runs:
        own = directory / RUNS_DIR / run.name
        if (own / REUSED_FILE).exists():
            continue
        if own.exists() and any(own.iterdir()):
            continue
        for other_dir, other in others:
            match = next((o for o in other.runs if same_run(suite, run, other, o)), None)
            if match is None:
                continue
            target = other_dir / RUNS_DIR / match.name
            own.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                own / REUSED_FILE,
                json.dumps({"path": str(target), "suite": other.name, "run": match.name}, indent=1)
                + "\n",
            )
            log(f"suite {suite.name}: {run.name} is {other.name}'s {match.name} in {other_dir}")
            linked.append(run.name)
            break
    return linked


def _config_dict(config) -> dict[str, Any]:
    """A run's config as the plain dict :func:`train_run` takes (any agent's)."""

    return of_config(config).to_dict(config)


def _report(directory: Path, log: Callable[[str], None]) -> None:

    paths = write_report(directory)
    log(f"suite report: {', '.join(str(p) for p in paths)}")


def _run_on_ray(
    pending, configs, *, budgets, address, cpus_per_run, gpus_per_run, max_retries, on_finish, log
) -> dict[str, Any]:
    try:
        import ray  # the suite extra; seconds to import: only when runs go to Ray
    except ImportError as err:
        raise SuiteError(
            "`planetrl suite` runs on Ray, which is not installed: "
            "pip install 'planetrl[suite]' (or ray>=2.40,<3)"
        ) from err

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = dict(
            include_dashboard=False, configure_logging=False, log_to_driver=True
        )
        if address:
            kwargs["address"] = address
        else:
            kwargs.update(num_cpus=os.cpu_count() or 1, object_store_memory=128 * 1024**2)
        ray.init(**kwargs)
    try:
        resources = ray.cluster_resources()
        cpus = cpus_per_run if cpus_per_run is not None else min(2.0, resources.get("CPU", 1.0))
        gpus = gpus_per_run if gpus_per_run is not None else (1.0 if resources.get("GPU") else 0.0)
        if cpus > resources.get("CPU", 0) or gpus > resources.get("GPU", 0):
            raise SuiteError(
                f"each run asks for {cpus} CPUs and {gpus} GPUs but the Ray cluster "
                f"has {resources.get('CPU', 0)} and {resources.get('GPU', 0)}"
            )
        task = ray.remote(train_run).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False
        )
        refs: dict[Any, str] = {}
        submitted: dict[str, Any] = {}  # run name -> its ObjectRef
        for run in pending:  # a run after the run it starts from (source_order)
            after = [submitted[run.init_from_run]] if run.init_from_run in submitted else []
            submitted[run.name] = ref = task.remote(configs[run.name], budgets[run.name], *after)
            refs[ref] = run.name
        log(
            f"suite: {len(refs)} runs on Ray ({cpus:g} CPUs, {gpus:g} GPUs each; cluster "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"
        )
        results, failures = {}, {}
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            name = refs[done[0]]
            try:
                results[name] = record = ray.get(done[0])
            except (
                ray.exceptions.RayTaskError,
                ray.exceptions.WorkerCrashedError,
                ray.exceptions.RayError,
            ) as err:
                failures[name] = err
                log(f"suite: {name} failed: {str(err).strip().splitlines()[-1]}")
                continue
            last = record.get("last_eval") or {}
            tail = f", eval return {last['eval/return']:.1f}" if last else ""
            log(
                f"suite: {name} finished: {record['env_steps']} env steps in "
                f"{record['wall_clock_s'] / 60:.1f} min{tail}"
            )
            if on_finish is not None:
                on_finish()
        if failures:
            names = ", ".join(failures)
            raise SuiteError(
                f"{len(failures)} runs failed after their retries ({names}); rerun "
                "the same command to continue them"
            )
        return results
    finally:
        if started_here:
            ray.shutdown()


__all__ = [
    "run_suite",
    "train_run",
    "merge_suite",
    "is_finished",
    "SuiteError",
    "cpu_model",
    "code_version",
    "ConfigError",
]
