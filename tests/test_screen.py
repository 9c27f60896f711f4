"""The screen (planetrl.suite.screen): world-model variants trained on a run's first episodes
and scored on the episodes it collected next, resumably, with clear errors."""

from __future__ import annotations

import json

import pytest
from test_training import tiny_config

from planetrl.cli import main
from planetrl.config import ConfigError
from planetrl.suite.screen import (
    parse_variant,
    read_results,
    run_screen,
    split_episodes,
)
from planetrl.training.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny cartpole-balance run of 4 episodes (2 random, 2 planned), with its siblings'
    reward heads (the screened models have them too, trained on the relabelled rewards)."""
    logdir = tmp_path_factory.mktemp("run")
    config = tiny_config(logdir, max_episodes=4)
    config.sibling_rewards = True
    train(config, progress=False)
    return logdir


SMALL = dict(train_episodes=3, heldout_episodes=1, updates=4, score_every=2)


def test_variants_are_trained_on_the_first_episodes_and_scored_on_the_next(tmp_path, run):
    lines: list[str] = []
    variants = [parse_variant("base"), parse_variant('wide={"model.reward_hidden": 32}')]
    rows = run_screen(run, tmp_path, variants, log=lines.append, **SMALL)
    assert sorted(r["variant"] for r in rows) == ["base", "wide"]
    assert [r["heldout_mse"] for r in rows] == sorted(r["heldout_mse"] for r in rows)
    records = {r["variant"]: r for r in read_results(tmp_path)}
    for record in records.values():
        assert [s["updates"] for s in record["scores"]] == [2, 4]
        assert record["heldout_mse"] > 0 and record["replay_mse"] > 0
        assert record["heldout_chunks"] > 0 and "loss/reward_loss" in record["scores"][-1]
    assert records["wide"]["overrides"] == {"model.reward_hidden": 32}
    assert records["base"]["heldout_mse"] != records["wide"]["heldout_mse"]
    # the replay is the run's first 3 episodes, linked, not copied
    linked = sorted((tmp_path / "replay").iterdir())
    assert [p.name[:6] for p in linked] == ["000000", "000001", "000002"]
    assert all(p.is_symlink() for p in linked)
    table = (tmp_path / "screen.md").read_text()
    assert "| base |" in table and "| wide |" in table
    assert (tmp_path / "screen.csv").read_text().startswith("variant,overrides,seeds")

    # rerun: the finished variants are skipped, the result is the same
    again: list[str] = []
    assert run_screen(run, tmp_path, variants, log=again.append, **SMALL) == rows
    assert sum("skipped" in line for line in again) == 2


def test_a_screen_is_repeatable(tmp_path, run):
    first = run_screen(run, tmp_path / "a", [parse_variant("base")], log=lambda _: None, **SMALL)
    second = run_screen(run, tmp_path / "b", [parse_variant("base")], log=lambda _: None, **SMALL)
    assert first[0]["heldout_mse"] == second[0]["heldout_mse"]


def test_bad_input_is_a_clear_error(tmp_path, run):
    base = [parse_variant("base")]
    with pytest.raises(ValueError, match="has 4 episodes; the screen needs 4 for the replay"):
        run_screen(run, tmp_path, base, train_episodes=4, heldout_episodes=1)
    with pytest.raises(ConfigError, match="variant 'x'.*unknown config field 'model.rewards'"):
        run_screen(run, tmp_path, [parse_variant('x={"model.rewards": 2}')], **SMALL)
    with pytest.raises(ConfigError, match="variant 'y'.*reward_hidden must be a positive"):
        run_screen(run, tmp_path, [parse_variant('y={"model.reward_hidden": 0}')], **SMALL)
    with pytest.raises(ValueError, match="not JSON"):
        parse_variant("z={model.reward_hidden: 2}")
    with pytest.raises(ValueError, match="JSON object"):
        parse_variant("z=[1]")
    with pytest.raises(ValueError, match="the name must be"):
        parse_variant("a b")
    with pytest.raises(ValueError, match="must differ"):
        run_screen(run, tmp_path, base + base, **SMALL)
    with pytest.raises(ConfigError, match="not a PlaNet run directory"):
        run_screen(tmp_path / "nothing", tmp_path / "s", base, **SMALL)
    run_screen(run, tmp_path / "kept", base, log=lambda _: None, **SMALL)
    with pytest.raises(ValueError, match="other settings.*updates: saved 4 != new 6"):
        run_screen(run, tmp_path / "kept", base, **{**SMALL, "updates": 6})
    with pytest.raises(ValueError, match="holds variant 'base' with overrides"):
        run_screen(run, tmp_path / "kept", [parse_variant('base={"loss.free_nats": 1.0}')], **SMALL)
    assert split_episodes(run, 2, 2)[1][0].name.startswith("000002")


def test_the_cli_screens_and_names_a_bad_variant(tmp_path, run, capsys):
    code = main(["screen", "--run", str(run), "--dir", str(tmp_path), "--variants", "base",
                 "--train-episodes", "3", "--heldout-episodes", "1", "--updates", "2",
                 "--score-every", "2"])  # fmt: skip
    assert code == 0 and "best held-out MSE: base" in capsys.readouterr().out
    assert json.loads((tmp_path / "screen.json").read_text())["updates"] == 2
    code = main(["screen", "--run", str(run), "--dir", str(tmp_path / "x"), "--variants", "a=["])
    assert code == 2 and "not JSON" in capsys.readouterr().err
