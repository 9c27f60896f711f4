"""The training objective: PlaNet's variational bound (paper Eq. 3) with free nats, and the
optional latent overshooting (paper section 4, Eq. 7) and global prior KL (paper appendix).

Reduction, for every term: sum over pixels / latent dimensions within a step, mean over the batch
and the time steps of the chunk (the paper's per-sequence sum over t, divided by B * L). With
``posts``, ``priors`` the filtered q(s_t | h_t, e_t) and one-step priors p(s_t | h_t):

    loss = image_scale  * mean_{b,t} [ -ln N(o_t; dec(h_t, s_t), I) ]
         + reward_scale * mean_{b,t} [ -ln N(r_t; rew(h_t, s_t), 1) ]
         + kl_scale     * mean_{b,t} [ max(KL(q(s_t | .) || p(s_t | h_t)), free_nats) ]  (*)
         + (beta / D)   * sum_{d=2..D} sum_{valid b,t} max(KL(sg(q(s_t|.)) || p_d(s_t)), free_nats)
                        / (B L)
         + (gamma / D)  * sum_{d=2..D} sum_{valid b,t} [ -ln N(r_t; rew(p_d features), 1) ] / (B L)
         + global_kl_scale * mean_{b,t} [ KL(q(s_t | .) || N(0, I)) ]
         + continuation_scale * mean_{b,t} [ -ln Bernoulli(c_t; cont(h_t, s_t)) ]
         + reward_scale * sum_k mean_{b,t} [ -ln N(r^k_t; rew_k(h_t, s_t), 1) ]

where p_d(s_t) is the d-step open-loop prior imagined from the posterior at t - d under the true
actions a_{t-d..t-1}, and (b, t) is valid when t - d >= 0 and no episode starts in (t - d, t] (an
open-loop prior never crosses a reset). sg stops the gradient of the target posterior q(s_t | .)
only, as the official code (``stop_os_posterior_gradient=True``): the rollout itself, its start
posterior included, keeps its gradient. beta = ``overshooting_kl_scale``, gamma =
``overshooting_reward_scale``. The one-step term is the d = 1 term with beta_1 = ``kl_scale`` and
keeps the posterior's gradient (as the official code), so ``overshooting_distance=1`` is the plain
objective exactly (the overshooting code does not even run).

(*) With ``kl_balance`` = α (DreamerV2's KL balancing, not PlaNet's) this term is
α max(KL(sg(q) || p), free_nats) + (1 − α) max(KL(q || sg(p)), free_nats): the same value, the
gradient split between the prior (α) and the posterior (1 − α).

The continuation term is not PlaNet's (Dreamer/DreamerV2's discount predictor): it exists only
when the world model has a continuation head (``model.continuation``), a Bernoulli over c_t = 0
on a true terminal step (``is_terminal``) and 1 otherwise, on the posterior features like the
reward term; without the head the loss is PlaNet's, unchanged.

The last sum is not PlaNet's either: one term per other task k whose reward head the world model
has (``task_rewards``; none by default), on the rewards r^k_t relabelled from the same physics
(``batch.task_rewards``), weighted as the reward term and one-step only (no overshooting).

Free nats, as the official google-research/planet ``training/utility.py``: ``max(KL, free_nats)``
per step (and per overshooting term) before the mean, not on the mean KL; a KL below the free nats
adds the constant ``free_nats`` and no gradient. Log-likelihoods are exact (closed form including
the -0.5 ln(2 pi) constant per dimension), so at 3x64x64 the image term is ~11291 nats above half
the squared error. The paper's Eq. 3 weights every term 1 (this function's defaults); the official
code weights the reward term by 10, and so does the training config (``loss.reward_scale``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from planetrl.models.base import TransitionModel, capturing, diag_normal
from planetrl.models.encoder import check_image
from planetrl.models.state import State

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def unit_normal_nll(mean: Tensor, target: Tensor, event_dims: int) -> Tensor:
    """-ln N(target; mean, I), summed over the last ``event_dims`` dimensions (exact, with the
    normalising constant; equals ``-Independent(Normal(mean, 1), event_dims).log_prob(target)``)."""
    sq = (target - mean).square()
    if event_dims:
        dims = tuple(range(-event_dims, 0))
        count = math.prod(sq.shape[-event_dims:])
        return 0.5 * sq.sum(dim=dims) + count * _HALF_LOG_2PI
    return 0.5 * sq + _HALF_LOG_2PI


def continuation_nll(logits: Tensor, continues: Tensor) -> Tensor:
    """-ln Bernoulli(c; sigmoid(logits)) per element, c = ``continues`` in {0, 1} (float)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, continues.to(logits.dtype), reduction="none"
    )


def _continues(batch: Any, is_first: Tensor) -> Tensor:
    """c_t = 1 - is_terminal_t (B, L) of ``batch``, on ``is_first``'s device."""
    is_terminal = getattr(batch, "is_terminal", None)
    if is_terminal is None:
        raise ValueError("the world model has a continuation head: the batch needs is_terminal")
    is_terminal = torch.as_tensor(is_terminal, device=is_first.device)
    if tuple(is_terminal.shape) != tuple(is_first.shape):
        raise ValueError(
            f"batch.is_terminal must be (B, L) = {tuple(is_first.shape)}, got "
            f"{tuple(is_terminal.shape)}"
        )
    return (~is_terminal.bool()).float()


def _check_batch(
    world_model: Any, batch: Any, generator: Any = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    missing = [k for k in ("image", "action", "reward", "is_first") if not hasattr(batch, k)]
    if missing:
        raise ValueError(f"batch lacks attributes {missing} (need image, action, reward, is_first)")
    image, action, reward = batch.image, batch.action, batch.reward
    if isinstance(image, Tensor) and image.dtype == torch.uint8:
        image = world_model.preprocess(image, generator)  # stored frames (B, L, H, W, 3)
    check_image(image, "batch.image")
    if image.dim() != 5:
        raise ValueError(f"batch.image must be (B, L, 3, 64, 64), got {tuple(image.shape)}")
    lead = tuple(image.shape[:2])
    size = world_model.transition.action_size
    if action.dim() != 3 or tuple(action.shape[:2]) != lead or action.shape[-1] != size:
        raise ValueError(
            f"batch.action must be (B, L, A) = {lead + (size,)}, got {tuple(action.shape)}"
        )
    if tuple(reward.shape) != lead:
        raise ValueError(f"batch.reward must be (B, L) = {lead}, got {tuple(reward.shape)}")
    is_first = torch.as_tensor(batch.is_first, device=image.device)
    if tuple(is_first.shape) != lead:
        raise ValueError(f"batch.is_first must be (B, L) = {lead}, got {tuple(is_first.shape)}")
    return image, action.to(image.dtype), reward.to(image.dtype), is_first.bool()


def overshooting_terms(
    transition: TransitionModel,
    reward_model: Any | None,
    posts: State,
    priors: State,
    actions: Tensor,
    rewards: Tensor,
    is_first: Tensor,
    distance: int,
    free_nats: float,
) -> dict[str, Tensor]:
    """Latent overshooting terms for d = 2..D, batched over all start positions.

    The d-step prior at t is the open-loop prior from the posterior at t - d under the true
    actions a_{t-d}, ..., a_{t-1} (``actions[:, t-d+1 .. t]``). Its first step is the one-step
    prior at u = t - d + 1, which :meth:`observe` already computed from the posterior at u - 1,
    ``priors[:, u]``; so all B * (L - 2) one-step priors u = 1..L-2 are flattened into the batch
    dimension and rolled D - 1 further steps with one :meth:`imagine` call (the open-loop rollout
    starts from the posterior; only its first step is shared with the one-step term).

    Returns sums over valid (b, t) (not yet divided by B * L or weighted):
    ``kl_loss`` = sum max(KL(sg(q_t) || p_d), free_nats), ``kl`` = sum KL (raw), ``count`` =
    number of valid terms, and, if ``reward_model`` is given, ``reward_loss`` = sum of the reward
    NLL of the d-step prior features.
    """
    batch, length = posts.shape
    steps = distance - 1  # rollout steps after the shared first one
    zero = posts.deter.new_zeros(())
    out = {"kl_loss": zero, "kl": zero, "count": zero}
    if reward_model is not None:
        out["reward_loss"] = zero
    if steps < 1 or length < 3:
        return out
    starts = length - 2  # u = 1..L-2 (u = 0 has no posterior before it; u = L-1 no target after)
    start = priors[:, 1 : length - 1].map(lambda x: x.reshape(batch * starts, x.shape[-1]))
    # Rollout step k (1..D-1) from u applies actions[:, u + k] (zero-padded past the chunk end).
    padded = torch.cat([actions, actions.new_zeros(batch, steps, actions.shape[-1])], dim=1)
    windows = padded.unfold(1, steps, 1)[:, 2:length]  # (B, U, A, K): actions[:, u+1 : u+1+K]
    windows = windows.transpose(-1, -2).reshape(batch * starts, steps, actions.shape[-1])
    rolled = transition.imagine(start, windows)  # (B U, K): the d = k + 1 step priors at t = u + k
    rolled = rolled.map(lambda x: x.reshape(batch, starts, steps, x.shape[-1]))

    device = actions.device
    u = torch.arange(1, length - 1, device=device)
    t = u[:, None] + torch.arange(1, steps + 1, device=device)[None]  # (U, K)
    inside = t <= length - 1
    t = t.clamp(max=length - 1)
    # No episode start in (t - d, t] = [u, t]: cumulative count of starts, cum[t] - cum[u - 1].
    cum = is_first.long().cumsum(1)
    no_reset = (cum[:, t] - cum[:, u - 1][:, :, None]) == 0  # (B, U, K)
    mask = (no_reset & inside).to(posts.deter.dtype)

    target = posts.detach().map(lambda x: x[:, t])  # sg(q(s_t | .)), (B, U, K, .)
    kl = transition.kl(target, rolled)
    out["kl_loss"] = (kl.clamp_min(free_nats) * mask).sum()
    out["kl"] = (kl.detach() * mask).sum()
    out["count"] = mask.sum()
    if reward_model is not None:
        nll = unit_normal_nll(reward_model(transition.features(rolled)), rewards[:, t], 0)
        out["reward_loss"] = (nll * mask).sum()
    return out


def compute_loss(
    world_model: Any,
    batch: Any,
    *,
    free_nats: float = 3.0,
    kl_scale: float = 1.0,
    overshooting_distance: int = 1,
    overshooting_kl_scale: float = 0.0,
    overshooting_reward_scale: float = 0.0,
    global_kl_scale: float = 0.0,
    continuation_scale: float = 1.0,
    image_scale: float = 1.0,
    reward_scale: float = 1.0,
    decode_fraction: float = 1.0,
    kl_balance: float | None = None,
    generator: Any = None,
) -> tuple[Tensor, dict[str, Tensor], State]:
    """The negative variational bound for one batch of chunks (see the module docstring).

    Args:
        world_model: a :class:`planetrl.models.WorldModel` (``encoder``, ``transition``,
            ``decoder``, ``reward``).
        batch: any object with ``image``, ``action`` (B, L, A) (``action[:, t]`` = a_{t-1}),
            ``reward`` (B, L), ``is_first`` (B, L) bool: a :class:`planetrl.replay.Batch`. Its
            ``image`` is uint8 (B, L, 64, 64, 3), the stored frames, turned into the model's input
            by ``world_model.preprocess`` (the one place that does it, for acting too); a float
            (B, L, 3, 64, 64) ``image`` is taken as already preprocessed.
        free_nats: KL per step (and per overshooting term) is ``max(KL, free_nats)``.
        kl_scale: beta_1, weight of the one-step KL.
        overshooting_distance: D >= 1; 1 = the standard objective.
        overshooting_kl_scale: beta; the d-step KL terms, 1 < d <= D, are weighted beta / D.
        overshooting_reward_scale: gamma; reward NLL under the d-step priors, weighted gamma / D.
        global_kl_scale: weight of KL(q(s_t | .) || N(0, I)) (no free nats).
        continuation_scale: weight of the continuation head's Bernoulli NLL (c_t = 1 -
            ``batch.is_terminal``), when ``world_model.continuation`` is not None (else unused;
            the batch then needs ``is_terminal`` (B, L) bool).
        image_scale, reward_scale: weights of the image and reward NLL.
        decode_fraction: decode only ``ceil(decode_fraction * B * L)`` frames, drawn uniformly
            without replacement (torch's global generator); the image term is their mean NLL, an
            unbiased estimate of the mean over all B * L frames at a fraction of the decoder's
            cost. The encoder, the filter, the reward and KL terms still see every frame. 1 = all
            frames, the paper's objective (no random draw).
        kl_balance: α; None = the paper's one-step KL term. With α, DreamerV2's KL balancing:
            α max(KL(sg(q) || p), free_nats) + (1 − α) max(KL(q || sg(p)), free_nats) per
            step (the same value as max(KL, free_nats) at every α; the gradient reaches the
            prior with weight α and the posterior with 1 − α). Not PlaNet's.
        generator: draws the dequantisation noise of ``world_model.preprocess`` (a torch or
            numpy generator; None: torch's global RNG).

    Returns:
        (loss, metrics, posts): the scalar loss to minimise; detached scalar metrics ``loss``,
        ``image_loss`` (image NLL per step), ``reward_loss`` (reward NLL per step), ``kl`` (mean
        raw one-step KL), ``kl_loss`` (mean clipped KL), ``global_kl`` when on,
        ``overshooting_kl`` (mean raw KL over valid terms), ``overshooting_kl_loss``,
        ``overshooting_reward_loss`` when on (unweighted, per B * L), ``continuation_loss`` (its
        Bernoulli NLL per step) with the continuation head, and ``prior_entropy`` /
        ``post_entropy`` for stochastic models; and the posteriors (B, L), still attached to the
        graph (``.detach()`` them to keep them).
    """
    distance = int(overshooting_distance)
    if distance < 1 or distance != overshooting_distance:
        raise ValueError(f"overshooting_distance must be an int >= 1, got {overshooting_distance}")
    if free_nats is None:
        free_nats = 0.0
    if free_nats < 0:
        raise ValueError(f"free_nats must be >= 0, got {free_nats}")
    if not 0.0 < decode_fraction <= 1.0:
        raise ValueError(f"decode_fraction must be in (0, 1], got {decode_fraction!r}")
    image, action, reward, is_first = _check_batch(world_model, batch, generator)
    transition: TransitionModel = world_model.transition
    batch_size, length = image.shape[:2]

    embeds = world_model.encoder(image)
    posts, priors = transition.observe(embeds, action, is_first)
    features = transition.features(posts)
    if decode_fraction < 1.0:
        # E_idx[mean_{i in idx} NLL_i] = mean_{b,t} NLL_{b,t}: decode a uniform subset of frames.
        count = batch_size * length
        keep = math.ceil(decode_fraction * count)
        if capturing(image.device):  # randperm is not graph-safe; the order of U(0, 1) keys is
            chosen = torch.rand(count, device=image.device).argsort()[:keep]  # as uniform
        else:
            chosen = torch.randperm(count, device=image.device)[:keep]
        flat_features = features.reshape(count, features.shape[-1])[chosen]
        flat_images = image.reshape(count, *image.shape[2:])[chosen]
        image_loss = unit_normal_nll(world_model.decoder(flat_features), flat_images, 3).mean()
    else:
        image_loss = unit_normal_nll(world_model.decoder(features), image, 3).mean()
    reward_loss = unit_normal_nll(world_model.reward(features), reward, 0).mean()
    kl = transition.kl(posts, priors)
    if kl_balance is None:
        kl_loss = kl.clamp_min(free_nats).mean()
    else:
        if not 0.0 <= kl_balance <= 1.0:
            raise ValueError(f"kl_balance must be None or in [0, 1], got {kl_balance!r}")
        # sg(q) trains the prior, sg(p) the posterior; the forward value is KL either way.
        to_prior = transition.kl(posts.detach(), priors).clamp_min(free_nats).mean()
        to_post = transition.kl(posts, priors.detach()).clamp_min(free_nats).mean()
        kl_loss = kl_balance * to_prior + (1.0 - kl_balance) * to_post
    loss = image_scale * image_loss + reward_scale * reward_loss + kl_scale * kl_loss
    metrics = {
        "image_loss": image_loss,
        "reward_loss": reward_loss,
        "kl": kl.mean(),
        "kl_loss": kl_loss,
    }

    heads = getattr(world_model, "task_rewards", None) or {}
    if heads:
        # Other tasks' reward heads on the same features, each as the reward term (one step).
        given = getattr(batch, "task_rewards", {}) or {}
        missing = sorted(set(heads) - set(given))
        if missing:
            raise ValueError(
                f"the world model has reward heads for {missing} but the batch has no rewards "
                "for them (a Replay made with task_rewards=...)"
            )
        for task, head in heads.items():
            target = given[task].to(device=features.device, dtype=features.dtype)
            task_loss = unit_normal_nll(head(features), target, 0).mean()
            loss = loss + reward_scale * task_loss
            metrics[f"task_reward_loss/{task}"] = task_loss

    if global_kl_scale:
        standard = State(
            posts.deter, posts.stoch, torch.zeros_like(posts.mean), torch.ones_like(posts.std)
        )
        global_kl = transition.kl(posts, standard).mean()
        loss = loss + global_kl_scale * global_kl
        metrics["global_kl"] = global_kl

    continuation_model = getattr(world_model, "continuation", None)
    if continuation_model is not None:
        continuation_loss = continuation_nll(
            continuation_model(features), _continues(batch, is_first)
        ).mean()
        loss = loss + continuation_scale * continuation_loss
        metrics["continuation_loss"] = continuation_loss

    if distance > 1 and (overshooting_kl_scale or overshooting_reward_scale):
        terms = overshooting_terms(
            transition,
            world_model.reward if overshooting_reward_scale else None,
            posts,
            priors,
            action,
            reward,
            is_first,
            distance,
            free_nats,
        )
        steps = batch_size * length
        os_kl_loss = terms["kl_loss"] / steps
        loss = loss + (overshooting_kl_scale / distance) * os_kl_loss
        metrics["overshooting_kl_loss"] = os_kl_loss
        metrics["overshooting_kl"] = terms["kl"] / terms["count"].clamp_min(1)
        if overshooting_reward_scale:
            os_reward_loss = terms["reward_loss"] / steps
            loss = loss + (overshooting_reward_scale / distance) * os_reward_loss
            metrics["overshooting_reward_loss"] = os_reward_loss

    if transition.stoch_size > 0:
        with torch.no_grad():
            metrics["prior_entropy"] = diag_normal(priors.mean, priors.std).entropy().mean()
            metrics["post_entropy"] = diag_normal(posts.mean, posts.std).entropy().mean()
    metrics["loss"] = loss
    return loss, {k: v.detach() for k, v in metrics.items()}, posts
