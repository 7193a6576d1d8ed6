"""The learner's own behavioural strategy table, read from the model for the exact solvers.

For Kuhn and Leduc every information set of the single-hand tree is turned into a state of the
first hand of our game (seat 0 moving first) by replaying one history that reaches it; the model
scores all these prompts in one batched pass and its legal-action distribution fills the row. Later
hands add the history of earlier ones to the prompt; the table is the strategy of the first hand.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.equilibrium import tree as tree_lib
from sepo_jax.games import Game, State


@functools.cache
def _histories(game_name: str):
    """For every used row: the deal (seat 0, seat 1[, public]) and the actions reaching one node."""
    tree = tree_lib.get_tree(game_name)
    deals = tree.deals
    root_of = np.cumsum(tree.parent < 0) - 1  # roots come in deal order, each followed by its subtree
    rows, cards, paths = [], [], []
    for row in np.flatnonzero(tree.row_player >= 0):
        node = int(np.flatnonzero(tree.infoset == row)[0])
        actions = []
        while tree.parent[node] >= 0:
            actions.append(int(tree.action[node]))
            node = int(tree.parent[node])
        rows.append(row)
        cards.append(deals[root_of[node]])
        paths.append(actions[::-1])
    width = max(len(p) for p in paths)
    padded = np.array([p + [-1] * (width - len(p)) for p in paths], np.int32)
    return np.array(rows, np.int32), np.array(cards, np.int32), padded


def infoset_states(game: Game) -> tuple[State, jax.Array, jax.Array]:
    """(states [N], mover [N], row [N]) with one state per used row of `game`'s tabular strategy."""
    rows, cards, paths = _histories(game.name)

    def one(deal, path):
        state = game.init(jax.random.key(0))
        state = game.with_cards(state, state.data["cards"].at[0, : deal.shape[0]].set(deal))

        def move(s, a):
            return jax.tree.map(lambda n, o: jnp.where(a >= 0, n, o), game.step(s, jnp.maximum(a, 0), jax.random.key(0)), s), None

        return jax.lax.scan(move, state, path)[0]

    states = jax.jit(jax.vmap(one))(jnp.asarray(cards), jnp.asarray(paths))
    return states, states.current_player, jnp.asarray(rows)


def strategy_table(game: Game, probs: jax.Array, rows: jax.Array) -> jax.Array:
    """Scatter per-row distributions [N, A] into a full table (unused rows uniform over legal)."""
    tree = tree_lib.get_tree(game.name)
    legal = np.where((tree.row_player >= 0)[:, None], tree.legal, True)
    table = jnp.asarray(legal / legal.sum(-1, keepdims=True), jnp.float32)
    return table.at[rows].set(probs)
