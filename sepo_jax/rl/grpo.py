"""GRPO: group-relative advantages, the clipped surrogate, KL to the reference, loss aggregation.

Rewards arrive as [G, n, R] (G groups of n episodes, R rounds). `per_round` normalises each round
across the group (the paper); `per_episode` normalises the episodes' summed rewards. Groups whose
std is below `EPS_STD` get advantage 0 and are counted. Losses are returned as (sum, count) pairs so
gradient accumulation and multi-device reduction are exact. Modes are the settings' (`settings.py`),
validated where the config is read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS_STD = 1e-6
_ROUND_REWARDS = {"per_round": lambda rew: rew,
                  "per_episode": lambda rew: jnp.broadcast_to(rew.sum(-1, keepdims=True), rew.shape)}
_KL = {
    "one_sided": lambda d: jnp.maximum(0.0, d),  # the paper's beta * max(0, log pi - log pi_ref)
    "k1": lambda d: d,
    "k3": lambda d: jnp.exp(-d) + d - 1.0,
    "none": jnp.zeros_like,
}


def advantages(rew: jax.Array, mode: str = "per_round", scale_std: bool = True):
    """rew [G, n, R] -> (advantages [G, n, R], zero-variance share of (group, round) cells)."""
    rew = _ROUND_REWARDS[mode](rew)
    mean = rew.mean(1, keepdims=True)
    std = rew.std(1, keepdims=True)
    flat = std < EPS_STD
    adv = rew - mean
    if scale_std:
        adv = adv / (std + 1e-8)
    return jnp.where(flat, 0.0, adv), flat.mean()


def kl_term(logp: jax.Array, ref_logp: jax.Array, mode: str) -> jax.Array:
    """Per-sample KL estimate of the policy from the reference, from the sampled action's log-probs."""
    return _KL[mode](logp - ref_logp)


def policy_loss(logp, old_logp, ref_logp, adv, weight, *, clip_eps: float, clip_eps_high: float, beta: float,
                kl: str):
    """Per-sample loss terms; `weight` [N] masks padding and carries token counts for token_mean.
    Returns sums and the count to divide by, plus diagnostics sums. Samples of weight 0 (padding
    decisions, whose log-probs are -inf) contribute nothing, in values and gradients."""
    used = weight > 0
    logp, old_logp, ref_logp = (jnp.where(used, x, 0.0) for x in (logp, old_logp, ref_logp))
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps_high)
    surrogate = jnp.minimum(ratio * adv, clipped * adv)
    kl_sample = kl_term(logp, ref_logp, kl)
    per = -surrogate + beta * kl_sample
    was_clipped = (jnp.abs(ratio - clipped) > 0) & used
    return dict(
        loss=(per * weight).sum(),
        kl=(kl_sample * weight).sum(),
        clip_fraction=was_clipped.sum().astype(jnp.float32),
        count=weight.sum(),
    )


def entropy(probs: jax.Array, legal: jax.Array) -> jax.Array:
    p = jnp.where(legal, probs, 0.0)
    return -(p * jnp.log(jnp.where(p > 0, p, 1.0))).sum(-1)
