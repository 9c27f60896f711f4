"""The agent: filtering belief, planning on it, exploration noise, batching over environments."""

import functools

import numpy as np
import pytest
import torch

from planetrl.agent import Agent
from planetrl.models import WorldModel
from planetrl.planning import make_planner


def tiny_world_model(action_size=2, transition="rssm"):
    torch.manual_seed(0)
    return WorldModel(
        action_size,
        transition=transition,
        deter_size=8,
        stoch_size=4,
        hidden_size=8,
        embed_size=32 * 2,
        cnn_depth=2,
        reward_hidden=8,
    ).eval()


def make_agent(wm, seed=0):
    planner = make_planner(
        "cem",
        horizon=3,
        iterations=2,
        candidates=16,
        top_k=4,
        generator=torch.Generator().manual_seed(seed),
    )
    return Agent(wm, planner, generator=torch.Generator().manual_seed(seed))


def obs(e, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (e, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("transition", ["rssm", "ssm", "gru"])
def test_act_shapes_bounds_and_belief_update(transition):
    wm = tiny_world_model(transition=transition)
    agent = make_agent(wm)
    agent.reset(3)
    first = agent.state
    a = agent.act(obs(3), explore_noise=0.3)
    assert a.shape == (3, 2) and a.dtype == np.float32
    assert np.all(a >= -1) and np.all(a <= 1)
    np.testing.assert_allclose(agent.prev_action.numpy(), a)
    assert agent.state is not first and agent.state.shape == (3,)
    assert not agent._first.any()


def test_posterior_uses_previous_state_action_and_observation(monkeypatch):
    wm = tiny_world_model()
    agent = make_agent(wm)
    agent.reset(2)
    calls = []
    real = wm.transition.obs_step

    def spy(prev, prev_action, embed, is_first=None):
        calls.append(
            (prev, prev_action.clone(), embed, None if is_first is None else is_first.clone())
        )
        return real(prev, prev_action, embed, is_first)

    monkeypatch.setattr(wm.transition, "obs_step", spy)
    a0 = agent.act(obs(2, 0))
    s1 = agent.state
    agent.act(obs(2, 1))
    assert calls[0][3].all() and not calls[1][3].any()  # is_first only at the first step
    assert torch.equal(calls[0][1], torch.zeros(2, 2))
    np.testing.assert_allclose(calls[1][1].numpy(), a0)  # a_{t-1}
    assert calls[1][0] is s1  # the previous posterior


def test_evaluation_is_repeatable_and_noise_changes_actions():
    wm = tiny_world_model()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)  # the posterior sample s_t ~ q uses torch's global RNG
        agent = make_agent(wm, seed=1)
        agent.reset(2)
        runs.append(agent.act(obs(2)))
    np.testing.assert_array_equal(runs[0], runs[1])
    agent = make_agent(wm, seed=1)
    agent.reset(2)
    noisy = agent.act(obs(2), explore_noise=0.3)
    assert not np.allclose(noisy, runs[0])


def test_bad_observations_and_missing_reset():
    agent = make_agent(tiny_world_model())
    with pytest.raises(RuntimeError, match="reset"):
        agent.act(obs(1))
    agent.reset(2)
    with pytest.raises(ValueError, match="E=2"):
        agent.act(obs(3))


def test_reset_resets_a_warm_started_planner():
    """Agent.reset calls planner.reset(num_envs): no plan carries over to the next episodes."""
    from planetrl.planning import WarmStart, cem

    wm = tiny_world_model()

    def episode(agent, seed):
        torch.manual_seed(seed)
        agent.generator.manual_seed(seed)
        agent.planner.planner.keywords["generator"].manual_seed(seed)
        agent.reset(2)
        assert agent.planner.previous is None and agent.planner.num_envs == 2
        return [agent.act(obs(2, t)) for t in range(3)]

    def warm_agent():
        planner = WarmStart(
            functools.partial(
                cem,
                horizon=3,
                iterations=2,
                candidates=16,
                top_k=4,
                keep_elites=0.5,
                generator=torch.Generator().manual_seed(0),
            )
        )
        return Agent(wm, planner, generator=torch.Generator().manual_seed(0))

    agent = warm_agent()
    first = episode(agent, seed=3)
    assert agent.planner.previous is not None  # it did warm-start within the episode
    second = episode(agent, seed=3)  # same agent, reset: as if fresh
    fresh = episode(warm_agent(), seed=3)
    for a, b, c in zip(first, second, fresh):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    agent.reset(3)  # another number of environments after a reset is fine
    assert agent.act(obs(3)).shape == (3, 2)


def test_reset_works_with_planners_without_reset():
    agent = make_agent(tiny_world_model())  # a ConfiguredPlanner: nothing to reset
    agent.reset(1)
    assert agent.act(obs(1)).shape == (1, 2)
