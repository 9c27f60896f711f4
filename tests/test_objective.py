"""Tests of planetrl.objective: the bound, free nats, latent overshooting, gradients, learning."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Independent, Normal

from planetrl.models import WorldModel
from planetrl.objective import compute_loss, overshooting_terms, unit_normal_nll

KINDS = ["rssm", "ssm", "gru"]
A = 2
SIZES = dict(
    cnn_depth=4, embed_size=128, deter_size=10, stoch_size=4, hidden_size=8, reward_hidden=8
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def world_model(kind: str = "rssm", mean_only: bool = False, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    wm = WorldModel(A, transition=kind, **dict(SIZES, **overrides))
    if mean_only:
        wm.transition.mean_only = True
    return wm


def random_batch(batch: int = 2, length: int = 6, seed: int = 0, resets=()):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    for b, t in resets:
        is_first[b, t] = True
    action = torch.rand(batch, length, A, generator=g) * 2 - 1
    action[is_first] = 0
    return SimpleNamespace(
        image=torch.rand(batch, length, 3, 64, 64, generator=g) - 0.5,
        action=action,
        reward=torch.randn(batch, length, generator=g),
        is_first=is_first,
    )


def loss_of(wm, batch, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return compute_loss(wm, batch, **kwargs)


# ----------------------------------------------------------------------------- the plain bound
def test_unit_normal_nll_matches_distributions():
    g = torch.Generator().manual_seed(0)
    mean, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    expected = -Independent(Normal(mean, 1.0), 3).log_prob(target)
    torch.testing.assert_close(unit_normal_nll(mean, target, 3), expected)
    expected = -Normal(mean, 1.0).log_prob(target)
    torch.testing.assert_close(unit_normal_nll(mean, target, 0), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_equals_hand_computed_bound(kind):
    wm, batch = world_model(kind), random_batch()
    loss, metrics, posts = loss_of(
        wm, batch, free_nats=0.5, kl_scale=0.7, image_scale=1.3, reward_scale=2.0
    )
    torch.manual_seed(0)
    embeds = wm.encoder(batch.image)
    posts2, priors = wm.transition.observe(embeds, batch.action, batch.is_first)
    feats = wm.transition.features(posts2)
    image_nll = -Independent(Normal(wm.decoder(feats), 1.0), 3).log_prob(batch.image)
    reward_nll = -Normal(wm.reward(feats), 1.0).log_prob(batch.reward)
    kl = wm.transition.kl(posts2, priors)
    expected = (
        1.3 * image_nll.mean()
        + 2.0 * reward_nll.mean()
        + 0.7 * torch.maximum(kl, torch.tensor(0.5)).mean()
    )
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["image_loss"], image_nll.mean())
    torch.testing.assert_close(metrics["reward_loss"], reward_nll.mean())
    torch.testing.assert_close(metrics["kl"], kl.mean())
    assert posts.shape == (2, 6)
    assert {"loss", "image_loss", "reward_loss", "kl", "kl_loss"} <= set(metrics)
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    assert ("post_entropy" in metrics) == (kind != "gru")


def test_rejects_bad_batches():
    wm, batch = world_model(), random_batch()
    with pytest.raises(ValueError, match="action"):
        compute_loss(wm, SimpleNamespace(**dict(vars(batch), action=batch.action[..., :1])))
    with pytest.raises(ValueError, match="image"):
        compute_loss(wm, SimpleNamespace(**dict(vars(batch), image=batch.image[..., :32])))
    with pytest.raises(ValueError, match="reward"):
        compute_loss(wm, SimpleNamespace(**dict(vars(batch), reward=batch.reward[:, :2])))
    with pytest.raises(ValueError, match="lacks"):
        compute_loss(wm, SimpleNamespace(image=batch.image))
    with pytest.raises(ValueError, match="overshooting_distance"):
        compute_loss(wm, batch, overshooting_distance=0)


# ----------------------------------------------------------------------------- decode fraction
def per_frame_image_nll(wm, batch):
    embeds = wm.encoder(batch.image)
    posts, _ = wm.transition.observe(embeds, batch.action, batch.is_first)
    feats = wm.transition.features(posts)
    return unit_normal_nll(wm.decoder(feats), batch.image, 3).detach().flatten()


def test_decode_fraction_is_a_subset_mean_and_unbiased():
    """Each draw is the mean NLL of ceil(f B L) distinct frames; over draws it averages to the
    full image term, and the other terms do not change."""
    wm, batch = world_model(mean_only=True), random_batch(batch=2, length=6)
    nll = per_frame_image_nll(wm, batch).double()  # 12 frames
    _, full, _ = loss_of(wm, batch)
    torch.testing.assert_close(full["image_loss"].double(), nll.mean(), rtol=1e-6, atol=1e-3)
    subset_means = torch.combinations(nll, r=3).mean(dim=1)  # every 3-of-12 subset
    draws = []
    for seed in range(300):
        _, metrics, _ = loss_of(wm, batch, seed=seed, decode_fraction=0.25)  # ceil(3.0) frames
        value = metrics["image_loss"].double()
        assert float((subset_means - value).abs().min()) < 1e-2
        for key in ("reward_loss", "kl", "kl_loss"):
            torch.testing.assert_close(metrics[key], full[key])
        draws.append(float(value))
    # Sampling 3 of N=12 without replacement: var = s^2 / 3 * (N - 3) / (N - 1).
    stderr = math.sqrt(float(nll.var()) / 3 * 9 / 11 / len(draws))
    assert abs(sum(draws) / len(draws) - float(nll.mean())) < 4 * stderr
    assert len({round(d, 3) for d in draws}) > 20  # the subset is redrawn every call


def test_decode_fraction_gradients_and_bad_values():
    wm, batch = world_model(), random_batch()
    loss, _, _ = loss_of(wm, batch, decode_fraction=0.1)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in wm.decoder.parameters())
    assert all(p.grad is not None for p in wm.encoder.parameters())
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(ValueError, match="decode_fraction"):
            compute_loss(wm, batch, decode_fraction=bad)


# ----------------------------------------------------------------------------- free nats
def test_free_nats_clip_is_constant_without_gradient():
    wm, batch = world_model(), random_batch()
    free = 1e4  # far above any KL here
    loss, metrics, _ = loss_of(wm, batch, free_nats=free, image_scale=0.0, reward_scale=0.0)
    assert float(metrics["kl"]) < free
    assert loss.item() == free and metrics["kl_loss"].item() == free
    loss.backward()
    grads = [p.grad for p in wm.parameters() if p.grad is not None]
    assert all(float(g.abs().max()) == 0.0 for g in grads)
    # Without the clip the KL has a gradient.
    wm.zero_grad()
    loss, _, _ = loss_of(wm, batch, free_nats=0.0, image_scale=0.0, reward_scale=0.0)
    loss.backward()
    assert float(wm.transition.prior_head.linear.weight.grad.abs().max()) > 0


def test_free_nats_per_step():
    """max(KL, free_nats) is taken per (b, t) before the mean (not on the mean)."""
    wm, batch = world_model(), random_batch()
    _, metrics, _ = loss_of(wm, batch, free_nats=0.0)
    torch.manual_seed(0)
    posts, priors = wm.transition.observe(wm.encoder(batch.image), batch.action, batch.is_first)
    kl = wm.transition.kl(posts, priors).detach()
    free = float(kl.median())
    _, clipped, _ = loss_of(wm, batch, free_nats=free)
    torch.testing.assert_close(clipped["kl_loss"], kl.clamp_min(free).mean())
    assert float(clipped["kl_loss"]) > max(free, float(kl.mean()))


# ----------------------------------------------------------------------------- overshooting
@pytest.mark.parametrize("kind", KINDS)
def test_overshooting_distance_one_is_the_plain_bound_exactly(kind):
    wm, batch = world_model(kind), random_batch(resets=[(1, 3)])
    plain, m0, _ = loss_of(wm, batch)
    same, m1, _ = loss_of(
        wm, batch, overshooting_distance=1, overshooting_kl_scale=5.0, overshooting_reward_scale=5.0
    )
    assert plain.item() == same.item() and torch.equal(plain, same)
    assert m0.keys() == m1.keys()


def reference_overshooting(wm, batch, distance, free_nats):
    """Slow loop: for every (b, t, d), imagine from the posterior at t - d under a_{t-d..t-1}."""
    tm = wm.transition
    posts, _ = tm.observe(wm.encoder(batch.image), batch.action, batch.is_first)
    batch_size, length = batch.reward.shape
    kl_sum = reward_sum = posts.deter.new_zeros(())
    count = 0
    for b in range(batch_size):
        for t in range(length):
            for d in range(2, distance + 1):
                if t - d < 0 or bool(batch.is_first[b, t - d + 1 : t + 1].any()):
                    continue
                start = posts[b : b + 1, t - d]
                prior = tm.imagine(start, batch.action[b : b + 1, t - d + 1 : t + 1])[:, d - 1]
                target = posts[b : b + 1, t].detach()
                kl_sum = kl_sum + tm.kl(target, prior).clamp_min(free_nats).sum()
                mean = wm.reward(tm.features(prior))
                reward_sum = reward_sum + unit_normal_nll(mean, batch.reward[b : b + 1, t], 0).sum()
                count += 1
    return kl_sum / (batch_size * length), reward_sum / (batch_size * length), count


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("distance", [2, 4])
def test_overshooting_adds_exactly_the_expected_terms(kind, distance):
    wm = world_model(kind, mean_only=True).double()
    batch = random_batch(batch=2, length=7, resets=[(1, 3), (0, 6)])
    batch = SimpleNamespace(
        **{k: v.double() if v.is_floating_point() else v for k, v in vars(batch).items()}
    )
    beta, gamma, free = 3.0, 2.0, 0.05
    plain, _, _ = compute_loss(wm, batch, free_nats=free)
    loss, metrics, _ = compute_loss(
        wm,
        batch,
        free_nats=free,
        overshooting_distance=distance,
        overshooting_kl_scale=beta,
        overshooting_reward_scale=gamma,
    )
    ref_kl, ref_reward, count = reference_overshooting(wm, batch, distance, free)
    assert count > 0
    expected = plain + beta / distance * ref_kl + gamma / distance * ref_reward
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(metrics["overshooting_kl_loss"], ref_kl, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(
        metrics["overshooting_reward_loss"], ref_reward, rtol=1e-10, atol=1e-8
    )
    if kind != "gru":  # not every term clipped to the free nats: the comparison has teeth
        assert ref_kl.item() > 1.01 * count * free / (2 * 7)


def test_overshooting_masks_resets_and_counts():
    """Chunk of length 5, D = 3, reset at t = 2 in row 1: valid (t, d) pairs counted by hand."""
    wm = world_model("rssm", mean_only=True)
    batch = random_batch(batch=2, length=5, resets=[(1, 2)])
    torch.manual_seed(0)
    posts, priors = wm.transition.observe(wm.encoder(batch.image), batch.action, batch.is_first)
    terms = overshooting_terms(
        wm.transition, None, posts, priors, batch.action, batch.reward, batch.is_first, 3, 0.0
    )
    # Row 0: d=2: t=2,3,4; d=3: t=3,4 -> 5. Row 1 (episode starts at 0 and 2): (t-d, t] must not
    # contain 2: d=2: t=4 (from 2); d=3: none (t=3 from 0 and t=4 from 1 both cross 2) -> 1.
    assert int(terms["count"]) == 6


def test_overshooting_gradients():
    """Gradients are stopped on the target posterior and flow into the start posterior."""
    wm = world_model("rssm")
    batch = random_batch(batch=2, length=6)
    batch.image.requires_grad_(True)
    loss, _, _ = loss_of(
        wm,
        batch,
        free_nats=0.0,
        image_scale=0.0,
        reward_scale=0.0,
        kl_scale=0.0,
        overshooting_distance=3,
        overshooting_kl_scale=1.0,
    )
    (grad,) = torch.autograd.grad(loss, batch.image)
    per_step = grad.abs().flatten(2).sum(-1)  # (B, L)
    # o_{L-2}, o_{L-1} enter only through target posteriors (starts are posteriors at <= L-3).
    assert float(per_step[:, -2:].max()) == 0.0
    # o_0 enters through the start posterior of the rollouts: the rollout starts from q(s_0 | .).
    assert float(per_step[:, 0].min()) > 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_global_kl(kind):
    wm, batch = world_model(kind), random_batch()
    plain, _, _ = loss_of(wm, batch)
    loss, metrics, posts = loss_of(wm, batch, global_kl_scale=0.5)
    standard = Independent(Normal(torch.zeros_like(posts.mean), torch.ones_like(posts.std)), 1)
    if kind == "gru":
        expected = torch.zeros(())
    else:
        post = Independent(Normal(posts.mean, posts.std), 1)
        expected = torch.distributions.kl_divergence(post, standard).mean()
    torch.testing.assert_close(metrics["global_kl"], expected.detach())
    torch.testing.assert_close(loss, plain + 0.5 * expected)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind):
    wm, batch = world_model(kind), random_batch(resets=[(0, 3)])
    loss, _, _ = loss_of(wm, batch, free_nats=0.0)
    loss.backward()
    for name, p in wm.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


# ----------------------------------------------------------------------------- learning
def moving_square_batch(batch: int = 2, length: int = 6) -> SimpleNamespace:
    image = torch.full((batch, length, 3, 64, 64), -0.5)
    for b in range(batch):
        for t in range(length):
            x = (6 * t + 12 * b) % 48
            image[b, t, :, 20:36, x : x + 16] = 0.4
            image[b, t, 0, 20:36, x : x + 16] = -0.2 + 0.3 * b
    action = torch.zeros(batch, length, A)
    action[:, 1:, 0] = 1.0
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    reward = torch.arange(length).float().repeat(batch, 1) / length
    return SimpleNamespace(image=image, action=action, reward=reward, is_first=is_first)


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_a_small_sequence(kind):
    wm = world_model(
        kind,
        cnn_depth=8,
        embed_size=256,
        deter_size=32,
        stoch_size=8,
        hidden_size=32,
        reward_hidden=32,
    )
    batch = moving_square_batch()
    optimizer = torch.optim.Adam(wm.parameters(), lr=3e-3)
    const = 3 * 64 * 64 * 0.5 * math.log(2 * math.pi)  # the image NLL's constant part
    errors = []
    for _ in range(120):
        loss, metrics, _ = compute_loss(wm, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(float(metrics["image_loss"]) - const)
    assert errors[-1] < errors[0] / 5, errors[::20]


def test_seeded_runs_are_repeatable():
    def run():
        wm = world_model("rssm", seed=0)
        optimizer = torch.optim.Adam(wm.parameters(), lr=1e-3)
        torch.manual_seed(0)
        batch = random_batch(seed=0)
        losses = []
        for _ in range(3):
            loss, _, _ = compute_loss(wm, batch, overshooting_distance=3, overshooting_kl_scale=1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    assert run() == run()


# ------------------------------------------------------------------------------ KL balancing
def _kl_grads(alpha, free_nats=0.0):
    wm, batch = world_model(), random_batch()
    loss, metrics, _ = loss_of(
        wm, batch, free_nats=free_nats, image_scale=0.0, reward_scale=0.0, kl_balance=alpha
    )
    loss.backward()
    grads = {n: p.grad.clone() for n, p in wm.named_parameters() if p.grad is not None}
    return float(metrics["kl_loss"]), grads


@pytest.mark.parametrize("free_nats", [0.0, 0.05])
def test_kl_balancing_keeps_the_value_and_splits_the_gradient(free_nats):
    """α max(KL(sg(q)||p), F) + (1-α) max(KL(q||sg(p)), F): the value of the plain term; the
    gradients through the prior (α = 1) and the posterior (α = 0) add up to the plain one, and
    α weights them linearly."""
    plain, full = _kl_grads(None, free_nats)
    to_prior = _kl_grads(1.0, free_nats)
    to_post = _kl_grads(0.0, free_nats)
    mixed = _kl_grads(0.8, free_nats)
    for value, _ in (to_prior, to_post, mixed):
        assert value == pytest.approx(plain, rel=1e-6)
    for name, grad in full.items():
        prior_part = to_prior[1].get(name, torch.zeros_like(grad))
        post_part = to_post[1].get(name, torch.zeros_like(grad))
        torch.testing.assert_close(prior_part + post_part, grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            mixed[1].get(name, torch.zeros_like(grad)),
            0.8 * prior_part + 0.2 * post_part,
            rtol=1e-4,
            atol=1e-6,
        )
    # the prior's own head learns only through sg(q): nothing with α = 0
    head = "transition.prior_head.linear.weight"
    assert float(to_post[1][head].abs().max()) == 0.0 < float(to_prior[1][head].abs().max())
    with pytest.raises(ValueError, match="kl_balance"):
        loss_of(*(world_model(), random_batch()), kl_balance=1.5)
