"""Typed configuration: one dataclass per part, a docstring per field (the paper's symbol in it).

Two presets:

- ``paper``: every hyperparameter of the paper (arXiv 1811.04551, section 5 and appendix A):
  S=5 seed episodes, C=100 updates per episode on B=50 chunks of L=50 steps, Adam 1e-3 (ε 1e-4),
  gradient-norm clip 1000, CEM with H=12, I=10, J=1000, K=100, exploration noise 0.3, free nats 3,
  RSSM with 200 deterministic and 30 stochastic units, action repeat R per domain.
- ``small``: a configuration that learns easy tasks on a 2-core CPU in minutes instead of days.
  Every difference from ``paper`` is listed in :func:`small_preset` with its reason.

The merged configuration is saved as ``config.json`` in the run directory; a resumed run is checked
against it (see :func:`diff_configs`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PRESETS = ("paper", "small")


class ConfigError(ValueError):
    """A configuration value is out of its accepted range."""


@dataclass
class ModelConfig:
    """World model: encoder, transition model, decoder p(o_t | h_t, s_t), reward p(r_t | h_t, s_t)."""

    transition: Literal["rssm", "ssm", "gru"] = "rssm"
    """Transition model: `rssm` (deterministic h_t + stochastic s_t, the paper's model), `ssm`
    (purely stochastic ablation) or `gru` (purely deterministic ablation)."""
    deter_size: int = 200
    """Size of the deterministic state h_t (GRU units)."""
    stoch_size: int = 30
    """Size of the stochastic state s_t (diagonal Gaussian)."""
    hidden_size: int = 200
    """Hidden units of the transition model's MLPs."""
    cnn_depth: int = 32
    """Channel multiplier of encoder and decoder: channels depth*(1, 2, 4, 8) = 32-64-128-256."""
    min_std: float = 0.1
    """Lower bound of the std of p(s_t | h_t) and q(s_t | h_t, o_t): std = softplus(x) + min_std."""
    reward_hidden: int = 200
    """Hidden units of the reward MLP."""
    reward_layers: int = 2
    """Hidden layers of the reward MLP."""


@dataclass
class LossConfig:
    """The objective (paper Eq. 3 and section 4): ELBO with free nats, optional overshooting."""

    free_nats: float = 3.0
    """Free nats: the KL term per step is max(KL, free_nats)."""
    reward_scale: float = 10.0
    """Weight of the reward log-likelihood. 10 as in the official implementation, which produced
    the paper's results (the paper's Eq. 3 has weight 1; the reward head is small next to the
    12,288-dimensional image term and learns slowly without it)."""
    image_scale: float = 1.0
    """Weight of the image log-likelihood."""
    decode_fraction: float = 1.0
    """Fraction of the B·L frames decoded for the image term, drawn uniformly without replacement
    each update (the mean over them is an unbiased estimate of the full mean); 1 = all (paper)."""
    kl_scale: float = 1.0
    """Weight β_1 of the one-step KL(q(s_t | .) || p(s_t | h_t))."""
    overshooting_distance: int = 1
    """D, the latent overshooting distance; 1 is the standard ELBO."""
    overshooting_kl_scale: float = 0.0
    """β: the d-step KL terms (1 < d <= D) are weighted β/D."""
    overshooting_reward_scale: float = 0.0
    """Weight of reward overshooting (reward log-likelihood under the d-step prior), 0 = off."""
    global_kl_scale: float = 0.0
    """Weight of the global prior KL(q(s_t | .) || N(0, I)) (paper appendix), 0 = off."""


@dataclass
class PlannerConfig:
    """Model-predictive control in latent space (paper section 2)."""

    name: Literal["cem", "icem", "random"] = "cem"
    """`cem` (cross-entropy method, the paper's), `icem` (CEM with the defaults of iCEM, Pinneri
    et al. 2020, arXiv 2008.06389) or `random` (random shooting baseline)."""
    horizon: int = 12
    """H, planning horizon in (action-repeated) steps."""
    iterations: int = 10
    """I, CEM optimisation iterations per step."""
    candidates: int = 1000
    """J, candidate action sequences per iteration."""
    top_k: int = 100
    """K, elite sequences the belief is refitted to."""
    # iCEM's options (cem and icem only). None = the planner's own default: for `cem` the paper's
    # plain CEM (named in each docstring), for `icem` iCEM's (planetrl.planning.ICEM_DEFAULTS).
    warm_start: bool | None = None
    """Start each plan from the previous step's plan shifted by one step (and its kept elites);
    forgotten at the start of every episode. None = the planner's default (cem: off)."""
    noise_beta: float | None = None
    """β >= 0: candidate noise with power spectral density 1/f^β along the H axis. None = the
    planner's default (cem: 0, white noise)."""
    keep_elites: float | None = None
    """ξ in [0, 1): fraction of the K elites kept for the next iteration (and, with the warm
    start, shifted into the next step). None = the planner's default (cem: 0)."""
    population_decay: float | None = None
    """γ >= 1: J_i = max(round(J γ^-i), min(2K, J)) candidates at iteration i. None = the
    planner's default (cem: 1, J at every iteration)."""
    momentum: float | None = None
    """α in [0, 1): μ, σ <- (1 - α) (elite mean, std) + α (μ, σ). None = the planner's default
    (cem: 0)."""
    init_std: float | None = None
    """σ_0 > 0, the initial std of the action belief. None = the planner's default (cem: 1)."""
    execute_best: bool | None = None
    """Execute the first action of the best sequence found instead of the mean μ_t. None = the
    planner's default (cem: off)."""
    mean_candidate: bool | None = None
    """Add the mean μ as a candidate in the last iteration. None = the planner's default (cem:
    off)."""


@dataclass
class TrainConfig:
    """Data collection and optimisation (paper Algorithm 1)."""

    seed_episodes: int = 5
    """S, episodes with uniformly random actions before training."""
    collect_interval: int = 100
    """C, model updates before each collected episode."""
    batch_size: int = 50
    """B, chunks per update."""
    chunk_length: int = 50
    """L, steps per chunk."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-4
    """Adam ε."""
    grad_clip: float = 1000.0
    """Gradient-norm clip."""
    exploration_noise: float = 0.3
    """Std of the Gaussian noise added to planned actions when collecting (ε ~ N(0, 0.3²))."""
    collect_envs: int = 1
    """Episodes collected in parallel after each C updates (paper: 1). With E > 1 the E
    environments step in worker processes and the planner serves them in one batch."""
    max_episodes: int = 1000
    """Stop after this many training episodes (seed episodes included)."""
    max_env_steps: int = 0
    """Stop after this many environment steps (after action repeat); 0 = no limit."""
    max_minutes: float = 0.0
    """Stop after this much wall-clock time in this process (minutes); 0 = no limit."""
    replay_capacity: int = 1_000_000
    """Replay capacity in stored (agent) steps; older episodes leave memory, their files stay."""
    bits: int = 5
    """Bit depth images are quantised to (paper: 5)."""


@dataclass
class EvalConfig:
    """Evaluation episodes (no exploration noise) and what is logged."""

    every: int = 10
    """Evaluate every N training episodes (0 = never)."""
    episodes: int = 5
    """M, evaluation episodes, run in parallel environments with batched planning."""
    video: bool = True
    """Write videos (mp4 and TensorBoard) of evaluation episodes and open-loop predictions."""
    parallel: bool = True
    """Step the M evaluation environments in worker processes."""


Toggle = Literal["auto", "on", "off"]


@dataclass
class SpeedConfig:
    """Fast paths: each `auto` (decided for the machine at start, see `planetrl.speed.auto`; the
    decision and its reason are printed and saved in `speed.json` of the run), `on` or `off`. All
    off is the readable eager path. Measured in docs/benchmarks.md."""

    compile: Toggle = "auto"
    """torch.compile the planner's H-step rollout (1.3-2x on a CPU plan; 25-45 s of compiling per
    number of environments at start). auto: on when a compiler exists and the run plans long
    enough for the saving to exceed the compile time (a timing probe at start)."""
    bf16: Toggle = "auto"
    """bfloat16 for the encoder/decoder (autocast) and the planner's rollouts; the RSSM unroll,
    KL and likelihoods of the update stay float32. ~2x where bf16 is native. auto: on for CPUs
    with AMX-BF16 or AVX512-BF16 and for CUDA devices with bf16; off elsewhere (emulated bf16 is
    5-10x slower)."""
    channels_last: Toggle = "auto"
    """channels_last memory format for the encoder and decoder convolutions (same function).
    auto: on."""
    cuda_graphs: Toggle = "auto"
    """On CUDA, capture the whole CEM plan in one CUDA graph per number of environments. auto: off
    until measured on a GPU (benchmarks/gpu_check.sh); never used on CPU."""

    def __post_init__(self) -> None:
        # Python callers and configs saved before `auto` existed use bools: True -> on.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                setattr(self, f.name, "on" if value else "off")


@dataclass
class Config:
    """A PlaNet training run."""

    task: str = "dmc:cartpole-swingup"
    """Task: `dmc:<domain>-<task>` (DeepMind Control Suite) or `gym:<id>` (Gymnasium)."""
    logdir: str = "runs/default"
    """Run directory: config, checkpoint, episodes (the replay), metrics, TensorBoard, videos."""
    preset: Literal["paper", "small"] = "paper"
    """Preset the defaults come from (`paper` or `small`)."""
    seed: int = 0
    """Seed of every random number generator of the run."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`."""
    action_repeat: int = 0
    """R, env steps per action; 0 = the paper's value for the domain."""
    render: Literal["paper", "fast"] = "paper"
    """DMC rendering: `paper` (MuJoCo defaults) or `fast` (no shadows or anti-aliasing)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def validate(self) -> "Config":
        """Raise :class:`ConfigError` naming the first value out of range."""
        positive = {
            "model.deter_size": self.model.deter_size,
            "model.hidden_size": self.model.hidden_size,
            "model.cnn_depth": self.model.cnn_depth,
            "model.reward_hidden": self.model.reward_hidden,
            "model.reward_layers": self.model.reward_layers,
            "loss.overshooting_distance": self.loss.overshooting_distance,
            "planner.horizon": self.planner.horizon,
            "planner.iterations": self.planner.iterations,
            "planner.candidates": self.planner.candidates,
            "planner.top_k": self.planner.top_k,
            "train.collect_interval": self.train.collect_interval,
            "train.batch_size": self.train.batch_size,
            "train.collect_envs": self.train.collect_envs,
            "train.chunk_length": self.train.chunk_length,
            "train.max_episodes": self.train.max_episodes,
            "train.replay_capacity": self.train.replay_capacity,
            "eval.episodes": self.eval.episodes,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        non_negative = {
            "model.stoch_size": self.model.stoch_size,
            "train.seed_episodes": self.train.seed_episodes,
            "train.max_env_steps": self.train.max_env_steps,
            "eval.every": self.eval.every,
            "action_repeat": self.action_repeat,
            "threads": self.threads,
        }
        for name, value in non_negative.items():
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        floats = {
            "model.min_std": (self.model.min_std, 0.0, False),
            "loss.free_nats": (self.loss.free_nats, 0.0, True),
            "loss.kl_scale": (self.loss.kl_scale, 0.0, True),
            "loss.reward_scale": (self.loss.reward_scale, 0.0, True),
            "loss.image_scale": (self.loss.image_scale, 0.0, True),
            "loss.overshooting_kl_scale": (self.loss.overshooting_kl_scale, 0.0, True),
            "loss.overshooting_reward_scale": (self.loss.overshooting_reward_scale, 0.0, True),
            "loss.global_kl_scale": (self.loss.global_kl_scale, 0.0, True),
            "train.learning_rate": (self.train.learning_rate, 0.0, False),
            "train.adam_eps": (self.train.adam_eps, 0.0, False),
            "train.grad_clip": (self.train.grad_clip, 0.0, False),
            "train.exploration_noise": (self.train.exploration_noise, 0.0, True),
            "train.max_minutes": (self.train.max_minutes, 0.0, True),
        }
        for name, (value, low, inclusive) in floats.items():
            ok = value >= low if inclusive else value > low
            if not ok or value != value or value == float("inf"):
                bound = ">=" if inclusive else ">"
                raise ConfigError(f"{name} must be a finite number {bound} {low}, got {value!r}")
        if not 0.0 < self.loss.decode_fraction <= 1.0:
            raise ConfigError(
                f"loss.decode_fraction must be in (0, 1], got {self.loss.decode_fraction!r}"
            )
        if self.planner.top_k > self.planner.candidates:
            raise ConfigError(
                f"planner.top_k (K={self.planner.top_k}) must be <= planner.candidates "
                f"(J={self.planner.candidates})"
            )
        self._validate_planner_options()
        if self.model.transition == "gru" and self.model.stoch_size != 0:
            pass  # the GRU model ignores stoch_size; nothing to check
        if self.model.transition != "gru" and self.model.stoch_size < 1:
            raise ConfigError(
                f"model.stoch_size must be >= 1 for the {self.model.transition!r} transition model"
            )
        if not 1 <= self.train.bits <= 8:
            raise ConfigError(f"train.bits must be in 1..8, got {self.train.bits!r}")
        self.speed.__post_init__()  # bools set after construction: True -> on, False -> off
        for f in dataclasses.fields(self.speed):
            value = getattr(self.speed, f.name)
            if value not in ("auto", "on", "off"):
                raise ConfigError(f"speed.{f.name} must be auto, on or off, got {value!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        return self

    def _validate_planner_options(self) -> None:
        """iCEM's planner options: set only for `cem`/`icem`, each in its range (the ranges are
        the planner's own checks, :func:`planetrl.planning.base.check_cem_options`)."""
        from planetrl.planning.base import check_cem_options
        from planetrl.planning.cem import CEM_OPTIONS

        names = ("warm_start", *CEM_OPTIONS)
        set_options = {n: getattr(self.planner, n) for n in names}
        set_options = {n: v for n, v in set_options.items() if v is not None}
        if set_options and self.planner.name not in ("cem", "icem"):
            raise ConfigError(
                f"planner.{next(iter(set_options))} applies to the cem and icem planners only, "
                f"not to planner.name={self.planner.name!r}; leave it unset (None)"
            )
        if "warm_start" in set_options and not isinstance(set_options["warm_start"], bool):
            raise ConfigError(
                f"planner.warm_start must be True, False or None, got {set_options['warm_start']!r}"
            )
        try:
            check_cem_options(set_options, prefix="planner.")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def paper_preset() -> Config:
    """Every hyperparameter as in the paper."""
    return Config(preset="paper")


def small_preset() -> Config:
    """A configuration that learns cartpole on a 2-core CPU.

    Differences from ``paper`` and why:

    - ``render=fast``: DMC rendering without shadows and anti-aliasing, ~10x faster under Mesa.
    - ``model.cnn_depth=16`` (encoder 16-32-64-128, embedding 512): the decoder dominates the update
      on a CPU; half the channels is ~3x cheaper and still reconstructs DMC frames well.
    - ``train.batch_size=16``: a third of the paper's chunks per update; the update is the main
      cost on a CPU. ``train.collect_interval`` stays the paper's C=100 (affordable with the
      quarter decode below); C=50 gave the same balance returns per episode at ~25% less
      wall-clock per episode (docs/results.md, runs 1 and 2), so it is the knob to turn first
      when the wall-clock matters more than matching the paper's update schedule.
    - ``loss.decode_fraction=0.25``: the decoder (transposed convolutions, ~2/3 of an update on a
      CPU) reconstructs a random quarter of the B·L frames; the image term stays an unbiased
      estimate of the paper's and the update is ~2x faster (579 -> 276 ms at B=16, L=50).
    - ``loss.overshooting_distance=12, overshooting_kl_scale=1, overshooting_reward_scale=10``:
      latent overshooting (paper section 4) over the planning horizon H=12, plus the reward
      log-likelihood under the d-step priors (the official code's ``overshooting_reward_scale``,
      weighted like the one-step reward term). The planner only ever sees open-loop priors; with
      the one-step bound alone the KL sat under the free nats (the prior got little gradient) and
      the planner exploited reward-model errors (swingup at 20 episodes: 25, random 195). With it
      the open-loop reward error on replay chunks halved and the swingup curve stayed at or above
      random (docs/results.md). Costs ~25% more per update (351 -> 445 ms).
    - ``planner.candidates=150, top_k=15, iterations=3``: the plan costs J·H·I latent steps per
      action; K/J stays 10% as in the paper. A quarter of the rollouts of the earlier J=300, I=6
      at equal return on trained models (same model, same 10 seeds: swingup 399 ± 38 vs 378 ± 41,
      balance 377 ± 36 vs 381 ± 40) in a third of the time (17 vs 52 ms per plan, Zen 5 bf16);
      warm starts and iCEM's defaults did not beat plain CEM there (docs/benchmarks.md).
    - ``eval.every=5, eval.episodes=5``: a denser learning curve for short runs.
    - ``speed``: ``auto`` as in ``paper`` (bf16 where the CPU has it natively, compile when the
      run is long enough to pay for it; see :mod:`planetrl.speed.auto`).
    - ``max_episodes=100``.
    """
    cfg = Config(preset="small", render="fast")
    cfg.model.cnn_depth = 16
    cfg.train.batch_size = 16
    cfg.loss.decode_fraction = 0.25
    cfg.loss.overshooting_distance = 12
    cfg.loss.overshooting_kl_scale = 1.0
    cfg.loss.overshooting_reward_scale = 10.0
    cfg.train.max_episodes = 100
    cfg.planner.candidates = 150
    cfg.planner.top_k = 15
    cfg.planner.iterations = 3
    cfg.eval.every = 5
    return cfg


def preset(name: str) -> Config:
    """The default :class:`Config` of preset ``name``."""
    if name == "paper":
        return paper_preset()
    if name == "small":
        return small_preset()
    raise ConfigError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`to_dict` output; unknown keys are an error."""

    def build(cls, values: dict[str, Any]):
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise ConfigError(f"unknown config keys for {cls.__name__}: {sorted(unknown)}")
        kwargs = {}
        for name, value in values.items():
            sub = _SECTIONS.get(name) if cls is Config else None
            kwargs[name] = build(sub, value) if sub is not None else value
        return cls(**kwargs)

    return build(Config, data)


_SECTIONS = {
    "model": ModelConfig,
    "loss": LossConfig,
    "planner": PlannerConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "speed": SpeedConfig,
}

# Fields that may differ between the saved config and a resumed run: budgets, logging, hardware.
RESUMABLE_FIELDS = frozenset(
    {
        "logdir",
        "device",
        "threads",
        "train.max_episodes",
        "train.max_env_steps",
        "train.max_minutes",
        "train.replay_capacity",
        "eval.every",
        "eval.episodes",
        "eval.video",
        "eval.parallel",
        "speed.compile",
        "speed.bf16",
        "speed.channels_last",
        "speed.cuda_graphs",
    }
)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def diff_configs(saved: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted names) whose values differ, excluding :data:`RESUMABLE_FIELDS`."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    return {
        k: (a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if k not in RESUMABLE_FIELDS and a.get(k) != b.get(k)
    }


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as JSON, atomically."""
    from planetrl.training.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")


def load_config(path: str | Path) -> Config:
    """Read a saved config; a missing or corrupt file is a :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config found at {path} (is this a planetrl run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is corrupt: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} is corrupt: expected a JSON object")
    return from_dict(data)


def set_field(config: Config, name: str, value: Any) -> None:
    """Set the dotted field ``name`` (``"planner.candidates"``, ``"seed"``) of ``config`` to
    ``value``; an unknown name is a :class:`ConfigError` naming the accepted ones."""
    section_name, _, field_name = name.rpartition(".")
    target: Any = config
    if section_name:
        if section_name not in _SECTIONS:
            raise ConfigError(f"unknown config section {section_name!r} in {name!r}; accepted: "
                              f"{', '.join(_SECTIONS)}")
        target = getattr(config, section_name)
    names = [f.name for f in dataclasses.fields(target)]
    if field_name not in names:
        where = f"section {section_name!r}" if section_name else "the top level"
        raise ConfigError(f"unknown config field {name!r}; accepted in {where}: {', '.join(names)}")
    setattr(target, field_name, value)
