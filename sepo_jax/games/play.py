"""Playing whole episodes: a `lax.scan` over moves, each seat driven by a policy function."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .base import Game, State

Array = jax.Array
PolicyFn = Callable[[State, Array, Array], Array]  # (state, player, key) -> action


def opponents_policy(game: Game, seat_ids: Array, table: Array | None = None) -> PolicyFn:
    """Both seats played by opponents: `seat_ids[p]` is the opponent id in seat p."""

    def policy(state: State, player: Array, key: Array) -> Array:
        probs = game.opponent_probs(seat_ids[player], state, player, table)
        return jax.random.choice(key, game.num_actions, p=probs)

    return policy


def play(game: Game, policy: PolicyFn, key: Array) -> tuple[State, dict]:
    """Play one episode to the end. Returns the final state and, per move, the mover and action
    (`valid` is False for the padding moves after the end)."""
    init_key, key = jax.random.split(key)
    state = game.init(init_key)

    def move(state, key):
        act_key, env_key = jax.random.split(key)
        player = jnp.maximum(state.current_player, 0)
        action = policy(state, player, act_key)
        out = dict(player=state.current_player, action=action, valid=~state.terminated)
        return game.step(state, action, env_key), out

    return jax.lax.scan(move, state, jax.random.split(key, game.max_steps))


def play_batch(game: Game, policy_for: Callable[[Array], PolicyFn], episode_args: Array, key: Array):
    """vmap of `play` over episodes; `policy_for(arg)` builds each episode's policy."""

    def one(arg, k):
        return play(game, policy_for(arg), k)

    keys = jax.random.split(key, episode_args.shape[0])
    return jax.vmap(one)(episode_args, keys)
