"""Peak memory of World Models' V and M stages against the replay's size, with the replay held in
memory (``collect.memory_steps = 0``) and streamed from its files (a limit).

    python benchmarks/wm_memory.py --episodes 30 90 --memory-steps 0 2000 \
        --out docs/results/wm-memory

For each replay size it writes a synthetic replay of that many 1,000-step CarRacing-sized
episodes (64 × 64 frames of a moving pattern, so the files compress like real ones do not need
to), then for each ``memory_steps`` runs, in a fresh process, the `paper` preset's V (z = 32,
depth 32, batch 100) for ``--vae-updates`` updates (crossing several blocks when streaming) and
M's encoding of every episode, and reads the process's peak resident memory
(``ru_maxrss``). Writes ``memory.csv`` and ``summary.json`` (the CPU model, the commit, and the
per-frame costs fitted from the rows: frames in memory and the encoded series).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planetrl.episodes import save_episode  # noqa: E402

LENGTH = 1000
TASK = "gym:CarRacing-v3"


def synthetic_episode(index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    t = np.arange(LENGTH + 1)
    image = np.zeros((LENGTH + 1, 64, 64, 3), np.uint8)
    image[..., 1] = 100  # grass
    x = (20 + 10 * np.sin(t / 50 + index)).astype(int)
    for k, xi in enumerate(x):
        image[k, 20:44, xi : xi + 24] = (105, 105, 105)  # the road, drifting
        image[k, 40:48, 28:36] = (200, 0, 0)  # the car
    action = rng.uniform(-1, 1, (LENGTH + 1, 3)).astype(np.float32)
    action[0] = 0
    reward = rng.normal(0, 1, LENGTH + 1).astype(np.float32)
    reward[0] = 0
    first = np.zeros(LENGTH + 1, bool)
    first[0] = True
    return {
        "image": image,
        "action": action,
        "reward": reward,
        "is_first": first,
        "is_terminal": np.zeros(LENGTH + 1, bool),
    }


def measure(logdir: str, episodes: int, memory_steps: int, vae_updates: int) -> dict:
    """In this (fresh) process: V's updates and M's encoding; the peak resident memory."""
    import torch

    from planetrl.worldmodels.config import preset
    from planetrl.worldmodels.trainer import WorldModelsTrainer

    torch.set_num_threads(1)
    config = preset("paper")
    config.task, config.logdir, config.device, config.threads = TASK, logdir, "cpu", 1
    config.collect.episodes, config.collect.memory_steps = episodes, memory_steps
    config.eval.video = False
    trainer = WorldModelsTrainer(config, allow_config_change=True, progress=False)
    try:
        frames = trainer.replay.num_steps
        start = time.time()
        for k in range(vae_updates):
            images = trainer.vae_batch(k)
            x = trainer.vae.preprocess(torch.from_numpy(images))
            loss = trainer.vae.loss(x, 0.5, trainer.vae_generator).loss
            trainer.vae_optimizer.zero_grad()
            loss.backward()
            trainer.vae_optimizer.step()
        v_seconds = time.time() - start
        start = time.time()
        encoded = trainer.encoded()
        m_seconds = time.time() - start
        encoded_bytes = sum(
            t.element_size() * t.numel()
            for e in encoded
            for t in e  # mean, logvar, ...
        )
    finally:
        trainer.close()
    return {
        "episodes": episodes,
        "replay_frames": episodes * (LENGTH + 1),
        "memory_steps": memory_steps,
        "frames_in_replay_memory": frames,
        "vae_updates": vae_updates,
        "encoded_mb": encoded_bytes / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vae_seconds": round(v_seconds, 1),
        "encode_seconds": round(m_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[30, 90])
    parser.add_argument("--memory-steps", type=int, nargs="+", default=[0, 2000])
    parser.add_argument("--vae-updates", type=int, default=60)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        logdir, episodes, memory_steps, updates = args.child
        row = measure(logdir, int(episodes), int(memory_steps), int(updates))
        print("ROW " + json.dumps(row), flush=True)
        return 0

    from planetrl.suite.runner import code_version, cpu_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for episodes in sorted(args.episodes):
            run = Path(tmp) / f"run{episodes}"
            for index in range(episodes):
                if not list((run / "episodes").glob(f"{index:06d}-*.npz")):
                    save_episode(run / "episodes", index, synthetic_episode(index))
            for memory_steps in args.memory_steps:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--out",
                        str(args.out),
                        "--child",
                        str(run),
                        str(episodes),
                        str(memory_steps),
                        str(args.vae_updates),
                    ],
                    capture_output=True,
                    text=True,
                )
                lines = [x for x in out.stdout.splitlines() if x.startswith("ROW ")]
                if out.returncode or not lines:
                    raise SystemExit(out.stderr[-3000:])
                row = json.loads(lines[-1][4:])
                rows.append(row)
                print(row, flush=True)
                # a later memory_steps reuses the directory: forget the config it saved
                (run / "config.json").unlink(missing_ok=True)
                (run / "checkpoint.pt").unlink(missing_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "memory.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    encoded_per_frame = np.mean([r["encoded_mb"] * 2**20 / r["replay_frames"] for r in rows])
    summary = {
        "cpu": cpu_model(),
        "commit": code_version(),
        "rows": rows,
        "encoded_bytes_per_frame": round(float(encoded_per_frame), 1),
        "frame_bytes": 64 * 64 * 3,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
