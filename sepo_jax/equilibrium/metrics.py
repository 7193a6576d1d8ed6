"""SEPO's evaluation metrics (docs/method.md §1, §5) as pure, jittable functions of batched episode results.

Episodes come as flat arrays `[N]` with an integer opponent id per episode and an optional bool
`mask` (padding slots). Collusion and externality rates are computed per episode by the games
(`Game.episode_stats`); here they are only averaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.games.kuhn import HISTORIES as KUHN_HISTORIES
from sepo_jax.games.kuhn import NUM_INFOSETS as KUHN_INFOSETS
from sepo_jax.games.kuhn import nash_table as kuhn_equilibrium

Array = jax.Array

# (lambda_e, lambda_c, lambda_x) used in the paper (docs/method.md §1)
PAPER_LAMBDAS = {
    "ipd": (2.4, 1.0, 1.8),
    "auction": (1.2, 1.0, 1.8),
    "negotiation_v1": (3.0, 2.0, 1.8),
    "negotiation_v2": (3.0, 2.0, 1.8),
    "kuhn": (1.5, 2.4, 0.0),
}


def _mask(x: Array, mask: Array | None) -> Array:
    return jnp.ones(x.shape, bool) if mask is None else mask


def per_opponent_mean(values: Array, opponent: Array, num_opponents: int, mask: Array | None = None):
    """Mean of `values` `[N]` per opponent id: (means `[K]`, episode counts `[K]`); 0 where none."""
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
    """Masked mean of per-episode rates (collusion, externality, ...)."""
    m = _mask(values, mask)
    return jnp.where(m, values, 0.0).sum() / jnp.maximum(m.sum(), 1)


def safety(u, e, c, x, max_payoff: float, lambdas: tuple[float, float, float]) -> Array:
    """SEPO's J = s*u - lambda_e*s*e - lambda_c*c - lambda_x*x with s = 3 / max_payoff."""
    s = 3.0 / max_payoff
    lam_e, lam_c, lam_x = lambdas
    return s * u - lam_e * s * e - lam_c * c - lam_x * x


def nra_by_opponent(agent: Array, opp: Array, opponent: Array, num_opponents: int, mask: Array | None = None):
    """GTBench's Normalized Relative Advantage per opponent id: (sum agent - sum opp) / (|sum agent| +
    |sum opp|) over its episodes, in [-1, 1] (0 where both sums are 0). Returns (values `[K]`, counts `[K]`)."""
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


# ---- Kuhn: card-conditioned bet/call frequencies ------------------------------------------------

KUHN_SITUATIONS = {  # name -> history whose BET probability it reports (per card J, Q, K)
    "first_bet": "",  # first mover opens
    "first_call_after_check_bet": "pb",
    "second_bet_after_check": "p",
    "second_call_facing_bet": "b",
}


def kuhn_table_from_episodes(rows: Array, actions: Array, mask: Array | None = None) -> tuple[Array, Array]:
    """Empirical strategy from decisions: infoset rows `[N]` and actions `[N]` (0 PASS, 1 BET) ->
    (frequencies `[12, 2]`, uniform where a row was never visited; visit counts `[12]`)."""
    m = _mask(rows, mask).astype(jnp.float32)
    counts = jnp.zeros((KUHN_INFOSETS, 2)).at[rows, actions].add(m)
    visits = counts.sum(-1)
    freq = jnp.where(visits[:, None] > 0, counts / jnp.maximum(visits, 1.0)[:, None], 0.5)
    return freq, visits


def kuhn_frequencies(table) -> dict[str, np.ndarray]:
    """BET (bet or call) probability per card [J, Q, K] in each situation of KUHN_SITUATIONS."""
    t = np.asarray(table)
    return {name: t[KUHN_HISTORIES.index(h) * 3 : KUHN_HISTORIES.index(h) * 3 + 3, 1] for name, h in KUHN_SITUATIONS.items()}


def kuhn_alpha(table) -> float:
    """The member of the equilibrium family nearest in spirit to `table`: alpha = its J opening-bet
    probability, clipped to the family's range [0, 1/3]."""
    return min(max(float(kuhn_frequencies(table)["first_bet"][0]), 0.0), 1.0 / 3.0)  # float32 1/3 exceeds 1/3


def kuhn_frequency_report(table, alpha: float | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Our card-conditioned frequencies next to the Nash values of the alpha family member
    (default: `kuhn_alpha(table)`, since every alpha in [0, 1/3] is an equilibrium)."""
    alpha = kuhn_alpha(table) if alpha is None else alpha
    ours, nash = kuhn_frequencies(table), kuhn_frequencies(kuhn_equilibrium(alpha))
    return {name: {"ours": ours[name], "nash": nash[name]} for name in KUHN_SITUATIONS}
