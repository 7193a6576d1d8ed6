"""The learner's own behavioural strategy table, read from the model for the exact solvers.

Every row is reached by replaying one history from a dealt state. For Kuhn and Leduc every
information set of the single-hand tree becomes a state of the first hand of our game (seat 0 moving
first); later hands add the history of earlier ones to the prompt, so the table is the strategy of the
first hand. For the repeated stage games (IPD, auction, negotiations) the histories are the stage
solver's own (`sepo_jax.equilibrium.stage.histories`, the learner in seat 0). The model scores these
prompts and its legal-action distribution fills the row. In the conversation format a row's prompt is
the mover's conversation along its history.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.equilibrium import stage
from sepo_jax.equilibrium import tree as tree_lib
from sepo_jax.games import STAGE, ChatRenderer, Game, State


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


def _starts(game: Game) -> tuple[State, jax.Array, jax.Array]:
    """(dealt states [N], action paths [N, W] (-1 padding), row [N]): one history per used row."""
    if STAGE in game.solvers:
        return jax.jit(functools.partial(stage.histories, game))()
    rows, cards, paths = _histories(game.name)
    return jax.jit(jax.vmap(functools.partial(_dealt, game)))(jnp.asarray(cards)), jnp.asarray(paths), jnp.asarray(rows)


def _reach(game: Game, starts: State, paths: jax.Array) -> State:
    return jax.jit(jax.vmap(functools.partial(stage.replay, game)))(starts, paths)


def infoset_states(game: Game) -> tuple[State, jax.Array, jax.Array]:
    """(states [N], mover [N], row [N]) with one state per used row of `game`'s tabular strategy."""
    starts, paths, rows = _starts(game)
    states = _reach(game, starts, paths)
    return states, states.current_player, rows


def infoset_conversations(game: Game, chat: ChatRenderer) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """The read-out in the conversation format: (ids [N, L], mask [N, L], legal [N, D, A], decision [N],
    row [N]): each row's history replayed as its mover's conversation (a turn at each of the mover's
    decisions, its own actions as answers), the row being the mover's decision `decision`."""
    starts, paths, rows = _starts(game)
    states = _reach(game, starts, paths)
    width, num = chat.turn_width, game.max_decisions

    def one(state, path, mover):
        length = (path >= 0).sum()

        def move(carry, xs):  # one action of the history, after the mover's turn when it is its decision
            state, said, last, k, ids, mask = carry
            i, a = xs
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
            return (stage.advance(game, state, a), said, last, k + speak, ids, mask), None

        carry = (state, chat.start(), jnp.int32(-1), jnp.int32(0), jnp.zeros(chat.length, jnp.int32),
                 jnp.zeros(chat.length, bool))
        xs = (jnp.arange(path.shape[0] + 1), jnp.append(path, -1))
        _, _, _, k, ids, mask = jax.lax.scan(move, carry, xs)[0]
        return ids, mask, k - 1

    ids, mask, decision = jax.jit(jax.vmap(one))(starts, paths, states.current_player)
    legal = jnp.ones((len(rows), num, game.num_actions), bool).at[jnp.arange(len(rows)), decision].set(
        states.legal_action_mask)
    return ids, mask, legal, decision, rows


def prompts(game: Game, renderer) -> tuple:
    """The read-out's prompts in `trainer.Setup.readout`'s layout: (ids, mask, legal, rows) of the restated
    prompts (a `PromptRenderer`), or (ids, mask, legal, rows, decision) of the conversations (a `ChatRenderer`)."""
    if isinstance(renderer, ChatRenderer):
        ids, mask, legal, decision, rows = infoset_conversations(game, renderer)
        return ids, mask, legal, rows, decision
    states, mover, rows = infoset_states(game)
    ids, mask = jax.jit(jax.vmap(functools.partial(renderer.render, game)))(states, mover)
    return ids, mask, states.legal_action_mask, rows


def strategy_table(game: Game, probs: jax.Array, rows: jax.Array) -> jax.Array:
    """Scatter per-row distributions [N, A] into a full table (unused rows uniform over legal; every
    action of a stage game is legal in the rows its histories do not reach)."""
    if STAGE in game.solvers:
        legal = np.ones((game.num_infosets, game.num_actions), bool)
    else:
        tree = tree_lib.get_tree(game.name)
        legal = np.where((tree.row_player >= 0)[:, None], tree.legal, True)
    table = jnp.asarray(legal / legal.sum(-1, keepdims=True), jnp.float32)
    return table.at[rows].set(probs)
