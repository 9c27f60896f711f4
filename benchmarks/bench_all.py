"""One table of PlaNet's costs: plan, update, env steps, replay batches, per preset and device.

    python benchmarks/bench_all.py                          # paper and small presets on CPU
    python benchmarks/bench_all.py --device cuda --quick
    python benchmarks/bench_all.py --presets small --skip-envs --profile

Every model figure is measured side by side, interleaved, on fresh random inputs (never zeros)
after a warm-up, with the device synchronised, as medians: the plain eager reference of
``benchmarks/reference.py`` (independent code, the same weights), planetrl's eager path (every
``SpeedConfig`` flag off) and planetrl's fast path (the flags of ``--speed``). ``speed-up`` is
reference / fast from the same run; ``max |Δ|`` is the largest difference of the fast path's
output from the reference's on the same random draws (plan: the first action, in [-1, 1]; update:
the loss, relative). Also printed: ``uptime`` load, torch threads, the CPU.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import ReferenceWorldModel, reference_cem, reference_loss  # noqa: E402

from planetrl import planning, speed  # noqa: E402
from planetrl.config import preset  # noqa: E402
from planetrl.models import WorldModel  # noqa: E402
from planetrl.models.state import State  # noqa: E402
from planetrl.objective import compute_loss  # noqa: E402
from planetrl.replay import Batch  # noqa: E402
from planetrl.run.fast_paths import FLAGS, SpeedDecision  # noqa: E402
from planetrl.training import loop  # noqa: E402
from planetrl.training.loop import Counters, decide_speed  # noqa: E402
from planetrl.training.update import GraphedUpdate, gradient_step, make_update  # noqa: E402

OFF = SpeedDecision(**{n: False for n in FLAGS})
ACTION_SIZE = 6  # cheetah-run


def parse_speed(text: str, cfg, device: torch.device) -> SpeedDecision:
    """``auto``: what a new run of the preset (its default budget) decides on this machine (the
    timing probe included); else a comma-separated list of the flags to turn on."""
    if text == "auto":
        torch.manual_seed(0)
        decision = decide_speed(cfg, build_world_model(cfg, device), device, Counters())
        print(decision.describe())
        return decision
    names = {n for n in text.split(",") if n}
    unknown = names - set(FLAGS)
    if unknown:
        raise SystemExit(
            f"unknown --speed flags {sorted(unknown)}; accepted: auto or {', '.join(FLAGS)}"
        )
    return SpeedDecision(**{n: n in names for n in FLAGS}, reasons={n: "--speed" for n in FLAGS})


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return 1000.0 * (time.perf_counter() - start)


def build_world_model(cfg, device: torch.device) -> WorldModel:
    return loop.build_world_model(cfg, ACTION_SIZE).to(device)


def random_belief(transition, num_envs: int, device: torch.device, seed: int) -> State:
    g = torch.Generator().manual_seed(seed)
    s = transition.initial(num_envs).map(lambda x: torch.randn(x.shape, generator=g))
    return State(s.deter, s.stoch, s.mean, s.std.abs() + 0.1).to(device)


def random_batch(B: int, L: int, device: torch.device, seed: int, frames: bool = False) -> Batch:
    """B chunks of L random steps: images preprocessed floats, or uint8 stored ``frames``."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, L, dtype=torch.bool)
    is_first[:, 0] = True
    if frames:
        image = torch.randint(0, 256, (B, L, 64, 64, 3), generator=g, dtype=torch.uint8)
    else:
        image = torch.rand(B, L, 3, 64, 64, generator=g) - 0.5
    return Batch(
        image=image.to(device),
        action=(torch.rand(B, L, ACTION_SIZE, generator=g) * 2 - 1).to(device),
        reward=torch.randn(B, L, generator=g).to(device),
        is_first=is_first.to(device),
        is_terminal=torch.zeros(B, L, dtype=torch.bool, device=device),
    )


def seeded(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def bench_plan(
    cfg, num_envs: int, device: torch.device, fast_cfg: SpeedDecision, repeats: int, warmup: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    wm = build_world_model(cfg, device).eval()
    ref = ReferenceWorldModel(wm).to(device).eval()
    p = cfg.planner
    options = dict(
        horizon=p.horizon, iterations=p.iterations, candidates=p.candidates, top_k=p.top_k
    )
    gen = lambda s: torch.Generator(device=device).manual_seed(s)  # noqa: E731
    eager = speed.accelerate(planning.planner_from_config(p, generator=gen(1)), OFF, device)
    fast = speed.accelerate(planning.planner_from_config(p, generator=gen(1)), fast_cfg, device)

    def run_ref(state, g):
        return reference_cem(ref.rssm, ref.reward, state.deter, state.stoch, generator=g, **options)

    # Correctness on the same draws (fresh belief).
    state = random_belief(wm.transition, num_envs, device, seed=123)
    outs = {}
    seeded(3, device)
    outs["ref"] = run_ref(state, gen(7))
    seeded(3, device)
    outs["eager"] = eager(wm.transition, wm.reward, state, generator=gen(7))
    if isinstance(fast, speed.StaticPlanner):
        fast.generator.manual_seed(7)
    elif isinstance(fast, planning.ConfiguredPlanner):  # no planner flag on: the eager one
        fast.options["generator"].manual_seed(7)
    else:  # the lean planner (its .fast partial)
        fast.fast.keywords["generator"].manual_seed(7)
    seeded(3, device)
    outs["fast"] = fast(wm.transition, wm.reward, state)  # also the warm-up / compile / capture
    times: dict[str, list[float]] = {"ref": [], "eager": [], "fast": []}
    fns = {
        "ref": lambda s: run_ref(s, gen(11)),
        "eager": lambda s: eager(wm.transition, wm.reward, s),
        "fast": lambda s: fast(wm.transition, wm.reward, s),
    }
    for rep in range(warmup + repeats):
        state = random_belief(wm.transition, num_envs, device, seed=1000 + rep)
        for name, fn in fns.items():
            ms = timed(lambda: fn(state), device)
            if rep >= warmup:
                times[name].append(ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "what": f"plan E={num_envs} (J{p.candidates} H{p.horizon} I{p.iterations})",
        "ref": med["ref"],
        "eager": med["eager"],
        "fast": med["fast"],
        "diff_eager": float((outs["eager"] - outs["ref"]).abs().max()),
        "diff_fast": float((outs["fast"] - outs["ref"]).abs().max()),
        "unit": "ms",
    }


def bench_update(
    cfg, device: torch.device, fast_cfg: SpeedDecision, repeats: int, warmup: int
) -> dict[str, Any]:
    t = cfg.train
    torch.manual_seed(0)
    base = build_world_model(cfg, device)
    models = {
        "ref": ReferenceWorldModel(base).to(device),
        "eager": copy.deepcopy(base),
        "fast": speed.optimise_world_model(copy.deepcopy(base), fast_cfg, device),
    }
    optims = {
        k: torch.optim.Adam(m.parameters(), lr=t.learning_rate, eps=t.adam_eps)
        for k, m in models.items()
    }
    free_nats = cfg.loss.free_nats

    def loss_of(name, batch):
        if name == "ref":
            return reference_loss(models[name], batch, free_nats)
        return compute_loss(models[name], batch, free_nats=free_nats)[0]

    def update(name, batch):
        loss = loss_of(name, batch)
        optims[name].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[name].parameters(), t.grad_clip)
        optims[name].step()

    batch = random_batch(t.batch_size, t.chunk_length, device, seed=5)
    losses = {}
    with torch.no_grad():
        for name in models:
            seeded(9, device)
            losses[name] = float(loss_of(name, batch))
    times: dict[str, list[float]] = {k: [] for k in models}
    for rep in range(warmup + repeats):
        batch = random_batch(t.batch_size, t.chunk_length, device, seed=100 + rep)
        for name in models:
            ms = timed(lambda: update(name, batch), device)
            if rep >= warmup:
                times[name].append(ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    rel = lambda a: abs(a - losses["ref"]) / abs(losses["ref"])  # noqa: E731
    return {
        "what": f"update B{t.batch_size}×L{t.chunk_length} (depth {cfg.model.cnn_depth})",
        "ref": med["ref"],
        "eager": med["eager"],
        "fast": med["fast"],
        "diff_eager": rel(losses["eager"]),
        "diff_fast": rel(losses["fast"]),
        "unit": "ms",
        "rel": True,
    }


def bench_train_update(
    cfg, device: torch.device, fast_cfg: SpeedDecision, repeats: int, warmup: int
) -> dict[str, Any]:
    """The training loop's update with the preset's whole loss (reward scale, overshooting,
    decode fraction as configured) on stored uint8 frames: the eager step
    (:func:`planetrl.training.update.gradient_step`) against the run's update under ``fast_cfg``
    (:func:`planetrl.training.update.make_update`: the captured one with ``update_graph`` on
    CUDA). No reference column: the reference has only the plain bound; ``ref`` is the eager
    step. Its warm-up includes the captured update's eager steps and its capture. Timing only
    (the diff columns are n/a): ``tests/test_update.py`` checks the captured update's function
    against the eager one."""
    t = cfg.train
    torch.manual_seed(0)
    base = build_world_model(cfg, device)
    eager_model = copy.deepcopy(base)
    fast_model = speed.optimise_world_model(copy.deepcopy(base), fast_cfg, device)
    adam = lambda m: torch.optim.Adam(m.parameters(), lr=t.learning_rate, eps=t.adam_eps)  # noqa: E731
    eager_opt, fast_opt = adam(eager_model), adam(fast_model)
    fast_step = make_update(fast_model, fast_opt, cfg, fast_cfg)
    gens = {"eager": torch.Generator().manual_seed(1), "fast": torch.Generator().manual_seed(1)}
    steps = {
        "eager": lambda b: gradient_step(eager_model, eager_opt, b, cfg, gens["eager"]),
        "fast": lambda b: fast_step(b, gens["fast"]),
    }
    times: dict[str, list[float]] = {"eager": [], "fast": []}
    for rep in range(max(warmup, 4) + repeats):  # the captured update: 3 eager, then capture
        batch = random_batch(t.batch_size, t.chunk_length, device, seed=100 + rep, frames=True)
        for name, step in steps.items():
            ms = timed(lambda: step(batch), device)
            if rep >= max(warmup, 4):
                times[name].append(ms)
    med = {k: statistics.median(v) for k, v in times.items()}
    path = fast_step.describe() if isinstance(fast_step, GraphedUpdate) else "eager"
    return {
        "what": f"train update B{t.batch_size}×L{t.chunk_length}, the preset's loss "
        f"(ref = eager step; fast = {path})",
        "ref": med["eager"],
        "eager": med["eager"],
        "fast": med["fast"],
        "diff_eager": float("nan"),  # timing only: tests/test_update.py checks the function
        "diff_fast": float("nan"),
        "unit": "ms",
        "rel": True,
    }


PROJECTED_ENV_STEPS = 1_000_000
PROJECTED_REPEAT = 4  # cheetah's R; the paper's 1,000 episodes of 1,000 env steps


def projection(cfg, rows: list[dict[str, Any]]) -> str | None:
    """The time of a 1M-env-step run of Algorithm 1 from the measured costs: updates
    (1,000 episodes x C) x the fast train update + plans (1M / R) x the fast plan at E=1, env
    stepping and evaluation not included (measured apart: the env rows, the train step of
    gpu_check). None when a row is missing."""
    plan = next((r for r in rows if r.get("what", "").startswith("plan E=1 ")), None)
    update = next((r for r in rows if r.get("what", "").startswith("train update")), None)
    if plan is None or update is None:
        return None
    episodes = PROJECTED_ENV_STEPS // 1000
    updates = episodes * cfg.train.collect_interval
    plans = PROJECTED_ENV_STEPS // PROJECTED_REPEAT
    hours_u = updates * update["fast"] / 3.6e6
    hours_p = plans * plan["fast"] / 3.6e6
    return (
        f"projected {PROJECTED_ENV_STEPS:,} env steps (R={PROJECTED_REPEAT}, C="
        f"{cfg.train.collect_interval}): {updates:,} updates x {update['fast']:.1f} ms = "
        f"{hours_u:.2f} h + {plans:,} plans x {plan['fast']:.1f} ms = {hours_p:.2f} h -> "
        f"{hours_u + hours_p:.2f} h of model time (env steps and evaluations not included)"
    )


def bench_envs(cfg, task: str, steps: int, num_envs: int) -> list[dict[str, Any]]:
    try:
        from bench_envs import measure_env_rate
    except ImportError as err:
        return [{"what": f"env steps/s: skipped ({err})"}]
    rows = []
    for render in ("paper", "fast"):
        for n in (1, num_envs):
            try:
                r = measure_env_rate(task, render, n, steps)
            except Exception as err:  # noqa: BLE001  (headless rendering may be missing)
                rows.append({"what": f"env {render} ×{n}: failed ({type(err).__name__}: {err})"})
                continue
            rows.append(
                {
                    "what": f"env steps/s, {render} render, {n} env(s) ({task}, "
                    f"R={r['action_repeat']})",
                    "value": f"{r['env_steps_per_s']:.0f} sim steps/s "
                    f"({r['agent_steps_per_s']:.0f} frames/s)",
                    "env_steps_per_s": r["env_steps_per_s"],
                }
            )
    return rows


def bench_replay(cfg, device: torch.device, quick: bool) -> list[dict[str, Any]]:
    try:
        from bench_replay import measure_replay_rate
    except ImportError as err:
        return [{"what": f"replay: skipped ({err})"}]
    t = cfg.train
    try:
        r = measure_replay_rate(
            t.batch_size,
            t.chunk_length,
            episodes=20 if quick else 50,
            iterations=5 if quick else 20,
            device=device,
        )
    except Exception as err:  # noqa: BLE001
        return [{"what": f"replay: failed ({type(err).__name__}: {err})"}]
    return [
        {
            "what": f"replay batches/s B{t.batch_size}×L{t.chunk_length} → {device.type}",
            "value": f"{r['batches_per_s']:.1f} batches/s ({r['batches_per_s_reused_out']:.1f} "
            f"with a reused output buffer)",
        }
    ]


def profile(cfg, device: torch.device, fast_cfg: SpeedDecision, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    torch.manual_seed(0)
    wm = speed.optimise_world_model(build_world_model(cfg, device), fast_cfg, device)
    opt = torch.optim.Adam(wm.parameters(), lr=1e-3, eps=1e-4)
    t = cfg.train
    batch = random_batch(t.batch_size, t.chunk_length, device, seed=1)

    def update():
        loss = compute_loss(wm, batch)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()

    planner = speed.accelerate(
        planning.planner_from_config(
            cfg.planner, generator=torch.Generator(device=device).manual_seed(0)
        ),
        fast_cfg,
        device,
    )
    state = random_belief(wm.transition, 1, device, seed=2)
    for name, fn in (
        ("update", update),
        ("plan E=1", lambda: planner(wm.transition, wm.reward, state)),
    ):
        fn()
        sync(device)
        with torch_profile(activities=activities) as prof:
            fn()
            sync(device)
        print(f"\n### profile: one {name} ({cfg.preset} preset, {device.type}, fast flags)\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=rows))


def machine() -> str:
    try:
        load = os.getloadavg()
        load_text = f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    except OSError:
        load_text = "load n/a"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {load_text}"
    )


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def print_row(preset_name: str, r: dict[str, Any]) -> None:
    """One measured row as soon as it is done (a run cut short by a time limit keeps these)."""
    print(
        f"  [{preset_name}] {r['what']}: ref {fmt_ms(r['ref'])} / eager {fmt_ms(r['eager'])} / "
        f"fast {fmt_ms(r['fast'])} ms, max abs diff eager {r['diff_eager']:.1e} / fast "
        f"{r['diff_fast']:.1e} ({machine()})",
        file=sys.stderr,
        flush=True,
    )


def print_table(title: str, rows: list[dict[str, Any]], fast_cfg: SpeedDecision) -> None:
    flags = ",".join(n for n in FLAGS if getattr(fast_cfg, n)) or "none"
    print(f"\n### {title}\n")
    print(f"fast flags: {flags}\n")
    print(
        "| measure | reference ms | planetrl eager ms | planetrl fast ms | speed-up "
        "(ref/fast) | max abs diff eager / fast vs ref |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "ref" in r:
            unit = " (loss, rel.)" if r.get("rel") else ""
            print(
                f"| {r['what']} | {fmt_ms(r['ref'])} | {fmt_ms(r['eager'])} | "
                f"{fmt_ms(r['fast'])} | {r['ref'] / r['fast']:.2f}× | "
                f"{r['diff_eager']:.1e} / {r['diff_fast']:.1e}{unit} |"
            )
        elif "value" in r:
            print(f"| {r['what']} | {r['value']} | | | | |")
        else:
            print(f"| {r['what']} | | | | | |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "small"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--speed",
        default="auto",
        help="`auto` (default: what a run of each preset decides on this machine)"
        " or comma-separated fast flags, e.g. compile,bf16,channels_last",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--skip-envs", action="store_true")
    parser.add_argument("--skip-replay", action="store_true")
    parser.add_argument("--task", default="dmc:cheetah-run")
    parser.add_argument("--num-envs", type=int, default=5, help="N parallel envs for the env rows")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler top-k tables of one update and one plan",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--plan-envs",
        type=int,
        nargs="+",
        default=[1, 10],
        help="numbers of environments to plan for (default 1 10)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats, warmup = (2, 1) if args.quick else (5, 1)
    if device.type == "cuda":
        repeats *= 4
        print(f"device: {torch.cuda.get_device_name(device)}")
    print(f"machine: {machine()}")
    failed: list[str] = []
    for name in args.presets:
        cfg = preset(name)
        fast_cfg = parse_speed(args.speed, cfg, device)
        rows = []
        measures = [
            (
                f"plan E={n}",
                functools.partial(bench_plan, cfg, n, device, fast_cfg, repeats, warmup),
            )
            for n in args.plan_envs
        ]
        measures.append(
            (
                "update",
                functools.partial(
                    bench_update,
                    cfg,
                    device,
                    fast_cfg,
                    max(1, repeats - 2) if device.type == "cpu" else repeats,
                    warmup,
                ),
            )
        )
        measures.append(
            (
                "train update",
                functools.partial(
                    bench_train_update,
                    cfg,
                    device,
                    fast_cfg,
                    max(1, repeats - 2) if device.type == "cpu" else repeats,
                    warmup,
                ),
            )
        )
        for what, measure in measures:
            try:
                rows.append(measure())
            except Exception as err:  # noqa: BLE001  (one failing row must not hide the others)
                traceback.print_exc()
                print(f"{name} {what}: FAILED: {type(err).__name__}: {err}", flush=True)
                failed.append(f"{name} {what}")
                continue
            print_row(name, rows[-1])
        if not args.skip_replay:
            rows += bench_replay(cfg, device, args.quick)
        print_table(f"{name} preset, {device.type} ({machine()})", rows, fast_cfg)
        projected = projection(cfg, rows)
        if projected:
            print(f"\n{name}: {projected}")
        if args.profile:
            profile(cfg, device, fast_cfg)
    if not args.skip_envs:  # the same for every preset (the render mode is a row)
        rows = bench_envs(None, args.task, 50 if args.quick else 200, args.num_envs)
        print_table(f"environments ({machine()})", rows, fast_cfg)
    if failed:
        raise SystemExit(f"failed rows: {', '.join(failed)}")


if __name__ == "__main__":
    main()
