"""The learner's own behavioural strategy table, read from the model for the exact solvers.

For Kuhn and Leduc every information set of the single-hand tree is turned into a state of the
first hand of our game (seat 0 moving first) by replaying one history that reaches it; the model
scores all these prompts in one batched pass and its legal-action distribution fills the row. Later
hands add the history of earlier ones to the prompt; the table is the strategy of the first hand. In
the conversation format a row's prompt is the mover's conversation along that history.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.equilibrium import tree as tree_lib
from sepo_jax.games import ChatRenderer, Game, State


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


def _dealt(game: Game, deal) -> State:
    state = game.init(jax.random.key(0))
    return game.with_cards(state, state.data["cards"].at[0, : deal.shape[0]].set(deal))


def _move(game: Game, state: State, a) -> State:
    """`state` after action `a`; unchanged for a = -1 (path padding)."""
    return jax.tree.map(lambda n, o: jnp.where(a >= 0, n, o), game.step(state, jnp.maximum(a, 0), jax.random.key(0)), state)


def infoset_states(game: Game) -> tuple[State, jax.Array, jax.Array]:
    """(states [N], mover [N], row [N]) with one state per used row of `game`'s tabular strategy."""
    rows, cards, paths = _histories(game.name)

    def one(deal, path):
        return jax.lax.scan(lambda s, a: (_move(game, s, a), None), _dealt(game, deal), path)[0]

    states = jax.jit(jax.vmap(one))(jnp.asarray(cards), jnp.asarray(paths))
    return states, states.current_player, jnp.asarray(rows)


def infoset_conversations(game: Game, chat: ChatRenderer) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """The read-out in the conversation format: (ids [N, L], mask [N, L], legal [N, D, A], decision [N],
    row [N]): each row's history replayed as its mover's conversation (a turn at each of the mover's
    decisions, its own actions as answers), the row being the mover's decision `decision`."""
    rows, cards, paths = _histories(game.name)
    states, movers, _ = infoset_states(game)
    width, num = chat.turn_width, game.max_decisions

    def one(deal, path, mover):
        state, said, last, k = _dealt(game, deal), chat.start(), jnp.int32(-1), jnp.int32(0)
        ids, mask = jnp.zeros(chat.length, jnp.int32), jnp.zeros(chat.length, bool)
        length = (path >= 0).sum()
        for i in range(path.shape[0] + 1):
            a = path[i] if i < path.shape[0] else jnp.int32(-1)
            speak = (state.current_player == mover) & (i <= length) & ((a >= 0) | (i == length))
            first_ids, first_mask, first_said = chat.turn(state, mover, said, last, first=True)
            turn_ids, turn_mask, turn_said = chat.turn(state, mover, said, last, first=False)
            at = jnp.maximum(chat.first_width + (k - 1) * width, 0)
            put = lambda buf, x, y: jnp.where(  # noqa: E731
                speak, jnp.where(k == 0, buf.at[: chat.first_width].set(x),
                                 jax.lax.dynamic_update_slice(buf, y, (at,))), buf)
            ids, mask = put(ids, first_ids, turn_ids), put(mask, first_mask, turn_mask)
            said = jnp.where(speak, jnp.where(k == 0, first_said, turn_said), said)
            last = jnp.where(speak & (a >= 0), a, last)
            k = k + speak
            state = _move(game, state, a)
        return ids, mask, k - 1

    ids, mask, decision = jax.jit(jax.vmap(one))(jnp.asarray(cards), jnp.asarray(paths), movers)
    legal = jnp.ones((len(rows), num, game.num_actions), bool).at[jnp.arange(len(rows)), decision].set(
        states.legal_action_mask)
    return ids, mask, legal, decision, jnp.asarray(rows)


def strategy_table(game: Game, probs: jax.Array, rows: jax.Array) -> jax.Array:
    """Scatter per-row distributions [N, A] into a full table (unused rows uniform over legal)."""
    tree = tree_lib.get_tree(game.name)
    legal = np.where((tree.row_player >= 0)[:, None], tree.legal, True)
    table = jnp.asarray(legal / legal.sum(-1, keepdims=True), jnp.float32)
    return table.at[rows].set(probs)
