"""Playing whole episodes: a `lax.scan` over moves, each seat driven by a policy function.

A policy maps (state, player) to action probabilities (or unnormalised weights); `play` draws every move from one vector of
uniforms per episode (inverse-CDF sampling), which is much cheaper than splitting a key per move.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .base import Game, State

Array = jax.Array
PolicyFn = Callable[[State, Array], Array]  # (state, player) -> probabilities [num_actions]


def opponents_policy(game: Game, seat_ids: Array, table: Array | None = None) -> PolicyFn:
    """Both seats played by opponents: `seat_ids[p]` is the opponent id in seat p."""
    return lambda state, player: game.opponent_probs(seat_ids[player], state, player, table)


def sample(weights: Array, u: Array) -> Array:
    """Inverse-CDF draw proportional to `weights` [..., A] (probabilities, or any nonnegative weights:
    a legal mask draws uniformly over the legal actions) with float32 uniforms `u` [...] in [0, 1).
    Never an action of weight 0: u <= 1 - 2**-23, so u * total rounds strictly below the total."""
    c = jnp.cumsum(weights, -1)
    return (c[..., :-1] <= (u * c[..., -1])[..., None]).sum(-1).astype(jnp.int32)


def play(game: Game, policy: PolicyFn, key: Array, record: bool = True) -> tuple[State, dict | None]:
    """Play one episode to the end. Returns the final state and, with `record`, per move the mover and
    action (`valid` is False for the padding moves after the end); without it (None) the loop carries
    only the state, which is about a quarter faster for Kuhn when the final state is all you need."""
    init_key, u_key, step_key = jax.random.split(key, 3)
    state = game.init(init_key)

    def move(state, xs):
        u, key = xs
        player = jnp.maximum(state.current_player, 0)
        action = sample(policy(state, player), u)
        out = dict(player=state.current_player, action=action, valid=~state.terminated) if record else None
        return game.step(state, action, key), out

    xs = (jax.random.uniform(u_key, (game.max_steps,)), jax.random.split(step_key, game.max_steps))
    return jax.lax.scan(move, state, xs)


def play_batch(game: Game, policy_for: Callable[[Array], PolicyFn], episode_args: Array, key: Array):
    """vmap of `play` over episodes; `policy_for(arg)` builds each episode's policy."""

    def one(arg, k):
        return play(game, policy_for(arg), k)

    keys = jax.random.split(key, episode_args.shape[0])
    return jax.vmap(one)(episode_args, keys)
