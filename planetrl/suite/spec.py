"""Suites: named lists of runs (task × variant × seed), each a normal run directory.

A :class:`Suite` is data: the runs, the env-step budget and the evaluation schedule. The built-in
suites (:data:`BUILTIN`) are functions of the command line's overrides (preset, seeds, env steps,
tasks). :func:`run_config` turns one :class:`RunSpec` into the :class:`~planetrl.config.Config`
that ``planetrl train`` would run, so a suite's run can also be continued, inspected or evaluated
with the ordinary commands.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium

from planetrl.agents import check_agent, kind
from planetrl.atomic import atomic_write_text
from planetrl.config import ConfigError, RunConfig, check_preset, set_field
from planetrl.envs import check_task, parse_task
from planetrl.envs.dmc import sibling_tasks
from planetrl.envs.multitask import PREFIX, is_multitask, split_tasks
from planetrl.suite.layout import SUITE_FILE, run_dir

_FIXED = ("preset", "eval_every_env_steps", "eval_episodes", "overrides")
"""The settings that define a suite's runs: a suite directory keeps them (:func:`merge_suite`)."""


# The six tasks of the paper (Table 1) with the PlaNet-benchmark action repeats (paper appendix:
# cartpole 8, reacher 4, cheetah 4, finger 2, cup 4, walker 2). planetrl's default repeat for every
# one of them is the paper's; ball in cup keeps the paper's R=4, where the official code and
# Kaixhin/PlaNet use 6 (the 100k figures of CURL/DrQ state R=4 for cup).
DMC_TASKS = (
    "dmc:cartpole-swingup",
    "dmc:reacher-easy",
    "dmc:cheetah-run",
    "dmc:finger-spin",
    "dmc:ball_in_cup-catch",
    "dmc:walker-walk",
)
DMC_EPISODE_ENV_STEPS = 1000  # every DMC task: 1000 env steps per episode, whatever the repeat


@dataclass(frozen=True)
class RunSpec:
    """One run of a suite."""

    task: str
    seed: int
    variant: str = "default"
    """Name of the configuration variant (the ablation's arm); one curve per (task, variant)."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """Dotted config fields and values applied over the suite's preset, e.g.
    ``(("model.transition", "ssm"),)``."""
    agent: str = "planet"
    """The agent's registry name (:mod:`planetrl.agents`): its own config, presets and
    fields."""
    init_from_run: str = ""
    """The name of another run of the suite whose world model this run starts from (PlaNet's
    ``init_from``, set to that run's directory); the suite trains that run first. Empty: none."""

    @property
    def name(self) -> str:
        """The run directory's name, unique within a suite."""
        task = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.task)
        return f"{task}__{self.variant}__seed{self.seed}"


@dataclass
class Suite:
    name: str
    preset: str
    env_steps: int
    """Budget per run in env steps (with the action repeat: agent steps × R)."""
    eval_every_env_steps: int
    """Evaluation every this many env steps (rounded to whole episodes)."""
    eval_episodes: int
    """Evaluation episodes, without exploration noise, on the same seeds at every evaluation."""
    runs: list[RunSpec]
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config fields set for every run (before the run's own overrides)."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["runs"] = [
            {
                "task": r.task,
                "seed": r.seed,
                "variant": r.variant,
                "overrides": [list(kv) for kv in r.overrides],
                "agent": r.agent,
                **({"init_from_run": r.init_from_run} if r.init_from_run else {}),
            }
            for r in self.runs
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Suite":
        data = dict(data)
        data["runs"] = [
            RunSpec(
                r["task"],
                int(r["seed"]),
                r["variant"],
                tuple((k, v) for k, v in r["overrides"]),
                r.get("agent", "planet"),
                r.get("init_from_run", ""),
            )
            for r in data["runs"]
        ]
        return cls(**data)

    def save(self, path: Path) -> None:

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.runs))

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.runs))


class SuiteError(RuntimeError):
    """A suite's run failed for good (after its retries) or the suite directory is inconsistent."""


def merge_suite(directory: Path, suite: Suite) -> Suite:
    """Record ``suite`` in ``directory/suite.json``: a later call may add runs (more seeds or
    tasks) and change the budget; the settings that define the runs must stay the same."""
    path = directory / SUITE_FILE
    if path.exists():
        try:
            saved = Suite.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SuiteError(f"{path} is corrupt: {err}") from None
        if saved.name != suite.name:
            raise SuiteError(
                f"{directory} holds suite {saved.name!r}, not {suite.name!r}; use another directory"
            )
        changed = {
            k: (getattr(saved, k), getattr(suite, k))
            for k in _FIXED
            if getattr(saved, k) != getattr(suite, k)
        }
        if changed:
            lines = ", ".join(f"{k}: saved {a!r} != new {b!r}" for k, (a, b) in changed.items())
            raise SuiteError(
                f"{directory} holds this suite with other settings ({lines}); use "
                "the same options or another directory"
            )
        runs = list(dict.fromkeys([*saved.runs, *suite.runs]))
        suite = Suite(
            suite.name,
            suite.preset,
            suite.env_steps,
            suite.eval_every_env_steps,
            suite.eval_episodes,
            runs,
            suite.description,
            suite.overrides,
        )
    directory.mkdir(parents=True, exist_ok=True)
    suite.save(path)
    return suite


def episode_env_steps(task: str) -> int:
    """Env steps of one episode of ``task`` (DMC: 1000; Gymnasium: its time limit, if any; a
    multi-task name: that of its tasks, which must agree)."""

    spec = check_task(task)  # imports the module of a gym:<module>:<id> task
    if spec.suite == "dmc":
        return DMC_EPISODE_ENV_STEPS
    if spec.suite == "multi":
        lengths = {t: episode_env_steps(t) for t in split_tasks(task)}
        if len(set(lengths.values())) != 1:
            raise ConfigError(
                f"{task}: a suite needs its tasks' episodes of one length in env steps, got "
                f"{lengths}"
            )
        return next(iter(lengths.values()))
    if spec.suite == "fn":
        raise ConfigError(
            f"{task}: a suite makes its envs by name in its own processes, so an "
            "env factory (fn:) cannot be used; register the env with Gymnasium in "
            "a module and use 'gym:<module>:<id>'"
        )

    limit = gymnasium.spec(spec.gym_id).max_episode_steps
    if not limit:
        raise ConfigError(
            f"{task} has no episode time limit; a suite needs fixed-length episodes "
            "to place evaluations at env-step intervals"
        )
    return int(limit)


def run_config(suite: Suite, run: RunSpec, directory: str | Path) -> RunConfig:
    """The configuration of ``run``: its agent's preset, the suite's and the run's overrides,
    the task and seed, logdir under ``directory``, then the agent's way of spending the suite's
    env-step budget and evaluation schedule (:meth:`~planetrl.agents.AgentKind.budget`)."""
    try:
        agent = kind(check_agent(run.agent))
    except ConfigError as err:
        raise ConfigError(f"run {run.name}: {err}") from None
    config = _for_run(agent.preset(suite.preset), suite, run, directory)
    n = task_count(run.task)
    try:
        return agent.budget(
            config,
            env_steps=run_budget(suite, run),
            episode_env_steps=episode_env_steps(run.task),
            eval_every_env_steps=suite.eval_every_env_steps * n,
            eval_episodes=suite.eval_episodes * n,
        )
    except ConfigError as err:
        raise ConfigError(f"{run.name}: {err}") from None


def task_count(task: str) -> int:
    """The tasks a run's task name holds: n for ``multi:<n tasks>``, else 1."""
    return len(split_tasks(task)) if is_multitask(task) else 1


def run_budget(suite: Suite, run: RunSpec) -> int:
    """A run's budget in env steps: the suite's, per task. A multi-task run gets it for each of
    its n tasks (n times the env steps, evaluated every n times the suite's interval on n times
    its episodes), so that each task sees the budget of a single-task run."""
    return suite.env_steps * task_count(run.task)


def _for_run(config: RunConfig, suite: Suite, run: RunSpec, directory: str | Path):
    """``config`` (an agent's preset) with the suite's overrides, then the run's (the later
    wins), and the run's task, seed and logdir under ``directory``."""
    for name, value in [*suite.overrides.items(), *run.overrides]:
        set_field(config, name, value)
    config.task = run.task
    config.seed = run.seed
    config.logdir = str(run_dir(directory, run.name))
    if run.init_from_run:
        if not any(r.name == run.init_from_run for r in suite.runs):
            raise ConfigError(
                f"run {run.name} starts from {run.init_from_run!r}, which is no run of suite "
                f"{suite.name!r}"
            )
        set_field(config, "init_from", str(run_dir(directory, run.init_from_run)))
    return config


def source_order(runs: list[RunSpec]) -> list[RunSpec]:
    """``runs`` with every run after the run it starts from (``init_from_run``), otherwise in
    their order; a cycle is a :class:`ConfigError` naming its runs."""
    by_name = {r.name: r for r in runs}
    ordered: list[RunSpec] = []
    placed: set[str] = set()

    def place(run: RunSpec, chain: tuple[str, ...]) -> None:
        if run.name in placed:
            return
        if run.name in chain:
            raise ConfigError(f"runs start from each other in a cycle: {' -> '.join(chain)}")
        source = by_name.get(run.init_from_run)
        if source is not None:
            place(source, (*chain, run.name))
        placed.add(run.name)
        ordered.append(run)

    for run in runs:
        place(run, ())
    return ordered


def load_suite(directory: str | Path) -> Suite:
    """The suite recorded in ``directory/suite.json`` (a :class:`SuiteError` naming the file when
    it is missing or corrupt)."""
    path = Path(directory) / SUITE_FILE
    try:
        return Suite.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise SuiteError(f"{directory} is not a suite directory (no {SUITE_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SuiteError(f"{path} is corrupt: {err}") from None


def same_run(suite: Suite, run: RunSpec, other: Suite, other_run: RunSpec) -> bool:
    """Whether two suites' runs are one run: the same agent, budget, evaluation schedule and
    configuration field by field (the run directory aside). E.g. ``ablation-transition``'s RSSM
    arm and ``dmc100k``'s cartpole-swingup run of the same seed and preset."""
    if (
        run.agent != other_run.agent
        or suite.env_steps != other.env_steps
        or suite.eval_every_env_steps != other.eval_every_env_steps
        or suite.eval_episodes != other.eval_episodes
        or run.task != other_run.task
        or run.seed != other_run.seed
    ):
        return False
    agent = kind(run.agent)
    mine = agent.to_dict(run_config(suite, run, "/"))
    theirs = agent.to_dict(run_config(other, other_run, "/"))
    mine.pop("logdir", None)
    theirs.pop("logdir", None)
    return mine == theirs


# ------------------------------------------------------------------------------ built-in suites
def _check(
    preset_name: str, seeds: int, env_steps: int, tasks: list[str] | None, accepted: tuple[str, ...]
) -> list[str]:
    check_preset(preset_name)
    if seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds}")
    if env_steps < 1:
        raise ConfigError(f"--env-steps must be a positive integer, got {env_steps}")
    chosen = list(tasks) if tasks else list(accepted)

    for task in chosen:
        parse_task(task)  # a clear error for a malformed or unknown task
    return chosen


def dmc100k(
    preset: str = "small", seeds: int = 1, env_steps: int = 100_000, tasks: list[str] | None = None
) -> Suite:
    """The paper's six tasks at the PlaNet-benchmark repeats, trained for 100k env steps (100
    episodes), evaluated every 10k env steps on 10 episodes without exploration noise, the
    random policy on the same seeds beside them: the setting of the 100k columns of CURL and
    DrQ."""
    chosen = _check(preset, seeds, env_steps, tasks, DMC_TASKS)
    runs = [RunSpec(task, seed) for task in chosen for seed in range(seeds)]
    return Suite(
        "dmc100k",
        preset,
        env_steps,
        10_000,
        10,
        runs,
        description="PlaNet on the paper's six tasks at 100k env steps",
    )


def ablation_transition(
    preset: str = "small", seeds: int = 1, env_steps: int = 100_000, tasks: list[str] | None = None
) -> Suite:
    """RSSM against its purely stochastic (SSM) and purely deterministic (GRU) ablations (paper
    Figure 4) on cartpole-swingup. The RSSM arm is, field by field, dmc100k's swingup run of the
    same seed and preset: ``--reuse`` a dmc100k directory to train it once."""
    chosen = _check(preset, seeds, env_steps, tasks, ("dmc:cartpole-swingup",))
    runs = [
        RunSpec(task, seed, arm, (("model.transition", arm),))
        for task in chosen
        for arm in ("rssm", "ssm", "gru")
        for seed in range(seeds)
    ]
    return Suite(
        "ablation-transition",
        preset,
        env_steps,
        10_000,
        10,
        runs,
        description="transition models: RSSM / SSM / GRU",
    )


def ablation_overshooting(
    preset: str = "small", seeds: int = 1, env_steps: int = 100_000, tasks: list[str] | None = None
) -> Suite:
    """The standard one-step ELBO (D=1) against latent overshooting over the planning horizon
    (D=12, β=1, reward overshooting 10; paper section 4) on cartpole-swingup.

    Why this task: the paper's only overshooting comparison (appendix D, Figure 8: the RSSM and
    a "DRNN", each with and without overshooting, on all six tasks) names no task where the
    effect is largest; its caption says overshooting "slightly reduces" the RSSM's performance
    and "can substantially improve" the DRNN's. Swingup is the cheapest of the six
    on 2 cores (R = 8), and with the `small` preset (which overshoots to D = 12) the D12 arm is
    field by field dmc100k's swingup run of the same seed (``--reuse``): only the D1 arm is
    trained anew."""
    chosen = _check(preset, seeds, env_steps, tasks, ("dmc:cartpole-swingup",))
    arms = {
        "D1": (
            ("loss.overshooting_distance", 1),
            ("loss.overshooting_kl_scale", 0.0),
            ("loss.overshooting_reward_scale", 0.0),
        ),
        "D12": (
            ("loss.overshooting_distance", 12),
            ("loss.overshooting_kl_scale", 1.0),
            ("loss.overshooting_reward_scale", 10.0),
        ),
    }
    runs = [
        RunSpec(task, seed, arm, values)
        for task in chosen
        for arm, values in arms.items()
        for seed in range(seeds)
    ]
    return Suite(
        "ablation-overshooting",
        preset,
        env_steps,
        10_000,
        10,
        runs,
        description="one-step ELBO (D=1) against latent overshooting (D=12)",
    )


TRANSFER_ENV_STEPS = 50_000
"""The transfer suites' default budget per run (the source's and each target's): what fits
2 cores (walker at R = 2 plans 500 times per episode); 100k for the dmc100k comparison."""


def transfer(
    source: str,
    name: str,
    preset: str = "small",
    seeds: int = 1,
    env_steps: int = TRANSFER_ENV_STEPS,
    tasks: list[str] | None = None,
) -> Suite:
    """Dynamics that transfer: per seed, a ``source`` run that also learns a reward head per
    sibling task (``sibling_rewards``: rewards relabelled from the same physics), then, for each
    target task (``tasks``, default: every sibling), a run that starts from the source's world
    model (``init_from``: every part, the target's reward head included; nothing frozen) against
    a run of the same seed from scratch, at the same budget of env steps in the target task.

    The transferred run is evaluated once before its first env step: the zero-shot return of
    the learned model planning with the head it learned from relabelled rewards, with zero env
    steps of the target task. Its curve then is the fine-tuning curve, beside the scratch run's.
    The budget counts the target task's env steps only; the source's are on top (reported)."""
    siblings = sibling_tasks(source)
    chosen = _check(preset, seeds, env_steps, tasks, siblings)
    for task in chosen:
        if task not in siblings:
            raise ConfigError(
                f"{task} is no sibling of {source} (a task of the same physics); the targets of "
                f"{name} are: {', '.join(siblings)}"
            )
    runs = []
    for seed in range(seeds):
        origin = RunSpec(source, seed, "source", (("sibling_rewards", True),))
        runs.append(origin)
        for task in chosen:
            runs.append(RunSpec(task, seed, "transfer", init_from_run=origin.name))
            runs.append(RunSpec(task, seed, "scratch"))
    return Suite(
        name,
        preset,
        env_steps,
        10_000,
        10,
        runs,
        description=f"a {source} world model transferred to its sibling tasks, against scratch",
    )


MULTITASK_TASKS = ("dmc:cartpole-swingup", "dmc:reacher-easy")
"""The multitask suite's default tasks: the two cheapest of the paper's six on 2 cores (R = 8
and 4); the paper's run of all six (``--tasks`` with the six) is for a GPU."""


def multitask(
    preset: str = "small", seeds: int = 1, env_steps: int = 100_000, tasks: list[str] | None = None
) -> Suite:
    """One agent for several tasks (paper section 5): per seed, one run of the multi-task name
    of ``tasks`` (the tasks in turn, padded actions, not told which one: :mod:`planetrl.envs.
    multitask`) for ``env_steps`` per task, against one run per task for ``env_steps``. The
    single-task runs are field by field dmc100k's of the same seed and preset (``--reuse``
    a dmc100k directory to train them once). The report reads the multi-task run per task, at
    each task's own env steps."""
    chosen = _check(preset, seeds, env_steps, tasks, MULTITASK_TASKS)
    if len(chosen) < 2:
        raise ConfigError(f"the multitask suite needs two or more tasks, got {chosen}")
    name = PREFIX + ",".join(chosen)
    parse_task(name)
    runs = [RunSpec(name, seed, "multitask") for seed in range(seeds)]
    runs += [RunSpec(task, seed, "single") for task in chosen for seed in range(seeds)]
    return Suite(
        "multitask",
        preset,
        env_steps,
        10_000,
        10,
        runs,
        description=f"one agent for {len(chosen)} tasks against one agent per task",
    )


BUILTIN: dict[str, Callable[..., Suite]] = {
    "dmc100k": dmc100k,
    "ablation-transition": ablation_transition,
    "ablation-overshooting": ablation_overshooting,
    "transfer-walker": functools.partial(transfer, "dmc:walker-walk", "transfer-walker"),
    "transfer-cartpole": functools.partial(transfer, "dmc:cartpole-balance", "transfer-cartpole"),
    "multitask": multitask,
}


def builtin(name: str, **kwargs) -> Suite:
    if name not in BUILTIN:
        raise ConfigError(f"unknown suite {name!r}; accepted: {', '.join(BUILTIN)}")
    return BUILTIN[name](**kwargs)
