"""Replays our Kuhn/Leduc episodes in OpenSpiel and collects what both sides see at every decision."""

import jax
import jax.numpy as jnp
import numpy as np
import pyspiel

from sepo_jax.games import opponents_policy
from sepo_jax.games.play import sample


def record(game, num_episodes, seed, opponent="Random"):
    """Random legal play of `num_episodes` episodes; per move: mover, action, legal mask, infoset row."""
    pid = game.opponent_id(opponent)
    policy = opponents_policy(game, jnp.array([pid, pid]))

    def episode(key):
        init_key, key = jax.random.split(key)
        state = game.init(init_key)

        def move(state, key):
            a_key, e_key = jax.random.split(key)
            player = jnp.maximum(state.current_player, 0)
            action = sample(policy(state, player), jax.random.uniform(a_key))
            out = dict(player=state.current_player, action=action, legal=state.legal_action_mask,
                       infoset=game.infoset_index(state, player), hand=state.round)
            return game.step(state, action, e_key), out

        return jax.lax.scan(move, state, jax.random.split(key, game.max_steps))

    final, moves = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(seed), num_episodes))
    return jax.device_get(final), jax.device_get(moves)


def replay(game_name, final, moves, episode, deal_order, infoset_row):
    """Plays episode `episode` hand by hand in OpenSpiel, asserting agreement at every move.
    `deal_order(cards_of_hand, first)` -> the chance outcomes; `infoset_row(string)` -> our row."""
    spiel = pyspiel.load_game(game_name)
    cards = final.data["cards"][episode]
    n = int(moves["player"].shape[1])
    state, hand = None, -1
    checked = 0
    for m in range(n):
        player = int(moves["player"][episode, m])
        if player < 0:
            break
        h = int(moves["hand"][episode, m])
        first = h % 2
        if h != hand:
            if state is not None:
                assert state.is_terminal()
            hand, state = h, spiel.new_initial_state()
            pending = list(deal_order(cards[h], first))
        while state.is_chance_node():
            state.apply_action(pending.pop(0))
        sp = state.current_player()
        assert (sp + first) % 2 == player, (episode, m)
        legal = np.flatnonzero(moves["legal"][episode, m]).tolist()
        assert state.legal_actions() == legal, (episode, m, state.legal_actions(), legal)
        assert infoset_row(state.information_state_string()) == int(moves["infoset"][episode, m])
        a = int(moves["action"][episode, m])
        state.apply_action(a)
        if state.is_terminal():
            returns = state.returns()
            ours = final.payoffs[episode, h]
            assert ours[first] == returns[0] and ours[1 - first] == returns[1], (episode, h, ours, returns)
        checked += 1
    assert state.is_terminal() and hand == final.payoffs.shape[1] - 1
    return checked
