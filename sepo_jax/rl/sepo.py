"""SEPO's objective as a chain of pure functions: rewards by credit mode -> group-relative advantages
(`grpo.advantages`) -> pool weights -> the gradient mask; `advantages` composes them for a step.

Slots come in groups of n episodes against one (pool, opponent) pair; pools are named (`Pool`). What
each credit mode means is one row of `CREDIT` (docs/method.md §3):

- `credited` (§3 item 3): each episode gets only what it produced, by pool. Train pool:
  s*u_t - lambda_x*x; exploit pool: -lambda_e*s*e - lambda_x*x with e = max(0, mean opponent payoff -
  mean learner payoff) of that episode; collusive pool: -lambda_c*c of that episode.
- `exact`: `credited`, with the exact best response to the current policy in the exploit pool
  (`sepo.exploit_opponents = "best_response"`: the best response alone).
- `exploit_signal` (`credited`, `exact`): what an exploit-pool episode is charged. `episode` (the paper's):
  e = max(0, mean opponent payoff - mean learner payoff) of the whole episode, the same in every round,
  so every won (or drawn) episode gets the same 0 whatever it won. `round`: each round's own signed
  advantage of the opponent, e_t = opponent payoff - learner payoff of round t (no floor); against the
  exact best response in a zero-sum game this is payoff maximisation against it, per round, i.e.
  exploitability descent (Lockhart et al. 2019; experiments/results/safety_frontier_kuhn.md).
- `shared` (the paper's accidental first version): train-pool episodes get s*u_t minus one penalty
  shared by the whole group (pool means of e and c, group mean of x); it cancels under group
  normalisation, so this is reward-only GRPO. Side episodes carry no gradient.
- `auxiliary` (the paper's first design): train-pool episode i gets s*u_t minus the penalties of side
  episodes (exploit episode i mod N_e, collusive episode i mod N_c) and its own x; independent of
  its actions, so the penalty has zero expected gradient. Side episodes carry no gradient.

Penalty terms, the scale s and e come from `metrics` (one definition each).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable

import jax
import jax.numpy as jnp

from sepo_jax import settings

from . import grpo
from .metrics import Lambdas, episode_exploit, rate, seat_payoffs
from .rollout import Trajectory


class Pool(enum.IntEnum):
    """The opponent pools; an episode slot carries its pool's value. `shift` is evaluated, never trained on."""

    TRAIN = 0
    EXPLOIT = 1
    COLLUSIVE = 2
    SHIFT = 3

    @classmethod
    def named(cls, name: str) -> Pool:
        return cls[name.upper()]


assert tuple(p.name.lower() for p in Pool)[:3] == settings.TRAINING_POOLS


def _credited(traj: Trajectory, pool, lam: Lambdas, group_size: int, exploit_signal: str):
    mine, theirs = seat_payoffs(traj)
    e = theirs - mine if exploit_signal == "round" else episode_exploit(traj)[:, None]  # [E, R] or [E, 1]
    side = jnp.where(pool == Pool.COLLUSIVE, -lam.collusion(traj.collusion), -lam.externality(traj.externality))
    rew = (jnp.where((pool == Pool.TRAIN)[:, None], lam.payoff(mine), 0.0)
           + jnp.where((pool == Pool.EXPLOIT)[:, None], -lam.exploit(e), 0.0) + side[:, None])
    return rew, jnp.ones(pool.shape, bool)


def _shared(traj: Trajectory, pool, lam: Lambdas, group_size: int, exploit_signal: str):
    mine, _ = seat_payoffs(traj)
    group_x = traj.externality.reshape(-1, group_size).mean(-1).repeat(group_size)
    penalty = (lam.exploit(rate(episode_exploit(traj), pool == Pool.EXPLOIT))
               + lam.collusion(rate(traj.collusion, pool == Pool.COLLUSIVE)) + lam.externality(group_x))
    return lam.payoff(mine) - penalty[:, None], pool == Pool.TRAIN


def _auxiliary(traj: Trajectory, pool, lam: Lambdas, group_size: int, exploit_signal: str):
    mine, _ = seat_payoffs(traj)
    idx = jnp.arange(pool.shape[0])
    side_e = _nth(episode_exploit(traj), pool == Pool.EXPLOIT, idx)
    side_c = _nth(traj.collusion, pool == Pool.COLLUSIVE, idx)
    penalty = lam.exploit(side_e) + lam.collusion(side_c) + lam.externality(traj.externality)
    return lam.payoff(mine) - penalty[:, None], pool == Pool.TRAIN


def _nth(values, members, idx):
    """values of the (idx mod count)-th member episode, 0 when the pool is empty."""
    count = members.sum()
    order = jnp.cumsum(members) - 1  # rank of each member
    target = idx % jnp.maximum(count, 1)
    hit = members[None, :] & (order[None, :] == target[:, None])
    return jnp.where(count > 0, (hit * values[None, :]).sum(-1), 0.0)


@dataclasses.dataclass(frozen=True)
class Credit:
    """What a credit mode means: its rewards `(traj, pool, lam, group_size, exploit_signal) -> (per-round
    rewards [E, R], which episodes carry gradient [E])` (`shared` and `auxiliary` charge the paper's episode
    e: the config allows only `exploit_signal="episode"` with them), and whether the exploit pool also plays
    the exact best response to the current policy (the step's layout reads this)."""

    rewards: Callable
    best_response: bool = False


CREDIT = {"shared": Credit(_shared), "auxiliary": Credit(_auxiliary), "credited": Credit(_credited),
          "exact": Credit(_credited, best_response=True)}
assert tuple(CREDIT) == settings.CREDIT_MODES


def rewards(traj: Trajectory, pool: jax.Array, credit: str, lam: Lambdas, group_size: int,
            exploit_signal: str = "episode"):
    """Per-round rewards [E, R] and the per-episode gradient mask [E] (side episodes 0) of `credit`."""
    return CREDIT[credit].rewards(traj, pool, lam, group_size, exploit_signal)


def pool_weights(pool: jax.Array, lam: Lambdas) -> jax.Array:
    """Per-episode weight of its pool (train 1, exploit lambda_e, collusive lambda_c), applied to advantages
    after group normalisation."""
    return jnp.stack([jnp.float32(1.0), jnp.float32(lam.e), jnp.float32(lam.c), jnp.float32(0.0)])[pool]


def advantages(traj: Trajectory, pool: jax.Array, lam: Lambdas, group_size: int, sepo: settings.Sepo,
               grpo_settings: settings.Grpo):
    """The chain for one step: (advantages [E, R] of the episodes that carry gradient, 0 elsewhere, that
    gradient mask [E], the share of zero-variance (group, round) cells)."""
    rew, carries = rewards(traj, pool, sepo.credit, lam, group_size, sepo.exploit_signal)
    adv, zero_var = grpo.advantages(rew.reshape(-1, group_size, rew.shape[1]), grpo_settings.advantage,
                                    grpo_settings.scale_std)
    adv = adv.reshape(rew.shape)
    if sepo.pool_weighting:
        adv = adv * pool_weights(pool, lam)[:, None]
    return adv * carries[:, None], carries, zero_var
