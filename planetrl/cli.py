"""The ``planetrl`` command.

    planetrl train --task dmc:cartpole-swingup --logdir runs/NAME [--preset paper|small] [overrides]
    planetrl eval --logdir runs/NAME --episodes N [--video]
    planetrl suite dmc100k --dir runs/dmc100k [--preset small] [--seeds N] [--tasks ...]
    planetrl tasks

``planetrl train --help`` documents every option (the paper's symbol is in each help text); the
defaults shown are those of the chosen preset (``--preset small --help``). Rerunning the same train
command on the same logdir resumes the run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

USAGE = """usage: planetrl {train,eval,suite,tasks} ...

PlaNet (Hafner et al., 2019): learn latent dynamics from pixels and plan in latent space.

commands:
  train   train an agent (Algorithm 1), or resume the run in --logdir
  eval    evaluate a trained run without exploration noise
  suite   train a benchmark suite (e.g. dmc100k) on Ray and report it beside published figures
  tasks   list the task names

`planetrl COMMAND --help` documents each command's options.
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"planetrl: error: {message}", file=sys.stderr)
    return code


class _ParseError(Exception):
    pass


def _quiet_tyro(parse):
    """Run a tyro parse; turn its boxed error message into one line (:class:`_ParseError`)."""
    import contextlib
    import io
    import re

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return parse()
    except SystemExit as exit_:
        if not exit_.code:
            raise
        lines = []
        for line in captured.getvalue().splitlines():
            text = re.sub(r"[\u2500-\u257f]", "", line).strip()
            if not text and lines:
                continue
            if "Argument helptext" in text or text.startswith("For full helptext"):
                break
            if text:
                lines.append(text)
        message = " ".join(lines[1:] if len(lines) > 1 else lines) or "invalid arguments"
        raise _ParseError(re.sub(r"\s+", " ", message)) from None


def _train(argv: list[str]) -> int:
    import tyro

    from planetrl.config import PRESETS, Config, ConfigError, preset

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="paper")
    pre.add_argument("--allow-config-change", action="store_true")
    pre.add_argument("--no-progress", action="store_true")
    known, rest = pre.parse_known_args(argv)
    if known.preset not in PRESETS:
        return _fail(f"unknown preset {known.preset!r}; accepted: {', '.join(PRESETS)}")
    description = (
        "Train PlaNet (Algorithm 1) or resume the run in --logdir. Extra flags: "
        "--allow-config-change (resume with changed hyperparameters), --no-progress (no progress "
        "bar). Defaults below are those of --preset " + known.preset + "."
    )
    try:
        config = _quiet_tyro(
            lambda: tyro.cli(
                Config,
                default=preset(known.preset),
                args=rest + ["--preset", known.preset],
                prog="planetrl train",
                description=description,
            )
        )
    except _ParseError as err:
        return _fail(f"{err}; see `planetrl train --help`")
    try:
        config.validate()
        from planetrl.envs import parse_task

        parse_task(config.task)
    except (ConfigError, ValueError) as err:
        return _fail(str(err))

    from planetrl.replay import EpisodeFileError
    from planetrl.training.io import CheckpointError
    from planetrl.training.loop import NonFiniteLossError, train

    try:
        summary = train(
            config, allow_config_change=known.allow_config_change, progress=not known.no_progress
        )
    except NonFiniteLossError as err:
        return _fail(str(err), code=3)
    except (ConfigError, CheckpointError, EpisodeFileError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("planetrl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    evaluation = summary.get("eval")
    tail = f", last eval return {evaluation['eval/return']:.1f}" if evaluation else ""
    print(
        f"done: {summary['episodes']} episodes, {summary['env_steps']} env steps, "
        f"{summary['updates']} updates{tail}; run directory {config.logdir}"
    )
    return 0


def _eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="planetrl eval",
        description="Evaluate a trained run: M episodes with no exploration noise, the "
        "environments stepped in parallel and planned for in one batch.",
    )
    parser.add_argument("--logdir", required=True, help="run directory written by `planetrl train`")
    parser.add_argument("--episodes", type=int, default=5, help="M, evaluation episodes (default 5)")
    parser.add_argument("--video", action="store_true", help="write an mp4 of the episodes")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation episodes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--serial", action="store_true", help="step the envs in this process")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (0 = auto: the free cores; default: the run's "
                             "`threads` setting)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        return _fail(f"--episodes must be a positive integer, got {args.episodes}")
    if args.threads is not None and args.threads < 0:
        return _fail(f"--threads must be >= 0 (0 = auto), got {args.threads}")

    import numpy as np
    import torch

    from planetrl import speed
    from planetrl.config import ConfigError
    from planetrl.speed.threads import ThreadGovernor
    from planetrl.training.io import CheckpointError
    from planetrl.training.logger import mp4_available, note_no_mp4, write_gif, write_mp4
    from planetrl.training.loop import build_planner, evaluate, load_run
    from planetrl.training.progress import Progress

    try:
        config, world_model = load_run(args.logdir, device=args.device)
    except (ConfigError, CheckpointError) as err:
        return _fail(str(err))
    device = next(world_model.parameters()).device
    threads = ThreadGovernor(config.threads if args.threads is None else args.threads)
    threads.adjust()
    fast = speed.resolve(config.speed, device)
    print(f"{fast.describe()}\n  {'threads':<13} {threads.threads:<3}  ({threads.reason})")
    planner = build_planner(config, torch.Generator(device=device).manual_seed(args.seed), device,
                            fast)
    bar = Progress(not args.no_progress)
    try:
        returns, frames, timing = evaluate(
            config, world_model, episodes=args.episodes, seed=args.seed, planner=planner,
            parallel=not args.serial, record=args.video,
            on_step=lambda step, _: bar.phase(f"eval ({args.episodes} episodes): step {step}"),
        )
    finally:
        bar.close()
    print(f"task {config.task}: return {np.mean(returns):.1f} ± {np.std(returns):.1f} over "
          f"{len(returns)} episodes ({', '.join(f'{r:.1f}' for r in returns)}); "
          f"{timing['eval/ms_per_plan']:.0f} ms per plan")
    if args.video and frames is not None:
        from pathlib import Path

        mp4 = mp4_available()
        path = Path(args.logdir) / "videos" / f"eval-seed{args.seed}.{'mp4' if mp4 else 'gif'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if mp4:
            write_mp4(path, frames)
        else:
            note_no_mp4("a GIF instead")
            write_gif(path, frames)
        print(f"video: {path}")
    return 0


def _suite(argv: list[str]) -> int:
    import tyro

    from planetrl.suite.args import SuiteArgs

    try:
        args = _quiet_tyro(lambda: tyro.cli(SuiteArgs, args=argv, prog="planetrl suite"))
    except _ParseError as err:
        return _fail(f"{err}; see `planetrl suite --help`")

    from planetrl.config import ConfigError
    from planetrl.suite import SuiteError, builtin, run_suite, write_report

    directory = args.dir or f"runs/suite-{args.name}"
    try:
        suite = builtin(args.name, preset=args.preset, seeds=args.seeds, env_steps=args.env_steps,
                        tasks=args.tasks)
        if args.attribute_episodes < 1:
            return _fail(f"--attribute-episodes must be a positive integer, got "
                         f"{args.attribute_episodes}")
        if args.report_only:
            for path in write_report(directory):
                print(path)
            return 0
        run_suite(suite, directory, address=args.address, cpus_per_run=args.cpus_per_run,
                  gpus_per_run=args.gpus_per_run, max_retries=args.max_retries)
        if args.attribute:
            from planetrl.suite.attribution import attribute_suite

            attribute_suite(suite, directory, episodes=args.attribute_episodes)
            write_report(directory)
    except (ConfigError, SuiteError, ValueError) as err:
        return _fail(str(err))
    except FileNotFoundError as err:
        return _fail(f"{err}; is {directory} a suite directory?")
    except KeyboardInterrupt:
        print("planetrl: interrupted; rerun the same command to continue the suite",
              file=sys.stderr)
        return 130
    print(f"suite {args.name}: done; report in {directory}/results.md")
    return 0


def _tasks(argv: list[str]) -> int:
    from planetrl.envs import default_action_repeat, list_tasks

    for task in list_tasks():
        print(f"{task}  (action repeat {default_action_repeat(task)})")
    print("gym:<id>  any Gymnasium environment with a continuous action space and rgb_array rendering")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"train": _train, "eval": _eval, "suite": _suite, "tasks": _tasks}
    if command not in commands:
        return _fail(f"unknown command {command!r}; accepted: {', '.join(commands)}")
    return commands[command](rest)


if __name__ == "__main__":
    sys.exit(main())
