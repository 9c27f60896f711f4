"""Benchmark the replay: batches per second for PlaNet's B=50, L=50 chunks, and memory per step.

Fills a replay in a temporary folder with synthetic episodes (default 100 x 501 steps of 64x64x3
uint8 images, action size 6), then times

* ``sample_raw``: gathering the uint8 chunks (numpy), as stored;
* ``sample``: the same as a uint8 batch on the device, plus the model's preprocessing to float32
  ``(B, L, 3, 64, 64)`` there (``planetrl.preprocess.preprocess``, what ``WorldModel.preprocess``
  runs: 5-bit quantisation, dequantisation noise, centring), allocating a fresh batch each time;
* ``sample(out=...)``: the same, overwriting one preallocated batch and image tensor (no fresh
  memory per call).

Usage::

    python benchmarks/bench_replay.py                 # the table
    python benchmarks/bench_replay.py --episodes 20   # quicker
    python benchmarks/bench_replay.py --device cuda   # preprocessing on the GPU

or, from Python, ``measure_replay_rate(50, 50)`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planetrl.preprocess import preprocess
from planetrl.replay import Replay


def synthetic_episode(
    rng: np.random.Generator, length: int, image_size: int = 64, action_dim: int = 6
) -> dict[str, np.ndarray]:
    """A random episode following the design's conventions.

    Images are random 8x8 colour blocks upsampled to ``image_size`` plus mild per-pixel noise:
    random enough that nothing is trivially shared, compressible like real frames (so filling the
    folder does not dominate the benchmark).
    """
    block = max(1, image_size // 8)
    coarse = rng.integers(0, 256, (length, image_size // block, image_size // block, 3), np.uint8)
    image = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)
    image = image + rng.integers(0, 4, image.shape, dtype=np.uint8)
    action = rng.uniform(-1, 1, (length, action_dim)).astype(np.float32)
    action[0] = 0.0
    reward = rng.uniform(0, 1, length).astype(np.float32)
    reward[0] = 0.0
    is_first = np.zeros(length, dtype=bool)
    is_first[0] = True
    return {
        "image": image,
        "action": action,
        "reward": reward,
        "is_first": is_first,
        "is_terminal": np.zeros(length, dtype=bool),
    }


def fill_replay(
    directory: str | Path,
    episodes: int = 100,
    episode_length: int = 501,
    *,
    image_size: int = 64,
    action_dim: int = 6,
    seed: int = 0,
) -> tuple[Replay, float]:
    """A replay in ``directory`` holding ``episodes`` synthetic episodes; and seconds per add."""
    replay = Replay(directory, capacity=None, seed=seed)
    rng = np.random.default_rng(seed)
    spent = 0.0
    for _ in range(episodes):
        episode = synthetic_episode(rng, episode_length, image_size, action_dim)
        start = time.perf_counter()
        replay.add(episode)
        spent += time.perf_counter() - start
    return replay, spent / max(1, episodes)


def _time(
    function: Callable[[], Any], iterations: int, warmup: int = 2
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of each call (CPU time sums all threads)."""
    for _ in range(warmup):
        function()
    wall, cpu = [], []
    for _ in range(iterations):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_replay_rate(
    batch_size: int = 50,
    length: int = 50,
    *,
    episodes: int = 100,
    episode_length: int = 501,
    image_size: int = 64,
    action_dim: int = 6,
    iterations: int = 20,
    device: str | torch.device = "cpu",
    directory: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time sampling from a freshly filled replay; batches/s are from the median batch time.

    Args:
        batch_size, length: chunk batch shape (PlaNet: 50, 50).
        episodes, episode_length, image_size, action_dim: the synthetic data.
        iterations: timed batches per variant (after 2 warm-up batches).
        device: where ``sample`` preprocesses.
        directory: episode folder to fill (default: a temporary folder, removed afterwards).
        seed: data and sampling seed.

    Returns:
        A dict with ``raw_batches_per_s``, ``batches_per_s``, ``batches_per_s_reused_out``
        (median-based; ``*_best`` variants from the fastest batch; ``*cpu_ms_per_batch*`` the
        median process CPU time, all threads), ``bytes_per_step`` (memory of
        the stored data per step), ``add_seconds_per_episode``, ``reload_seconds`` (a new Replay
        on the filled folder), ``steps`` and the settings.
    """
    device = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(directory) if directory is not None else Path(tmp)
        replay, add_seconds = fill_replay(
            folder,
            episodes,
            episode_length,
            image_size=image_size,
            action_dim=action_dim,
            seed=seed,
        )
        start = time.perf_counter()
        reloaded = Replay(folder, capacity=None, seed=seed)
        reload_seconds = time.perf_counter() - start
        assert reloaded.num_steps == replay.num_steps
        del reloaded

        def raw() -> None:
            replay.sample_raw(batch_size, length)

        noise = np.random.default_rng(seed)

        def full() -> None:
            preprocess(replay.sample(batch_size, length, device).image, 5, noise)
            _sync(device)

        out = replay.sample(batch_size, length, device)
        image_out = preprocess(out.image, 5, noise)

        def reused() -> None:
            preprocess(
                replay.sample(batch_size, length, device, out=out).image, 5, noise, out=image_out
            )
            _sync(device)

        times = {
            name: _time(fn, iterations)
            for name, fn in (("raw", raw), ("full", full), ("reused", reused))
        }
        result: dict[str, Any] = {
            "batch_size": batch_size,
            "length": length,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "steps": replay.num_steps,
            "bytes_per_step": replay.nbytes / replay.num_steps,
            "add_seconds_per_episode": add_seconds,
            "reload_seconds": reload_seconds,
        }
        for name, key in (
            ("raw", "raw_batches_per_s"),
            ("full", "batches_per_s"),
            ("reused", "batches_per_s_reused_out"),
        ):
            wall, cpu = times[name]
            result[key] = 1.0 / statistics.median(wall)
            result[key + "_best"] = 1.0 / min(wall)
            result[key.replace("batches_per_s", "cpu_ms_per_batch")] = 1e3 * statistics.median(cpu)
        result["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--episode-length", type=int, default=501)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    r = measure_replay_rate(
        args.batch_size,
        args.length,
        episodes=args.episodes,
        episode_length=args.episode_length,
        iterations=args.iterations,
        device=args.device,
    )
    batch_mb = args.batch_size * args.length * 64 * 64 * 3 * 4 / 1e6
    print(
        f"replay: {r['steps']} steps in memory, {r['bytes_per_step']:.0f} bytes/step "
        f"({r['bytes_per_step'] / 1e3:.2f} GB per 1M steps); "
        f"add {r['add_seconds_per_episode'] * 1e3:.0f} ms/episode; "
        f"reload {r['reload_seconds']:.2f} s; torch threads {r['torch_threads']}"
    )
    print(
        f"B={r['batch_size']} L={r['length']} device={r['device']} (float batch {batch_mb:.0f} MB)"
    )
    print(f"{'variant':<32}{'batches/s (median)':>20}{'batches/s (best)':>18}{'CPU ms/batch':>14}")
    for label, key in (
        ("sample_raw (uint8 gather)", "raw_batches_per_s"),
        ("sample (gather + preprocess)", "batches_per_s"),
        ("sample(out=...) reused batch", "batches_per_s_reused_out"),
    ):
        cpu = r[key.replace("batches_per_s", "cpu_ms_per_batch")]
        print(f"{label:<32}{r[key]:>20.1f}{r[key + '_best']:>18.1f}{cpu:>14.0f}")
    if r["load_average_1min"] is not None:
        print(
            f"(1-min load average at the end: {r['load_average_1min']:.1f}; other processes "
            f"on the machine slow the wall-clock figures)"
        )


if __name__ == "__main__":
    main()
