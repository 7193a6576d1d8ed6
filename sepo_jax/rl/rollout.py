"""Rollouts: a batch of episode slots played by one `lax.scan` over the learner's decisions.

Each slot is tagged with its opponent id and the learner's seat. Between two learner decisions the
opponent (and chance) move inside a bounded `while_loop`, so the scan runs exactly
`game.max_decisions` times: at each iteration every slot renders its prompt ids, the learner acts on
the whole batch at once (the model's constrained choice, or a demonstrator for supervised traces),
and the game steps. Slots that already finished keep stepping as masked no-ops.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from sepo_jax.games import Game, PromptRenderer, State
from sepo_jax.games.play import sample

Array = jax.Array
# (prompt_ids [E,P], prompt_mask [E,P], legal [E,A], states, key)
#   -> (action [E], logp [E] of the whole response, probs [E,A], (reasoning [E,k], reasoning_mask [E,k]))
Learner = Callable[[Array, Array, Array, State, Array], tuple[Array, Array, Array]]


@struct.dataclass
class Trajectory:
    """Per slot (E) and decision (D) of the learner; payoffs per round (R) of both seats."""

    prompt_ids: Array  # int32 [E, D, P]
    prompt_mask: Array  # bool [E, D, P]
    legal: Array  # bool [E, D, A]
    action: Array  # int32 [E, D]
    logp: Array  # float32 [E, D]: log-prob of the response (reasoning + action) under the acting policy
    probs: Array  # float32 [E, D, A]: the acting policy's full distribution
    reasoning: Array  # int32 [E, D, k]: free tokens before the action (k = 0 without a reasoning budget)
    reasoning_mask: Array  # bool [E, D, k]
    valid: Array  # bool [E, D]: a real decision (not padding after the end)
    round: Array  # int32 [E, D]: the round / hand the decision belongs to
    payoffs: Array  # float32 [E, R, 2]
    seat: Array  # int32 [E]
    collusion: Array  # float32 [E]
    externality: Array  # float32 [E]
    finished: Array  # bool [E]: the episode ended within the static budget


def _advance_opponent(game: Game, state: State, seat, opponent, table, key) -> State:
    """Play the opponent until it is the learner's turn or the episode ends."""

    def cond(carry):
        s, _, i = carry
        return (~s.terminated) & (s.current_player != seat) & (i < game.max_steps)

    def body(carry):
        s, k, i = carry
        k, a_key, e_key = jax.random.split(k, 3)
        player = jnp.maximum(s.current_player, 0)
        probs = game.opponent_probs(opponent, s, player, table)
        return game.step(s, sample(probs, jax.random.uniform(a_key)), e_key), k, i + 1

    return jax.lax.while_loop(cond, body, (state, key, jnp.int32(0)))[0]


def rollout(game: Game, renderer: PromptRenderer, learner: Learner, opponent: Array, seat: Array, key: Array,
            table: Array | None = None, group_size: int = 1, common_chance: bool = False) -> Trajectory:
    """Play one episode per slot (`opponent[E]`, `seat[E]`) with `learner` in its seat.
    `table` is the behavioural table of the tabular opponent (e.g. the exact best response).

    Slots come in groups of `group_size`. With `common_chance` the episodes of a group are dealt the
    same cards / values / pools (only the players' choices differ). Whenever every group's prompts
    coincide at a decision, the learner is called once per group with `group_size` (one prefill per
    group, the samples drawn from it); `learner` must then accept that keyword."""
    if table is None:
        table = jnp.full((game.num_infosets, game.num_actions), 1.0 / game.num_actions)
    num = opponent.shape[0]
    init_key, key = jax.random.split(key)
    init_keys = jax.random.split(init_key, num // group_size if common_chance else num)
    if common_chance:
        init_keys = jnp.repeat(init_keys, group_size, axis=0)
    states = jax.vmap(game.init)(init_keys)

    def act(ids, mask, legal, states, key):
        if group_size == 1:
            return learner(ids, mask, legal, states, key)
        grouped = [x.reshape((num // group_size, group_size) + x.shape[1:]) for x in (ids, mask, legal)]
        same = jnp.all(jnp.stack([(x == x[:, :1]).all() for x in grouped]))
        first = lambda x: x[::group_size]  # noqa: E731
        return jax.lax.cond(
            same,
            lambda: learner(first(ids), first(mask), first(legal), states, key, group_size=group_size),
            lambda: learner(ids, mask, legal, states, key),
        )
    advance = jax.vmap(lambda s, st, o, k: _advance_opponent(game, s, st, o, table, k))

    def decision(states, key):
        o_key, l_key, e_key = jax.random.split(key, 3)
        states = advance(states, seat, opponent, jax.random.split(o_key, num))
        ids, mask = jax.vmap(renderer.render, in_axes=(None, 0, 0))(game, states, seat)
        legal = states.legal_action_mask
        valid = ~states.terminated
        action, logp, probs, (reasoning, r_mask) = act(ids, mask, legal, states, l_key)
        record = dict(prompt_ids=ids, prompt_mask=mask, legal=legal, action=action, logp=logp, probs=probs,
                      reasoning=reasoning, reasoning_mask=r_mask, valid=valid, round=states.round)
        states = jax.vmap(game.step)(states, action, jax.random.split(e_key, num))
        return states, record

    d_key, end_key = jax.random.split(key)
    states, rec = jax.lax.scan(decision, states, jax.random.split(d_key, game.max_decisions))
    states = advance(states, seat, opponent, jax.random.split(end_key, num))
    rec = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rec)  # [E, D, ...]
    stats = jax.vmap(game.episode_stats)(states, seat)
    return Trajectory(
        **rec, payoffs=states.payoffs, seat=seat, collusion=stats["collusion"], externality=stats["externality"],
        finished=states.terminated,
    )


def opponent_learner(game: Game, opponent: Array, table: Array | None = None) -> Learner:
    """A learner seat played by opponent strategies (one id per slot): supervised traces and tests.
    The acting distribution is the strategy's own."""

    def act(ids, mask, legal, states, key):
        player = jnp.maximum(states.current_player, 0)
        probs = jax.vmap(lambda o, s, p: game.opponent_probs(o, s, p, table))(opponent, states, player)
        action = sample(probs, jax.random.uniform(key, probs.shape[:1]))
        none = jnp.zeros((probs.shape[0], 0), jnp.int32)
        return action, jnp.log(probs[jnp.arange(probs.shape[0]), action]), probs, (none, none.astype(bool))

    return act
