"""``auto`` for the fast paths: each :class:`planetrl.config.SpeedConfig` flag is ``auto``, ``on``
or ``off``, and :func:`decide` turns ``auto`` into on/off for the machine, with a reason per flag.
Shared by both agents (World Models' ``speed`` section has the ``bf16`` and ``channels_last`` of
V's convolutions), so it lives with the run infrastructure and imports no agent's code.

The rules (each measured; figures in docs/benchmarks.md, one table per CPU kind):

- ``bf16``: on where the hardware computes bfloat16 natively: a CUDA device with bf16 support, or
  a CPU with AMX-BF16 or AVX512-BF16 (oneDNN's bf16 kernels). Elsewhere (e.g. an AVX2-only AMD
  EPYC) bf16 is emulated in software and measured 5-10x *slower* than float32, so ``auto`` is off.
- ``channels_last``: on (the same function; 1.2-1.7x on the update on AVX-512 CPUs, within noise
  on AVX2; the layout bf16 convolutions need).
- ``compile`` (the planner's rollout, ``torch.compile``): on only where it pays for itself within
  the run: a compiler backend exists (a C++ compiler for inductor on CPU, Triton on CUDA) and the
  planning time it is expected to save over the run, ``plans x ms per plan x``
  :data:`COMPILE_SAVING`,
  exceeds its start-up cost, :data:`COMPILE_SECONDS` per distinct number of environments planned
  for. The ms per plan comes from a short timing probe of the planner the run will use; the number
  of plans from the run's budget (:class:`Workload`). Without a workload (a library call that does
  not say how long it will plan) ``auto`` is off.
- ``cuda_graphs``: on for a CUDA device, off on a CPU (where there is nothing to capture). On an
  H200 (torch 2.11, CUDA 13; docs/benchmarks.md, "GPU") the captured paper-preset CEM planned in
  9.0 ms against the eager 29.4 ms (E=1, with bf16), and its plans followed the uncaptured
  planner's distribution (``benchmarks/cuda_graph_rng.py``). It applies to the paper's plain CEM
  only; with iCEM options the lean planner runs uncaptured.
- ``update_graph`` (the whole update captured, :mod:`planetrl.training.update`): off on a CPU
  (nothing to capture); on CUDA off too until it has been measured on a GPU (``on`` forces it,
  as ``benchmarks/gpu_check.sh`` does).

Every flag can be forced with ``on`` / ``off``; the decision and its reasons are printed at the
start of a run and saved in the run directory (``speed.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from planetrl.config import SpeedConfig

FLAGS = tuple(f.name for f in dataclasses.fields(SpeedConfig))
SETTINGS = ("auto", "on", "off")

COMPILE_SECONDS = 45.0
"""Start-up cost of compiling the planner's rollout once (one number of environments E), seconds:
25-45 s measured on 2-core CPUs (Xeon and EPYC), inductor's C++ build included."""
COMPILE_SAVING = 0.25
"""Fraction of the eager (lean) plan time that compiling saves, taken conservatively: measured
0.28-0.65 at E=1 on 2-core CPUs (docs/benchmarks.md), less at E=10."""
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPUs whose bfloat16 matrix arithmetic is native (oneDNN uses them)."""
ISA_WITHOUT_BF16 = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
)
"""Values of oneDNN's ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) that forbid its native
bf16 kernels: with one of them set, bf16 is emulated whatever the CPU has."""


def setting(value: Any, name: str = "speed flag") -> str:
    """A flag value as ``"auto"``, ``"on"`` or ``"off"`` (bools are accepted: True -> on)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.lower() in SETTINGS:
        return value.lower()
    raise ValueError(f"{name} must be one of auto, on, off (or a bool), got {value!r}")


VECTOR_EXTENSIONS = (
    ("amx_tile", "AMX"),
    ("avx512_bf16", "AVX512-BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)
"""CPU flags (as in /proc/cpuinfo) and their names, widest first: the one named beside a figure."""


def widest_vector_extension(flags: Iterable[str]) -> str | None:
    """The widest vector extension among ``flags`` (AMX, AVX512-BF16, AVX-512 or AVX2), or None."""
    present = set(flags)
    return next((label for flag, label in VECTOR_EXTENSIONS if flag in present), None)


@dataclass(frozen=True)
class Hardware:
    """What the decisions depend on, detected by :meth:`detect` (tests build it by hand)."""

    device_type: str
    """``cpu`` or ``cuda``."""
    name: str
    """CPU model (``/proc/cpuinfo``) or CUDA device name."""
    cpu_flags: frozenset[str] = frozenset()
    """The CPU's feature flags (lower case, as in /proc/cpuinfo)."""
    cuda_bf16: bool = False
    """The CUDA device computes bfloat16 natively."""
    compiler: str | None = None
    """What ``torch.compile`` needs on this device: a C++ compiler (CPU) or Triton (CUDA), else
    None."""

    @property
    def native_bf16(self) -> bool:
        if self.device_type == "cuda":
            return self.cuda_bf16
        return any(f in self.cpu_flags for f in BF16_CPU_FLAGS)

    @classmethod
    def detect(cls, device: torch.device | str = "cpu") -> "Hardware":
        device = torch.device(device)
        if device.type == "cuda":
            compiler = "triton" if importlib.util.find_spec("triton") is not None else None
            return cls(
                "cuda",
                torch.cuda.get_device_name(device),
                cuda_bf16=bool(torch.cuda.is_bf16_supported()),
                compiler=compiler,
            )
        model, flags = _cpu_info()
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
        if isa.upper() in ISA_WITHOUT_BF16:  # oneDNN is capped below its bf16 kernels
            flags = flags - set(BF16_CPU_FLAGS)
            model = f"{model} (oneDNN capped at {isa.upper()})"
        return cls("cpu", model, flags, compiler=_cxx_compiler())


@functools.lru_cache(maxsize=1)
def _cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the CPU; flags are empty where /proc/cpuinfo does not exist."""
    flags: frozenset[str]
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@dataclass(frozen=True)
class Workload:
    """How much planning a run expects: what ``compile`` is weighed against."""

    plans: int
    """Planner calls expected over the (rest of the) run."""
    plan_ms: float
    """Milliseconds per plan without compile (the timing probe)."""
    graphs: int = 1
    """Distinct numbers of environments planned for (each one compiles once)."""

    @property
    def saving_s(self) -> float:
        return self.plans * self.plan_ms / 1000.0 * COMPILE_SAVING

    @property
    def cost_s(self) -> float:
        return self.graphs * COMPILE_SECONDS


@dataclass(frozen=True)
class SpeedDecision:
    """The flags in force (bools) and why. Accepted wherever a SpeedConfig is."""

    compile: bool
    bf16: bool
    channels_last: bool
    cuda_graphs: bool
    update_graph: bool = False
    reasons: Mapping[str, str] = field(default_factory=dict)
    hardware: Hardware | None = None

    def describe(self) -> str:
        """One line per flag, e.g. ``bf16 on (auto: AVX512-BF16 CPU)``."""
        where = f" on {self.hardware.name}" if self.hardware is not None else ""
        lines = [f"fast paths{where}:"]
        for name in FLAGS:
            lines.append(
                f"  {name:<13} {'on ' if getattr(self, name) else 'off'}  "
                f"({self.reasons.get(name, '')})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in FLAGS}
        out["reasons"] = dict(self.reasons)
        if self.hardware is not None:
            hw = dataclasses.asdict(self.hardware)
            hw["cpu_flags"] = sorted(
                f for f in self.hardware.cpu_flags if f.startswith(("avx", "amx", "fma"))
            )
            out["hardware"] = hw
        out["torch"] = torch.__version__
        return out


def decide(
    speed_cfg: Any,
    hardware: Hardware,
    workload: Workload | Callable[[bool], Workload | None] | None = None,
) -> SpeedDecision:
    """Resolve every ``auto`` flag of ``speed_cfg`` (a SpeedConfig, or anything with the four
    flag attributes) for ``hardware``.

    ``workload``: the run's expected planning, for ``compile: auto``; either a :class:`Workload`
    or a function ``workload(bf16) -> Workload`` (e.g. a timing probe of the planner in the dtype
    just decided), called only when ``compile`` is ``auto`` and a compiler exists.
    """
    values = {name: setting(getattr(speed_cfg, name, "off"), f"speed.{name}") for name in FLAGS}
    reasons: dict[str, str] = {}
    out: dict[str, bool] = {}
    cuda = hardware.device_type == "cuda"

    def fix(name: str, auto: Callable[[], tuple[bool, str]]) -> None:
        if values[name] != "auto":
            out[name] = values[name] == "on"
            reasons[name] = f"forced {values[name]}"
            return
        out[name], why = auto()
        reasons[name] = f"auto: {why}"

    def bf16() -> tuple[bool, str]:
        if cuda:
            return hardware.cuda_bf16, (
                "CUDA device with bf16"
                if hardware.cuda_bf16
                else "this CUDA device has no native bf16"
            )
        native = [f for f in BF16_CPU_FLAGS if f in hardware.cpu_flags]
        if native:
            return True, f"native bf16 on this CPU ({', '.join(f.upper() for f in native)})"
        return False, (
            "no AMX-BF16 or AVX512-BF16 on this CPU: bf16 would be emulated "
            "(5-10x slower than float32)"
        )

    fix("bf16", bf16)
    fix("channels_last", lambda: (True, "same function; faster or equal convolutions"))
    fix(
        "cuda_graphs",
        lambda: (
            (
                True,
                "CUDA device: one graph replay per plan, not thousands of "
                "kernel launches (3.3x faster on an H200, with bf16)",
            )
            if cuda
            else (False, "CPU device")
        ),
    )

    fix(
        "update_graph",
        lambda: (
            (False, "the captured update has not been measured on a GPU yet: `on` forces it")
            if cuda
            else (False, "CPU device: nothing to capture")
        ),
    )

    def compile_() -> tuple[bool, str]:
        if hardware.compiler is None:
            need = "Triton" if cuda else "a C++ compiler (g++/clang++)"
            return False, f"torch.compile needs {need}, none found"
        load = workload(out["bf16"]) if callable(workload) else workload
        if load is None:
            return False, "no run length given to weigh the compile time against"
        pays = load.saving_s > load.cost_s
        return pays, (
            f"expected saving {load.saving_s:.0f} s ({load.plans} plans x "
            f"{load.plan_ms:.0f} ms x {COMPILE_SAVING}) "
            f"{'>' if pays else '<='} compile cost {load.cost_s:.0f} s "
            f"({load.graphs} x {COMPILE_SECONDS:.0f} s)"
        )

    fix("compile", compile_)
    return SpeedDecision(reasons=reasons, hardware=hardware, **out)


def resolve(speed_cfg: Any, device: torch.device | str = "cpu") -> SpeedDecision:
    """``speed_cfg`` as a :class:`SpeedDecision`: itself if it is one, else :func:`decide` for the
    detected hardware of ``device`` with no workload (``compile: auto`` is then off)."""
    if isinstance(speed_cfg, SpeedDecision):
        return speed_cfg
    return decide(speed_cfg, Hardware.detect(device))
