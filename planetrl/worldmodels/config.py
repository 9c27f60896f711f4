"""Typed configuration of a World Models run (Ha & Schmidhuber 2018, arXiv 1803.10122): one
dataclass per part, a docstring per field.

Two presets:

- ``paper``: the sizes of the original CarRacing experiment (hardmaru/WorldModelsExperiments,
  ``carracing/``): 10,000 rollouts of random controllers, V with z = 32 trained 10 epochs (the
  released code's; the paper says 1) at batch 100 and learning rate 1e-4 with KL tolerance 0.5, M an
  LSTM of 256 units with 5 Gaussians per latent dimension trained 4,000 steps on batches of 100
  sequences of 999 steps at learning rate 1e-3 with gradients clipped to [-1, 1], C evolved by
  CMA-ES with a population of 64, 16 rollouts per candidate, σ_0 = 0.1, weight decay 0.01, in the
  real environment, each generation on fresh tracks; the CMA-ES mean evaluated every 25 generations
  on 1,024 episodes (the original: its 64 workers × 16 episodes, on the same seeds every time), the
  best-evaluated mean kept and re-tested at the end on 100 fresh tracks (the original's reported 906
  ± 21).
- ``small``: a run that finishes in minutes on a 2-core CPU; every difference is listed in
  :func:`small_preset` with its reason.

The sections reuse :class:`planetrl.config.Section` (a ``RULES`` table per section plus cross-field
checks) and the whole is a :class:`planetrl.config.RunConfig`, so it is validated, rebuilt,
compared on resume, edited and saved by :mod:`planetrl.config`'s functions. The merged
configuration is saved as ``config.json`` in the run directory with ``agent: worldmodels``, which
is how ``planetrl eval`` tells a World Models run from a PlaNet one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from planetrl.config import (
    ConfigError,
    RunConfig,
    Section,
    Toggle,
    build_config,
    check_preset,
    diff_configs,
    read_config_file,
    save_config,
    set_field,
    to_dict,
)
from planetrl.rules import (
    BOOL,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    Rule,
    one_of,
)

AGENT = "worldmodels"


#: World Models' presets (PlaNet's are :data:`planetrl.config.PRESETS`).
PRESETS = ("paper", "small")


@dataclass
class VAEConfig(Section):
    """V: the convolutional VAE on 64×64×3 frames."""

    z_size: int = 32
    """Size of the latent z (original: 32 for CarRacing, 64 for Doom)."""
    depth: int = 32
    """Channel multiplier: encoder convolutions depth·(1, 2, 4, 8) = 32-64-128-256 (original)."""
    kl_tolerance: float = 0.5
    """Free bits: the KL term per frame is max(KL, kl_tolerance · z_size) (original: 0.5)."""
    learning_rate: float = 1e-4
    """Adam learning rate (original: 1e-4)."""
    batch_size: int = 100
    """Frames per update, drawn uniformly from the replay (original: 100)."""
    epochs: float = 10.0
    """Passes over the frames in the replay per iteration: updates = ceil(epochs · frames /
    batch_size) (the original's released code: 10; its paper says 1)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "z_size": POSITIVE_INT,
        "depth": POSITIVE_INT,
        "kl_tolerance": NON_NEGATIVE,
        "learning_rate": POSITIVE,
        "batch_size": POSITIVE_INT,
        "epochs": POSITIVE,
    }


@dataclass
class MDNConfig(Section):
    """M: the MDN-RNN p(z_{t+1} | z_t, a_t, h_t), plus reward and episode-end heads."""

    hidden_size: int = 256
    """LSTM units (original: 256 for CarRacing, 512 for Doom)."""
    mixtures: int = 5
    """Gaussians per latent dimension (original: 5)."""
    learning_rate: float = 1e-3
    """Adam learning rate (original: 1e-3)."""
    grad_clip: float = 1.0
    """Each gradient entry is clipped to [-grad_clip, grad_clip] (original: 1.0, by value)."""
    batch_size: int = 100
    """Sequences per update (original: 100)."""
    sequence_length: int = 999
    """Steps per training sequence (original: 999, the transitions of 1,000 frames); episodes
    shorter than this give shorter, masked sequences."""
    updates: int = 4000
    """Updates per iteration (original CarRacing: 4,000)."""
    reward_scale: float = 1.0
    """Weight of the reward head's squared error (not in the original, which predicted no
    reward; needed to train C in the dream on tasks whose reward must be learned). 0 = off."""
    done_scale: float = 1.0
    """Weight of the episode-end head's cross-entropy (the original's Doom model had it, its
    CarRacing model not). 0 = off."""
    done_weight: float = 10.0
    """Weight of the episode-end class in that cross-entropy (original Doom: restart_factor 10)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "hidden_size": POSITIVE_INT,
        "mixtures": POSITIVE_INT,
        "learning_rate": POSITIVE,
        "grad_clip": POSITIVE,
        "batch_size": POSITIVE_INT,
        "sequence_length": POSITIVE_INT,
        "updates": NON_NEGATIVE_INT,
        "reward_scale": NON_NEGATIVE,
        "done_scale": NON_NEGATIVE,
        "done_weight": POSITIVE,
    }


@dataclass
class ControllerConfig(Section):
    """C: a_t = tanh(W [z_t, h_t] + b), evolved with CMA-ES (the `cma` package)."""

    mode: Literal["dream", "real"] = "real"
    """Where a candidate's fitness is measured: `real` (the environment, the original's CarRacing
    procedure) or `dream` (rollouts of M at temperature τ with M's reward and episode-end heads,
    the original's Doom procedure; the whole population × rollouts is one batched tensor
    rollout)."""
    population: int = 64
    """CMA-ES population size λ (original: 64)."""
    rollouts: int = 16
    """Rollouts per candidate; its fitness is their mean return (original: 16)."""
    generations: int = 1800
    """Generations per iteration (the original's CarRacing result: about 1,800)."""
    sigma_init: float = 0.1
    """σ_0, CMA-ES's initial step size (original: 0.1)."""
    weight_decay: float = 0.01
    """The fitness is the mean return minus weight_decay · mean(θ²) (original: 0.01; its code
    adds the term with the opposite sign, a bonus for large θ, see
    :mod:`planetrl.worldmodels.es`)."""
    temperature: float = 1.0
    """τ of the dream: mixture logits are divided by τ, the std multiplied by sqrt(τ) (original
    Doom: 1.15 for the best controller)."""
    dream_horizon: int = 0
    """Steps of a dream rollout (agent steps); 0 = the longest episode in the replay."""
    envs: int = 16
    """`real` mode: environments stepped together; the population × rollouts run through them
    in batches of this many, one batched policy call per step."""
    parallel: bool = True
    """`real` mode: step the environments in worker processes."""
    action_map: Literal["auto", "tanh", "carracing"] = "auto"
    """How C's tanh outputs become the env's actions. `tanh`: as they are (the env's actions are
    [-1, 1], rescaled affinely to its bounds). `carracing`: the original's CarRacing mapping,
    steer = a_0, gas = (a_1 + 1) / 2, brake = clip(a_2, 0, 1), so θ = 0 drives at half gas
    without braking (the affine rescale would brake at 0.5 on every step). `auto`: `carracing`
    for gym:CarRacing tasks, `tanh` otherwise."""

    RULES: ClassVar[dict[str, Rule]] = {
        "mode": one_of("dream", "real"),
        "population": Rule("an integer >= 2", lambda v: isinstance(v, int) and v >= 2),
        "rollouts": POSITIVE_INT,
        "generations": NON_NEGATIVE_INT,
        "sigma_init": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "temperature": POSITIVE.named("τ"),
        "dream_horizon": NON_NEGATIVE_INT,
        "envs": POSITIVE_INT,
        "parallel": BOOL,
        "action_map": one_of("auto", "tanh", "carracing"),
    }


@dataclass
class CollectConfig(Section):
    """Rollouts in the real environment that V and M learn from."""

    episodes: int = 10_000
    """Episodes collected per iteration: by `policy` in the first iteration (original CarRacing:
    10,000 random rollouts), by the current controller afterwards."""
    policy: Literal["uniform", "random-controller", "brownian"] = "uniform"
    """The first iteration's policy. `random-controller` (the original's extract.py): per episode a
    controller C with weights drawn from a Cauchy distribution of scale s ~ U(0, random_scale),
    acting through V and M with weights drawn the same way, and C's action map; the original's V and
    M were random too, so z_t is close to N(0, I) noise and h_t to 0. The `paper` preset uses
    `random-controller`; `small` and runs made before this option existed use `uniform`. `brownian`
    (ctallec/world-models): a_0 ~ U[-1, 1], a_{t+1} = clip(a_t + sqrt(brownian_dt) ε), ε ~ N(0, I),
    in the env's [-1, 1] action space. `uniform`: a_t ~ U[-1, 1] (PlaNet's seed episodes). Each
    episode's actions depend on its own seed only."""
    random_scale: float = 0.01
    """`random-controller`: the upper end of the per-episode Cauchy scale (original: 0.01)."""
    brownian_dt: float = 0.02
    """`brownian`: the time step of the Brownian motion (ctallec: 1/50). ctallec steps the
    env's own action bounds; here the steps are taken in [-1, 1], so for an action of range 1
    (CarRacing's gas and brake) they are half as large relative to that range."""
    iterations: int = 1
    """Iterations of collect → train V → train M → evolve C (1 = the original's CarRacing and
    Doom procedure; more = the paper's iterative training procedure, section 5)."""
    memory_steps: int = 0
    """Most steps (frames) of the replay held in memory at once; 0 = all of them. With a limit,
    the replay keeps its newest episodes in memory, V trains epoch by epoch on blocks of at most
    this many frames read from the episode files, and M's encoding reads them one at a time
    (:mod:`planetrl.worldmodels.data`); peak memory is about twice this many frames (12 KB each)
    plus the encoded series (256 bytes per frame at z = 32). The `paper` preset: 100,000 (its
    10,000 rollouts would be ~123 GB in memory). Changing it on resume changes the batches of the
    rest of V's stage (the blocks are cut by it)."""
    explore_noise: float = 0.1
    """Std of the Gaussian noise added to the controller's actions when collecting after the
    first iteration (clipped to [-1, 1])."""
    envs: int = 1
    """Environments stepped together when collecting."""
    parallel: bool = True
    """Step the collection environments in worker processes."""

    RULES: ClassVar[dict[str, Rule]] = {
        "episodes": POSITIVE_INT,
        "policy": one_of("uniform", "random-controller", "brownian"),
        "random_scale": POSITIVE,
        "memory_steps": NON_NEGATIVE_INT,
        "brownian_dt": POSITIVE,
        "iterations": POSITIVE_INT,
        "explore_noise": NON_NEGATIVE,
        "envs": POSITIVE_INT,
        "parallel": BOOL,
    }


@dataclass
class WMEvalConfig(Section):
    """Evaluation of the controller (the CMA-ES mean, no exploration noise) in the real
    environment, and the final re-test of the kept controller."""

    every: int = 25
    """Evaluate every N generations, and at the end of each iteration (0 = only at the end;
    original: every 25). Of an iteration's evaluated means, the best-evaluated one is kept as
    the controller (the original's ``best.json``), not the last."""
    episodes: int = 16
    """Episodes per evaluation, on the same seeds at every evaluation of a run (original: its 64
    workers × 16 episodes = 1,024; the `paper` preset's)."""
    envs: int = 16
    """Environments stepped together by an evaluation or the re-test (episodes run in batches
    of this many)."""
    retest_episodes: int = 100
    """After the last iteration, the kept controller is re-tested on this many fresh seeds, none
    used by any evaluation, collection or fitness rollout (original: 100 random tracks, its
    reported 906 ± 21); that is the run's last evaluation row (``eval/retest`` = 1), the figure
    the suite and the comparison report. 0 = no re-test."""
    video: bool = True
    """Write videos: real frames beside V's reconstruction (after V is trained and at each
    evaluation) and a dream rollout of M decoded by V."""
    parallel: bool = True
    """Step the evaluation environments in worker processes."""

    RULES: ClassVar[dict[str, Rule]] = {
        "every": NON_NEGATIVE_INT,
        "episodes": Rule(
            "an integer in 1..2000 (the room of a run's evaluation seeds)",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 2000,
        ),
        "envs": POSITIVE_INT,
        "retest_episodes": Rule(
            "an integer in 0..10000", lambda v: isinstance(v, int) and 0 <= v <= 10_000
        ),
        "video": BOOL,
        "parallel": BOOL,
    }


@dataclass
class WMSpeedConfig(Section):
    """Fast paths of V's convolutions, each `auto` (decided for the machine at start by
    `planetrl.run.fast_paths`, PlaNet's rules; the decision is printed and saved in the run's
    `speed.json`), `on` or `off`. M (an LSTM), C and the losses stay float32."""

    bf16: Toggle = "auto"
    """bfloat16 autocast for V's encoder and decoder convolutions (outputs float32). auto: on
    where bf16 is native (a CPU with AMX-BF16 or AVX512-BF16, a CUDA device with bf16), off
    elsewhere (emulated bf16 is 5-10x slower)."""
    channels_last: Toggle = "auto"
    """channels_last memory format for V's convolutions (the same function). auto: on."""

    RULES: ClassVar[dict[str, Rule]] = {
        name: Rule("auto, on or off", lambda v: v in ("auto", "on", "off"))
        for name in ("bf16", "channels_last")
    }


@dataclass
class WorldModelsConfig(RunConfig):
    """A World Models run: V (VAE), M (MDN-RNN), C (linear controller evolved by CMA-ES)."""

    agent: Literal["worldmodels"] = "worldmodels"
    """The agent; recorded in config.json so that `planetrl eval` recognises the run."""
    logdir: str = "runs/worldmodels"
    """Run directory: config, checkpoint, episodes (the replay), metrics, TensorBoard, videos."""
    preset: Literal["paper", "small"] = "paper"
    """Preset the defaults come from (`paper` = the original's sizes, or `small`)."""
    vae: VAEConfig = field(default_factory=VAEConfig)
    mdn: MDNConfig = field(default_factory=MDNConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    eval: WMEvalConfig = field(default_factory=WMEvalConfig)
    speed: WMSpeedConfig = field(default_factory=WMSpeedConfig)

    RULES: ClassVar[dict[str, Rule]] = {
        **RunConfig.RULES,
        "agent": one_of(AGENT),
        "preset": one_of(*PRESETS),
    }
    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "vae": VAEConfig,
        "mdn": MDNConfig,
        "controller": ControllerConfig,
        "collect": CollectConfig,
        "eval": WMEvalConfig,
        "speed": WMSpeedConfig,
    }
    #: Fields that may differ between the saved config and a resumed run: budgets, logging,
    #: hardware.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {
            "logdir",
            "device",
            "threads",
            "collect.iterations",
            "collect.envs",
            "collect.parallel",
            "collect.memory_steps",
            "controller.generations",
            "controller.envs",
            "controller.parallel",
            "eval.every",
            "eval.episodes",
            "eval.envs",
            "eval.retest_episodes",
            "eval.video",
            "eval.parallel",
            "speed.bf16",
            "speed.channels_last",
        }
    )


def paper_preset() -> WorldModelsConfig:
    """The original's CarRacing sizes and procedure (see the module docstring)."""
    cfg = WorldModelsConfig(preset="paper")
    cfg.collect.policy = "random-controller"
    cfg.collect.memory_steps = 100_000
    cfg.eval.episodes = 1024
    return cfg


def small_preset() -> WorldModelsConfig:
    """A run of minutes on a 2-core CPU (e.g. dmc:cartpole-swingup, 125 agent steps per episode).

    Differences from ``paper`` and why:

    - ``render=fast``: DMC rendering without shadows and anti-aliasing, ~10x faster under Mesa.
    - ``collect.episodes=20`` (2,500 frames at R=8) and ``collect.envs=2``: the data a CPU
      collects in about a minute.
    - ``vae.batch_size=32, learning_rate=1e-3, epochs=20``: 20 epochs of 2,500 frames are ~1,600
      updates. The original's 1e-4 over ~10^6 updates cannot be scaled down: with 1e-4 and 10
      epochs (788 updates) V on cartpole-swingup reconstructed the frames worse than their mean
      frame (MSE per pixel 0.00196 against 0.00186), no latent dimension's posterior mean varied
      across frames more than its posterior std (the cart and pole are ~6% of the pixels), so
      z carried nothing of the state; M's reward head was then a constant (held-out squared
      error 1.31 against the reward variance 1.34), 64 random controllers scored 132 ± 5 in the
      dream and the evolved controller 75 in the real env (random: 117). With 1e-3: one
      informative dimension after 500 updates (the dream still flat: random controllers
      117 ± 6), 7 after 750 with the reconstruction below the mean frame's (0.00131); M trained
      on that V (500 updates) makes a dream that depends on the controller (64 random
      controllers: std 35, 78-234), though its reward head is not yet better than a constant on
      held-out episodes (1.56 against 1.34): 20 episodes are little data for M.
    - ``mdn.batch_size=16, sequence_length=64, updates=500``: the LSTM of 256 units is kept; the
      sequences cover half a cartpole episode.
    - ``controller.mode=dream``: the population is evaluated in M (one batched rollout of
      population × rollouts), seconds per generation instead of minutes of env steps.
    - ``controller.population=16, rollouts=4, generations=40``: a CMA-ES run of ~a minute.
    - ``eval.every=10, eval.episodes=4``.
    """
    cfg = WorldModelsConfig(preset="small", render="fast")
    cfg.collect.episodes, cfg.collect.envs = 20, 2
    cfg.vae.batch_size, cfg.vae.learning_rate, cfg.vae.epochs = 32, 1e-3, 20.0
    cfg.mdn.batch_size, cfg.mdn.sequence_length, cfg.mdn.updates = 16, 64, 500
    cfg.controller.mode = "dream"
    cfg.controller.population, cfg.controller.rollouts, cfg.controller.generations = 16, 4, 40
    cfg.controller.envs = 4
    cfg.eval.every, cfg.eval.episodes = 10, 4
    return cfg


def action_map_of(config: WorldModelsConfig) -> str:
    """The controller's action map (:data:`planetrl.worldmodels.models.ACTION_MAPS`) with `auto`
    resolved: `carracing` for a gym:CarRacing task (any version), `tanh` otherwise."""
    name = config.controller.action_map
    if name != "auto":
        return name
    gym_id = config.task.split(":")[-1] if config.task.startswith("gym:") else ""
    return "carracing" if gym_id.startswith("CarRacing") else "tanh"


def preset(name: str) -> WorldModelsConfig:
    """The default :class:`WorldModelsConfig` of preset ``name``."""
    return paper_preset() if check_preset(name, PRESETS) == "paper" else small_preset()


def from_dict(data: dict[str, Any]) -> WorldModelsConfig:
    """Rebuild a :class:`WorldModelsConfig` from :func:`to_dict` output; unknown keys are an
    error naming them."""
    return build_config(WorldModelsConfig, data)


#: World Models' resumable fields (:attr:`WorldModelsConfig.RESUMABLE`), by their former name.
RESUMABLE_FIELDS = WorldModelsConfig.RESUMABLE


def load_config(path: str | Path) -> WorldModelsConfig:
    """Read a saved World Models config; errors name the file."""
    path = Path(path)
    data = read_config_file(path)
    if data.get("agent") != AGENT:
        raise ConfigError(
            f"{path} is not the config of a World Models run (agent "
            f"{data.get('agent', 'planet')!r})"
        )
    return from_dict(data)


__all__ = [
    "AGENT",
    "action_map_of",
    "CollectConfig",
    "ControllerConfig",
    "MDNConfig",
    "VAEConfig",
    "WMEvalConfig",
    "WorldModelsConfig",
    "diff_configs",
    "from_dict",
    "load_config",
    "preset",
    "save_config",
    "set_field",
    "to_dict",
]
