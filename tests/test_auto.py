"""`auto` fast paths and threads: the decision logic with the hardware faked both ways, the
thread choice under load, and both reaching env workers, `train` and `eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from planetrl import speed
from planetrl.config import Config, ConfigError, PlannerConfig, SpeedConfig
from planetrl.planning import cem, planner_from_config
from planetrl.run import fast_paths
from planetrl.run.fast_paths import FLAGS, Hardware, SpeedDecision, Workload, decide, setting
from planetrl.threads import ThreadGovernor, busy_elsewhere, choose_threads

AVX2 = Hardware("cpu", "AMD EPYC (Zen 3)", frozenset({"avx", "avx2", "fma"}), compiler="g++")
AVX512_BF16 = Hardware(
    "cpu", "AMD EPYC (Zen 5)", frozenset({"avx2", "avx512f", "avx512_bf16"}), compiler="g++"
)
AMX = Hardware(
    "cpu",
    "Intel Xeon (Sapphire Rapids)",
    frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}),
    compiler="g++",
)
AVX512_NO_BF16 = Hardware("cpu", "Intel Xeon (Skylake)", frozenset({"avx512f"}), compiler="g++")
NO_COMPILER = Hardware("cpu", "AMD EPYC (Zen 3)", frozenset({"avx2"}), compiler=None)
GPU = Hardware("cuda", "NVIDIA H100", cuda_bf16=True, compiler="triton")
OLD_GPU = Hardware("cuda", "Tesla T4", cuda_bf16=False, compiler="triton")
AUTO = SpeedConfig()
LONG = Workload(plans=100_000, plan_ms=50.0, graphs=2)  # saves 1250 s, costs 90 s
SHORT = Workload(plans=1_000, plan_ms=50.0, graphs=2)  # saves 12.5 s, costs 90 s


@pytest.mark.parametrize(
    "hardware, bf16",
    [
        (AVX2, False),
        (AVX512_NO_BF16, False),
        (NO_COMPILER, False),
        (AVX512_BF16, True),
        (AMX, True),
        (GPU, True),
        (OLD_GPU, False),
    ],
)
def test_bf16_auto_only_where_native(hardware, bf16):
    decision = decide(AUTO, hardware)
    assert decision.bf16 is bf16
    assert decision.reasons["bf16"].startswith("auto: ")
    if not bf16 and hardware.device_type == "cpu":
        assert "emulated" in decision.reasons["bf16"]


@pytest.mark.parametrize("hardware", [AVX2, AMX, GPU, OLD_GPU])
def test_channels_last_on_and_cuda_graphs_on_cuda_only(hardware):
    decision = decide(AUTO, hardware)
    assert decision.channels_last
    assert decision.cuda_graphs is (hardware.device_type == "cuda")
    assert decision.reasons["cuda_graphs"].startswith("auto: ")


@pytest.mark.parametrize("hardware", [AVX2, AMX, GPU, NO_COMPILER])
@pytest.mark.parametrize("value", ["on", "off", True, False])
def test_every_flag_can_be_forced(hardware, value):
    cfg = SpeedConfig(**{name: value for name in FLAGS})
    calls = []
    decision = decide(cfg, hardware, lambda bf16: calls.append(bf16) or LONG)
    on = value in ("on", True)
    for name in FLAGS:
        assert getattr(decision, name) is on
        assert decision.reasons[name] == f"forced {'on' if on else 'off'}"
    assert calls == []  # the probe costs nothing when compile is forced


def test_compile_auto_weighs_saving_against_cost():
    assert decide(AUTO, AVX2, LONG).compile
    assert not decide(AUTO, AVX2, SHORT).compile
    assert "<=" in decide(AUTO, AVX2, SHORT).reasons["compile"]
    assert not decide(AUTO, AVX2).compile  # no workload: nothing to weigh against
    assert not decide(AUTO, NO_COMPILER, LONG).compile
    assert "C++ compiler" in decide(AUTO, NO_COMPILER, LONG).reasons["compile"]
    # the probe is told which dtype the plan will run in
    seen = []
    decide(AUTO, AMX, lambda bf16: seen.append(bf16) or LONG)
    decide(AUTO, AVX2, lambda bf16: seen.append(bf16) or LONG)
    decide(SpeedConfig(bf16="off"), AMX, lambda bf16: seen.append(bf16) or LONG)
    assert seen == [True, False, False]


def test_workload_arithmetic():
    w = Workload(plans=1000, plan_ms=100.0, graphs=3)
    assert w.saving_s == pytest.approx(1000 * 0.1 * fast_paths.COMPILE_SAVING)
    assert w.cost_s == pytest.approx(3 * fast_paths.COMPILE_SECONDS)


def test_speed_config_values():
    assert SpeedConfig(bf16=True, compile=False).bf16 == "on"
    assert SpeedConfig(bf16=True, compile=False).compile == "off"
    assert SpeedConfig().bf16 == "auto"
    cfg = Config()
    cfg.speed.compile = True  # set after construction: validate normalises it
    assert cfg.validate().speed.compile == "on"
    cfg.speed.bf16 = "fast"
    with pytest.raises(ConfigError, match="speed.bf16 must be auto, on or off"):
        cfg.validate()
    with pytest.raises(ValueError, match="auto, on, off"):
        setting("yes")


def test_decision_is_reported_and_accepted_everywhere():
    decision = decide(AUTO, AVX2, SHORT)
    text = decision.describe()
    for name in FLAGS:
        assert name in text
    assert "AMD EPYC" in text and "emulated" in text
    saved = decision.to_dict()
    assert saved["bf16"] is False and saved["hardware"]["name"] == AVX2.name
    assert json.loads(json.dumps(saved)) == saved
    assert speed.resolve(decision) is decision
    # all off: exactly the eager planetrl.planning planner
    off = SpeedDecision(**{n: False for n in FLAGS})
    eager = planner_from_config(PlannerConfig(horizon=3, iterations=2, candidates=8, top_k=2))
    planner = speed.accelerate(eager, off, "cpu")
    assert planner is eager and getattr(planner, "function", None) is cem


def test_detect_reads_this_machine():
    hw = Hardware.detect("cpu")
    assert hw.device_type == "cpu" and hw.name
    if os.path.exists("/proc/cpuinfo"):
        flags = open("/proc/cpuinfo").read()
        assert hw.native_bf16 == ("avx512_bf16" in flags or "amx_bf16" in flags)


# ----------------------------------------------------------------------------------- threads
@pytest.mark.parametrize(
    "setting_, cores, busy, expected",
    [
        (0, 2, 0.0, 2),
        (0, 2, 1.0, 1),
        (0, 2, 5.0, 1),
        (0, 8, 2.0, 6),
        (0, 2, None, 2),
        (3, 2, 0.0, 3),
        (1, 8, 7.0, 1),
    ],
)
def test_choose_threads(setting_, cores, busy, expected):
    threads, reason = choose_threads(setting_, cores, busy)
    assert threads == expected and reason


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_busy_elsewhere_sees_a_competing_process_and_the_governor_yields():
    before = torch.get_num_threads()
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_elsewhere() >= 1
        loaded = ThreadGovernor(0)
        loaded.adjust()
        assert loaded.threads <= max(1, loaded.cores - 1) and "auto" in loaded.reason
        assert torch.get_num_threads() == loaded.threads
        # the run's own processes (its env workers) are not load
        own = ThreadGovernor(0, own=lambda: [competitor.pid])
        own.adjust()
        assert own.threads >= loaded.threads
    finally:
        competitor.kill()
        competitor.wait()
        torch.set_num_threads(before)


def test_fixed_threads_are_set():
    before = torch.get_num_threads()
    try:
        governor = ThreadGovernor(1)
        assert governor.adjust() == 1 and torch.get_num_threads() == 1
        assert "fixed" in governor.reason
        with pytest.raises(ValueError, match="threads"):
            ThreadGovernor(-1)
    finally:
        torch.set_num_threads(before)


def test_env_workers_run_single_threaded():
    from planetrl.envs import EnvPool

    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with EnvPool("dmc:cartpole-balance", 2, render="fast") as pool:
        infos = pool.worker_info()
    assert [i["pid"] for i in infos] != [os.getpid()] * 2
    for info in infos:
        assert info["OMP_NUM_THREADS"] == "1" and info["OPENBLAS_NUM_THREADS"] == "1"
        assert info["torch_threads"] in (None, 1)
    # the parent's environment is left as it was
    assert {k: os.environ.get(k) for k in before} == before
