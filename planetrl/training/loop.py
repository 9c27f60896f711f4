"""Algorithm 1 of the paper (arXiv 1811.04551): data collection and model fitting, resumable.
PlaNet's part only: the run directory's setup (:mod:`planetrl.run.directory`), the episode
driver (:mod:`planetrl.driver`), the replay (:mod:`planetrl.replay`), the checkpoint
(:class:`planetrl.run.checkpoint.Checkpoint`) and the logger are shared with any other agent.

    collect S seed episodes with uniformly random actions
    while the budget is not spent:
        C times: draw B chunks of L steps from the replay, take a gradient step on the ELBO
        collect one episode with the planner (a_t + N(0, 0.3²) noise, action repeat R)
        every N episodes: evaluate M episodes without noise (parallel envs, batched planning)
        save the checkpoint

A run may start from another run's world model (``init_from``, :mod:`planetrl.training.transfer`):
the kept parts are loaded before the first step, the frozen ones left out of the optimiser, and
the model is evaluated once before the seed episodes (the zero-shot return, at 0 env steps).

Everything a run needs lives in its run directory: ``config.json`` (the merged config),
``checkpoint.pt`` (model, optimiser, counters, RNG states), ``episodes/`` (the replay, one file per
episode), ``metrics.jsonl`` and ``tb/`` (the same scalars), ``videos/``. Files are written
atomically, so a run killed at any moment resumes from its run directory: rerunning the same
command continues with at most the episode in progress lost. The episode files are the source of
truth for the counters (episodes, env steps), so they stay continuous even when the process was
killed between writing an episode and writing the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl import planning, speed
from planetrl.agent import Agent
from planetrl.atomic import atomic_write_json
from planetrl.config import Config, ConfigError, load_config, to_dict
from planetrl.driver import (
    action_repeats,
    episode_action_repeat,
    make_pool,
    resolve_action_repeat,
    run_episodes,
    uniform_policy,
)
from planetrl.envs import make_env
from planetrl.envs.dmc import sibling_tasks
from planetrl.envs.multitask import is_multitask, returns_by_task, split_tasks, task_for_seed
from planetrl.models import WorldModel
from planetrl.replay import Replay
from planetrl.run import directory as rundir
from planetrl.run.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from planetrl.run.directory import collect_seed, eval_seed, resolve_device
from planetrl.run.fast_paths import Hardware, SpeedDecision, Workload
from planetrl.run.logger import Logger
from planetrl.run.progress import Progress
from planetrl.threads import ThreadGovernor
from planetrl.training import transfer
from planetrl.training.update import (
    BatchPrefetcher,
    GraphedUpdate,
    make_update,
)
from planetrl.training.videos import open_loop_video


def task_reward_heads(config: Config) -> tuple[str, ...]:
    """The other tasks a run's world model has reward heads for: the siblings of its task when
    it records their rewards (``config.sibling_rewards``), else none."""
    return sibling_tasks(config.task) if config.sibling_rewards else ()


def build_world_model(config: Config, action_size: int) -> WorldModel:
    """The world model of ``config.model`` (each field is the constructor's argument of that
    name) for A = ``action_size``, on the CPU, with a reward head per task of
    :func:`task_reward_heads`."""
    return WorldModel(action_size, **asdict(config.model), task_rewards=task_reward_heads(config))


def build_planner(
    config: Config,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    fast: SpeedDecision | None = None,
) -> Callable:
    """The configured planner (built by :func:`planetrl.planning.planner_from_config`) with the
    fast paths that apply on ``device`` (:func:`planetrl.speed.accelerate`): those of ``fast``
    (the run's decision), else of ``config.speed`` decided for this machine (exactly the eager
    planner when they are off)."""
    planner = planning.planner_from_config(config.planner, generator=generator)
    return speed.accelerate(planner, fast or config.speed, device)


DEFAULT_EPISODE_STEPS = 1000
"""Env steps of an episode assumed before any has been seen (every DMC task's time limit)."""


def expected_plans(config: Config, counters: "Counters", episode_steps: int) -> tuple[int, int]:
    """(planner calls at E=1-equivalent cost, distinct numbers of environments) that the rest of
    the run is expected to make: the planned training episodes and the evaluations, each
    episode ``episode_steps / R`` plans; an evaluation plan for M environments counted as
    0.75 M single plans (batched planning is sub-linear in E). Bounded by the budgets
    (``max_episodes``, ``max_env_steps``; ``max_minutes`` is applied by the caller)."""
    t, e = config.train, config.eval
    repeat = min(action_repeats(config))  # a multi-task run: its tasks' smallest R (most plans)
    per_episode = max(1, math.ceil(episode_steps / repeat))
    episodes = max(0, t.max_episodes - max(counters.episodes, t.seed_episodes))
    if t.max_env_steps:
        left = max(0, t.max_env_steps - max(counters.env_steps, t.seed_episodes * episode_steps))
        episodes = min(episodes, math.ceil(left / episode_steps))
    plans = episodes * per_episode * (1 if t.collect_envs == 1 else 0.75 * t.collect_envs)
    shapes = {t.collect_envs}
    if e.every:
        evaluations = episodes // e.every
        plans += evaluations * per_episode * (1 if e.episodes == 1 else 0.75 * e.episodes)
        if evaluations:
            shapes.add(e.episodes)
    return int(plans), len(shapes)


def probe_plan_ms(
    config: Config, world_model: WorldModel, device: torch.device, bf16: bool, repeats: int = 2
) -> float:
    """Milliseconds of one plan for one environment with the run's planner options and
    ``bf16``, compile off (the timing probe of ``speed.compile: auto``). Leaves every RNG as
    it was."""
    fast = SpeedDecision(compile=False, bf16=bf16, channels_last=False, cuda_graphs=False)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        planner = build_planner(config, torch.Generator(device=device).manual_seed(0), device, fast)
        state = world_model.transition.initial(1, device=device)
        planner(world_model.transition, world_model.planning_reward, state)  # warm-up
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            planner(world_model.transition, world_model.planning_reward, state)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(1000 * (time.perf_counter() - start))
    return min(times)


def decide_speed(
    config: Config,
    world_model: WorldModel,
    device: torch.device,
    counters: "Counters",
    episode_steps: int = DEFAULT_EPISODE_STEPS,
) -> SpeedDecision:
    """``config.speed`` decided for this machine and this run (see :mod:`planetrl.run.fast_paths`):
    ``compile: auto`` weighs the compile time against the planning time the rest of the run is
    expected to take (a timing probe x :func:`expected_plans`, capped by ``max_minutes``)."""

    def workload(bf16: bool) -> Workload:
        plans, graphs = expected_plans(config, counters, episode_steps)
        ms = probe_plan_ms(config, world_model, device, bf16) if plans else 0.0
        if config.train.max_minutes and ms:
            plans = min(plans, int(config.train.max_minutes * 60_000 / ms))
        return Workload(plans=plans, plan_ms=ms, graphs=graphs)

    return speed.decide(config.speed, Hardware.detect(device), workload)


def evaluate(
    config: Config,
    world_model: WorldModel,
    *,
    episodes: int,
    seed: int,
    planner: Callable,
    parallel: bool = True,
    record: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    env_fn: Callable[[], Any] | None = None,
    reward_task: str | None = None,
) -> tuple[list[float], np.ndarray | None, dict[str, float]]:
    """M episodes without exploration noise, the M environments stepped together and planned for
    in one batch. Returns (returns, frames (T, 64, 64*M, 3) if ``record``, timing). ``env_fn``:
    the factory of an ``fn:`` task (see :class:`Trainer`). ``reward_task``: plan with the world
    model's reward head for that task (the episodes run in ``config.task``'s env: pass a config
    whose task is that one).

    Repeatable for a given ``seed``: torch's global RNG (which draws the posterior samples) is
    forked and seeded, so the training run's RNG stream is left as it was.
    """
    devices = [torch.device(d) for d in [next(world_model.parameters()).device] if d.type == "cuda"]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _evaluate(
            config,
            world_model,
            episodes=episodes,
            seed=seed,
            planner=planner,
            parallel=parallel,
            record=record,
            on_step=on_step,
            env_fn=env_fn,
            reward_task=reward_task,
        )


def _evaluate(
    config,
    world_model,
    *,
    episodes,
    seed,
    planner,
    parallel,
    record,
    on_step,
    env_fn=None,
    reward_task=None,
):
    generator = torch.Generator().manual_seed(seed)
    agent = Agent(world_model, planner, generator=generator, reward_task=reward_task)
    with make_pool(config, episodes, parallel, env_fn) as pool:
        out = run_episodes(
            pool,
            agent.act,
            [seed + i for i in range(episodes)],
            reset=agent.reset,
            record=record,
            on_step=on_step,
        )
    return out.returns, out.frames, {"eval/ms_per_plan": out.ms_per_act}


@dataclass
class Counters:
    episodes: int = 0
    env_steps: int = 0
    updates: int = 0
    evaluated_at: int = -1
    """Episodes when the last evaluation ran (-1: none recorded; set from the episodes on disk
    when a checkpoint without it is resumed)."""


class Trainer:
    """A resumable PlaNet run in ``config.logdir``.

    Args:
        config: the merged configuration.
        allow_config_change: resume even if ``config`` differs from the saved one in fields other
            than budgets, logging and device (the new values win and are saved).
        progress: show a tqdm progress bar over env steps, with the phase in progress.
        env_fn: build the environments with this factory instead of by task name (for envs made
            in code): a callable returning a ``gymnasium.Env`` with a ``Box`` action space of
            finite bounds and pixel observations (``Box`` uint8 ``(H, W, 3)``) or
            ``render_mode="rgb_array"``; it is wrapped as ``gym:`` tasks are
            (:func:`planetrl.envs.gym.wrap_env`: actions rescaled to ``[-1, 1]``, frames resized
            to 64×64, action repeat R, default 1). With ``train.collect_envs > 1`` or parallel
            evaluation (``eval.parallel`` and ``eval.episodes > 1``) the envs run in worker
            processes and ``env_fn`` must be picklable (a module-level function, a
            ``functools.partial`` of one, an instance of a module-level class); a clear
            ValueError says so otherwise. ``config.task`` becomes ``fn:<module>.<name>`` of the
            factory unless it already is an ``fn:<label>``; such a run is evaluated from Python
            (``load_run(logdir, env_fn=...)``, ``evaluate(..., env_fn=...)``), not by
            ``planetrl eval``. To make a custom env reachable by name everywhere (CLI, suites),
            register it with Gymnasium in a module and use ``gym:<module>:<id>``.

    At start the fast paths are decided for this machine and run (``self.fast``, printed and
    written to ``speed.json`` in the run directory) and torch's threads are set by a
    :class:`planetrl.threads.ThreadGovernor` (re-checked before every phase).
    """

    def __init__(
        self,
        config: Config,
        *,
        allow_config_change: bool = False,
        progress: bool = True,
        env_fn: Callable[[], Any] | None = None,
    ):
        if env_fn is not None:
            if not callable(env_fn):
                raise ValueError(
                    f"env_fn must be a callable returning a gymnasium.Env, got {env_fn!r}"
                )
            if not config.task.startswith("fn:"):
                config.task = factory_task_name(env_fn)
        self.env_fn = env_fn
        config.validate()
        # A multi-task run (planetrl.envs.multitask): its tasks, one episode of each in turn.
        self.tasks = split_tasks(config.task) if is_multitask(config.task) else ()
        if self.tasks and config.eval.episodes % len(self.tasks):
            raise ConfigError(
                f"eval.episodes (M={config.eval.episodes}) must be a multiple of the number of "
                f"tasks ({len(self.tasks)}) of {config.task}, so that each task is evaluated on "
                "as many episodes"
            )
        self.logdir, self.lock = rundir.open_run_dir(
            config, load_config, allow_config_change=allow_config_change
        )
        try:
            self.config = config
            self.progress = progress
            self.device = resolve_device(config.device)

            rundir.seed_global_rngs(config.seed)
            self.pool = make_pool(config, config.train.collect_envs, env_fn=env_fn)
            self.threads = ThreadGovernor(config.threads, own=lambda: self.pool.worker_pids)
            self.threads.adjust()
            self.action_size = int(self.pool.single_action_space.shape[0])
            self.world_model = build_world_model(config, self.action_size)
            # A run that starts from another's model (init_from), when it starts: not on resume.
            self.initialised: dict[str, Any] | None = None
            if config.init_from and not (self.logdir / rundir.CHECKPOINT_FILE).exists():
                self.initialised = transfer.initialise(self.world_model, config, self.logdir)
                print(transfer.describe(self.initialised))
            transfer.freeze(self.world_model, config)
            self.world_model.to(self.device)
            self.optimizer = torch.optim.Adam(
                [p for p in self.world_model.parameters() if p.requires_grad],
                lr=config.train.learning_rate,
                eps=config.train.adam_eps,
            )
            self.generator = torch.Generator().manual_seed(config.seed)
            self.plan_generator = torch.Generator(device=self.device).manual_seed(config.seed + 1)
            # The dequantisation noise of the training batches (WorldModel.preprocess).
            self.batch_generator = torch.Generator().manual_seed(config.seed + 2)
            self.replay = Replay(
                self.logdir / rundir.EPISODES_DIR,
                capacity=config.train.replay_capacity,
                seed=config.seed,
                task_rewards=task_reward_heads(config),
            )
            self.counters = Counters()
            self.checkpoint = self._attach_checkpoint()
            self.start_time = time.time()
            self.logger = Logger(self.logdir)
            self.bar = Progress(False)  # run() makes the visible one
            self._compiled: set[int] = set()  # numbers of environments planned for with compile on
            self._restore()
            episodes, steps = self._episodes_on_disk()
            self.fast = decide_speed(
                config,
                self.world_model,
                self.device,
                self.counters,
                steps // episodes if episodes else DEFAULT_EPISODE_STEPS,
            )
            speed.optimise_world_model(self.world_model, self.fast, self.device)
            self.planner = build_planner(config, self.plan_generator, self.device, self.fast)
            self.update_step = make_update(self.world_model, self.optimizer, config, self.fast)
            self._write_speed()
            print(
                f"{self.fast.describe()}\n  {'threads':<13} {self.threads.threads:<3}  "
                f"({self.threads.reason})\n  {'update':<13} {self._update_path()}",
                flush=True,
            )
        except BaseException:  # nothing left open: env workers, the run directory's lock
            pool = getattr(self, "pool", None)
            if pool is not None:
                pool.close()
            self.lock.release()
            raise

    # ----------------------------------------------------------------- resume
    def _episodes_on_disk(self) -> tuple[int, int]:
        """(episodes, env steps) from the episode files, the counters' source of truth."""
        return rundir.episodes_on_disk(self.logdir, self.repeat_of)

    def repeat_of(self, index: int) -> int:
        """R of training episode ``index`` (a multi-task run: that of its episode's task)."""
        return episode_action_repeat(self.config, collect_seed(self.config, index))

    def task_of(self, seed: int) -> str:
        """The task of the episode reset with ``seed`` (a multi-task run's; else the run's)."""
        return task_for_seed(self.tasks, seed) if self.tasks else self.config.task

    def _attach_checkpoint(self) -> Checkpoint:
        """``checkpoint.pt``: the model, the optimiser, the update counter and every RNG of the
        run (the episode and env-step counters come from the episode files)."""
        counters = self.counters
        checkpoint = Checkpoint(self.logdir / rundir.CHECKPOINT_FILE)
        checkpoint.attach("model", self.world_model).attach("optimizer", self.optimizer)
        checkpoint.attach(
            "updates",
            get=lambda: counters.updates,
            set=lambda value: setattr(counters, "updates", int(value)),
        )
        checkpoint.attach_global_rngs()
        checkpoint.attach("generator", self.generator)
        checkpoint.attach("plan_generator", self.plan_generator)
        checkpoint.attach("batch_generator", self.batch_generator, optional=True)
        checkpoint.attach("replay_rng", get=self.replay.rng_state, set=self.replay.set_rng_state)
        checkpoint.attach(
            "evaluated_at",
            get=lambda: counters.evaluated_at,
            optional=True,
            set=lambda value: setattr(counters, "evaluated_at", int(value)),
        )
        return checkpoint

    def _restore(self) -> None:
        if self.checkpoint.exists():
            self.checkpoint.load(map_location=self.device)
        self.counters.episodes, self.counters.env_steps = self._episodes_on_disk()
        if self.counters.evaluated_at < 0:  # a checkpoint from before evaluated_at existed
            self.counters.evaluated_at = self.counters.episodes

    def save(self) -> None:
        self.checkpoint.save(
            extra={
                "config": to_dict(self.config),
                "episodes": self.counters.episodes,
                "env_steps": self.counters.env_steps,
            }
        )

    # ------------------------------------------------------------- the loop
    def done(self) -> bool:
        t = self.config.train
        if self.counters.episodes >= t.max_episodes:
            return True
        if t.max_minutes and time.time() - self.start_time >= 60 * t.max_minutes:
            return True
        return bool(t.max_env_steps) and self.counters.env_steps >= t.max_env_steps

    def _update_path(self) -> str:
        step = self.update_step
        return step.describe() if isinstance(step, GraphedUpdate) else "eager"

    def _write_speed(self) -> None:
        """``speed.json``: the fast paths decided, and the update's path (``update``)."""
        self._speed_written = self._update_path()
        data = {**self.fast.to_dict(), "update": self._speed_written}
        atomic_write_json(self.logdir / "speed.json", data)

    def sample_batch(self, device: torch.device | str | None = None) -> Any:
        """B chunks of L steps from the replay (its own generator), on ``device`` (the run's)."""
        t = self.config.train
        try:
            return self.replay.sample(t.batch_size, t.chunk_length, device=device or self.device)
        except ValueError as err:  # e.g. episodes that terminate after a few steps
            raise ConfigError(
                f"{err}. With episodes this short (a task that terminates early), set "
                f"--train.chunk-length below L={t.chunk_length} or collect more seed episodes "
                f"(--train.seed-episodes, now S={t.seed_episodes})"
            ) from None

    def batches(self, count: int) -> Any:
        """A context manager over the next ``count`` training batches: with the captured update
        (``speed.update_graph`` on a CUDA device) drawn ahead in a background thread into pinned
        memory (:class:`BatchPrefetcher`); otherwise in the loop (on a CPU the sampling would
        compete with the update for the same cores). The same batches either way."""
        if isinstance(self.update_step, GraphedUpdate) and self.device.type == "cuda":
            return BatchPrefetcher(functools.partial(self.sample_batch, "cpu"), count, self.device)
        return contextlib.nullcontext(self.sample_batch() for _ in range(count))

    def update(self, batch: Any = None) -> dict[str, float]:
        """One gradient step on B chunks of L steps (``batch``, else sampled now), eager or
        captured (``self.update_step``, :func:`planetrl.training.update.make_update`)."""
        values = self.update_step(
            self.sample_batch() if batch is None else batch,
            self.batch_generator,
            where=f"update {self.counters.updates + 1}",
            keep=f"the last good checkpoint is kept in {self.logdir}",
        )
        self.counters.updates += 1
        if self._update_path() != self._speed_written:  # e.g. a capture that fell back to eager
            self._write_speed()
        return values

    def collect(self, random_actions: bool) -> tuple[list[dict[str, np.ndarray]], dict[str, float]]:
        """Training episodes (up to ``collect_envs`` at once, fewer when the budget says so):
        uniform random actions, or the planner plus exploration noise N(0, σ²), clipped."""
        t = self.config.train
        count = min(t.collect_envs, t.max_episodes - self.counters.episodes)
        if random_actions:
            count = min(count, t.seed_episodes - self.counters.episodes)
        count = max(count, 1)
        seeds = [collect_seed(self.config, self.counters.episodes + i) for i in range(count)]
        reset = None
        if random_actions:
            act = uniform_policy(self.action_size, seeds)
        else:
            agent = Agent(self.world_model, self.planner, generator=self.generator)
            act = functools.partial(agent.act, explore_noise=t.exploration_noise)
            reset = agent.reset
        what = "random episode" if random_actions else "collect"
        label = f"{what}{'s' if count > 1 else ''} {self.counters.episodes + 1}"
        if count > 1:
            label += f"-{self.counters.episodes + count}"

        def on_step(step: int, env_steps: int) -> None:
            self.bar.advance(env_steps)
            self.bar.phase(f"{label}: step {step}")

        self.threads.adjust()
        if not random_actions:
            self._announce_compile(label, count)
        self.world_model.eval()
        try:
            out = run_episodes(self.pool, act, seeds, reset=reset, keep=True, on_step=on_step)
        finally:
            self.world_model.train()
        timing = {"train/env_steps_per_s": out.env_steps_per_s}
        if not random_actions:
            timing["train/ms_per_plan"] = out.ms_per_act
        assert out.episodes is not None  # keep=True
        return out.episodes, timing

    def _announce_compile(self, label: str, num_envs: int) -> None:
        """Say so on the bar before the first plan for ``num_envs`` environments compiles."""
        if self.fast.compile and num_envs not in self._compiled:
            self._compiled.add(num_envs)
            self.bar.phase(f"{label}: compiling the planner for E={num_envs} (once)", force=True)

    def _add_episode(self, episode, timing) -> None:
        """Log the episode's row, then write it to the replay (its file), then count it. In this
        order a kill between the two leaves a row whose episode the rerun collects again (and
        logs again: the later row wins), never an episode without its row."""
        ret = float(episode["reward"].sum())
        index = self.counters.episodes
        episodes = index + 1
        env_steps = self.counters.env_steps + (len(episode["reward"]) - 1) * self.repeat_of(index)
        per_task = {}
        if self.tasks:
            per_task[f"train/return/{self.task_of(collect_seed(self.config, index))}"] = ret
        self.logger.scalars(
            env_steps,
            {
                **per_task,
                "train/return": ret,
                "train/episodes": episodes,
                "train/env_steps": env_steps,
                "train/updates": self.counters.updates,
                **timing,
            },
        )
        self.replay.add(episode)
        self.counters.episodes, self.counters.env_steps = episodes, env_steps
        self.bar.postfix(ep=self.counters.episodes, ret=f"{ret:.1f}")

    def evaluate_now(self) -> dict[str, float]:
        e = self.config.eval
        self.world_model.eval()
        record = e.video
        seed = eval_seed(self.config)
        eval_planner = build_planner(
            self.config,
            torch.Generator(device=self.device).manual_seed(seed),
            self.device,
            self.fast,
        )
        self.threads.adjust()
        self._announce_compile("eval", e.episodes)
        returns, frames, timing = evaluate(
            self.config,
            self.world_model,
            episodes=e.episodes,
            seed=seed,
            planner=eval_planner,
            parallel=e.parallel,
            record=record,
            on_step=lambda step, _: self.bar.phase(f"eval ({e.episodes} episodes): step {step}"),
            env_fn=self.env_fn,
        )
        row = {
            "eval/open_loop_reward_mse": self.open_loop_reward_mse(),
            "eval/open_loop_reward_mse_H": self.open_loop_reward_mse(
                horizon=self.config.planner.horizon
            ),
            "eval/return": float(np.mean(returns)),
            "eval/return_std": float(np.std(returns)),
            "eval/episodes": len(returns),
            **self._returns_per_task(seed, returns),
            **timing,
        }
        self.logger.scalars(self.counters.env_steps, row)
        if record:
            assert frames is not None  # evaluate(record=True)
            self.logger.video(self.counters.env_steps, "eval/policy", frames)
            self.log_open_loop()
        self.world_model.train()
        self.counters.evaluated_at = self.counters.episodes
        return row

    def _returns_per_task(self, seed: int, returns: list[float]) -> dict[str, float]:
        """A multi-task run's evaluation per task: ``eval/return/<task>`` and its
        ``eval/return_std/<task>`` over the task's episodes (episode i reset with ``seed + i``);
        nothing for a single task."""
        if not self.tasks:
            return {}
        by_task = returns_by_task(self.tasks, seed, returns)
        row = {f"eval/return/{t}": float(np.mean(v)) for t, v in by_task.items()}
        row.update({f"eval/return_std/{t}": float(np.std(v)) for t, v in by_task.items()})
        return row

    def eval_due(self) -> bool:
        """An evaluation is due when the episodes crossed a multiple of ``eval.every`` since the
        last one (the seed episodes excluded). Kept in the checkpoint, so an evaluation cut off by
        a kill runs when the run resumes, also after the last episode."""
        every = self.config.eval.every
        last = max(self.counters.evaluated_at, self.config.train.seed_episodes)
        return bool(every) and self.counters.episodes // every > last // every

    def _evaluate_if_due(self) -> dict[str, float] | None:
        if not self.eval_due():
            return None
        row = self.evaluate_now()
        self.bar.write(
            f"episode {self.counters.episodes} step {self.counters.env_steps}: "
            f"eval return {row['eval/return']:.1f} ± {row['eval/return_std']:.1f}"
        )
        self.save()
        return row

    def _diagnostic_batch(self, sequences: int, length: int, seed: int):
        """Replay chunks for the diagnostics, drawn with a generator of their own seeded with
        ``seed`` (the same chunks while the replay is unchanged); the replay's own generator, the
        training sample stream, is not touched. None while no chunk of ``length`` steps exists."""
        try:
            return self.replay.sample(
                sequences, length, device=self.device, rng=np.random.default_rng(seed)
            )
        except ValueError:
            return None

    def open_loop_reward_mse(
        self, sequences: int = 16, seed: int = 0, horizon: int | None = None
    ) -> float:
        """:meth:`WorldModel.open_loop_reward_error` on replay chunks and latent samples drawn
        with ``seed`` (comparable across calls); ``horizon`` limits it to the first steps after
        the context (the planner's H)."""
        batch = self._diagnostic_batch(sequences, self.config.train.chunk_length, seed)
        if batch is None:
            return float("nan")
        batch.image = self.world_model.preprocess(batch.image, torch.Generator().manual_seed(seed))
        return self.world_model.open_loop_reward_error(batch, horizon=horizon, seed=seed)

    def log_open_loop(self, sequences: int = 4, context: int = 5, seed: int = 0) -> None:
        """Video: truth / model (5 context frames, then open-loop imagination) / error, on replay
        chunks and latent samples drawn with ``seed``."""
        batch = self._diagnostic_batch(sequences, min(self.config.train.chunk_length, 50), seed)
        if batch is None:
            return
        images = self.world_model.preprocess(batch.image, torch.Generator().manual_seed(seed))
        pred = self.world_model.open_loop_prediction(
            images, batch.action, batch.is_first, context=context, seed=seed
        )
        frames = open_loop_video(images, pred, bits=self.world_model.bits)
        self.logger.video(self.counters.env_steps, "open_loop", frames, fps=10)

    def run(self) -> dict[str, Any]:
        """Run Algorithm 1 until the budget is spent; returns a summary."""
        cfg = self.config
        C = cfg.train.collect_interval
        self.bar = Progress(self.progress, cfg.train.max_env_steps or None, self.counters.env_steps)
        last_eval = None
        try:
            if self.initialised is not None and cfg.eval.every:
                # The model as taken from init_from, before any env step of this task: the
                # zero-shot return (with the source's head for this task, where it had one).
                last_eval = self.evaluate_now()
                self.bar.write(f"zero-shot eval return {last_eval['eval/return']:.1f}")
                self.save()
            while self.counters.episodes < cfg.train.seed_episodes and not self.done():
                episodes, timing = self.collect(random_actions=True)
                for episode in episodes:
                    self._add_episode(episode, timing)
                self.save()
            last_eval = self._evaluate_if_due() or last_eval  # cut off by a kill before it ran
            while not self.done():
                losses: dict[str, list[float]] = {}
                self.threads.adjust()
                self.bar.phase(f"update 0/{C}", force=True)
                start = time.perf_counter()
                with self.batches(C) as batches:
                    for i, batch in enumerate(batches):
                        for k, v in self.update(batch).items():
                            losses.setdefault(k, []).append(v)
                        self.bar.phase(f"update {i + 1}/{C}")
                update_ms = 1000 * (time.perf_counter() - start) / C
                means = {f"loss/{k}": float(np.mean(v)) for k, v in losses.items()}
                self.logger.scalars(
                    self.counters.env_steps,
                    {
                        **means,
                        "train/ms_per_update": update_ms,
                        "train/threads": self.threads.threads,
                    },
                )
                episodes, timing = self.collect(random_actions=False)
                for episode in episodes:
                    self._add_episode(episode, timing)
                self.bar.postfix(
                    ep=self.counters.episodes,
                    ret=f"{float(episodes[-1]['reward'].sum()):.1f}",
                    loss=f"{means.get('loss/loss', float('nan')):.1f}",
                    kl=f"{means.get('loss/kl', float('nan')):.2f}",
                )
                self.save()
                last_eval = self._evaluate_if_due() or last_eval
            last_eval = self._evaluate_if_due() or last_eval  # cut off at the end by a kill
        finally:
            self.bar.close()
            self.logger.flush()
        return {
            "episodes": self.counters.episodes,
            "env_steps": self.counters.env_steps,
            "updates": self.counters.updates,
            "eval": last_eval,
        }

    def close(self) -> None:
        self.pool.close()
        self.logger.close()
        self.lock.release()


def factory_task_name(env_fn: Callable[[], Any]) -> str:
    """``fn:<module>.<qualified name>`` of an env factory (its class's for other callables)."""
    named = env_fn if hasattr(env_fn, "__qualname__") else type(env_fn)
    inner = getattr(env_fn, "func", None)  # functools.partial
    if inner is not None and hasattr(inner, "__qualname__"):
        named = inner
    return f"fn:{getattr(named, '__module__', '?')}.{named.__qualname__}"


def train(config: Config, **kwargs) -> dict[str, Any]:
    """Create (or resume) the run in ``config.logdir`` and run it to its budget."""
    trainer = Trainer(config, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()


def load_run(
    logdir: str | Path, device: str = "auto", env_fn: Callable[[], Any] | None = None
) -> tuple[Config, WorldModel]:
    """The config and trained world model of a run directory (for evaluation); ``env_fn``: the
    factory of a run trained with one (an ``fn:`` task)."""
    logdir = Path(logdir)
    config = load_config(logdir / rundir.CONFIG_FILE)
    config.device = device
    dev = resolve_device(device)
    env = make_env(
        config.task,
        action_repeat=resolve_action_repeat(config),
        render=config.render,
        env_kwargs=config.env_kwargs,
        env_fn=env_fn,
    )
    try:
        shape = env.action_space.shape
        assert shape is not None  # a Box: every env of make_env has continuous actions
        action_size = int(shape[0])
    finally:
        env.close()
    world_model = speed.optimise_world_model(
        build_world_model(config, action_size).to(dev), config.speed, dev
    )
    payload = load_checkpoint(logdir / rundir.CHECKPOINT_FILE, map_location=dev)
    try:
        world_model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint in {logdir} does not match its config: {err}") from None
    world_model.eval()
    return config, world_model
