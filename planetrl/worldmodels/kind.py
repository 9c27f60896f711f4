"""World Models as an :class:`~planetrl.agents.AgentKind`: its config
(:mod:`planetrl.worldmodels.config`), its staged trainer (:mod:`planetrl.worldmodels.trainer`),
its budget within a suite, and its parts for the comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from planetrl.agents import AgentKind, Evaluation
from planetrl.config import ConfigError
from planetrl.run.checkpoint import load_checkpoint
from planetrl.threads import ThreadGovernor
from planetrl.worldmodels import config as wm_config
from planetrl.worldmodels import trainer
from planetrl.worldmodels.config import WorldModelsConfig
from planetrl.worldmodels.diagnostics import open_loop_prediction


class WorldModelsKind(AgentKind):
    name = "worldmodels"
    title = "World Models"
    presets = wm_config.PRESETS
    config_class = WorldModelsConfig
    description = (
        "Train World Models (V: VAE, M: MDN-RNN, C: linear controller evolved by "
        "CMA-ES) or resume the run in --logdir. Extra flags: --allow-config-change, "
        "--no-progress. (--preset paper = the original's CarRacing sizes.)"
    )
    config_module: ClassVar[Any] = wm_config
    non_finite_error = trainer.NonFiniteLossError

    def budget(
        self,
        config: Any,
        *,
        env_steps: int,
        episode_env_steps: int,
        eval_every_env_steps: int,
        eval_episodes: int,
    ) -> WorldModelsConfig:
        """World Models trains in stages, not per episode, so its budget and curve are set so:

        - ``dream`` mode (the ``small`` preset): every env step is a collected episode. The
          budget's episodes (``ceil(env_steps / episode)``) are split into
          ``collect.iterations`` equal batches of about the preset's ``collect.episodes`` (the
          paper's iterative procedure: collect, retrain V and M, evolve C; random actions in
          the first iteration, the controller with exploration noise after). The controller is
          evaluated at the end of every iteration (``eval.every = 0``), at the env steps
          consumed so far: its curve has one point per iteration.
        - ``real`` mode (the ``paper`` preset): the population's fitness rollouts are env steps
          too. One iteration; the preset's collected episodes, capped at half the budget; the
          generations the rest of the budget pays for (population × rollouts episodes each);
          evaluations every ``eval_every_env_steps`` of fitness rollouts (rounded to
          generations).
        """
        total = max(1, -(-env_steps // episode_env_steps))
        c = config.collect
        if config.controller.mode == "dream":
            wanted = max(1, total // max(1, c.episodes))
            iterations = max(d for d in range(1, wanted + 1) if total % d == 0)
            c.iterations, c.episodes = iterations, total // iterations
            config.eval.every = 0
        else:
            c.iterations = 1
            c.episodes = max(1, min(c.episodes, total // 2))
            per_generation = config.controller.population * config.controller.rollouts
            generations = (total - c.episodes) // per_generation
            if generations < 1:
                raise ConfigError(
                    f"a World Models run in real mode needs {per_generation} episodes per "
                    f"generation (population × rollouts) beyond its {c.episodes} collected "
                    f"ones; the budget of {env_steps:,} env steps pays for {total}"
                )
            config.controller.generations = generations
            config.eval.every = max(
                1, round(eval_every_env_steps / (per_generation * episode_env_steps))
            )
        config.eval.episodes = eval_episodes
        return config.validate()

    def train(
        self, config: Any, *, allow_config_change: bool = False, progress: bool = True
    ) -> dict[str, Any]:
        return trainer.train(config, allow_config_change=allow_config_change, progress=progress)

    def counts(self, summary: dict[str, Any]) -> str:
        return (
            f"{summary['iterations']} iterations, {summary['episodes']} episodes collected, "
            f"{summary['env_steps']} env steps"
        )

    def evaluate(
        self,
        logdir: str | Path,
        *,
        episodes: int,
        seed: int,
        device: str,
        parallel: bool,
        record: bool,
        threads: int | None,
        on_step: Callable[[int], None] | None = None,
        log: Callable[[str], None] = print,
        task: str | None = None,
    ) -> Evaluation:
        """The kept controller on ``episodes`` envs (:func:`planetrl.worldmodels.trainer.
        evaluate_run`). ``task``: only the run's own (C was evolved for its reward)."""
        own = wm_config.load_config(Path(logdir) / "config.json").task
        if task is not None and task != own:
            raise ValueError(
                f"a World Models run acts only in its own task ({own}): its controller was "
                f"evolved for that reward, so it cannot be evaluated on {task}"
            )
        saved = wm_config.load_config(Path(logdir) / "config.json").threads
        governor = ThreadGovernor(saved if threads is None else threads)
        governor.adjust()
        log(f"  {'threads':<13} {governor.threads:<3}  ({governor.reason})")
        config, returns, frames = trainer.evaluate_run(
            logdir, episodes=episodes, seed=seed, device=device, parallel=parallel, record=record
        )
        return Evaluation(config.task, list(returns), frames, "")

    def load_models(self, run_dir: Path, device: str = "cpu"):
        run_dir = Path(run_dir)
        if not (run_dir / "checkpoint.pt").exists():
            return None
        config = wm_config.load_config(run_dir / "config.json")
        vae, mdn, controller = trainer.build_models(
            config, trainer.action_size_of(config), torch.device(device)
        )
        payload = load_checkpoint(run_dir / "checkpoint.pt", map_location=device)
        vae.load_state_dict(payload["vae"])
        mdn.load_state_dict(payload["mdn"])
        vae.eval()
        mdn.eval()
        return config, (vae, mdn, controller, payload["run"])

    def parameters(self, loaded) -> list[tuple[str, int]]:
        vae, mdn, controller, _ = loaded[1]
        return [
            ("V encoder", _count(vae.encoder, vae.mean, vae.logvar)),
            ("V decoder", _count(vae.decoder_in, vae.decoder)),
            ("M (MDN-RNN, reward and done heads)", _count(mdn)),
            ("C (linear controller)", controller.num_params),
        ]

    def stages(self, loaded, episodes: list[tuple[int, int]]) -> list[tuple[str, int]]:
        config, (_, _, _, run) = loaded
        first = config.collect.episodes
        return [
            ("random episodes (iteration 0)", sum(s for i, s in episodes if i < first)),
            (
                "controller episodes (exploration noise, iterations > 0)",
                sum(s for i, s in episodes if i >= first),
            ),
            (
                f"CMA-ES fitness rollouts ({config.controller.mode} mode)",
                int(run.get("controller_env_steps", 0)),
            ),
        ]

    def open_loop(self, loaded, data: dict[str, np.ndarray], context: int, seed: int):
        """M fed V's posterior means of the context frames, then its own predicted z: sampled at
        the run's temperature τ (a dream) and the mixture mean
        (:mod:`planetrl.worldmodels.diagnostics`)."""
        config, (vae, mdn, _, _) = loaded
        device = next(mdn.parameters()).device
        tau = config.controller.temperature
        out = []
        for name, mode, temperature in (
            (f"MDN-RNN sampled at τ={tau:g}", "sample", tau),
            ("MDN-RNN mixture mean", "mean", 1.0),
        ):
            pred = open_loop_prediction(
                vae,
                mdn,
                data["image"],
                data["action"],
                context=context,
                mode=mode,
                temperature=temperature,
                generator=torch.Generator(device=device).manual_seed(seed),
            )
            out.append((name, pred.frames, pred.reward))
        return out


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


WORLD_MODELS = WorldModelsKind()
