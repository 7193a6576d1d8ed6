"""CFR+ on the flat Kuhn / Leduc trees, in JAX, and Kuhn's closed-form equilibrium family.

CFR+ (Tammelin 2014): regret matching+ (cumulative regrets floored at 0), alternating updates, linear
averaging of the strategy (weight t on iteration t). One `lax.scan` over iterations, all jitted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.equilibrium.best_response import counterfactual_values
from sepo_jax.equilibrium.tree import KUHN_HISTORIES, NUM_ACTIONS, NUM_INFOSETS, get_tree, kuhn_infoset_index

Array = jax.Array


def _normalize(weights: Array, legal: Array) -> Array:
    """Rows of `weights` (>= 0) normalised over legal actions; all-zero rows -> uniform over legal."""
    w = jnp.where(legal, weights, 0.0)
    total = w.sum(-1, keepdims=True)
    uniform = legal / jnp.maximum(legal.sum(-1, keepdims=True), 1)
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), uniform)


def own_reach(game: str, table: Array) -> Array:
    """`[I]`: each row owner's own probability of reaching the row (product of its earlier actions)."""
    tree, table = get_tree(game), jnp.asarray(table)
    seq_reach = jnp.ones(tree.num_seqs, table.dtype)
    for _ in range(tree.max_level + 1):  # level L is exact after L + 1 passes
        row_reach = seq_reach[tree.row_parent_seq]
        seq_reach = jnp.concatenate([(row_reach[:, None] * table).reshape(-1), jnp.ones((1,), table.dtype)])
    return row_reach


@functools.partial(jax.jit, static_argnames=("game", "iterations"))
def cfr_plus(game: str, iterations: int) -> Array:
    """Average strategy `[I, A]` after `iterations` of CFR+ (float32; unused rows uniform)."""
    tree = get_tree(game)
    legal = jnp.asarray(np.where((tree.row_player >= 0)[:, None], tree.legal, True))
    shape = (NUM_INFOSETS[game], NUM_ACTIONS[game])

    def step(carry, t):
        regrets, avg = carry
        sigma = _normalize(regrets, legal)
        avg = avg + t * own_reach(game, sigma)[:, None] * sigma
        for p in range(2):
            sigma = _normalize(regrets, legal)
            q = counterfactual_values(game, sigma, p)
            v = (sigma * q).sum(-1, keepdims=True)
            mine = (tree.row_player == p)[:, None]
            regrets = jnp.where(mine & legal, jnp.maximum(regrets + q - v, 0.0), regrets)
        return (regrets, avg), None

    init = (jnp.zeros(shape), jnp.zeros(shape))
    (_, avg), _ = jax.lax.scan(step, init, jnp.arange(1, iterations + 1, dtype=jnp.float32))
    return _normalize(avg, legal)


@functools.cache
def equilibrium_table(game: str, iterations: int | None = None) -> np.ndarray:
    """A cached CFR+ equilibrium (defaults: Kuhn 100,000 iterations, NashConv ~6e-6, under a second;
    Leduc 1,000 iterations, NashConv ~5e-4)."""
    if iterations is None:
        iterations = {"kuhn": 100_000, "leduc": 1000}[game]
    return np.asarray(cfr_plus(game, iterations))


def kuhn_equilibrium(alpha: float) -> np.ndarray:
    """Kuhn's Nash equilibrium with parameter alpha in [0, 1/3] (SEPO.md §4) as a table `[12, 2]`.

    First player: bets J w.p. alpha, K w.p. 3 alpha, never Q; after check-bet calls Q w.p. 1/3 + alpha,
    K always, J never. Second player: after a check bets K, J w.p. 1/3; facing a bet calls K, Q w.p. 1/3."""
    if not 0.0 <= alpha <= 1.0 / 3.0 + 1e-12:
        raise ValueError(f"Kuhn equilibrium parameter alpha must lie in [0, 1/3], got {alpha}")
    bet = {  # (history, card) -> probability of BET (bet or call)
        "": (alpha, 0.0, 3 * alpha),
        "pb": (0.0, 1.0 / 3.0 + alpha, 1.0),
        "p": (1.0 / 3.0, 0.0, 1.0),
        "b": (0.0, 1.0 / 3.0, 1.0),
    }
    table = np.zeros((NUM_INFOSETS["kuhn"], 2))
    for h, probs in bet.items():
        for card, pb in enumerate(probs):
            table[kuhn_infoset_index(KUHN_HISTORIES.index(h), card)] = (1.0 - pb, pb)
    return table
