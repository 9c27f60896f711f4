"""Config: presets, validation errors, save/load round trip, resume diff."""

import dataclasses
import json

import pytest

from planetrl.config import (
    PRESETS,
    Config,
    ConfigError,
    diff_configs,
    from_dict,
    load_config,
    preset,
    save_config,
    to_dict,
)


def test_paper_preset_has_the_paper_hyperparameters():
    c = preset("paper").validate()
    assert (c.train.seed_episodes, c.train.collect_interval) == (5, 100)
    assert (c.train.batch_size, c.train.chunk_length) == (50, 50)
    assert (c.train.learning_rate, c.train.adam_eps, c.train.grad_clip) == (1e-3, 1e-4, 1000.0)
    assert c.train.exploration_noise == 0.3
    p = c.planner
    assert (p.name, p.horizon, p.iterations, p.candidates, p.top_k) == ("cem", 12, 10, 1000, 100)
    m = c.model
    assert (m.transition, m.deter_size, m.stoch_size, m.cnn_depth) == ("rssm", 200, 30, 32)
    assert c.loss.free_nats == 3.0
    assert c.render == "paper"


def test_small_preset_is_valid_and_smaller():
    s, p = preset("small").validate(), preset("paper")
    assert s.planner.candidates < p.planner.candidates
    assert s.planner.top_k <= s.planner.candidates


def _leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_quick_preset_differs_from_small_where_its_docstring_says():
    # The quick start's preset is ``small`` with a smaller model, shorter chunks and the one-step
    # bound; a change to ``small`` reaches it, and nothing else may differ silently.
    quick = dict(_leaves(to_dict(preset("quick").validate())))
    small = dict(_leaves(to_dict(preset("small"))))
    changed = {k for k in small if quick[k] != small[k]}
    assert changed == {
        "preset",
        "model.cnn_depth",
        "model.deter_size",
        "model.stoch_size",
        "model.hidden_size",
        "model.reward_hidden",
        "train.chunk_length",
        "train.seed_episodes",
        "train.max_episodes",
        "loss.decode_fraction",
        "loss.overshooting_distance",
        "loss.overshooting_kl_scale",
        "loss.overshooting_reward_scale",
        "planner.horizon",
        "planner.iterations",
        "planner.candidates",
        "planner.top_k",
    }
    assert quick["train.collect_interval"] == 100  # the paper's C: the point of the preset


def test_unknown_preset():
    with pytest.raises(ConfigError, match="accepted: paper, small, quick"):
        preset("huge")


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("planner", "top_k"), 2000, "top_k"),
        (("train", "batch_size"), 0, "train.batch_size"),
        (("train", "learning_rate"), -1.0, "train.learning_rate"),
        (("loss", "free_nats"), float("nan"), "loss.free_nats"),
        (("model", "bits"), 9, "model.bits"),
        (("model", "transition"), "lstm", "model.transition"),
        (("train", "seed_episodes"), -1, "train.seed_episodes"),
        (("train", "collect_envs"), True, "train.collect_envs"),
        (("eval", "episodes"), 0, "eval.episodes"),
        ((None, "threads"), -2, "threads"),
        ((None, "device"), "tpu", "device"),
        (("model", "stoch_size"), 0, "stoch_size"),
        (("loss", "decode_fraction"), 0.0, "loss.decode_fraction"),
        (("loss", "decode_fraction"), 1.5, "loss.decode_fraction"),
    ],
)
def test_bad_values_name_the_field(path, value, match):
    c = preset("paper")
    target = c if path[0] is None else getattr(c, path[0])
    setattr(target, path[1], value)
    with pytest.raises(ConfigError, match=match):
        c.validate()


def test_save_load_round_trip(tmp_path):
    c = preset("small")
    c.planner.candidates = 123
    save_config(c, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == c
    assert from_dict(to_dict(c)) == c


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        load_config(tmp_path / "bad.json")
    data = to_dict(Config())
    data["model"]["bogus"] = 1
    (tmp_path / "unknown.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="bogus"):
        load_config(tmp_path / "unknown.json")


def test_diff_ignores_budget_and_logging_fields():
    a = preset("paper")
    b = dataclasses.replace(a, logdir="elsewhere", device="cpu")
    b.train = dataclasses.replace(a.train, max_episodes=5)
    assert diff_configs(a, b) == {}
    b.planner = dataclasses.replace(a.planner, horizon=5)
    assert diff_configs(a, b) == {"planner.horizon": (12, 5)}


def test_configs_saved_with_train_bits_load_as_model_bits(tmp_path):
    """`bits` moved from train to model (the model owns the preprocessing); old files migrate."""
    data = to_dict(preset("small"))
    del data["model"]["bits"]
    data["train"]["bits"] = 4
    (tmp_path / "old.json").write_text(json.dumps(data))
    c = load_config(tmp_path / "old.json")
    assert c.model.bits == 4 and not hasattr(c.train, "bits")
    assert data["train"]["bits"] == 4  # the input is not changed
    data["model"]["bits"] = 5
    with pytest.raises(ConfigError, match="keep model.bits only"):
        from_dict(data)
    data["model"]["bits"] = 4
    assert from_dict(data).model.bits == 4


def test_agents_and_their_presets():
    from planetrl.agents import check_agent, check_agent_preset, common_presets, names, presets_of

    assert names()[:2] == ("planet", "worldmodels")
    assert presets_of("planet") == PRESETS
    assert "quick" in presets_of("planet") and "quick" not in presets_of("worldmodels")
    assert common_presets(["planet", "worldmodels"]) == ("paper", "small")
    assert common_presets(["planet"]) == PRESETS
    with pytest.raises(ConfigError, match="unknown agent 'dreamer'; accepted: planet, worldmodels"):
        check_agent("dreamer")
    with pytest.raises(ConfigError, match=r"unknown preset 'quick'.*\(--agent worldmodels\)"):
        check_agent_preset("worldmodels", "quick")
    assert check_agent_preset("planet", "quick") == "quick"
