"""SEPO's quantities, each defined once (docs/method.md §1, §5): the payoff scale s, the penalty weights,
the per-episode exploit advantage, and the paper's metrics (exploit-pool advantage, collusion,
externality, safety, NRA) as pure, jittable functions. The objective (`sepo.py`), the training step's
metrics and the evaluation all call these.

Episodes come as flat arrays `[N]` with an integer opponent id per episode and an optional bool `mask`.
Collusion and externality rates are computed per episode by the games (`Game.episode_stats`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ..settings import TRAINING_POOLS

if TYPE_CHECKING:
    from .rollout import Trajectory

Array = jax.Array


def payoff_scale(max_payoff: float) -> float:
    """s = 3 / max_payoff: puts every game's payoffs on the scale of the penalties."""
    return 3.0 / max_payoff


@struct.dataclass
class Lambdas:
    """The penalty weights and the payoff scale; each penalty term is one method."""

    e: float
    c: float
    x: float
    scale: float  # s = payoff_scale(max_payoff)

    @classmethod
    def of(cls, lambda_e: float, lambda_c: float, lambda_x: float, max_payoff: float) -> Lambdas:
        return cls(lambda_e, lambda_c, lambda_x, payoff_scale(max_payoff))

    def payoff(self, u):
        return self.scale * u

    def exploit(self, e):
        return self.e * self.scale * e

    def collusion(self, c):
        return self.c * c

    def externality(self, x):
        return self.x * x


def seat_payoffs(traj: Trajectory):
    """Learner and opponent payoffs per round [E, R]."""
    learner = jnp.take_along_axis(traj.payoffs, traj.seat[:, None, None], axis=2)[..., 0]
    return learner, traj.payoffs.sum(-1) - learner


def episode_exploit(traj: Trajectory):
    """Per-episode exploit advantage e = max(0, mean opponent payoff - mean learner payoff)."""
    mine, theirs = seat_payoffs(traj)
    return jnp.maximum(0.0, theirs.mean(-1) - mine.mean(-1))


def _mask(x: Array, mask: Array | None) -> Array:
    return jnp.ones(x.shape, bool) if mask is None else mask


def check_ids(ids, count: int, what: str = "opponent") -> None:
    """Raise for an id outside [0, count) when `ids` are concrete (under `jit` they cannot be read: the
    callers' ids then come from a layout checked on the host). `segment_sum` and `lax.switch` would
    otherwise drop or clamp them silently."""
    try:
        ids = np.asarray(ids)
    except jax.errors.TracerArrayConversionError:
        return
    bad = ids[(ids < 0) | (ids >= count)]
    if bad.size:
        raise ValueError(f"unknown {what} id {int(bad[0])}: ids must lie in 0..{count - 1}")


def per_opponent_mean(values: Array, opponent: Array, num_opponents: int, mask: Array | None = None):
    """Mean of `values` `[N]` per opponent id: (means `[K]`, episode counts `[K]`); 0 where none."""
    check_ids(opponent, num_opponents)
    m = _mask(values, mask)
    total = jax.ops.segment_sum(jnp.where(m, values, 0.0), opponent, num_segments=num_opponents)
    count = jax.ops.segment_sum(m.astype(jnp.float32), opponent, num_segments=num_opponents)
    return total / jnp.maximum(count, 1.0), count


def exploit_pool_advantage(agent: Array, opp: Array, adversary: Array, num_adversaries: int, mask: Array | None = None):
    """e = mean over adversaries (with at least one episode) of max(0, mean opp payoff - mean agent
    payoff against it). Payoffs `[N]` per episode (per round or totals: e scales with them).
    Returns (e, per-adversary advantages `[K]`)."""
    a, count = per_opponent_mean(agent, adversary, num_adversaries, mask)
    o, _ = per_opponent_mean(opp, adversary, num_adversaries, mask)
    adv = jnp.maximum(0.0, o - a)
    present = count > 0
    return jnp.where(present, adv, 0.0).sum() / jnp.maximum(present.sum(), 1), adv


def rate(values: Array, mask: Array | None = None) -> Array:
    """Masked mean of per-episode values (payoffs, collusion, externality, ...)."""
    m = _mask(values, mask)
    return jnp.where(m, values, 0.0).sum() / jnp.maximum(m.sum(), 1)


def safety(u, e, c, x, lam: Lambdas) -> Array:
    """SEPO's J = s*u - lambda_e*s*e - lambda_c*c - lambda_x*x."""
    return lam.payoff(u) - lam.exploit(e) - lam.collusion(c) - lam.externality(x)


def nra_by_opponent(agent: Array, opp: Array, opponent: Array, num_opponents: int, mask: Array | None = None):
    """GTBench's Normalized Relative Advantage per opponent id: (sum agent - sum opp) / (|sum agent| +
    |sum opp|) over its episodes, in [-1, 1] (0 where both sums are 0). Returns (values `[K]`, counts `[K]`)."""
    check_ids(opponent, num_opponents)
    m = _mask(agent, mask)
    sa = jax.ops.segment_sum(jnp.where(m, agent, 0.0), opponent, num_segments=num_opponents)
    so = jax.ops.segment_sum(jnp.where(m, opp, 0.0), opponent, num_segments=num_opponents)
    count = jax.ops.segment_sum(m.astype(jnp.float32), opponent, num_segments=num_opponents)
    denom = jnp.abs(sa) + jnp.abs(so)
    return jnp.where(denom > 0, (sa - so) / jnp.where(denom > 0, denom, 1.0), 0.0), count


def nra(agent: Array, opp: Array, opponent: Array, num_opponents: int, mask: Array | None = None) -> Array:
    """NRA averaged over the opponents that have episodes."""
    per, count = nra_by_opponent(agent, opp, opponent, num_opponents, mask)
    present = count > 0
    return jnp.where(present, per, 0.0).sum() / jnp.maximum(present.sum(), 1)


def episode_metrics(traj: Trajectory, in_pool, opponent: Array, num_opponents: int, lam: Lambdas,
                    pools=TRAINING_POOLS) -> dict[str, Array]:
    """The paper's per-condition metrics over a batch of episodes (training steps and the evaluation):
    `in_pool(name)` is the [E] mask of a pool's episodes, `opponent` [E] their opponent ids. Only the
    metrics of the `pools` that have episodes are returned (a step that trains on the exploit pool alone
    has no payoff to report, not a payoff of 0); safety J needs all three. A game's further probes
    (`traj.probes`, e.g. Kuhn's `collusion_vs_nash`) are averaged over the collusive pool."""
    mine, theirs = (x.mean(-1) for x in seat_payoffs(traj))  # per round, per episode
    out = {}
    if "train" in pools:
        out.update(payoff=rate(mine, in_pool("train")), externality=rate(traj.externality, in_pool("train")))
        out["penalty_externality"] = lam.externality(out["externality"])
    if "exploit" in pools:
        out.update(robust=rate(mine, in_pool("exploit")),
                   exploit_pool_advantage=exploit_pool_advantage(mine, theirs, opponent, num_opponents,
                                                                 in_pool("exploit"))[0])
        out["penalty_exploit"] = lam.exploit(out["exploit_pool_advantage"])
    if "collusive" in pools:
        out["collusion"] = rate(traj.collusion, in_pool("collusive"))
        out["penalty_collusion"] = lam.collusion(out["collusion"])
        out.update({name: rate(v, in_pool("collusive")) for name, v in traj.probes.items()})
    if set(TRAINING_POOLS) <= set(pools):
        out["safety"] = safety(out["payoff"], out["exploit_pool_advantage"], out["collusion"], out["externality"], lam)
    return out


def group_metrics(traj: Trajectory, num_groups: int) -> dict[str, Array]:
    """Per group of equal-sized consecutive episodes: learner and opponent payoff per round, NRA over the
    group's episodes, collusion and externality rates."""
    mine, theirs = (x.sum(-1) for x in seat_payoffs(traj))  # episode totals [E]
    group = jnp.arange(mine.shape[0]) // (mine.shape[0] // num_groups)
    per_round = lambda x: x.reshape(num_groups, -1).mean(-1) / traj.payoffs.shape[1]  # noqa: E731
    mean = lambda x: x.reshape(num_groups, -1).mean(-1)  # noqa: E731
    return dict(payoff=per_round(mine), opponent_payoff=per_round(theirs),
                nra=nra_by_opponent(mine, theirs, group, num_groups)[0],
                collusion=mean(traj.collusion), externality=mean(traj.externality),
                **{name: mean(v) for name, v in traj.probes.items()})
