"""The ``planetrl`` command.

    planetrl train --task dmc:cartpole-swingup --logdir runs/NAME [--preset paper|small] [overrides]
    planetrl train --agent worldmodels --task dmc:cartpole-swingup --logdir runs/NAME [...]
    planetrl eval --logdir runs/NAME --episodes N [--video]
    planetrl suite dmc100k --dir runs/dmc100k [--preset small] [--seeds N] [--tasks ...]
    planetrl compare --task T --agents planet,worldmodels --env-steps N --seeds K [--dir D]
    planetrl screen --run RUN --dir D --variants base 'NAME={"model.reward_hidden": 400}'
    planetrl snapshot pack --source RUN_OR_SUITE --snapshot S
    planetrl snapshot restore --snapshot S --destination D
    planetrl tasks

``planetrl train --help`` documents every option (the paper's symbol is in each help text); the
defaults shown are those of the chosen preset (``--preset small --help``). Rerunning the same train
command on the same logdir resumes the run.

The command functions import what they run inside their bodies, on purpose: ``import
planetrl.cli`` takes 0.13-0.16 s, ``import planetrl.training.loop`` (torch, MuJoCo, dm_control)
8.6-10.2 s (measured 2026-12-07 on a 2-core AMD EPYC Zen 3 with a suite running beside), so
``planetrl --help``, ``planetrl tasks`` and an argument error answer at once.

A parse error is reported as one line by reading tyro's framed message
(:func:`one_line_error`, which relies on the frame's shape only and is tested against tyro's
output). tyro 1.0's only structured alternative, ``tyro._errors.on_parse_error``, is private and
documented as changing without notice, so the text is read instead.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

USAGE = """usage: planetrl {train,eval,suite,compare,screen,snapshot,tasks} ...

PlaNet (Hafner et al., 2019): learn latent dynamics from pixels and plan in latent space;
World Models (Ha & Schmidhuber, 2018) beside it (`planetrl train --agent worldmodels`).

commands:
  train   train an agent (PlaNet's Algorithm 1, or World Models), or resume the run in --logdir
  eval    evaluate a trained run without exploration noise
  suite   train a benchmark suite (e.g. dmc100k) on Ray and report it beside published figures
  compare train PlaNet and World Models on one task, budget and seeds; compare returns, sizes,
          env steps per stage and the dynamics models' open-loop errors
  screen  rank world-model variants on a run's fixed replay by their open-loop reward error
          on the episodes the run collected next (minutes per variant, no acting)
  snapshot  pack a run (or a suite's runs) into a compact, checked snapshot that another
          machine restores and resumes: the replay travels as reset seeds and actions
  tasks   list the task names

`planetrl COMMAND --help` documents each command's options.
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"planetrl: error: {message}", file=sys.stderr)
    return code


class _ParseError(Exception):
    pass


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOX = re.compile(r"[\u2500-\u257f]")  # box drawing: tyro frames its messages with them
_SIDES = "\u2502\u2503\u2551"  # │ ┃ ║: the sides of a frame, around its text
_MAX_MESSAGE = 400


def one_line_error(text: str) -> str:
    """The message of a command-line parser's error output, as one line.

    Written against tyro's framed output (tested with tyro 1.0: a frame titled with the kind of
    error, the message, then rule-separated sections of argument help and a pointer to
    ``--help``), relying only on its shape: colour codes are removed; a line that starts with a
    box-drawing character other than a frame's side (the frame's top, whose text is a title, or
    bottom) or holds only box-drawing characters between the sides (a rule) ends a block; the
    message is the first block of text, without the frame's sides.
    Unframed output (argparse's ``usage: ...`` then ``prog: error: message``) gives the text
    after the last ``error:``; anything else its last line. Collapsed to one line, at most
    400 characters."""
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    if any(_BOX.match(line) for line in lines):
        blocks: list[list[str]] = [[]]
        for line in lines:
            inner = line.strip(_SIDES + " ")
            content = _BOX.sub("", inner).strip()
            edge = bool(_BOX.match(line)) and line[0] not in _SIDES
            if edge or (inner and not content):
                blocks.append([])  # the frame's top or bottom, or a rule: a new block
            elif content:
                blocks[-1].append(content)
        texts = [" ".join(block) for block in blocks if block]
        message = texts[0] if texts else ""
    else:
        errors = [line.split("error:", 1)[1] for line in lines if "error:" in line]
        texts = [line for line in lines if line]
        message = errors[-1] if errors else (texts[-1] if texts else "")
    message = re.sub(r"\s+", " ", message).strip() or "invalid arguments"
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3].rstrip() + "..."
    return message


def _parse(cls: Any, argv: list[str], prog: str, **kwargs: Any) -> Any:
    """``tyro.cli(cls, args=argv, prog=prog, **kwargs)`` with its error output turned into one
    line that points to ``prog --help`` (a :class:`_ParseError`, which :func:`main` reports with
    exit status 2; see :func:`one_line_error`). Help (exit status 0) goes through unchanged."""
    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=argv, prog=prog, **kwargs)
    except SystemExit as exit_:
        if not exit_.code:
            raise
        raise _ParseError(f"{one_line_error(captured.getvalue())}; see `{prog} --help`") from None


def json_object_registry():
    """A tyro constructor registry that reads ``dict[str, Any]`` fields (``Config.env_kwargs``)
    as one JSON object argument, e.g. ``--env-kwargs '{"frame_skip": 4}'``."""
    import json

    from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec

    def parse(args: list[str]) -> dict:
        try:
            value = json.loads(args[0])
        except json.JSONDecodeError as err:
            raise ValueError(
                f"expected a JSON object such as '{{\"frame_skip\": 4}}': {err}"
            ) from None
        if not isinstance(value, dict):
            raise ValueError(
                f"expected a JSON object such as '{{\"frame_skip\": 4}}', got {args[0]}"
            )
        return value

    registry = ConstructorRegistry()

    @registry.primitive_rule
    def _json_object(info):
        if info.type != dict[str, Any]:
            return None
        return PrimitiveConstructorSpec(
            nargs=1,
            metavar="JSON",
            instance_from_str=parse,
            is_instance=lambda value: isinstance(value, dict),
            str_from_instance=lambda value: [json.dumps(value)],
        )

    return registry


@dataclass
class TrainFlags:
    """The flags of `planetrl train` that are not config fields (parsed first)."""

    agent: str = "planet"
    """The agent: `planet` (PlaNet) or `worldmodels` (World Models; `planetrl train --agent
    worldmodels --help` documents its options)."""
    preset: str = "paper"
    """The preset whose values are the defaults (also the config field ``preset``)."""
    allow_config_change: bool = False
    """Resume with changed hyperparameters."""
    progress: bool = True
    """Show the progress bar (--no-progress: none)."""


def _train(argv: list[str]) -> int:
    """What `planetrl train` does for every agent: parse the flags that are not config fields,
    then the agent's config from the rest (its preset's values as the defaults), validate it
    and its task, then run the agent's :meth:`~planetrl.agents.AgentKind.train` (create or
    resume the run) and print the amounts of the summary it returns, with the last
    evaluation's return. Exit status: 0 done; 2 a bad option or config, or a run directory
    that cannot be resumed (another config, a corrupt checkpoint or episode file); 3 a
    non-finite loss; 130 interrupted."""
    from planetrl.agents import check_agent, check_agent_preset, kind
    from planetrl.config import ConfigError

    # First the flags that are not config fields, and the preset that sets the defaults.
    known, rest = _parse(
        TrainFlags, argv, "planetrl train", add_help=False, return_unknown_args=True
    )
    try:
        check_agent_preset(check_agent(known.agent), known.preset)
        agent = kind(known.agent)
    except ConfigError as err:
        return _fail(str(err))
    default = TrainFlags.agent  # the default agent's help is plain `planetrl train --help`
    prog = "planetrl train" + ("" if known.agent == default else f" --agent {known.agent}")
    config = _parse(
        agent.config_class,
        rest + ["--preset", known.preset],
        prog,
        default=agent.preset(known.preset),
        description=f"{agent.description} Defaults below are those of --preset {known.preset}.",
        registry=json_object_registry(),
    )
    try:
        config.validate()
        from planetrl.envs import check_task

        check_task(config.task)
    except (ConfigError, ValueError) as err:
        return _fail(str(err))

    from planetrl.replay import EpisodeFileError
    from planetrl.run.checkpoint import CheckpointError

    try:
        summary = agent.train(
            config, allow_config_change=known.allow_config_change, progress=known.progress
        )
    except agent.non_finite_error as err:
        return _fail(str(err), code=3)
    except (ConfigError, CheckpointError, EpisodeFileError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("planetrl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    evaluation = summary.get("eval")
    tail = f", last eval return {evaluation['eval/return']:.1f}" if evaluation else ""
    print(f"done: {agent.counts(summary)}{tail}; run directory {config.logdir}")
    return 0


@dataclass
class EvalArgs:
    """Evaluate a trained run: M episodes with no exploration noise, the environments stepped in
    parallel and planned for in one batch."""

    logdir: str
    """Run directory written by `planetrl train`."""
    episodes: int = 5
    """M, evaluation episodes."""
    video: bool = False
    """Write an mp4 of the episodes (<logdir>/videos/eval-seed<seed>.mp4)."""
    seed: int = 12345
    """Seed of the evaluation episodes."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    serial: bool = False
    """Step the envs in this process."""
    threads: int | None = None
    """Torch CPU threads (0 = auto: the free cores; default: the run's `threads` setting)."""
    progress: bool = True
    """Show the progress line (--no-progress: none)."""
    task: str | None = None
    """Act in this task instead of the run's: a PlaNet run trained with --sibling-rewards plans
    for a sibling task (e.g. dmc:walker-run after training on dmc:walker-walk) with the reward
    head its world model learned for it, with zero env steps of that task in training."""


def _eval(argv: list[str]) -> int:
    args = _parse(
        EvalArgs, argv, "planetrl eval", description=" ".join((EvalArgs.__doc__ or "").split())
    )
    if args.episodes < 1:
        return _fail(f"--episodes must be a positive integer, got {args.episodes}")
    if args.threads is not None and args.threads < 0:
        return _fail(f"--threads must be >= 0 (0 = auto), got {args.threads}")

    from pathlib import Path

    import numpy as np

    from planetrl.agents import kind, read_agent
    from planetrl.config import ConfigError
    from planetrl.run.checkpoint import CheckpointError
    from planetrl.run.progress import Progress

    bar = Progress(args.progress)
    try:
        agent = kind(read_agent(Path(args.logdir) / "config.json"))
        result = agent.evaluate(
            args.logdir,
            episodes=args.episodes,
            seed=args.seed,
            device=args.device,
            parallel=not args.serial,
            record=args.video,
            threads=args.threads,
            on_step=lambda step: bar.phase(f"eval ({args.episodes} episodes): step {step}"),
            **({"task": args.task} if args.task else {}),
        )
    except (ConfigError, CheckpointError, ValueError, ImportError) as err:  # env errors too
        return _fail(str(err))
    finally:
        bar.close()
    returns = result.returns
    detail = f"; {result.detail}" if result.detail else ""
    named = "" if agent.name == TrainFlags.agent else f" ({agent.name})"  # as before the seam
    print(
        f"task {result.task}{named}: return {np.mean(returns):.1f} ± "
        f"{np.std(returns):.1f} over {len(returns)} episodes "
        f"({', '.join(f'{r:.1f}' for r in returns)}){detail}"
    )
    if args.video and result.frames is not None:
        _save_eval_video(args, result.frames)
    return 0


def _save_eval_video(args: EvalArgs, frames) -> None:
    """<logdir>/videos/eval-seed<seed>.mp4, or a GIF where imageio-ffmpeg is missing."""
    from pathlib import Path

    from planetrl.run.logger import mp4_available, note_no_mp4, write_gif, write_mp4

    mp4 = mp4_available()
    path = Path(args.logdir) / "videos" / f"eval-seed{args.seed}.{'mp4' if mp4 else 'gif'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if mp4:
        write_mp4(path, frames)
    else:
        note_no_mp4("a GIF instead")
        write_gif(path, frames)
    print(f"video: {path}")


def _suite(argv: list[str]) -> int:
    from planetrl.suite.args import SuiteArgs

    args = _parse(SuiteArgs, argv, "planetrl suite")

    from planetrl.config import ConfigError
    from planetrl.suite import SuiteError, builtin, run_suite, write_report

    directory = args.dir or f"runs/suite-{args.name}"
    try:
        suite = builtin(
            args.name,
            preset=args.preset,
            seeds=args.seeds,
            tasks=args.tasks,
            **({} if args.env_steps is None else {"env_steps": args.env_steps}),
        )
        if args.attribute_episodes < 1:
            return _fail(
                f"--attribute-episodes must be a positive integer, got {args.attribute_episodes}"
            )
        if (args.merge or args.export) and not args.report_only:
            return _fail(
                "--merge and --export write a report from existing run directories: "
                "use them with --report-only"
            )
        if not args.report_only:
            run_suite(
                suite,
                directory,
                address=args.address,
                cpus_per_run=args.cpus_per_run,
                gpus_per_run=args.gpus_per_run,
                max_retries=args.max_retries,
                reuse=args.reuse or [],
            )
        elif args.reuse:
            from planetrl.suite.runner import link_reused_runs
            from planetrl.suite.spec import merge_suite

            link_reused_runs(merge_suite(Path(directory), suite), Path(directory), args.reuse)
        if args.attribute:
            from planetrl.suite.attribution import attribute_suite

            attribute_suite(suite, directory, episodes=args.attribute_episodes)
        if args.report_only or args.attribute:
            merge = args.merge or []
            if args.export:
                from planetrl.suite.report import export, load_sources

                directory = str(export(load_sources(directory, merge), args.export))
                merge = []
            for path in write_report(directory, merge):
                print(path)
    except (ConfigError, SuiteError, ValueError) as err:
        return _fail(str(err))
    except FileNotFoundError as err:
        return _fail(f"{err}; is {directory} a suite directory?")
    except KeyboardInterrupt:
        print(
            "planetrl: interrupted; rerun the same command to continue the suite", file=sys.stderr
        )
        return 130
    print(f"suite {args.name}: done; report in {directory}/results.md")
    return 0


def _compare(argv: list[str]) -> int:
    from planetrl.suite.args import CompareArgs

    args = _parse(CompareArgs, argv, "planetrl compare")

    import re

    from planetrl.config import ConfigError
    from planetrl.suite import SuiteError, run_suite
    from planetrl.suite.compare import compare_suite, write_compare_report

    directory = args.dir or f"runs/compare-{re.sub(r'[^A-Za-z0-9_.-]+', '-', args.task)}"
    for name in ("heldout_episodes", "context", "horizon"):
        if getattr(args, name) < 1:
            return _fail(
                f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}"
            )
    try:
        agents = [a.strip() for a in args.agents.split(",") if a.strip()]
        suite = compare_suite(
            args.task,
            agents,
            env_steps=args.env_steps,
            seeds=args.seeds,
            preset=args.preset,
            eval_every_env_steps=args.eval_every_env_steps,
            eval_episodes=args.eval_episodes,
        )
        if not args.report_only:
            run_suite(
                suite,
                directory,
                address=args.address,
                cpus_per_run=args.cpus_per_run,
                gpus_per_run=args.gpus_per_run,
                max_retries=args.max_retries,
            )
        else:
            from pathlib import Path

            if not (Path(directory) / "suite.json").exists():
                return _fail(f"{directory} holds no comparison yet (no suite.json)")
        paths = write_compare_report(
            directory, heldout=args.heldout_episodes, context=args.context, horizon=args.horizon
        )
    except (ConfigError, SuiteError, ValueError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print(
            "planetrl: interrupted; rerun the same command to continue the comparison",
            file=sys.stderr,
        )
        return 130
    for path in paths:
        print(path)
    print(f"compare: done; report in {directory}/compare.md")
    return 0


@dataclass
class ScreenArgs:
    """Rank world-model variants before any long run: train a fresh model per variant and seed
    on a PlaNet run's first episodes, score it by the open-loop reward error over the planner's
    horizon on the episodes the run collected next (held out) and on the replay. Rerunning the
    same command skips the finished variants. Writes screen.md and screen.csv in --dir."""

    run: str
    """The PlaNet run directory whose episodes are screened on (its config is the base)."""
    dir: str
    """The screen's directory (settings, results per variant and seed, the table)."""
    variants: list[str]
    """NAME (the run's own config) or NAME=JSON, a JSON object of dotted config fields, e.g.
    base 'wide-reward={"model.reward_hidden": 400}' 'fn1={"loss.free_nats": 1.0}'."""
    train_episodes: int = 40
    """K: the run's first K episodes are the replay."""
    heldout_episodes: int = 10
    """M: the next M episodes are held out (scored on, never trained on)."""
    updates: int = 1000
    """Updates per variant and seed (B × L chunks as the variant's config says)."""
    score_every: int = 250
    """Score every this many updates (and at the end): the held-out error's curve."""
    seeds: int = 1
    """Seeds per variant (0 .. N-1); 2+ give the held-out error an interval."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""


def _screen(argv: list[str]) -> int:
    args = _parse(ScreenArgs, argv, "planetrl screen")

    from planetrl.config import ConfigError
    from planetrl.suite.screen import parse_variant, run_screen

    try:
        variants = [parse_variant(v) for v in args.variants]
        rows = run_screen(
            args.run,
            args.dir,
            variants,
            train_episodes=args.train_episodes,
            heldout_episodes=args.heldout_episodes,
            updates=args.updates,
            score_every=args.score_every,
            seeds=args.seeds,
            device=args.device,
        )
    except (ConfigError, ValueError) as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        print("planetrl: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    best = rows[0] if rows else None
    tail = f"; best held-out MSE: {best['variant']} {best['heldout_mse']:.4g}" if best else ""
    print(f"screen: {len(rows)} variants in {args.dir}/screen.md{tail}")
    return 0


@dataclass
class SnapshotPackArgs:
    """Pack a run directory, or every run of a suite directory, into a compact snapshot: the
    replay as each episode's reset seed and actions (re-simulated and checked first; an episode
    that does not re-simulate exactly is kept whole), the checkpoint and the small files. A
    finished run of a suite keeps its small files only. The run must not be training. Packing
    into the same snapshot again re-simulates only the new episodes."""

    source: str
    """The run directory, or the suite directory (with suite.json), to pack."""
    snapshot: str
    """The snapshot's directory (new, or a snapshot of the same source to update)."""
    finished_state: bool = False
    """Keep the checkpoints and replays of a suite's finished runs too (to transfer them)."""


@dataclass
class SnapshotRestoreArgs:
    """Restore a snapshot into a run (or suite) directory, re-simulating its episodes and
    checking each against its sha256; then resume the run with its usual command."""

    snapshot: str
    """The snapshot's directory (written by `planetrl snapshot pack`)."""
    destination: str
    """The run directory to make (new), or the suite directory (runs already there are kept)."""
    accept_mismatch: bool = False
    """Keep episodes that re-simulate differently here (another CPU's renderer, say): a valid
    replay of the same actions, no longer the one the run saw; restored.json lists them."""


def _snapshot(argv: list[str]) -> int:
    actions = {"pack": SnapshotPackArgs, "restore": SnapshotRestoreArgs}
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: planetrl snapshot {pack,restore} ...; `planetrl snapshot pack --help`")
        return 0 if argv else 2
    if argv[0] not in actions:
        return _fail(f"unknown snapshot action {argv[0]!r}; accepted: {', '.join(actions)}")
    args = _parse(actions[argv[0]], argv[1:], f"planetrl snapshot {argv[0]}")

    from planetrl.config import ConfigError
    from planetrl.run.checkpoint import CheckpointError
    from planetrl.suite.snapshot import SnapshotError, pack, restore

    try:
        if isinstance(args, SnapshotPackArgs):
            runs = pack(args.source, args.snapshot, finished_state=args.finished_state)
            print(f"snapshot: {len(runs)} run(s) packed into {args.snapshot}")
        else:
            runs = restore(args.snapshot, args.destination, accept_mismatch=args.accept_mismatch)
            print(f"snapshot: {len(runs)} run(s) restored into {args.destination}")
    except (SnapshotError, ConfigError, CheckpointError, ValueError, OSError) as err:
        return _fail(str(err))
    return 0


def _tasks(argv: list[str]) -> int:
    from planetrl.envs import default_action_repeat, list_tasks

    for task in list_tasks():
        print(f"{task}  (action repeat {default_action_repeat(task)})")
    print(
        "gym:<id>  any Gymnasium environment with a continuous action space and rgb_array rendering"
    )
    print("gym:<module>:<id>  the same, registered by importing <module> (e.g. your own envs)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {
        "train": _train,
        "eval": _eval,
        "suite": _suite,
        "compare": _compare,
        "screen": _screen,
        "snapshot": _snapshot,
        "tasks": _tasks,
    }
    if command not in commands:
        return _fail(f"unknown command {command!r}; accepted: {', '.join(commands)}")
    try:
        return commands[command](rest)
    except _ParseError as err:  # a command's options did not parse (see _parse)
        return _fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
