"""Fast paths, each switched by a :class:`planetrl.config.SpeedConfig` field and each checked
against the eager code (``tests/test_speed.py``; figures in ``docs/benchmarks.md``).

The planner is built by :mod:`planetrl.planning` only; :func:`accelerate` wraps the planner it
built. With every field off (and on CPU, where ``cuda_graphs`` is ignored) the functions here
return the eager objects unchanged: :func:`accelerate` the planner it was given and
:func:`optimise_world_model` the model as it is.

How the training loop uses them::

    world_model = speed.optimise_world_model(world_model, cfg.speed, device)  # before the optimiser
    planner = speed.accelerate(planning.planner_from_config(cfg.planner, generator=plan_gen),
                               cfg.speed, device)
    action = planner(world_model.transition, world_model.planning_reward, state)  # as before

Fast paths:

- planner (``bf16``, ``compile``, ``cuda_graphs``): :func:`planetrl.speed.lean.lean_cem`, the same
  CEM as the eager one (same random draws in the same order; float32 results equal to the eager
  ones) on bare tensors; ``bf16`` runs the rollout in bfloat16 (belief and returns in float32),
  ``compile`` ``torch.compile``s the whole H-step rollout + reward of one iteration, and on CUDA
  ``cuda_graphs`` captures the whole I-iteration plan in one CUDA graph per number of
  environments E (:class:`StaticPlanner`). Only for the RSSM with the MLP reward model; other
  transition models fall back to the eager CEM (under bf16 autocast when ``bf16``). With the
  continuation head (``model.continuation``) the lean and CUDA-graph planners score with it too
  (the same discounted return as the eager one, :mod:`planetrl.speed.lean`). The same for
  ``icem`` and CEM with iCEM's options, except that CUDA graphs are for the plain CEM only.
- update (``channels_last``, ``bf16``): encoder and decoder convolutions in channels_last memory
  format, and in bfloat16 autocast (their outputs are float32; the RSSM, the KL and the
  likelihoods stay float32). ``compile`` is for the planner only (see
  :func:`optimise_world_model`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, cast

import torch
from torch import Tensor

from planetrl.models.state import State
from planetrl.planning import (
    CEM_OPTIONS,
    CEMOptions,
    ConfiguredPlanner,
    Plan,
    WarmStart,
    cem,
    icem,
)
from planetrl.run.fast_paths import Hardware, SpeedDecision, Workload, decide, resolve
from planetrl.speed import lean
from planetrl.speed.lean import lean_cem, rollout_returns

__all__ = [
    "Hardware",
    "SpeedDecision",
    "StaticPlanner",
    "Workload",
    "decide",
    "resolve",
    "accelerate",
    "lean_cem",
    "optimise_world_model",
    "planner_dtype",
]


def _on(speed_cfg: Any, name: str) -> bool:
    """Flag ``name`` of a resolved :class:`SpeedDecision` (None: all off)."""
    return bool(getattr(speed_cfg, name, False)) if speed_cfg is not None else False


def planner_dtype(speed_cfg: Any) -> torch.dtype | None:
    """bfloat16 when the (resolved) ``bf16`` flag is on, else None (the model's dtype)."""
    return torch.bfloat16 if _on(speed_cfg, "bf16") else None


# ------------------------------------------------------------------------------------ update
def optimise_world_model(world_model: Any, speed_cfg: Any, device: Any = None) -> Any:
    """Apply the update's fast paths to ``world_model`` in place (and return it).

    - ``channels_last``: encoder and decoder convolutions in channels_last memory format (the
      parameters keep their identity and state-dict keys, so call it before or after building the
      optimiser and loading a checkpoint alike).
    - ``bf16``: encoder and decoder forward in bfloat16 autocast, outputs cast back to float32.
    ``compile`` is not applied to the update: measured on 2 cores (bf16 + channels_last, B16 and
    B50 x L50) ``torch.compile`` of encoder and decoder was within noise (0.95-1.05x) and costs a
    recompile per batch shape (the agent encodes E images per step), so it is left out.
    All off: the model is returned untouched. ``speed_cfg``: a :class:`SpeedDecision`, or a
    SpeedConfig whose ``auto`` flags are decided here for ``device`` (:func:`resolve`)."""
    speed_cfg = resolve(speed_cfg, device or "cpu") if speed_cfg is not None else None
    for module in (world_model.encoder, world_model.decoder):
        if _on(speed_cfg, "channels_last"):
            module.set_channels_last(True)
        if _on(speed_cfg, "bf16"):
            module.autocast_dtype = torch.bfloat16
    return world_model


# ----------------------------------------------------------------------------------- planner
@functools.lru_cache(maxsize=None)
def compiled_rollout(gru_cell: bool) -> Callable[..., Tensor]:
    """``torch.compile`` of :func:`planetrl.speed.lean.rollout_returns` (one per GRU variant;
    recompiled per shape by torch itself)."""
    return torch.compile(functools.partial(rollout_returns, gru_cell=gru_cell), dynamic=False)


def _eager_rollout_gates() -> Callable[..., Tensor]:
    return functools.partial(rollout_returns, gru_cell=False)


_CEM_PLANNERS = (cem, icem)  # the planners scored through cem_loop, which lean_cem can score
_SIZES = ("horizon", "iterations", "candidates", "top_k")
_LEAN_TAKES = frozenset({*_SIZES, *CEM_OPTIONS, "generator", "min_action", "max_action"})
"""The fixed options of an eager CEM planner that the lean one takes too."""


def accelerate(planner: Callable[..., Any], speed_cfg: Any, device: Any = "cpu") -> Callable:
    """``planner`` (as :func:`planetrl.planning.make_planner` or
    :func:`planetrl.planning.planner_from_config` built it) with the fast paths of ``speed_cfg``
    that apply on ``device``; ``planner`` itself when none does.

    The planner's own options are kept: the lean CEM (:func:`planetrl.speed.lean.lean_cem`) gets
    every option of the eager one resolved (sizes, :class:`planetrl.planning.CEMOptions`,
    generator), so that it computes the eager planner's function, and the eager planner stays
    the fallback for models the lean one does not support (:func:`lean.supports`). A
    :class:`planetrl.planning.WarmStart` around the planner is kept around the fast one.

    With ``bf16``, ``compile`` off and (``cuda_graphs`` off or a CPU device), or for a planner
    that is not CEM / iCEM (random shooting), ``planner`` is returned as it is. CUDA graphs
    (:class:`StaticPlanner`) are used only for the paper's plain CEM (every iCEM option at the
    plain CEM's value, no warm start): with any iCEM option on, the fast path is the lean planner
    without graphs (its population sizes, kept elites and warm start change shapes and inputs
    between iterations and calls). With ``compile`` and a shrinking population (γ > 1) or
    warm-start elites, the rollout is compiled once per population size N_i."""
    device = torch.device(device)
    speed_cfg = resolve(speed_cfg, device) if speed_cfg is not None else None
    warm = isinstance(planner, WarmStart)
    eager = cast(WarmStart, planner).planner if warm else planner
    graphs = device.type == "cuda" and _on(speed_cfg, "cuda_graphs")
    if not (_on(speed_cfg, "bf16") or _on(speed_cfg, "compile") or graphs):
        return planner
    if not (
        isinstance(eager, ConfiguredPlanner)
        and eager.function in _CEM_PLANNERS
        and set(eager.options) <= _LEAN_TAKES
    ):
        return planner
    # The planner's one option object (checked when planning made it), read, not re-derived.
    resolved = eager.resolved
    options = CEMOptions(**{key: resolved[key] for key in CEM_OPTIONS})
    sizes = {key: resolved[key] for key in _SIZES}
    bounds = {
        key: eager.options[key] for key in ("min_action", "max_action") if key in eager.options
    }
    generator = eager.options.get("generator")
    plain = not warm and options == CEMOptions()
    dtype = planner_dtype(speed_cfg)
    # Eager CPU: torch.gru_cell (one fused kernel for the gate arithmetic); under compile and on
    # GPU the gates are written out so that the compiler fuses them with the rest of the step.
    if _on(speed_cfg, "compile"):
        rollout = compiled_rollout(gru_cell=False)
    elif device.type == "cuda":
        rollout = _eager_rollout_gates()
    else:
        rollout = rollout_returns
    fast = functools.partial(
        lean_cem,
        options=options,
        generator=generator,
        dtype=dtype,
        rollout=rollout,
        **sizes,
        **bounds,
    )
    if graphs and plain:
        # cast: StaticPlanner calls it without return_stats or return_plan (an action back)
        fast_action = cast(Callable[..., Tensor], fast)
        return StaticPlanner(fast_action, eager, sizes, generator=generator, use_graphs=True)
    accelerated = _Fallback(fast, eager, dtype)
    return WarmStart(accelerated) if warm else accelerated


class _Fallback:
    """The lean planner where the models support it, else the eager one (bf16 autocast when
    ``dtype`` is bfloat16)."""

    def __init__(self, fast: Callable, eager: Callable, dtype: torch.dtype | None) -> None:
        self.fast, self.eager, self.dtype = fast, eager, dtype

    # Per-call arguments the lean planner takes as the eager one does (the warm start's).
    _LEAN_KWARGS = frozenset({"init", "return_plan", "return_stats"})

    def __call__(self, transition: Any, reward_model: Any, state: State, **kwargs: Any) -> Any:
        if set(kwargs) <= self._LEAN_KWARGS and lean.supports(transition, reward_model):
            return self.fast(transition, reward_model, state, **kwargs)
        if self.dtype is None:
            return self.eager(transition, reward_model, state, **kwargs)
        with torch.autocast(state.deter.device.type, dtype=self.dtype):
            result = self.eager(transition, reward_model, state, **kwargs)
        if isinstance(result, Plan):
            return dataclasses.replace(result, action=result.action.float())
        if isinstance(result, tuple):
            return (result[0].float(), *result[1:])
        return result.float()


class StaticPlanner:
    """The lean CEM on static buffers, captured as one CUDA graph per number of environments E.

    Each call copies the belief (h, s) into the static input buffers of E's graph and replays it;
    the graph reads the live parameters (so training updates need no re-capture) and draws fresh
    noise at every replay: the prior noise from the device's default CUDA generator (graph-safe
    through philox offsets) and the candidate noise from ``generator`` when it is a CUDA generator
    that can be registered with the graph (``CUDAGraph.register_generator_state``), else from a
    static noise buffer refilled from ``generator`` before each replay.

    ``use_graphs=False`` runs the very same static-buffer code without capture (what the CPU
    tests check). Models the lean planner does not support go to ``eager``."""

    def __init__(
        self,
        fast: Callable[..., Tensor],
        eager: Callable[..., Tensor],
        options: dict[str, int],
        *,
        generator: torch.Generator | None = None,
        use_graphs: bool = True,
    ) -> None:
        self.fast, self.eager, self.options = fast, eager, dict(options)
        self.generator = generator
        self.use_graphs = use_graphs
        self._entries: dict[tuple, dict[str, Any]] = {}

    def _noise_inside(self, device: torch.device) -> bool:
        gen = self.generator
        if gen is None:
            return True
        if gen.device.type != "cuda" or gen.device != device:
            return False
        return hasattr(torch.cuda.CUDAGraph, "register_generator_state")

    def _build(self, transition: Any, reward_model: Any, state: State) -> dict[str, Any]:
        E = state.shape[0]
        device, dtype = state.deter.device, state.deter.dtype
        o = self.options
        entry: dict[str, Any] = {
            "deter": state.deter.detach().clone(),
            "stoch": state.stoch.detach().clone(),
            "noise": None,
        }
        capture = self.use_graphs and device.type == "cuda"
        if capture and not self._noise_inside(device):
            shape = (o["iterations"], E, o["candidates"], o["horizon"], transition.action_size)
            entry["noise"] = torch.empty(shape, dtype=dtype, device=device)

        def plan() -> Tensor:
            # Only h and s of the belief enter the plan (mean and std are not used).
            belief = State(entry["deter"], entry["stoch"], entry["stoch"], entry["stoch"])
            return self.fast(transition, reward_model, belief, noise=entry["noise"])

        entry["plan"] = plan
        if capture:
            if entry["noise"] is not None:
                self._fill_noise(entry)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: cuBLAS handles, compiled kernels
                    plan()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if entry["noise"] is None and self.generator is not None:
                graph.register_generator_state(self.generator)
            with torch.no_grad(), torch.cuda.graph(graph):
                entry["action"] = plan()
            entry["graph"] = graph
        return entry

    def _fill_noise(self, entry: dict[str, Any]) -> None:
        noise = entry["noise"]
        gen = self.generator
        assert gen is not None  # a noise buffer only with a generator (_noise_inside)
        fresh = torch.randn(noise.shape, dtype=noise.dtype, device=gen.device, generator=gen)
        noise.copy_(fresh)

    @torch.no_grad()
    def __call__(self, transition: Any, reward_model: Any, state: State, **kwargs: Any) -> Tensor:
        if kwargs or not lean.supports(transition, reward_model):
            return self.eager(transition, reward_model, state, **kwargs)
        key = (
            id(transition),
            id(reward_model),
            state.shape[0],
            state.deter.device,
            state.deter.dtype,
        )
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._build(transition, reward_model, state)
        entry["deter"].copy_(state.deter)
        entry["stoch"].copy_(state.stoch)
        if entry["noise"] is not None:
            self._fill_noise(entry)
        if "graph" in entry:
            entry["graph"].replay()
            return entry["action"].clone()
        return entry["plan"]()

    def reset(self, num_envs: int | None = None) -> None:
        """Start of new episodes (:meth:`planetrl.agent.Agent.reset`): nothing to forget, the
        plain CEM keeps no plan between calls; the captured graphs stay (see :meth:`clear`)."""

    def clear(self) -> None:
        """Drop the captured graphs (e.g. after moving the model to another device)."""
        self._entries.clear()
