"""A World Models run on a run directory, resumable after a kill at any stage.

    for each iteration (``collect.iterations``; 1 = the original's procedure):
        collect: episodes in the real environment through the shared episode driver into the
                 shared replay (``collect.policy`` in the first iteration: the original's random
                 controllers, Brownian or uniform actions; the current controller with
                 exploration noise afterwards)
        vae:     train V on frames drawn uniformly from the replay
        mdn:     encode every episode with V, train M on sequences of (z_t, a_t) → z_{t+1}, r, done
        controller: evolve C with CMA-ES; a candidate's fitness is its mean return over
                 ``controller.rollouts`` rollouts, in the dream (one batched rollout of M for the
                 whole population) or in the real environment (the population's rollouts as the
                 environments of batched driver runs, fresh tracks every generation); evaluate
                 the mean controller in the real environment every ``eval.every`` generations
                 and at the end, and keep the best-evaluated mean as the controller
    retest: the kept controller on ``eval.retest_episodes`` fresh seeds (the reported figure)

The run directory is the shared layout, set up as PlaNet's (:mod:`planetrl.run.directory`):
``config.json`` (with ``agent: worldmodels``), ``checkpoint.pt`` (V, M, their optimisers, the
CMA-ES state, the stage and its counters, every RNG: the entries attached to a shared
:class:`~planetrl.run.checkpoint.Checkpoint`, written atomically), ``episodes/`` (the shared
:class:`~planetrl.replay.Replay`; the source of truth for the collected episodes),
``metrics.jsonl`` and ``tb/`` (the shared :class:`~planetrl.run.logger.Logger`; every row's
``step`` is the env steps so far: collection plus, in ``real`` mode, the controller's fitness
rollouts), ``videos/``. The checkpoint is saved after every collected batch of episodes, every
tenth of the V and M updates and every generation, so a kill loses at most that much work.

A resumed run ends with exactly the V, M and controller of an uninterrupted one when every
episode in the replay was collected by the first iteration's policy (the original's procedure):
an episode's actions come from streams seeded by its own seed
(:func:`planetrl.driver.uniform_policy`, :func:`planetrl.driver.brownian_policy`,
:class:`~planetrl.worldmodels.rollout.RandomControllerPolicy`), so a batch cut short by a kill is
finished with the same episodes. Episodes collected by the
controller (iterations after the first) sample z_t and the exploration noise from one generator
for the batch, saved after the batch; such a batch cut short is finished with valid episodes that
differ from the uninterrupted run's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from planetrl.atomic import atomic_write_json
from planetrl.config import ConfigError
from planetrl.driver import (
    brownian_policy,
    make_pool,
    resolve_action_repeat,
    run_episodes,
    uniform_policy,
)
from planetrl.envs import make_env
from planetrl.envs.multitask import is_multitask
from planetrl.episodes import EpisodeFile, list_episode_files
from planetrl.replay import Replay
from planetrl.run import directory as rundir
from planetrl.run.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from planetrl.run.fast_paths import FLAGS, Hardware, SpeedDecision, decide
from planetrl.run.logger import Logger, read_metrics
from planetrl.run.progress import Progress
from planetrl.threads import ThreadGovernor
from planetrl.worldmodels.config import (
    WMSpeedConfig,
    WorldModelsConfig,
    action_map_of,
    load_config,
    to_dict,
)
from planetrl.worldmodels.data import FrameSchedule, episode_loader, iter_episodes
from planetrl.worldmodels.es import CMAES
from planetrl.worldmodels.models import MDNRNN, VAE, LinearController, Posterior, mixture_nll
from planetrl.worldmodels.rollout import (
    RandomControllerPolicy,
    WorldModelsPolicy,
    dream_rollout,
    initial_latents,
)

__all__ = [
    "NonFiniteLossError",
    "RunState",
    "WorldModelsTrainer",
    "evaluate_run",
    "fitness_seeds",
    "train",
]

STAGES = ("collect", "vae", "mdn", "controller", "retest", "done")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunState:
    """Where the run is: saved in the checkpoint, so a resumed run continues the stage."""

    iteration: int = 0
    stage: str = "collect"
    """One of ``collect``, ``vae``, ``mdn``, ``controller``, ``done``."""
    vae_updates: int = 0
    """V's updates in this iteration."""
    mdn_updates: int = 0
    """M's updates in this iteration."""
    controller_env_steps: int = 0
    """Env steps of the controller's fitness rollouts (``real`` mode), all iterations."""
    evaluated_at: int = -1
    """The generation of this iteration last evaluated (-1: none)."""
    controller: list[float] | None = None
    """θ of the current controller: the CMA-ES mean during an iteration's evolution, the kept
    (best-evaluated) mean after it; None before the first generation."""
    kept: list[float] | None = None
    """θ of this iteration's best-evaluated CMA-ES mean so far (None before its first
    evaluation)."""
    kept_return: float | None = None
    """Its evaluation return."""
    kept_generation: int = -1
    """The generation it was evaluated at."""


class EncodedEpisode(NamedTuple):
    """An episode through V: q(z | o_t) per step, and what M learns to predict."""

    mean: torch.Tensor
    logvar: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    terminal: torch.Tensor


def action_size_of(config: WorldModelsConfig) -> int:
    env = make_env(
        config.task,
        action_repeat=resolve_action_repeat(config),
        render=config.render,
        env_kwargs=config.env_kwargs,
    )
    try:
        shape = env.action_space.shape
        assert shape is not None  # a Box: every env of make_env has continuous actions
        return int(shape[0])
    finally:
        env.close()


WM_FLAGS = tuple(f.name for f in fields(WMSpeedConfig))
"""The fast-path flags of World Models' ``speed`` section (V's convolutions)."""


def speed_decision(config: WorldModelsConfig, device: torch.device) -> SpeedDecision:
    """``config.speed`` (V's ``bf16`` and ``channels_last``) decided for ``device``
    (:func:`planetrl.speed.decide`, PlaNet's rules); PlaNet's other flags are off."""
    flags = {name: "off" for name in FLAGS}
    flags.update({name: getattr(config.speed, name) for name in WM_FLAGS})
    return decide(SimpleNamespace(**flags), Hardware.detect(device))


def build_models(
    config: WorldModelsConfig,
    action_size: int,
    device: torch.device,
    fast: SpeedDecision | None = None,
) -> tuple[VAE, MDNRNN, LinearController]:
    """V (with the fast paths of ``fast``, by default decided from ``config.speed``), M and C of
    ``config`` on ``device``."""
    fast = fast if fast is not None else speed_decision(config, device)
    vae = VAE(config.vae.z_size, config.vae.depth).to(device)
    vae.use_fast_paths(channels_last=fast.channels_last, bf16=fast.bf16)
    mdn = MDNRNN(config.vae.z_size, action_size, config.mdn.hidden_size, config.mdn.mixtures).to(
        device
    )
    controller = LinearController(
        config.vae.z_size, config.mdn.hidden_size, action_size, action_map_of(config)
    )
    return vae, mdn, controller


class WorldModelsTrainer:
    """A resumable World Models run in ``config.logdir`` (see the module docstring).

    Args:
        config: the merged configuration.
        allow_config_change: resume even if ``config`` differs from the saved one in fields other
            than budgets, logging and device.
        progress: show a progress line naming the phase.
    """

    def __init__(
        self, config: WorldModelsConfig, *, allow_config_change: bool = False, progress: bool = True
    ) -> None:
        config.validate()
        if is_multitask(config.task):
            raise ConfigError(
                f"{config.task}: one agent for several tasks is PlaNet's experiment (paper "
                "section 5); World Models trains on one task"
            )
        self.config = config
        self.logdir, self.lock = rundir.open_run_dir(
            config, load_config, allow_config_change=allow_config_change
        )
        self._pools: dict[str, Any] = {}
        try:
            self.progress = progress
            self.device = rundir.resolve_device(config.device)
            self.repeat = resolve_action_repeat(config)
            # threads=0: the free cores, re-read before every phase and every tenth of an update
            # stage (a 2-thread team on 2 busy cores runs at half speed; planetrl.threads).
            self.threads = ThreadGovernor(config.threads, own=self._worker_pids)
            rundir.seed_global_rngs(config.seed)

            self.action_size = action_size_of(config)
            fast = speed_decision(config, self.device)
            self.vae, self.mdn, self.controller = build_models(
                config, self.action_size, self.device, fast
            )
            speed_json = {name: getattr(fast, name) for name in WM_FLAGS}
            speed_json["reasons"] = {name: fast.reasons[name] for name in WM_FLAGS}
            speed_json["hardware"] = fast.to_dict()["hardware"]
            atomic_write_json(self.logdir / "speed.json", speed_json)
            print(
                "fast paths of V: "
                + ", ".join(
                    f"{n} {'on' if speed_json[n] else 'off'} ({fast.reasons[n]})" for n in WM_FLAGS
                ),
                flush=True,
            )
            self.vae_optimizer = torch.optim.Adam(
                self.vae.parameters(), lr=config.vae.learning_rate
            )
            self.mdn_optimizer = torch.optim.Adam(
                self.mdn.parameters(), lr=config.mdn.learning_rate
            )
            s = config.seed
            self.vae_generator = torch.Generator(device=self.device).manual_seed(s + 1)
            self.mdn_generator = torch.Generator(device=self.device).manual_seed(s + 2)
            self.dream_generator = torch.Generator(device=self.device).manual_seed(s + 3)
            self.policy_generator = torch.Generator(device=self.device).manual_seed(s + 4)
            self.mdn_rng = np.random.default_rng(s + 5)
            self.replay = Replay(
                self.logdir / rundir.EPISODES_DIR,
                capacity=config.collect.memory_steps or None,
                seed=s,
            )
            self.state = RunState()
            self.es: CMAES | None = None
            self.checkpoint = self._attach_checkpoint()
            if self.checkpoint.exists():
                self.checkpoint.load(map_location=self.device)
            self.logger = Logger(self.logdir)
            self.bar = Progress(False)
            self._encoded: tuple[tuple[int, int, int], list[EncodedEpisode]] | None = None
            self._schedule: tuple[tuple[int, int], FrameSchedule] | None = None
            self._block: tuple[tuple[int, int], list[np.ndarray], np.ndarray] | None = None
        except BaseException:  # nothing left open: env pools, the run directory's lock
            for pool in self._pools.values():
                pool.close()
            self.lock.release()
            raise

    # ------------------------------------------------------------------ state
    def _attach_checkpoint(self) -> Checkpoint:
        checkpoint = Checkpoint(self.logdir / rundir.CHECKPOINT_FILE)
        checkpoint.attach("vae", self.vae).attach("mdn", self.mdn)
        checkpoint.attach("vae_optimizer", self.vae_optimizer)
        checkpoint.attach("mdn_optimizer", self.mdn_optimizer)
        checkpoint.attach(
            "run",
            get=lambda: asdict(self.state),
            set=lambda value: setattr(self, "state", RunState(**value)),
        )
        checkpoint.attach(
            "es", get=lambda: None if self.es is None else self.es.state_dict(), set=self._set_es
        )
        checkpoint.attach_global_rngs()
        for name in (
            "vae_generator",
            "mdn_generator",
            "dream_generator",
            "policy_generator",
            "mdn_rng",
        ):
            checkpoint.attach(name, getattr(self, name))
        checkpoint.attach("replay_rng", get=self.replay.rng_state, set=self.replay.set_rng_state)
        return checkpoint

    def _set_es(self, value: dict[str, Any] | None) -> None:
        self.es = None if value is None else CMAES.from_state_dict(value)

    def save(self) -> None:
        self.checkpoint.save(
            extra={
                "config": to_dict(self.config),
                "agent": "worldmodels",
                "env_steps": self.env_steps(),
            }
        )

    def collected(self) -> tuple[int, int]:
        """(episodes, env steps) collected, from the episode files (the source of truth)."""
        return rundir.episodes_on_disk(self.logdir, self.repeat)

    def env_steps(self) -> int:
        """Env steps so far: collection plus the controller's real-environment rollouts."""
        return self.collected()[1] + self.state.controller_env_steps

    def _pool(self, name: str, num_envs: int, parallel: bool):
        pool = self._pools.get(name)
        if pool is None or pool.num_envs != num_envs:
            if pool is not None:
                pool.close()
            pool = self._pools[name] = make_pool(self.config, num_envs, parallel)
        return pool

    def _worker_pids(self) -> list[int]:
        return [pid for pool in self._pools.values() for pid in getattr(pool, "worker_pids", ())]

    def _log(self, values: dict[str, float]) -> None:
        self.logger.scalars(self.env_steps(), values)

    def _check(self, what: str, values: dict[str, float]) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"non-finite {what} loss ({', '.join(f'{k}={values[k]}' for k in bad)}); stopped, "
                f"the last good checkpoint is kept in {self.logdir}"
            )

    # ---------------------------------------------------------------- collect
    def _controller_policy(self, params, explore_noise: float = 0.0) -> WorldModelsPolicy:
        weights = self.controller.weights(params, self.device)
        return WorldModelsPolicy(
            self.vae,
            self.mdn,
            self.controller,
            weights,
            generator=self.policy_generator,
            explore_noise=explore_noise,
        )

    def collect(self) -> None:
        c = self.config.collect
        target = (self.state.iteration + 1) * c.episodes
        pool = self._pool("collect", c.envs, c.parallel)
        while True:
            have = len(list_episode_files(self.logdir / rundir.EPISODES_DIR))
            if have >= target:
                break
            count = min(c.envs, target - have)
            seeds = [rundir.collect_seed(self.config, have + i) for i in range(count)]
            reset = None
            if self.state.iteration == 0 or self.state.controller is None:
                act, reset = self._first_policy(seeds)
            else:
                policy = self._controller_policy(self.state.controller, c.explore_noise)
                act, reset = policy.act, policy.reset
            self.bar.phase(
                f"iteration {self.state.iteration}: collect episodes {have + 1}-"
                f"{have + count} of {target}",
                force=True,
            )
            self.threads.adjust()
            out = run_episodes(pool, act, seeds, reset=reset, keep=True)
            assert out.episodes is not None  # keep=True
            for episode in out.episodes:
                # The row first, then the episode file: a kill between them leaves a row that
                # the rerun logs again with the same episode (the later row wins), never an
                # episode without its row.
                steps = (len(episode["reward"]) - 1) * self.repeat
                self.logger.scalars(
                    self.env_steps() + steps,
                    {
                        "train/return": float(episode["reward"].sum()),
                        "train/episodes": self.replay.total_episodes + 1,
                        "train/env_steps_per_s": out.env_steps_per_s,
                    },
                )
                self.replay.add(episode)
            self.save()
        self._advance("vae")

    def _first_policy(self, seeds: list[int]):
        """(act, reset) of the first iteration's policy (``collect.policy``) for ``seeds``."""
        c = self.config.collect
        if c.policy == "brownian":
            return brownian_policy(self.action_size, seeds, c.brownian_dt), None
        if c.policy == "random-controller":
            policy = RandomControllerPolicy(
                self.vae, self.mdn, self.controller, seeds, c.random_scale
            )
            return policy.act, policy.reset
        return uniform_policy(self.action_size, seeds), None

    def _advance(self, stage: str) -> None:
        self.state.stage = stage
        self.save()

    def _updates(
        self, part: str, model: str, total: int, update: Callable[[], dict[str, float]]
    ) -> tuple[dict[str, float], int] | None:
        """Run ``update`` (one gradient step; returns its loss terms) until this iteration's
        counter ``state.<part>_updates`` reaches ``total``. Every tenth of ``total`` updates and
        at the last: one row of each term's mean over the n updates since the previous row
        (``<part>/<term>``), the counter and the ms per update, then the checkpoint is saved.
        ``model`` (V, M) names the model in the progress line. Returns (the last row's means, n),
        or None when no update was left."""
        every = max(1, total // 10)
        sums: dict[str, float] = {}
        last = None
        self.threads.adjust()
        start = time.perf_counter()
        while getattr(self.state, f"{part}_updates") < total:
            values = update()
            done = getattr(self.state, f"{part}_updates") + 1
            setattr(self.state, f"{part}_updates", done)
            for k, x in values.items():
                sums[k] = sums.get(k, 0.0) + x
            self.bar.phase(f"iteration {self.state.iteration}: {model} update {done}/{total}")
            if done % every == 0 or done == total:
                n = (done - 1) % every + 1
                last = ({k: x / n for k, x in sums.items()}, n)
                self._log(
                    {
                        **{f"{part}/{k}": x for k, x in last[0].items()},
                        f"{part}/updates": done,
                        f"{part}/ms_per_update": 1000 * (time.perf_counter() - start) / n,
                        f"{part}/threads": self.threads.threads,
                    }
                )
                self.save()
                self.threads.adjust()
                sums, start = {}, time.perf_counter()
        return last

    # -------------------------------------------------------------------- V
    def vae_updates_per_iteration(self) -> int:
        v = self.config.vae
        return max(1, math.ceil(v.epochs * self.replay.total_steps / v.batch_size))

    def episode_files(self) -> list[EpisodeFile]:
        """The replay's episode files, in index order (the source of truth)."""
        return list_episode_files(self.logdir / rundir.EPISODES_DIR)

    def vae_batch(self, update: int) -> np.ndarray:
        """uint8 frames (B, H, W, 3) of V's update ``update`` of this iteration: every frame
        once per epoch, in blocks of at most ``collect.memory_steps`` frames
        (:class:`~planetrl.worldmodels.data.FrameSchedule`)."""
        files = self.episode_files()
        key = (self.state.iteration, len(files))
        if self._schedule is None or self._schedule[0] != key:
            schedule = FrameSchedule(
                [f.length for f in files],
                self.config.collect.memory_steps,
                self.config.vae.batch_size,
                key=(self.config.seed, self.state.iteration),
            )
            self._schedule, self._block = (key, schedule), None
        schedule = self._schedule[1]
        block, positions, frames = schedule.batch(update)
        if self._block is None or self._block[0] != block:
            self._block = None  # free the previous block before reading the next
            load = episode_loader(self.replay, files)
            images = [load(p)["image"] for p in positions]
            self._block = (block, images, np.cumsum([0] + [len(x) for x in images]))
        _, images, starts = self._block
        which = np.searchsorted(starts, frames, side="right") - 1
        return np.stack([images[e][f - starts[e]] for e, f in zip(which, frames)])

    def train_vae(self) -> None:
        v = self.config.vae

        def update() -> dict[str, float]:
            images = self.vae_batch(self.state.vae_updates)
            frames = VAE.preprocess(torch.from_numpy(images)).to(self.device)
            terms = self.vae.loss(frames, v.kl_tolerance, self.vae_generator)
            values = {k: float(x.detach()) for k, x in terms._asdict().items()}
            self._check("V", values)
            self.vae_optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            self.vae_optimizer.step()
            return values

        self._updates("vae", "V", self.vae_updates_per_iteration(), update)
        self._block = None
        if self.config.eval.video:
            self.reconstruction_video()
        if self.state.vae_updates:
            self.check_vae()
        self._advance("mdn")

    @torch.no_grad()
    def check_vae(self, frames: int = 256) -> dict[str, float]:
        """V against the mean frame on ``frames`` replay frames (drawn with a generator of their
        own): the MSE per pixel of V's reconstruction (of the posterior mean) and of the
        frames' mean frame, and the latent dimensions whose posterior mean varies across frames
        more than its posterior std (the dimensions that carry information). A V no better than
        the mean frame encodes nothing of the state, so M's predictions and the dream are flat
        (written as a warning)."""
        images = self.replay.sample_raw(frames, 1, rng=np.random.default_rng(0))["image"][:, 0]
        x = VAE.preprocess(torch.from_numpy(images)).to(self.device)
        self.vae.eval()
        posterior = self.vae.encode(x)
        recon = self.vae.decode(posterior.mean)
        self.vae.train()
        row = {
            "vae/recon_mse_per_pixel": float((recon - x).square().mean()),
            "vae/mean_frame_mse_per_pixel": float((x - x.mean(0)).square().mean()),
            "vae/informative_dims": float((posterior.mean.std(0) > posterior.std.mean(0)).sum()),
        }
        self._log(row)
        if row["vae/recon_mse_per_pixel"] >= 0.9 * row["vae/mean_frame_mse_per_pixel"]:
            self.bar.write(
                f"warning: V reconstructs the frames no better than their mean frame (MSE per "
                f"pixel {row['vae/recon_mse_per_pixel']:.5f} against "
                f"{row['vae/mean_frame_mse_per_pixel']:.5f}; {row['vae/informative_dims']:.0f} "
                "informative latent dimensions): z carries little of the state, so M and the "
                "dream will be nearly flat; train V longer (--vae.epochs, --vae.learning-rate)"
            )
        return row

    @torch.no_grad()
    def reconstruction_video(self, length: int = 100) -> None:
        """Video: real frames of the newest episode beside V's reconstruction (of the mean z)."""
        episode = self.replay.episodes()[-1]
        images = np.array(episode["image"][:length])
        frames = VAE.preprocess(torch.from_numpy(images)).to(self.device)
        recon = VAE.postprocess(self.vae.decode(self.vae.encode(frames).mean))
        self.logger.video(
            self.env_steps(), "vae/reconstruction", np.concatenate([images, recon], axis=2), fps=10
        )

    # -------------------------------------------------------------------- M
    @torch.no_grad()
    def encoded(self) -> list[EncodedEpisode]:
        """Every episode in the replay through V (cached while V and the replay are unchanged),
        read one at a time when the replay is not all in memory."""
        key = (self.state.iteration, self.state.vae_updates, self.replay.total_episodes)
        if self._encoded is not None and self._encoded[0] == key:
            return self._encoded[1]
        self._encoded = None
        self.vae.eval()
        out = []
        for episode in iter_episodes(self.replay, self.episode_files()):
            means, logvars = [], []
            for start in range(0, len(episode["image"]), 256):
                frames = VAE.preprocess(torch.tensor(episode["image"][start : start + 256]))
                posterior = self.vae.encode(frames.to(self.device))
                means.append(posterior.mean)
                logvars.append(posterior.logvar)
            out.append(
                EncodedEpisode(
                    torch.cat(means),
                    torch.cat(logvars),
                    torch.tensor(episode["action"], device=self.device),
                    torch.tensor(episode["reward"], device=self.device),
                    torch.tensor(episode["is_terminal"], device=self.device),
                )
            )
        self.vae.train()
        self._encoded = (key, out)
        return out

    def mdn_batch(self, episodes: list[EncodedEpisode]) -> dict[str, torch.Tensor]:
        """B sequences of up to L transitions: an episode drawn in proportion to its transitions,
        a window drawn uniformly in it; z_t ~ q(z | o_t) sampled afresh (the original's series);
        shorter windows are padded and masked. Inputs z_t, a_t (a_t is stored at step t + 1);
        targets z_{t+1}, r_{t+1}, episode end at t + 1."""
        m = self.config.mdn
        lengths = np.array([len(e.mean) - 1 for e in episodes])
        if lengths.max(initial=0) < 1:
            raise ValueError("M needs episodes of at least 2 steps")
        picks = self.mdn_rng.choice(len(episodes), m.batch_size, p=lengths / lengths.sum())
        L = min(m.sequence_length, int(lengths.max()))
        z_size = self.config.vae.z_size
        z = torch.zeros(m.batch_size, L + 1, z_size, device=self.device)
        action = torch.zeros(m.batch_size, L, self.action_size, device=self.device)
        reward = torch.zeros(m.batch_size, L, device=self.device)
        done = torch.zeros(m.batch_size, L, device=self.device)
        mask = torch.zeros(m.batch_size, L, device=self.device)
        for row, index in enumerate(picks):
            e, n = episodes[index], min(L, int(lengths[index]))
            start = int(self.mdn_rng.integers(0, lengths[index] - n + 1))
            window = slice(start, start + n + 1)
            z[row, : n + 1] = Posterior(e.mean[window], e.logvar[window]).sample(self.mdn_generator)
            action[row, :n] = e.action[start + 1 : start + n + 1]
            reward[row, :n] = e.reward[start + 1 : start + n + 1]
            done[row, :n] = e.terminal[start + 1 : start + n + 1].float()
            mask[row, :n] = 1
        return {"z": z, "action": action, "reward": reward, "done": done, "mask": mask}

    def mdn_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mixture NLL of z_{t+1} + reward_scale · squared error of r̂ + done_scale · weighted
        cross-entropy of the episode end, over the masked steps."""
        m = self.config.mdn
        out, _ = self.mdn(batch["z"][:, :-1], batch["action"])
        mask = batch["mask"]
        count = mask.sum().clamp(min=1)
        nll = mixture_nll(out, batch["z"][:, 1:], mask)
        reward = ((out.reward - batch["reward"]).square() * mask).sum() / count
        weight = 1 + batch["done"] * (m.done_weight - 1)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            out.done_logit, batch["done"], reduction="none"
        )
        done = (bce * weight * mask).sum() / count
        loss = nll + m.reward_scale * reward + m.done_scale * done
        target_mean = (batch["reward"] * mask).sum() / count
        variance = ((batch["reward"] - target_mean).square() * mask).sum() / count
        values = {
            "loss": loss,
            "z_nll": nll,
            "reward_mse": reward,
            "done_bce": done,
            "reward_var": variance,
        }
        return loss, {k: float(v.detach()) for k, v in values.items()}

    def train_mdn(self) -> None:
        m = self.config.mdn
        episodes: list[EncodedEpisode] = []
        if self.state.mdn_updates < m.updates:
            self.bar.phase(
                f"iteration {self.state.iteration}: encoding the replay with V", force=True
            )
            episodes = self.encoded()

        def update() -> dict[str, float]:
            loss, values = self.mdn_loss(self.mdn_batch(episodes))
            self._check("M", values)
            self.mdn_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_value_(self.mdn.parameters(), m.grad_clip)
            self.mdn_optimizer.step()
            return values

        last = self._updates("mdn", "M", m.updates, update)
        if last is not None and m.reward_scale:
            means, n = last
            if means["reward_mse"] >= 0.9 * means["reward_var"]:
                self.bar.write(
                    f"warning: M's reward head predicts no better than a constant (squared "
                    f"error {means['reward_mse']:.3g} against the reward variance "
                    f"{means['reward_var']:.3g} over the last {n} updates): the dream's "
                    "returns will hardly depend on the controller"
                )
        self._advance("controller")

    # -------------------------------------------------------------------- C
    @torch.no_grad()
    def _first_latents(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """q(z | o_0) of every episode's first frame (mean, logvar (E, z)) and the dream horizon."""
        encoded = self.encoded()
        mean = torch.stack([e.mean[0] for e in encoded])
        logvar = torch.stack([e.logvar[0] for e in encoded])
        longest = max(len(e.mean) for e in encoded)
        horizon = self.config.controller.dream_horizon or longest - 1
        return mean, logvar, max(1, horizon)

    def dream_returns(self, candidates: np.ndarray) -> np.ndarray:
        """Mean dream return per candidate: population × rollouts as one batched rollout."""
        c = self.config.controller
        if getattr(self, "_latents_key", None) != self.state.iteration:
            self._latents, self._latents_key = self._first_latents(), self.state.iteration
        mean, logvar, horizon = self._latents
        weights = self.controller.weights(np.repeat(candidates, c.rollouts, axis=0), self.device)
        z0 = initial_latents(mean, logvar, len(candidates) * c.rollouts, self.dream_generator)
        result = dream_rollout(
            self.mdn,
            self.controller,
            weights,
            z0,
            horizon=horizon,
            temperature=c.temperature,
            generator=self.dream_generator,
        )
        return result.returns.view(len(candidates), c.rollouts).mean(1).cpu().numpy()

    def real_returns(self, candidates: np.ndarray, generation: int) -> np.ndarray:
        """Mean real return per candidate: the population's rollouts as the environments of
        batched driver runs (``controller.envs`` at a time). Fresh env seeds every generation,
        ``rollouts`` different ones per candidate, candidates i and i + ceil(λ/2) on the same
        ones (the original's train.py: ``seeds = seeder.next_batch(popsize / 2)`` twice, each
        worker's 16 episodes on successive tracks from its seed)."""
        c = self.config.controller
        rows = np.repeat(candidates, c.rollouts, axis=0)
        seeds_all = fitness_seeds(self.config, generation, len(candidates)).ravel().tolist()
        pool = self._pool("controller", c.envs, c.parallel)
        returns: list[float] = []
        for start in range(0, len(rows), c.envs):
            chunk = rows[start : start + c.envs]
            policy = self._controller_policy(chunk)
            out = run_episodes(
                pool,
                policy.act,
                seeds_all[start : start + len(chunk)],
                reset=policy.reset,
                on_step=self._count_controller_steps,
            )
            returns.extend(out.returns)
        return np.asarray(returns).reshape(len(candidates), c.rollouts).mean(1)

    def _count_controller_steps(self, _: int, env_steps: int) -> None:
        self.state.controller_env_steps += env_steps

    def evolve(self) -> None:
        c, e = self.config.controller, self.config.eval
        if self.es is None:
            self.es = CMAES(
                self.controller.num_params,
                population=c.population,
                sigma_init=c.sigma_init,
                weight_decay=c.weight_decay,
                seed=(self.config.seed * 7919 + self.state.iteration) % 2**31 + 1,
                x0=None if self.state.controller is None else np.asarray(self.state.controller),
            )
            self.state.evaluated_at = -1
            self.state.kept, self.state.kept_return, self.state.kept_generation = None, None, -1
            self.save()
        self.vae.eval()
        self.mdn.eval()
        while self.es.generation < c.generations:
            generation = self.es.generation + 1
            self.bar.phase(
                f"iteration {self.state.iteration}: generation {generation}/"
                f"{c.generations} ({c.mode})",
                force=True,
            )
            self.threads.adjust()
            start = time.perf_counter()
            candidates = self.es.ask()
            if c.mode == "dream":
                returns = self.dream_returns(candidates)
            else:
                returns = self.real_returns(candidates, generation)
            seconds = time.perf_counter() - start
            fitness = self.es.tell(candidates, returns)
            self.state.controller = self.es.mean.tolist()
            self._log(
                {
                    "es/generation": generation,
                    "es/return_mean": float(np.mean(returns)),
                    "es/return_max": float(np.max(returns)),
                    "es/return_min": float(np.min(returns)),
                    "es/return_std": float(np.std(returns)),
                    "es/fitness_best": self.es.best_fitness,
                    "es/sigma": self.es.sigma,
                    "es/seconds_per_generation": seconds,
                    "es/fitness_mean": float(np.mean(fitness)),
                }
            )
            self.bar.postfix(gen=generation, ret=f"{np.mean(returns):.1f}")
            if e.every and generation % e.every == 0:
                self.evaluate_now(generation)
            self.save()
        if self.state.evaluated_at != self.es.generation:
            self.evaluate_now(self.es.generation)
        # The kept controller: the best-evaluated mean (the original's best.json), not the last.
        if self.state.kept is not None:
            self.state.controller = list(self.state.kept)
            self._log(
                {
                    "es/kept_generation": self.state.kept_generation,
                    "es/kept_return": float(self.state.kept_return or 0.0),
                }
            )
        self.vae.train()
        self.mdn.train()
        self.state.iteration += 1
        self.state.vae_updates = self.state.mdn_updates = 0
        self.es = None
        self._advance(
            "collect" if self.state.iteration < self.config.collect.iterations else "retest"
        )

    # ------------------------------------------------------------------ eval
    def evaluate_now(self, generation: int) -> dict[str, float]:
        """Evaluate the current controller (the CMA-ES mean) on the run's evaluation seeds; the
        best-evaluated mean of the iteration becomes the one it keeps."""
        e = self.config.eval
        params = (
            self.state.controller
            if self.state.controller is not None
            else np.zeros(self.controller.num_params)
        )
        row = self._evaluate(params, episodes=e.episodes, seed=rundir.eval_seed(self.config))
        row.update({"eval/generation": generation, "eval/iteration": self.state.iteration})
        self._log(row)
        self.bar.write(
            f"iteration {self.state.iteration} generation {generation}: eval return "
            f"{row['eval/return']:.1f} ± {row['eval/return_std']:.1f}"
        )
        if self.state.kept_return is None or row["eval/return"] > self.state.kept_return:
            self.state.kept = [float(x) for x in params]
            self.state.kept_return = row["eval/return"]
            self.state.kept_generation = generation
        self.state.evaluated_at = generation
        return row

    def retest(self) -> None:
        """After the last iteration: the kept controller on ``eval.retest_episodes`` fresh seeds
        (:func:`planetrl.run.directory.retest_seed`), the run's last evaluation row
        (``eval/retest`` = 1), as the original's reported figure re-tests its best.json on 100
        random tracks."""
        e = self.config.eval
        if e.retest_episodes and self.state.controller is not None:
            self.vae.eval()
            self.mdn.eval()
            row = self._evaluate(
                self.state.controller,
                episodes=e.retest_episodes,
                seed=rundir.retest_seed(self.config),
                video=False,
            )
            self.vae.train()
            self.mdn.train()
            row.update(
                {
                    "eval/retest": 1,
                    "eval/generation": self.state.kept_generation,
                    "eval/iteration": self.state.iteration - 1,
                }
            )
            self._log(row)
            self.bar.write(
                f"re-test of the kept controller (generation {self.state.kept_generation}) on "
                f"{e.retest_episodes} fresh episodes: {row['eval/return']:.1f} ± "
                f"{row['eval/return_std']:.1f}"
            )
        self._advance("done")

    def _evaluate(
        self, params, *, episodes: int, seed: int, video: bool | None = None
    ) -> dict[str, float]:
        """Returns of controller θ = ``params`` on episodes seeded ``seed + i``, as a row (and
        the evaluation video when ``eval.video``)."""
        e = self.config.eval
        video = e.video if video is None else video
        self.bar.phase(
            f"iteration {self.state.iteration}: evaluating ({episodes} episodes)", force=True
        )
        pool = self._pool("eval", min(e.envs, episodes), e.parallel)
        self.threads.adjust()
        returns, frames = evaluate_controller(
            self.config,
            self.vae,
            self.mdn,
            self.controller,
            params,
            pool,
            episodes=episodes,
            seed=seed,
            record=video,
        )
        if video and frames is not None:
            self.logger.video(
                self.env_steps(),
                "eval/real_vae_dream",
                eval_video(
                    self.config, self.vae, self.mdn, self.controller, params, frames, self.device
                ),
                fps=10,
            )
        return {
            "eval/return": float(np.mean(returns)),
            "eval/return_std": float(np.std(returns)),
            "eval/episodes": len(returns),
        }

    # ------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Run the stages to the end of the last iteration; returns a summary."""
        self.bar = Progress(self.progress)
        steps = {
            "collect": self.collect,
            "vae": self.train_vae,
            "mdn": self.train_mdn,
            "controller": self.evolve,
            "retest": self.retest,
        }
        try:
            if self.state.stage == "done" and self.state.iteration < self.config.collect.iterations:
                self._advance("collect")  # more iterations asked for on resume
            while self.state.stage != "done":
                if self.state.stage not in steps:
                    raise CheckpointError(f"unknown stage {self.state.stage!r} in the checkpoint")
                steps[self.state.stage]()
        finally:
            self.bar.close()
            self.logger.flush()
        rows = [r for r in _rows(self.logdir) if "eval/return" in r]
        return {
            "iterations": self.state.iteration,
            "env_steps": self.env_steps(),
            "episodes": self.collected()[0],
            "eval": rows[-1] if rows else None,
        }

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self.logger.close()
        self.lock.release()


def fitness_seeds(config: WorldModelsConfig, generation: int, population: int) -> np.ndarray:
    """(population, rollouts) env seeds of generation ``generation`` (1-based)'s fitness
    rollouts in ``real`` mode: fresh every generation, different for each rollout of a
    candidate, candidates i and i + ceil(λ/2) on the same ones (the original's train.py draws
    λ/2 seeds per generation and gives each to two workers)."""
    rollouts = config.controller.rollouts
    groups = -(-population // 2)
    first = (generation - 1) * groups * rollouts
    index = first + (np.arange(population) % groups)[:, None] * rollouts + np.arange(rollouts)
    return np.vectorize(lambda i: rundir.fitness_seed(config, int(i)), otypes=[np.int64])(index)


def _rows(logdir: Path) -> list[dict[str, Any]]:

    path = logdir / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


@torch.no_grad()
def evaluate_controller(
    config: WorldModelsConfig,
    vae: VAE,
    mdn: MDNRNN,
    controller: LinearController,
    params,
    pool,
    *,
    episodes: int,
    seed: int | None = None,
    record: bool = False,
) -> tuple[list[float], np.ndarray | None]:
    """Returns of the controller θ = ``params`` in ``episodes`` real episodes (seeds
    ``eval_seed + i``), run in batches of the pool's size; z_t sampled by a generator of its own
    (the run's streams are untouched); with ``record`` the first batch's frames (T, 64, 64·E,
    3)."""
    device = next(mdn.parameters()).device
    seed = rundir.eval_seed(config) if seed is None else seed
    generator = torch.Generator(device=device).manual_seed(seed)
    policy = WorldModelsPolicy(
        vae, mdn, controller, controller.weights(params, device), generator=generator
    )
    returns: list[float] = []
    frames = None
    for start in range(0, episodes, pool.num_envs):
        seeds = [seed + i for i in range(start, min(episodes, start + pool.num_envs))]
        out = run_episodes(
            pool, policy.act, seeds, reset=policy.reset, record=record and start == 0
        )
        returns.extend(out.returns)
        frames = out.frames if start == 0 else frames
    return returns, frames


@torch.no_grad()
def eval_video(
    config: WorldModelsConfig,
    vae: VAE,
    mdn: MDNRNN,
    controller: LinearController,
    params,
    frames: np.ndarray,
    device: torch.device,
    seed: int = 0,
) -> np.ndarray:
    """(T, 64, 3·64, 3): the first evaluation episode's real frames | V's reconstruction | a
    dream of M from the same first frame, driven by the same controller, decoded by V (held at
    its last frame once the dream's episode ended)."""
    real = frames[:, :, :64]
    x = VAE.preprocess(torch.from_numpy(np.ascontiguousarray(real))).to(device)
    posterior = vae.encode(x)
    recon = VAE.postprocess(vae.decode(posterior.mean))
    generator = torch.Generator(device=device).manual_seed(seed)
    dream = dream_rollout(
        mdn,
        controller,
        controller.weights(params, device),
        posterior.mean[:1],
        horizon=len(real) - 1,
        temperature=config.controller.temperature,
        generator=generator,
        record=True,
    )
    assert dream.latents is not None  # record=True
    dreamt = VAE.postprocess(vae.decode(dream.latents[:, 0]))
    if len(dreamt) < len(real):
        dreamt = np.concatenate([dreamt, np.repeat(dreamt[-1:], len(real) - len(dreamt), 0)])
    return np.concatenate([real, recon, dreamt], axis=2)


def train(config: WorldModelsConfig, **kwargs) -> dict[str, Any]:
    """Create (or resume) the run in ``config.logdir`` and run it to its end."""
    trainer = WorldModelsTrainer(config, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()


def evaluate_run(
    logdir: str | Path,
    *,
    episodes: int,
    seed: int,
    device: str = "auto",
    parallel: bool = True,
    record: bool = False,
) -> tuple[WorldModelsConfig, list[float], np.ndarray | None]:
    """Evaluate the controller of the World Models run in ``logdir`` (for ``planetrl eval``)."""
    logdir = Path(logdir)
    config = load_config(logdir / rundir.CONFIG_FILE)
    dev = rundir.resolve_device(device)
    vae, mdn, controller = build_models(config, action_size_of(config), dev)
    payload = load_checkpoint(logdir / rundir.CHECKPOINT_FILE, map_location=dev)
    try:
        vae.load_state_dict(payload["vae"])
        mdn.load_state_dict(payload["mdn"])
        params = payload["run"]["controller"]
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint in {logdir} does not match its config: {err}") from None
    if params is None:
        raise CheckpointError(
            f"the run in {logdir} has no controller yet (stage "
            f"{payload['run'].get('stage')!r}); train it further first"
        )
    vae.eval()
    mdn.eval()
    with make_pool(config, min(episodes, config.eval.envs), parallel) as pool:
        returns, frames = evaluate_controller(
            config, vae, mdn, controller, params, pool, episodes=episodes, seed=seed, record=record
        )
    return config, returns, frames
