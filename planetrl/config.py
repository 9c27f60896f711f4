"""Typed configuration: one dataclass per part, a docstring per field (the paper's symbol in it).

Three presets:

- ``paper``: every hyperparameter of the paper (arXiv 1811.04551, section 5 and appendix A):
  S=5 seed episodes, C=100 updates per episode on B=50 chunks of L=50 steps, Adam 1e-3 (ε 1e-4),
  gradient-norm clip 1000, CEM with H=12, I=10, J=1000, K=100, exploration noise 0.3, free nats 3,
  RSSM with 200 deterministic and 30 stochastic units, action repeat R per domain.
- ``small``: a configuration that learns easy tasks on a 2-core CPU in minutes instead of days.
  Every difference from ``paper`` is listed in :func:`small_preset` with its reason.
- ``quick``: the README's quick start: a model small enough to learn cartpole balance within
  15 minutes on a 2-core CPU (:func:`quick_preset`).

The merged configuration is saved as ``config.json`` in the run directory; a resumed run is checked
against it (see :func:`diff_configs`).

Each section is validated next to its fields: a table of :class:`Rule` per section (``RULES``)
plus the section's own cross-field checks (``_check``); :meth:`Config.validate` runs them all.
A run's whole configuration is a :class:`RunConfig` (its sections and resumable fields named on
the class), so World Models' (:mod:`planetrl.worldmodels.config`) is validated, rebuilt, compared,
edited and saved by the same functions as PlaNet's :class:`Config`.
The sections go to their constructors whole (``WorldModel(A, **asdict(config.model))``,
``compute_loss(..., **asdict(config.loss))``), so a field's name is its argument's name.

It imports only :mod:`planetrl.atomic` and :mod:`planetrl.rules` of planetrl.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from planetrl.atomic import atomic_write_json
from planetrl.rules import (
    BOOL,
    CEM_OPTION_RULES,
    DEVICE,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    PLANNER_NAMES,
    POSITIVE,
    POSITIVE_INT,
    Rule,
    is_int,
    is_json_object,
    is_real,
    one_of,
)

#: PlaNet's presets (World Models has its own, :data:`planetrl.worldmodels.config.PRESETS`).
PRESETS = ("paper", "small", "quick")

#: The parts of PlaNet's world model that ``init_keep`` and ``init_freeze`` name: attributes of
#: :class:`planetrl.models.WorldModel` ("reward" is every reward head: the task's and its
#: siblings'; "continuation" exists with ``model.continuation`` only).
WORLD_MODEL_PARTS = ("encoder", "transition", "decoder", "reward", "continuation")


def parse_parts(value: str) -> tuple[str, ...]:
    """The parts of a comma-separated ``init_keep``/``init_freeze`` value (empty: none; ``all``
    is resolved by :meth:`Config.init_parts`); an unknown name is a :class:`ConfigError` naming
    the accepted ones."""
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    if "all" in parts:
        raise ConfigError(f"'all' stands alone (every part), got {value!r}")
    unknown = [p for p in parts if p not in WORLD_MODEL_PARTS]
    if unknown:
        raise ConfigError(
            f"unknown world-model part(s) {', '.join(map(repr, unknown))}; accepted: 'all', or a "
            f"comma-separated list of {', '.join(WORLD_MODEL_PARTS)}"
        )
    return parts


class ConfigError(ValueError):
    """A configuration value is out of its accepted range."""


class Section:
    """A config section: ``RULES`` (field -> :class:`Rule`) and cross-field checks."""

    RULES: ClassVar[dict[str, Rule]] = {}

    def validate(self, prefix: str = "") -> None:
        """Raise :class:`ConfigError` naming the first field (``prefix`` + name) out of range."""
        for name, rule in self.RULES.items():
            value = getattr(self, name)
            if not rule.ok(value):
                named = f"{prefix}{name}" + (f" ({rule.symbol})" if rule.symbol else "")
                raise ConfigError(f"{named} must be {rule.accepted}, got {value!r}")
        self._check(prefix)

    def _check(self, prefix: str) -> None:
        """Checks that involve several fields (none by default)."""


@dataclass
class RunConfig(Section):
    """The whole configuration of one agent's run, saved as ``config.json``: the run and env
    settings every agent has (declared once, here), the agent's sections (``SECTIONS``: field
    name -> its :class:`Section` class) and ``RESUMABLE`` (the dotted fields a resumed run may
    change: budgets, logging, hardware). :class:`Config` is PlaNet's; :func:`build_config`,
    :func:`diff_configs`, :func:`set_field`, :func:`save_config` and :func:`read_config_file`
    serve every agent's. An agent narrows ``preset`` to its own presets (a ``Literal``, so that
    ``--help`` lists them) and may change a default."""

    task: str = "dmc:cartpole-swingup"
    """Task: `dmc:<domain>-<task>` (DeepMind Control Suite), `gym:<id>` or `gym:<module>:<id>`
    (Gymnasium; <module> is imported first, and registers <id>), or `fn:<label>` for an env
    factory given from Python (`Trainer(config, env_fn=...)`, PlaNet)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the environment, a JSON object on the command line (e.g.
    `'{"frame_skip": 4}'`): `gymnasium.make(id, **env_kwargs)` for `gym:` tasks, the DMC task
    function's (e.g. `{"time_limit": 5}`) for `dmc:` tasks."""
    logdir: str = "runs/default"
    """Run directory: config, checkpoint, episodes (the replay), metrics, TensorBoard, videos."""
    preset: str = "paper"
    """Preset the defaults come from."""
    seed: int = 0
    """Seed of every random number generator of the run."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`."""
    action_repeat: int = 0
    """R, env steps per action; 0 = the PlaNet paper's value for the domain."""
    render: Literal["paper", "fast"] = "paper"
    """DMC rendering: `paper` (MuJoCo defaults) or `fast` (no shadows or anti-aliasing)."""
    threads: int = 0
    """torch CPU threads; 0 = auto: the free cores, re-read before every phase of the run
    (:mod:`planetrl.threads`)."""
    sibling_rewards: bool = False
    """Also record, in every episode, the rewards of the task's siblings (`dmc:` tasks of one
    domain that share its physics and differ in their reward only, e.g. walker stand/walk/run:
    `planetrl.envs.dmc.SIBLING_TASKS`) as `reward/<task>`, relabelled from the same physics
    state. Off in every preset (the paper's episodes); a task without siblings is an error."""

    RULES: ClassVar[dict[str, Rule]] = {
        "seed": NON_NEGATIVE_INT,
        "sibling_rewards": BOOL,
        "action_repeat": NON_NEGATIVE_INT,
        "threads": NON_NEGATIVE_INT,
        "env_kwargs": Rule(
            "a JSON object: a dict with string keys and JSON values", lambda v: is_json_object(v)
        ),
        "render": one_of("paper", "fast"),
        "device": DEVICE,
    }
    SECTIONS: ClassVar[dict[str, type[Section]]] = {}
    RESUMABLE: ClassVar[frozenset[str]] = frozenset()

    def validate(self) -> "RunConfig":  # type: ignore[override]
        """Raise :class:`ConfigError` naming the first value out of range: every section's rules
        and checks (fields named with the section's prefix, e.g. ``model.``), then the top-level
        fields'."""
        for name in self.SECTIONS:
            getattr(self, name).validate(prefix=f"{name}.")
        Section.validate(self)
        return self


@dataclass
class ModelConfig(Section):
    """World model: encoder, transition model, decoder p(o_t | h_t, s_t), reward p(r_t | h_t, s_t),
    the optional continuation head p(c_t | h_t, s_t), and the preprocessing of its input frames."""

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
    bits: int = 5
    """Bit depth the model's input frames are quantised to (paper: 5), for training and acting
    alike (`WorldModel.preprocess`). Configs saved before it moved here have it as `train.bits`;
    :func:`from_dict` moves it."""
    continuation: bool = False
    """Add a continuation head p(c_t = 1 | h_t, s_t), c_t = 0 on a true terminal step (an MLP of
    the reward model's sizes; Dreamer/DreamerV2's discount predictor, not in PlaNet), trained with
    weight `loss.continuation_scale`; the planner then weights each imagined reward by the
    predicted probability that the episode has not ended before it. Off: PlaNet, which predicts
    no termination (docs/design.md, "Termination and the planner")."""

    RULES: ClassVar[dict[str, Rule]] = {
        "transition": one_of("rssm", "ssm", "gru"),
        "deter_size": POSITIVE_INT,
        "stoch_size": NON_NEGATIVE_INT,
        "hidden_size": POSITIVE_INT,
        "cnn_depth": POSITIVE_INT,
        "min_std": POSITIVE,
        "reward_hidden": POSITIVE_INT,
        "reward_layers": POSITIVE_INT,
        "bits": Rule("an integer in 1..8", lambda v: is_int(v) and 1 <= v <= 8),
        "continuation": BOOL,
    }

    def _check(self, prefix: str) -> None:
        # The GRU model has no s_t and ignores stoch_size.
        if self.transition != "gru" and self.stoch_size < 1:
            raise ConfigError(
                f"{prefix}stoch_size must be >= 1 for the {self.transition!r} transition model"
            )


@dataclass
class LossConfig(Section):
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
    continuation_scale: float = 10.0
    """Weight of the continuation head's Bernoulli log-likelihood ln p(c_t | h_t, s_t) on the
    posterior features (used only with `model.continuation`; PlaNet has no such term). The head
    is DreamerV2's discount predictor (Hafner et al. 2021, its `loss_scales.discount`: 1, 5 on
    Atari); 10 here, as `reward_scale`: a scalar head next to the 12,288-dimensional image term,
    and terminal steps are rare (one per terminated episode)."""
    kl_balance: float | None = None
    """α in [0, 1]: KL balancing (DreamerV2, Hafner et al. 2021, its `kl.balance` 0.8): the
    one-step KL term becomes α max(KL(sg(q) || p), free nats) + (1 − α) max(KL(q || sg(p)),
    free nats), so the prior p(s_t | h_t) moves toward the posterior faster (α) than the
    posterior is pulled toward the prior (1 − α). Free nats per step on each part. Not PlaNet:
    None (every preset) is the paper's max(KL(q || p), free nats), whose gradient is twice that
    of α = 0.5."""

    RULES: ClassVar[dict[str, Rule]] = {
        "kl_balance": Rule(
            "None or a number in [0, 1]", lambda v: is_real(v) and 0 <= v <= 1
        ).or_none(),
        "free_nats": NON_NEGATIVE,
        "reward_scale": NON_NEGATIVE,
        "image_scale": NON_NEGATIVE,
        "decode_fraction": Rule("in (0, 1]", lambda v: is_real(v) and 0 < v <= 1),
        "kl_scale": NON_NEGATIVE,
        "overshooting_distance": POSITIVE_INT,
        "overshooting_kl_scale": NON_NEGATIVE,
        "overshooting_reward_scale": NON_NEGATIVE,
        "global_kl_scale": NON_NEGATIVE,
        "continuation_scale": NON_NEGATIVE,
    }


@dataclass
class PlannerConfig(Section):
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

    #: iCEM's options (the fields after ``top_k``); set only for `cem` and `icem`.
    OPTIONS: ClassVar[tuple[str, ...]] = (
        "warm_start",
        "noise_beta",
        "keep_elites",
        "population_decay",
        "momentum",
        "init_std",
        "execute_best",
        "mean_candidate",
    )
    RULES: ClassVar[dict[str, Rule]] = {
        "name": one_of(*PLANNER_NAMES),
        "horizon": POSITIVE_INT,
        "iterations": POSITIVE_INT,
        "candidates": POSITIVE_INT,
        "top_k": POSITIVE_INT,
        "warm_start": Rule("True, False or None", lambda v: v is None or isinstance(v, bool)),
        **{name: rule.or_none() for name, rule in CEM_OPTION_RULES.items()},
    }

    def _check(self, prefix: str) -> None:
        if self.top_k > self.candidates:
            raise ConfigError(
                f"{prefix}top_k (K={self.top_k}) must be <= {prefix}candidates "
                f"(J={self.candidates})"
            )
        set_options = [n for n in self.OPTIONS if getattr(self, n) is not None]
        if set_options and self.name not in ("cem", "icem"):
            raise ConfigError(
                f"{prefix}{set_options[0]} applies to the cem and icem planners only, not to "
                f"{prefix}name={self.name!r}; leave it unset (None)"
            )


@dataclass
class TrainConfig(Section):
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
    augment_shift: int = 0
    """Random-shift augmentation of the training chunks (RAD, DrQ: pad and random crop): each
    chunk's frames shifted by up to this many pixels in x and y, one offset per chunk, border
    pixels repeated (`planetrl.augment.random_shift`). 0 = off, PlaNet (every preset); DrQ
    uses 4 (on 84-pixel frames)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "augment_shift": NON_NEGATIVE_INT,
        "seed_episodes": NON_NEGATIVE_INT,
        "collect_interval": POSITIVE_INT,
        "batch_size": POSITIVE_INT,
        "chunk_length": POSITIVE_INT,
        "learning_rate": POSITIVE,
        "adam_eps": POSITIVE,
        "grad_clip": POSITIVE,
        "exploration_noise": NON_NEGATIVE,
        "collect_envs": POSITIVE_INT,
        "max_episodes": POSITIVE_INT,
        "max_env_steps": NON_NEGATIVE_INT,
        "max_minutes": NON_NEGATIVE,
        "replay_capacity": POSITIVE_INT,
    }


@dataclass
class EvalConfig(Section):
    """Evaluation episodes (no exploration noise) and what is logged."""

    every: int = 10
    """Evaluate every N training episodes (0 = never)."""
    episodes: int = 5
    """M, evaluation episodes, run in parallel environments with batched planning."""
    video: bool = True
    """Write videos (mp4 and TensorBoard) of evaluation episodes and open-loop predictions."""
    parallel: bool = True
    """Step the M evaluation environments in worker processes."""

    RULES: ClassVar[dict[str, Rule]] = {
        "every": NON_NEGATIVE_INT,
        "episodes": POSITIVE_INT,
    }


Toggle = Literal["auto", "on", "off"]


@dataclass
class SpeedConfig(Section):
    """Fast paths: each `auto` (decided for the machine at start, see `planetrl.run.fast_paths`; the
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
    """On CUDA, capture the whole CEM plan in one CUDA graph per number of environments. auto: on
    for a CUDA device (3.3x the eager plan on an H200, docs/benchmarks.md), off on CPU."""
    update_graph: Toggle = "auto"
    """On CUDA, capture the whole update (forward, the losses, backward, gradient clipping, Adam)
    as CUDA graphs on static buffers, and sample the next batch in a background thread into
    pinned memory (`planetrl.training.update`). Falls back to the eager update, said in
    `speed.json`, where it cannot capture. auto: off until it has been measured on a GPU; `on`
    forces it. Nothing to capture on a CPU."""

    RULES: ClassVar[dict[str, Rule]] = {
        name: Rule("auto, on or off", lambda v: v in ("auto", "on", "off"))
        for name in ("compile", "bf16", "channels_last", "cuda_graphs", "update_graph")
    }

    def __post_init__(self) -> None:
        # Python callers and configs saved before `auto` existed use bools: True -> on.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                setattr(self, f.name, "on" if value else "off")

    def validate(self, prefix: str = "") -> None:
        self.__post_init__()  # bools set after construction: True -> on, False -> off
        super().validate(prefix)


@dataclass
class Config(RunConfig):
    """A PlaNet training run (the run and env fields: :class:`RunConfig`)."""

    preset: Literal["paper", "small", "quick"] = "paper"
    """Preset the defaults come from (`paper`, `small` or `quick`)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    init_from: str = ""
    """Start the world model from this PlaNet run directory's checkpoint (transfer: e.g. train
    `dmc:walker-run` from a `dmc:walker-walk` run), then run Algorithm 1 as usual in this run's
    own directory, with its own replay. The model's sizes (`model.*`) and the action size must
    be the source's. Read when the run starts only; a resumed run continues from its own
    checkpoint. Adam starts fresh. Empty: a fresh model (PlaNet)."""
    init_keep: str = "all"
    """With `init_from`: the parts taken from the source, comma-separated (encoder, transition,
    decoder, reward, continuation) or `all`: every part the source has for this run. `reward`
    is each reward head whose task the source has a head for (its own task's, or a sibling
    head learned with `sibling_rewards`); the others start fresh, as do the parts not kept."""
    init_freeze: str = ""
    """With `init_from`: kept parts that are not trained (comma-separated; left out of the
    optimiser), e.g. `encoder,transition,decoder` to fit only the reward head on the new task."""

    RULES: ClassVar[dict[str, Rule]] = {
        **RunConfig.RULES,
        "preset": one_of(*PRESETS),
        "init_from": Rule("a run directory (a string; empty: none)", lambda v: isinstance(v, str)),
        "init_keep": Rule("'all' or comma-separated parts", lambda v: isinstance(v, str)),
        "init_freeze": Rule("comma-separated parts (empty: none)", lambda v: isinstance(v, str)),
    }
    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "model": ModelConfig,
        "loss": LossConfig,
        "planner": PlannerConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "speed": SpeedConfig,
    }
    #: Fields that may differ between the saved config and a resumed run: budgets, logging,
    #: hardware.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {
            "logdir",
            "init_from",  # read when the run starts only (init.json records the source)
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
            "speed.update_graph",
        }
    )

    def model_parts(self) -> tuple[str, ...]:
        """The parts of :data:`WORLD_MODEL_PARTS` this config's world model has."""
        return tuple(p for p in WORLD_MODEL_PARTS if p != "continuation" or self.model.continuation)

    def init_parts(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(kept, frozen) parts of ``init_keep`` and ``init_freeze`` (``all``: every part of
        :meth:`model_parts`); a name that is no part, or a part this model lacks, is a
        :class:`ConfigError`."""
        has = self.model_parts()

        def resolve(name: str) -> tuple[str, ...]:
            value = getattr(self, name)
            if value.strip() == "all":
                return has
            parts = parse_parts(value)
            missing = [p for p in parts if p not in has]
            if missing:
                raise ConfigError(
                    f"{name} names {', '.join(missing)}, which this world model does not have "
                    f"(model.continuation is off); its parts: {', '.join(has)}"
                )
            return parts

        return resolve("init_keep"), resolve("init_freeze")

    def _check(self, prefix: str) -> None:
        if not self.init_from:
            if self.init_freeze.strip() or self.init_keep.strip() != "all":
                raise ConfigError(
                    "init_keep and init_freeze need init_from (a source run to take the parts from)"
                )
            return
        keep, freeze = self.init_parts()
        if not keep:
            raise ConfigError("init_keep names no part; keep at least one, or drop init_from")
        not_kept = [p for p in freeze if p not in keep]
        if not_kept:
            raise ConfigError(
                f"init_freeze names part(s) not in init_keep: {', '.join(not_kept)}; only a "
                "part taken from the source run can be frozen"
            )
        if all(p in freeze for p in self.model_parts()):
            raise ConfigError(
                "init_freeze freezes every part of the world model; leave at least one trained"
            )


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
      run is long enough to pay for it; see :mod:`planetrl.run.fast_paths`).
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


def quick_preset() -> Config:
    """The README's quick start: learns ``dmc:cartpole-balance`` within 15 minutes on a 2-core
    CPU, AVX2 included (docs/results.md, "The quick start").

    ``small`` with a model a quarter of its size and the paper's update schedule kept; the
    ``small`` model at the paper's C=100 does not fit 15 minutes of an AVX2 CPU, and cutting C to
    fit left the returns at the random policy's level (docs/results.md). Differences from
    ``small`` and why:

    - ``model``: ``cnn_depth=8`` (encoder 8-16-32-64, embedding 256), h_t of 64 units, s_t of 16,
      hidden and reward layers of 64: an update is several times cheaper, so C=100 updates per
      episode fit; on cartpole's plain frames the small model still reconstructs the pole and cart.
    - ``train.chunk_length=25``: L=25 steps are 200 env steps at R=8, enough to see the pole
      fall; half the sequential RSSM steps of L=50 per update.
    - ``train.seed_episodes=3``, ``max_episodes=30``.
    - ``loss``: the paper's one-step bound (overshooting off); latent overshooting costs ~25% per
      update and did not help this early on balance.
    - ``loss.decode_fraction=0.5``: the decoder reconstructs a random half of the B·L frames (the
      image term stays an unbiased estimate of the paper's). On the slowest CPU seen, a 2-core
      AVX2-only AMD EPYC Zen 3, the decoder's last transposed convolution dominated the update
      and the quick start with every frame decoded missed its 15 minutes; with half the frames
      it takes 9.6-11.6 minutes there and ends above random on seeds 0 and 1
      (docs/results/quickstart/). The CI learning test (``tests/test_learning.py``) keeps every
      frame decoded, the configuration it was calibrated with.
    - ``planner``: H=10, I=4, J=100, K=10: ~30% of the small preset's rollouts per plan.
    """
    cfg = small_preset()
    cfg.preset = "quick"
    cfg.model.cnn_depth, cfg.model.deter_size, cfg.model.stoch_size = 8, 64, 16
    cfg.model.hidden_size, cfg.model.reward_hidden = 64, 64
    cfg.train.chunk_length, cfg.train.seed_episodes, cfg.train.max_episodes = 25, 3, 30
    cfg.loss.decode_fraction, cfg.loss.overshooting_distance = 0.5, 1
    cfg.loss.overshooting_kl_scale = cfg.loss.overshooting_reward_scale = 0.0
    cfg.planner.horizon, cfg.planner.iterations = 10, 4
    cfg.planner.candidates, cfg.planner.top_k = 100, 10
    return cfg


def check_preset(name: str, accepted: tuple[str, ...] = PRESETS) -> str:
    """``name`` if it is one of the ``accepted`` presets (default PlaNet's, :data:`PRESETS`),
    else a :class:`ConfigError` naming them."""
    if name not in accepted:
        raise ConfigError(f"unknown preset {name!r}; accepted: {', '.join(accepted)}")
    return name


def preset(name: str) -> Config:
    """The default :class:`Config` of preset ``name``."""
    build = {"paper": paper_preset, "small": small_preset, "quick": quick_preset}
    return build[check_preset(name)]()


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config's dict brought to the current layout (a copy; the input is not changed).

    - ``train.bits`` -> ``model.bits``: the bit depth became a setting of the model, which owns
      the preprocessing for training and acting. Before, the agent used ``train.bits`` while the
      replay always preprocessed training batches at 5 bits; a run saved with another value
      resumes at that value for both. Both keys with different values is an error.
    """
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    train, model = data.get("train"), data.get("model")
    if isinstance(train, dict) and "bits" in train:
        bits = train.pop("bits")
        if isinstance(model, dict):
            if model.setdefault("bits", bits) != bits:
                raise ConfigError(
                    f"config has both train.bits={bits!r} (its old place) and model.bits="
                    f"{model['bits']!r}; keep model.bits only"
                )
        else:
            data["model"] = {"bits": bits}
    return data


AnyRunConfig = TypeVar("AnyRunConfig", bound=RunConfig)


def build_config(cls: type[AnyRunConfig], data: dict[str, Any]) -> AnyRunConfig:
    """A ``cls`` (a :class:`RunConfig`) rebuilt from :func:`to_dict` output, its sections from
    their objects; a key that is no field, or a section that is no object, is an error naming
    it."""

    def build(section: type, values: Any):
        if not isinstance(values, dict):
            raise ConfigError(f"config section for {section.__name__} must be an object")
        names = {f.name for f in dataclasses.fields(section)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown config keys for {section.__name__}: {sorted(unknown)}")
        kwargs = {}
        for name, value in values.items():
            sub = cls.SECTIONS.get(name) if section is cls else None
            kwargs[name] = build(sub, value) if sub is not None else value
        return section(**kwargs)

    return build(cls, data)


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`to_dict` output (older layouts are brought up to
    date by :func:`migrate`); unknown keys are an error."""
    return build_config(Config, migrate(data))


#: PlaNet's resumable fields (:attr:`Config.RESUMABLE`), by their former name.
RESUMABLE_FIELDS = Config.RESUMABLE


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def diff_configs(saved: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted names) whose values differ, excluding the resumable ones (``RESUMABLE`` of
    the config's class: :data:`RESUMABLE_FIELDS` for PlaNet)."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    return {
        k: (a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if k not in type(new).RESUMABLE and a.get(k) != b.get(k)
    }


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as JSON, atomically."""
    atomic_write_json(path, to_dict(config))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object of a saved config (any agent's); a missing or corrupt file is a
    :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no config found at {path} (is this a planetrl run directory?)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is corrupt: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} is corrupt: expected a JSON object")
    return data


def load_config(path: str | Path) -> Config:
    """Read a saved config; a missing or corrupt file is a :class:`ConfigError` naming it."""
    return from_dict(read_config_file(path))


def set_field(config: RunConfig, name: str, value: Any) -> None:
    """Set the dotted field ``name`` (``"planner.candidates"``, ``"seed"``) of ``config`` to
    ``value``; an unknown name is a :class:`ConfigError` naming the accepted ones."""
    section_name, _, field_name = name.rpartition(".")
    target: Any = config
    if section_name:
        sections = type(config).SECTIONS
        if section_name not in sections:
            raise ConfigError(
                f"unknown config section {section_name!r} in {name!r}; accepted: "
                f"{', '.join(sections)}"
            )
        target = getattr(config, section_name)
    names = [f.name for f in dataclasses.fields(target)]
    if field_name not in names:
        where = f"section {section_name!r}" if section_name else "the top level"
        raise ConfigError(f"unknown config field {name!r}; accepted in {where}: {', '.join(names)}")
    setattr(target, field_name, value)
