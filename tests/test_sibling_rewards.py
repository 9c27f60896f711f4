"""Rewards of sibling tasks relabelled from the same physics (planetrl.envs.dmc.SIBLING_TASKS):
each one equals what the sibling's own env pays along the same trajectory, summed over the
action repeat, and kept in the episodes as ``reward/<task>``."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from planetrl.driver import make_pool, run_episodes, uniform_policy
from planetrl.envs import make_env
from planetrl.envs.dmc import NOT_SIBLINGS, SIBLING_TASKS, sibling_tasks
from planetrl.episodes import EpisodeRecorder, load_episode, save_episode, validate_episode

# (collected on, sibling checked against): same model, same initial state for the same seed
PAIRS = [
    ("dmc:walker-walk", "dmc:walker-run"),
    ("dmc:walker-walk", "dmc:walker-stand"),
    ("dmc:hopper-stand", "dmc:hopper-hop"),
    ("dmc:cartpole-balance", "dmc:cartpole-balance_sparse"),
    ("dmc:cartpole-swingup", "dmc:cartpole-swingup_sparse"),
    ("dmc:acrobot-swingup", "dmc:acrobot-swingup_sparse"),
    ("dmc:humanoid-walk", "dmc:humanoid-run"),
]


@pytest.mark.parametrize("task,sibling", PAIRS, ids=[f"{a[4:]}>{b[4:]}" for a, b in PAIRS])
def test_a_sibling_reward_is_what_the_siblings_own_env_pays(task, sibling):
    repeat, steps = 2, 15
    env = make_env(task, action_repeat=repeat, render="fast", size=16, sibling_rewards=True)
    other = make_env(sibling, action_repeat=repeat, render="fast", size=16)
    try:
        env.reset(seed=3)
        other.reset(seed=3)
        rng = np.random.default_rng(0)
        relabelled, own = [], []
        for _ in range(steps):
            action = rng.uniform(-1, 1, env.action_space.shape)
            _, _, _, _, info = env.step(action)
            _, reward, _, _, _ = other.step(action)
            assert set(info["rewards"]) == set(sibling_tasks(task))
            relabelled.append(info["rewards"][sibling])
            own.append(reward)
        np.testing.assert_allclose(relabelled, own, rtol=1e-6, atol=1e-9)
        assert np.ptp(own) > 0 or sibling.endswith("sparse")  # a reward that says something
    finally:
        env.close()
        other.close()


def test_the_sibling_tables_and_their_errors():
    assert sibling_tasks("dmc:walker-walk") == ("dmc:walker-stand", "dmc:walker-run")
    assert sibling_tasks("dmc:cheetah-run") == () and sibling_tasks("gym:Pendulum-v1") == ()
    assert not set(SIBLING_TASKS) & set(NOT_SIBLINGS)
    with pytest.raises(ValueError, match="target size"):
        make_env("dmc:reacher-easy", sibling_rewards=True)
    with pytest.raises(ValueError, match="only task"):
        make_env("dmc:cheetah-run", sibling_rewards=True)
    with pytest.raises(ValueError, match="dmc: tasks only"):
        make_env("gym:Pendulum-v1", sibling_rewards=True)


def test_episodes_keep_the_relabelled_rewards_and_old_ones_still_load(tmp_path):
    settings = types.SimpleNamespace(task="dmc:walker-walk", action_repeat=2, render="fast")
    with make_pool(settings, 2, parallel=False, sibling_rewards=True) as pool:
        out = run_episodes(pool, uniform_policy(6, [1, 2]), [1, 2], keep=True)
    assert out.episodes is not None
    episode = out.episodes[0]
    assert {"reward/dmc:walker-stand", "reward/dmc:walker-run"} <= set(episode)
    run = episode["reward/dmc:walker-run"]
    assert run.shape == episode["reward"].shape and run[0] == 0 and run.dtype == np.float32
    stand = episode["reward/dmc:walker-stand"]
    assert np.all(stand[1:] >= 0) and np.all(stand[1:] <= 2.0)  # two steps of at most 1
    path = save_episode(tmp_path, 0, episode)
    loaded = load_episode(path)
    assert set(loaded) == set(episode)
    np.testing.assert_array_equal(loaded["reward/dmc:walker-run"], run)
    # an episode without them (the format before) is valid, and bad ones are named
    old = {k: v for k, v in episode.items() if not k.startswith("reward/")}
    assert set(validate_episode(old)) == set(old)
    with pytest.raises(ValueError, match="reward/dmc:walker-run"):
        validate_episode({**old, "reward/dmc:walker-run": run[:-1]})
    with pytest.raises(ValueError, match="unexpected"):
        validate_episode({**old, "rewards": run})
    recorder = EpisodeRecorder(episode["image"][0], 6)
    recorder.step(episode["image"][1], episode["action"][1], 1.0, False, {"dmc:walker-run": 0.5})
    with pytest.raises(ValueError, match="earlier steps had"):
        recorder.step(episode["image"][2], episode["action"][2], 1.0, False, {})


@pytest.mark.parametrize("agent", ["planet", "worldmodels"])
def test_a_run_with_sibling_rewards_keeps_them_in_its_replay(tmp_path, agent):
    """``sibling_rewards`` on a run's config: every episode it collects (random and planned or
    controller episodes) carries the siblings' rewards; the run trains as without them."""
    from planetrl.episodes import list_episode_files

    if agent == "planet":
        from test_training import tiny_config

        from planetrl.training.loop import train
    else:
        from test_worldmodels import tiny_config

        from planetrl.worldmodels.trainer import train
    config = tiny_config(tmp_path)
    config.task, config.sibling_rewards = "dmc:cartpole-balance", True
    train(config, progress=False)
    files = list_episode_files(tmp_path / "episodes")
    assert len(files) >= 2
    siblings = {f"reward/{t}" for t in sibling_tasks("dmc:cartpole-balance")}
    for file in files:
        episode = load_episode(file.path)
        assert siblings <= set(episode), file.path.name
        # balance and swingup pay the same smooth reward: relabelled, swingup's equals ours
        np.testing.assert_allclose(
            episode["reward/dmc:cartpole-swingup"], episode["reward"], rtol=1e-5, atol=1e-6
        )


def test_a_world_model_learns_a_reward_head_per_sibling_and_plans_with_it(tmp_path):
    """PlaNet with sibling_rewards: one reward head per sibling task on the shared latent state,
    trained on the relabelled rewards (logged per task), restored by load_run, and the planner
    scores imagined features with the head of the task asked for."""
    import torch
    from test_training import tiny_config

    from planetrl.training.loop import build_planner, load_run, train

    config = tiny_config(tmp_path)
    config.sibling_rewards = True  # cartpole-balance: balance_sparse, swingup, swingup_sparse
    train(config, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for task in sibling_tasks(config.task):
        assert any(f"loss/task_reward_loss/{task}" in r for r in rows), task
    loaded, world_model = load_run(tmp_path, device="cpu")
    assert sorted(world_model.task_rewards) == sorted(sibling_tasks(config.task))
    head = world_model.planning_reward_for("dmc:cartpole-swingup_sparse")
    assert head is world_model.task_rewards["dmc:cartpole-swingup_sparse"]
    assert world_model.planning_reward_for(None) is world_model.planning_reward
    with pytest.raises(ValueError, match="no reward head for 'dmc:walker-run'"):
        world_model.planning_reward_for("dmc:walker-run")
    planner = build_planner(loaded, torch.Generator().manual_seed(0))
    state = world_model.transition.initial(2)
    with torch.no_grad():
        action = planner(world_model.transition, head, state)
    assert action.shape == (2, world_model.action_size)

    # planetrl eval --task: the sibling's env, planned for with its head
    from planetrl.agents import kind

    def evaluate(task: str):
        return kind("planet").evaluate(
            tmp_path, episodes=1, seed=0, device="cpu", parallel=False, record=False, threads=1,
            task=task, log=lambda _: None,
        )  # fmt: skip

    result = evaluate("dmc:cartpole-swingup")
    assert result.task == "dmc:cartpole-swingup" and len(result.returns) == 1
    with pytest.raises(ValueError, match="no reward head for 'dmc:cartpole-two_poles'"):
        evaluate("dmc:cartpole-two_poles")


def test_the_replay_samples_the_relabelled_rewards(tmp_path):
    import torch

    from planetrl.replay import Replay

    settings = types.SimpleNamespace(task="dmc:hopper-stand", action_repeat=4, render="fast")
    with make_pool(settings, 1, parallel=False, sibling_rewards=True) as pool:
        out = run_episodes(pool, uniform_policy(4, [5]), [5], keep=True)
    assert out.episodes is not None
    replay = Replay(tmp_path / "a", seed=0, task_rewards=["dmc:hopper-hop"])
    replay.add(out.episodes[0])
    batch = replay.sample(3, 10)
    assert set(batch.task_rewards) == {"dmc:hopper-hop"}
    assert batch.task_rewards["dmc:hopper-hop"].shape == (3, 10)
    assert batch.to("cpu").task_rewards["dmc:hopper-hop"].dtype == torch.float32
    plain = {k: v for k, v in out.episodes[0].items() if not k.startswith("reward/")}
    with pytest.raises(ValueError, match="lacks"):
        replay.add(plain)
    # a replay that asks for none: the batches are PlaNet's
    other = Replay(tmp_path / "b", seed=0)
    other.add(out.episodes[0])
    assert other.sample(2, 5).task_rewards == {}
