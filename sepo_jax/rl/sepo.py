"""SEPO's rewards: payoff minus penalties, credited to episodes according to `credit`.

Slots come in groups of n episodes against one (pool, opponent) pair. Per-round rewards [E, R]:

- `credited` (docs/method.md §3 item 3): each episode gets only what it produced, by pool. Train pool:
  s*u_t - lambda_x*x; exploit pool: -lambda_e*s*e - lambda_x*x with e = max(0, mean opponent payoff -
  mean learner payoff) of that episode; collusive pool: -lambda_c*c of that episode.
- `exact`: `credited`, with the exact best response to the current policy in the exploit pool.
- `shared` (the paper's accidental first version): train-pool episodes get s*u_t minus one penalty
  shared by the whole group (pool means of e and c, group mean of x); it cancels under group
  normalisation, so this is reward-only GRPO. Side episodes carry no gradient.
- `auxiliary` (the paper's first design): train-pool episode i gets s*u_t minus the penalties of side
  episodes (exploit episode i mod N_e, collusive episode i mod N_c) and its own x; independent of
  its actions, so the penalty has zero expected gradient. Side episodes carry no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .rollout import Trajectory

CREDIT_MODES = ("shared", "auxiliary", "credited", "exact")
POOL_INDEX = {"train": 0, "exploit": 1, "collusive": 2, "shift": 3}
TRAINING_POOLS = ("train", "exploit", "collusive")  # shift is for evaluation only


@struct.dataclass
class Lambdas:
    e: float
    c: float
    x: float
    scale: float  # s = 3 / max_payoff


def seat_payoffs(traj: Trajectory):
    """Learner and opponent payoffs per round [E, R]."""
    learner = jnp.take_along_axis(traj.payoffs, traj.seat[:, None, None], axis=2)[..., 0]
    return learner, traj.payoffs.sum(-1) - learner


def episode_exploit(traj: Trajectory):
    """Per-episode exploit advantage e_r = max(0, mean opponent payoff - mean learner payoff)."""
    mine, theirs = seat_payoffs(traj)
    return jnp.maximum(0.0, theirs.mean(-1) - mine.mean(-1))


def _masked_mean(x, m):
    return jnp.where(m, x, 0.0).sum() / jnp.maximum(m.sum(), 1)


def rewards(traj: Trajectory, pool: jax.Array, credit: str, lam: Lambdas, group_size: int):
    """Per-round rewards [E, R] and the per-episode gradient weight mask [E] (side episodes 0)."""
    if credit not in CREDIT_MODES:
        raise ValueError(f"config.sepo.credit must be one of {CREDIT_MODES}, got {credit!r}")
    mine, _ = seat_payoffs(traj)
    e, c, x = episode_exploit(traj), traj.collusion, traj.externality
    is_train, is_exploit, is_coll = pool == 0, pool == 1, pool == 2
    payoff = lam.scale * mine
    if credit in ("credited", "exact"):
        per_episode = jnp.where(is_exploit, -lam.e * lam.scale * e - lam.x * x, jnp.where(is_coll, -lam.c * c, -lam.x * x))
        rew = jnp.where(is_train[:, None], payoff, 0.0) + per_episode[:, None]
        return rew, jnp.ones_like(is_train)
    if credit == "shared":
        group_x = x.reshape(-1, group_size).mean(-1).repeat(group_size)
        penalty = lam.e * lam.scale * _masked_mean(e, is_exploit) + lam.c * _masked_mean(c, is_coll) + lam.x * group_x
    else:  # auxiliary
        idx = jnp.arange(pool.shape[0])
        side_e = _nth(e, is_exploit, idx)
        side_c = _nth(c, is_coll, idx)
        penalty = lam.e * lam.scale * side_e + lam.c * side_c + lam.x * x
    return payoff - penalty[:, None], is_train


def _nth(values, members, idx):
    """values of the (idx mod count)-th member episode, 0 when the pool is empty."""
    count = members.sum()
    order = jnp.cumsum(members) - 1  # rank of each member
    target = idx % jnp.maximum(count, 1)
    hit = members[None, :] & (order[None, :] == target[:, None])
    return jnp.where(count > 0, (hit * values[None, :]).sum(-1), 0.0)


def pool_weights(pool: jax.Array, weights: tuple[float, float, float]):
    """Per-episode weight of its pool, applied to advantages after group normalisation."""
    return jnp.asarray(weights, jnp.float32)[pool]
