"""Tests of planetrl.models: shapes, the interface contracts, KL, resets, causality."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from planetrl.models import (
    RSSM,
    SSM,
    ConvTranspose1x1AsLinear,
    Decoder,
    DeterministicGRU,
    Encoder,
    RewardModel,
    State,
    TransitionModel,
    WorldModel,
    make_transition,
)

KINDS = ["rssm", "ssm", "gru"]
A, E = 2, 12
SIZES = dict(deter_size=10, stoch_size=4, hidden_size=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two shared cores: intra-op threads oversubscribe them badly under load (~100x slower).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make(kind: str, deterministic: bool = False, **overrides) -> TransitionModel:
    sizes = dict(SIZES, **overrides)
    if deterministic:
        sizes["mean_only"] = True
    return make_transition(kind, A, E, **sizes)


def sequence(batch: int = 3, length: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, E, generator=g)
    actions = torch.rand(batch, length, A, generator=g) * 2 - 1
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    return embeds, actions, is_first


def assert_state_equal(a: State, b: State, exact: bool = True) -> None:
    for name in ("deter", "stoch", "mean", "std"):
        x, y = getattr(a, name), getattr(b, name)
        if exact:
            assert torch.equal(x, y), name
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- networks
def test_encoder_shapes_and_paper_size():
    enc = Encoder(cnn_depth=32)
    assert enc.embed_size == 1024
    assert [m.out_channels for m in enc.convs if isinstance(m, nn.Conv2d)] == [32, 64, 128, 256]
    assert enc(torch.zeros(3, 64, 64)).shape == (1024,)
    small = Encoder(cnn_depth=4)
    assert small.embed_size == 128
    assert small(torch.zeros(2, 3, 3, 64, 64)).shape == (2, 3, 128)
    assert small(torch.zeros(5, 3, 64, 64)).shape == (5, 128)
    projected = Encoder(cnn_depth=4, embed_size=20)
    assert projected(torch.zeros(2, 3, 64, 64)).shape == (2, 20)


def test_encoder_rejects_bad_images():
    enc = Encoder(cnn_depth=4)
    with pytest.raises(ValueError, match="3, 64, 64"):
        enc(torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match="float"):
        enc(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


def test_channels_last_same_function():
    torch.manual_seed(0)
    enc, dec = Encoder(4), Decoder(6, 4)
    torch.manual_seed(0)
    enc_cl, dec_cl = Encoder(4, channels_last=True), Decoder(6, 4, channels_last=True)
    x, f = torch.randn(2, 3, 64, 64), torch.randn(2, 6)
    torch.testing.assert_close(enc(x), enc_cl(x))
    torch.testing.assert_close(dec(f), dec_cl(f))


def test_decoder_shapes_and_paper_size():
    dec = Decoder(feature_size=230, cnn_depth=32)
    assert dec.fc.out_features == 1024
    assert dec.deconv1.out_channels == 128 and dec.deconv1.kernel_size == 5
    convs = [m for m in dec.deconvs if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.out_channels, m.kernel_size[0]) for m in convs] == [(64, 5), (32, 6), (3, 6)]
    assert dec(torch.zeros(1, 230)).shape == (1, 3, 64, 64)
    small = Decoder(feature_size=6, cnn_depth=4)
    assert small(torch.zeros(2, 3, 6)).shape == (2, 3, 3, 64, 64)
    assert small(torch.zeros(6)).shape == (3, 64, 64)
    with pytest.raises(ValueError, match="last dim 6"):
        small(torch.zeros(2, 5))


def test_linear_form_equals_transposed_convolution():
    torch.manual_seed(0)
    layer = ConvTranspose1x1AsLinear(16, 8, 5)
    conv = nn.ConvTranspose2d(16, 8, 5, stride=2)
    conv.load_state_dict(layer.state_dict())  # same parameter names and shapes
    x = torch.randn(4, 16)
    torch.testing.assert_close(layer(x), conv(x[:, :, None, None]))
    # Same initialisation distribution as the transposed convolution (bound 1/sqrt(fan_in)).
    fan_in = 8 * 5 * 5
    big = ConvTranspose1x1AsLinear(64, 8, 5)
    assert big.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-6
    assert big.weight.abs().max() > 0.9 / math.sqrt(fan_in)


def test_reward_model_shapes():
    rew = RewardModel(6, hidden=200, layers=2)
    assert [m.out_features for m in rew.net if isinstance(m, nn.Linear)] == [200, 200, 1]
    assert rew(torch.zeros(6)).shape == ()
    assert rew(torch.zeros(4, 5, 6)).shape == (4, 5)
    assert RewardModel(6, 3, 0)(torch.zeros(2, 6)).shape == (2,)
    with pytest.raises(ValueError):
        rew(torch.zeros(4, 7))


# ----------------------------------------------------------------------------- factory
def test_make_transition_kinds_and_errors():
    assert isinstance(make("rssm"), RSSM)
    assert isinstance(make("ssm"), SSM)
    assert isinstance(make("gru"), DeterministicGRU)
    with pytest.raises(ValueError, match="gru.*rssm.*ssm"):
        make_transition("lstm", A, E)
    with pytest.raises(TypeError, match="bogus"):
        make_transition("rssm", A, E, bogus=3)
    # The paper sizes are the defaults.
    rssm = make_transition("rssm", A, 1024)
    assert (rssm.deter_size, rssm.stoch_size, rssm.hidden_size) == (200, 30, 200)
    assert rssm.feature_size == 230


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", KINDS)
def test_transition_shapes(kind):
    model = make(kind)
    batch, length = 3, 7
    embeds, actions, is_first = sequence(batch, length)
    posts, priors = model.observe(embeds, actions, is_first)
    for state in (posts, priors):
        assert state.shape == (batch, length)
        assert state.deter.shape == (batch, length, model.deter_size)
        assert state.stoch.shape == state.mean.shape == state.std.shape
        assert state.stoch.shape == (batch, length, model.stoch_size)
        assert model.features(state).shape == (batch, length, model.feature_size)
    assert model.kl(posts, priors).shape == (batch, length)
    imagined = model.imagine(posts[:, -1], actions)
    assert imagined.shape == (batch, length)
    assert model.features(imagined).shape == (batch, length, model.feature_size)
    init = model.initial(batch)
    assert init.shape == (batch,) and float(init.deter.abs().sum() + init.stoch.abs().sum()) == 0
    post, prior = model.obs_step(init, actions[:, 0], embeds[:, 0], is_first[:, 0])
    assert post.shape == prior.shape == (batch,)
    assert model.img_step(post, actions[:, 1]).shape == (batch,)
    assert model.imagine(post, actions[:, :0]).shape == (batch, 0)
    expected = {"rssm": (10, 4, 14), "ssm": (0, 4, 4), "gru": (10 + 8 + 1, 0, 10)}[kind]
    assert (model.deter_size, model.stoch_size, model.feature_size) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_transition_rejects_bad_inputs(kind):
    model = make(kind)
    embeds, actions, is_first = sequence()
    with pytest.raises(ValueError, match="actions"):
        model.observe(embeds, actions[..., :1], is_first)
    with pytest.raises(ValueError, match="embeds"):
        model.observe(embeds[..., :5], actions, is_first)
    with pytest.raises(ValueError, match="is_first"):
        model.observe(embeds, actions, is_first[:, :3])
    with pytest.raises(ValueError, match="prev_action"):
        model.img_step(model.initial(3), actions[:, 0, :1])
    with pytest.raises(ValueError, match="state"):
        model.imagine(model.initial(2), actions)


# ----------------------------------------------------------------------------- KL
def test_kl_equals_closed_form():
    model = make("rssm")
    g = torch.Generator().manual_seed(0)
    shape = (3, 5, 4)
    mq, mp = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    sq, sp = torch.rand(shape, generator=g) + 0.1, torch.rand(shape, generator=g) + 0.1
    deter = torch.zeros(3, 5, 10)
    kl = model.kl(State(deter, mq, mq, sq), State(deter, mp, mp, sp))
    by_hand = (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    assert kl.shape == (3, 5)
    torch.testing.assert_close(kl, by_hand)
    assert float(model.kl(State(deter, mq, mq, sq), State(deter, mq, mq, sq)).abs().max()) < 1e-6


def test_gru_kl_is_zero():
    model = make("gru")
    posts, priors = model.observe(*sequence())
    assert torch.equal(model.kl(posts, priors), torch.zeros(3, 7))


def test_gru_deter_size_is_the_size_of_state_deter():
    """``deter_size`` means one thing at the interface, the size of ``State.deter``: the GRU's
    h_t (the constructor's ``deter_size``) is ``belief_size``, plus its observation input u_t."""
    model = make("gru")
    posts, _ = model.observe(*sequence())
    assert model.belief_size == SIZES["deter_size"] == model.feature_size
    assert model.deter_size == model.belief_size + model.obs_input_size == posts.deter.shape[-1]
    assert model.features(posts).shape[-1] == model.belief_size


def test_std_lower_bound():
    model = make("rssm", min_std=0.25)
    with torch.no_grad():
        posts, priors = model.observe(*sequence())
    assert float(posts.std.min()) >= 0.25 and float(priors.std.min()) >= 0.25


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize("kind", KINDS)
def test_future_observations_change_nothing_before(kind):
    """Changing e_t for t > k leaves posteriors at <= k, priors at <= k + 1, and an imagined
    rollout from the state at k unchanged (same noise via the same seed)."""
    model = make(kind)
    embeds, actions, is_first = sequence()
    k = 3
    changed = embeds.clone()
    changed[:, k + 1 :] += 5 * torch.randn_like(changed[:, k + 1 :])
    results = []
    for e in (embeds, changed):
        torch.manual_seed(0)
        posts, priors = model.observe(e, actions, is_first)
        torch.manual_seed(1)
        imagined = model.imagine(posts[:, k], actions)
        results.append((posts, priors, imagined))
    (p0, q0, i0), (p1, q1, i1) = results
    assert_state_equal(p0[:, : k + 1], p1[:, : k + 1])
    assert_state_equal(q0[:, : k + 2], q1[:, : k + 2])
    assert_state_equal(i0, i1)
    # ... and the change does reach the later posteriors.
    later0, later1 = p0[:, k + 1 :], p1[:, k + 1 :]
    assert not (torch.equal(later0.deter, later1.deter) and torch.equal(later0.stoch, later1.stoch))


@pytest.mark.parametrize("kind", KINDS)
def test_prior_does_not_see_current_observation(kind):
    """The one-step prior at t (from observe) does not depend on e_t."""
    model = make(kind)
    embeds, actions, is_first = sequence()
    changed = embeds.clone()
    changed[:, 4] += 3.0
    torch.manual_seed(0)
    _, q0 = model.observe(embeds, actions, is_first)
    torch.manual_seed(0)
    _, q1 = model.observe(changed, actions, is_first)
    assert_state_equal(q0[:, :5], q1[:, :5])


# ----------------------------------------------------------------------------- resets
@pytest.mark.parametrize("kind", KINDS)
def test_is_first_resets_state(kind):
    """With a reset at t, posts from t on equal those of the subsequence started fresh."""
    model = make(kind, deterministic=True)
    embeds, actions, is_first = sequence(length=8)
    t = 3
    is_first[1, t] = True
    state = model.observe(embeds[:, :1], actions[:, :1], is_first[:, :1])[0][:, 0]
    posts, priors = model.observe(embeds, actions, is_first, state=state)
    fresh_posts, fresh_priors = model.observe(embeds[1:2, t:], actions[1:2, t:], is_first[1:2, t:])
    assert_state_equal(posts[1:2, t:], fresh_posts, exact=False)
    assert_state_equal(priors[1:2, t:], fresh_priors, exact=False)
    # The other rows do not reset: they differ from a fresh start.
    other = model.observe(embeds[0:1, t:], actions[0:1, t:], is_first[1:2, t:])[0]
    assert not torch.allclose(posts.deter[0:1, t:], other.deter) or not torch.allclose(
        posts.mean[0:1, t:], other.mean
    )
    # obs_step with is_first resets too (and zeroes the previous action).
    post, prior = model.obs_step(
        posts[:, t - 1], actions[:, t], embeds[:, t], torch.tensor([False, True, False])
    )
    assert_state_equal(post[1:2], fresh_posts[:, 0], exact=False)
    # The initial state given to observe is reset by is_first[:, 0].
    again = model.observe(embeds, actions, is_first, state=posts[:, -1])[0]
    assert_state_equal(again, posts, exact=False)


def test_mean_only_is_deterministic():
    model = make("rssm", deterministic=True)
    embeds, actions, is_first = sequence()
    a, _ = model.observe(embeds, actions, is_first)
    b, _ = model.observe(embeds, actions, is_first)
    assert_state_equal(a, b)
    assert torch.equal(a.stoch, a.mean)


# ----------------------------------------------------------------------------- world model
@pytest.mark.parametrize("kind", KINDS)
def test_world_model_and_open_loop(kind):
    torch.manual_seed(0)
    wm = WorldModel(
        A, transition=kind, cnn_depth=4, embed_size=128, **SIZES, reward_hidden=8
    ).eval()
    assert {"encoder", "transition", "decoder", "reward"} <= {n for n, _ in wm.named_children()}
    batch, length, context = 2, 6, 2
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, length, 3, 64, 64, generator=g) - 0.5
    actions = torch.rand(batch, length, A, generator=g) * 2 - 1
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    torch.manual_seed(3)
    pred = wm.open_loop_prediction(images, actions, is_first, context=context)
    assert pred.shape == images.shape and pred.dtype == torch.float32 and not pred.requires_grad
    # Context frames are reconstructions of the filtered posteriors.
    torch.manual_seed(3)
    posts, _ = wm.transition.observe(
        wm.encoder(images[:, :context]), actions[:, :context], is_first[:, :context]
    )
    torch.testing.assert_close(pred[:, :context], wm.decoder(wm.transition.features(posts)))
    # Frames after the context never see the images after the context.
    changed = images.clone()
    changed[:, context:] = torch.rand_like(changed[:, context:])
    torch.manual_seed(3)
    assert torch.equal(pred, wm.open_loop_prediction(changed, actions, is_first, context=context))
    assert wm.open_loop_prediction(images, actions, is_first, context=length).shape == images.shape
    with pytest.raises(ValueError, match="context"):
        wm.open_loop_prediction(images, actions, is_first, context=0)
    with pytest.raises(ValueError, match="actions"):
        wm.open_loop_prediction(images, actions[:, :3], is_first)


def test_world_model_paper_sizes():
    wm = WorldModel(6)
    assert wm.encoder.embed_size == 1024 and wm.transition.feature_size == 230
    assert isinstance(wm.transition, RSSM)
    count = sum(p.numel() for p in wm.parameters())
    assert 3_000_000 < count < 6_000_000
