"""Kuhn's card-conditioned bet/call frequencies, read from a strategy table or from played decisions, next
to the members of the equilibrium family (docs/method.md §5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.games.kuhn import HISTORIES as KUHN_HISTORIES
from sepo_jax.games.kuhn import NUM_INFOSETS as KUHN_INFOSETS
from sepo_jax.games.kuhn import nash_table as kuhn_equilibrium

Array = jax.Array


KUHN_SITUATIONS = {  # name -> history whose BET probability it reports (per card J, Q, K)
    "first_bet": "",  # first mover opens
    "first_call_after_check_bet": "pb",
    "second_bet_after_check": "p",
    "second_call_facing_bet": "b",
}


def kuhn_table_from_episodes(rows: Array, actions: Array, mask: Array | None = None) -> tuple[Array, Array]:
    """Empirical strategy from decisions: infoset rows `[N]` and actions `[N]` (0 PASS, 1 BET) ->
    (frequencies `[12, 2]`, uniform where a row was never visited; visit counts `[12]`)."""
    m = (jnp.ones(rows.shape, bool) if mask is None else mask).astype(jnp.float32)
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
