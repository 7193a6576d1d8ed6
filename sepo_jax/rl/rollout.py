"""Rollouts: a batch of episode slots played by one `lax.scan` over the learner's decisions.

Each slot is tagged with its opponent id and the learner's seat. Between two learner decisions the
opponent (and chance) move inside a bounded `while_loop`, so the scan runs exactly
`game.max_decisions` times: at each iteration every slot renders its prompt ids, the learner acts on
the whole batch at once (the model's constrained choice, or a demonstrator for supervised traces),
and the game steps. Slots that already finished keep stepping as masked no-ops.

With a `ChatRenderer` (`prompt.format = "conversation"`) each slot's prompt is one conversation: a
decision renders only its new turn, and a `ChatLearner` keeps what it needs across decisions (the
model's KV cache, so each turn is prefilled once); the trajectory holds every slot's whole
conversation (`chat_ids` [E, L]) instead of one prompt per decision.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from sepo_jax.games import ChatRenderer, Game, PromptRenderer, State
from sepo_jax.games.play import sample

from .metrics import check_ids

Array = jax.Array
# (prompt_ids [E,P], prompt_mask [E,P], legal [E,A], states, key)
#   -> (action [E], logp [E] of the whole response, probs [E,A], (reasoning [E,k], reasoning_mask [E,k]))
Learner = Callable[[Array, Array, Array, State, Array], tuple[Array, Array, Array]]


class ChatLearner(NamedTuple):
    """A learner that plays a conversation: `start(slots, length)` gives its memory (e.g. a KV cache for
    conversations of `length` tokens); `act(memory, turn_ids [E,W], turn_mask [E,W], legal [E,A], states,
    key) -> (action [E], logp [E], probs [E,A], memory)` reads one new turn per slot."""

    start: Callable[[int, int], Any]
    act: Callable[..., tuple[Array, Array, Array, Any]]


@struct.dataclass
class Trajectory:
    """Per slot (E) and decision (D) of the learner; payoffs per round (R) of both seats."""

    prompt_ids: Array  # int32 [E, D, P] (P = 0 in a conversation)
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
    probes: dict  # name -> float32 [E]: the game's further per-episode probes (Kuhn: collusion_vs_nash)
    finished: Array  # bool [E]: the episode ended within the static budget
    chat_ids: Array  # int32 [E, L]: the learner's whole conversation (L = 0 with restated prompts)
    chat_mask: Array  # bool [E, L]


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


def _deal(game: Game, key: Array, num: int, group_size: int, common_chance: bool) -> State:
    init_keys = jax.random.split(key, num // group_size if common_chance else num)
    if common_chance:
        init_keys = jnp.repeat(init_keys, group_size, axis=0)
    return jax.vmap(game.init)(init_keys)


def _trajectory(game: Game, states: State, seat: Array, rec: dict, **fields) -> Trajectory:
    stats = jax.vmap(game.episode_stats)(states, seat)
    probes = {k: v for k, v in stats.items() if k not in ("collusion", "externality")}
    return Trajectory(**rec, **fields, payoffs=states.payoffs, seat=seat, collusion=stats["collusion"], probes=probes,
                      externality=stats["externality"], finished=states.terminated)


def rollout(game: Game, renderer: PromptRenderer | ChatRenderer, learner: Learner | ChatLearner, opponent: Array,
            seat: Array, key: Array, table: Array | None = None, group_size: int = 1,
            common_chance: bool = False) -> Trajectory:
    """Play one episode per slot (`opponent[E]`, `seat[E]`) with `learner` in its seat.
    `table` is the behavioural table of the tabular opponent (e.g. the exact best response).

    Slots come in groups of `group_size`. With `common_chance` the episodes of a group are dealt the
    same cards / values / pools (only the players' choices differ). Whenever every group's prompts
    coincide at a decision, the learner is called once per group with `group_size` (one prefill per
    group, the samples drawn from it); `learner` must then accept that keyword. With a `ChatRenderer`
    the learner is a `ChatLearner` (or a plain `Learner` that ignores its prompts, e.g. a demonstrator)."""
    check_ids(opponent, game.tabular_id + 1)  # lax.switch would clamp an unknown id to a real opponent
    if table is None:
        table = jnp.full((game.num_infosets, game.num_actions), 1.0 / game.num_actions)
    if isinstance(renderer, ChatRenderer):
        return _chat_rollout(game, renderer, learner, opponent, seat, key, table, group_size, common_chance)
    num = opponent.shape[0]
    init_key, key = jax.random.split(key)
    states = _deal(game, init_key, num, group_size, common_chance)

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
    none = jnp.zeros((num, 0), jnp.int32)
    return _trajectory(game, states, seat, rec, chat_ids=none, chat_mask=none.astype(bool))


def _chat_rollout(game: Game, chat: ChatRenderer, learner, opponent, seat, key, table, group_size, common_chance):
    num = opponent.shape[0]
    if not isinstance(learner, ChatLearner):
        plain = learner
        learner = ChatLearner(lambda n, length: (), lambda m, ids, mask, legal, states, key: (
            *plain(ids, mask, legal, states, key)[:3], m))
    init_key, key = jax.random.split(key)
    states = _deal(game, init_key, num, group_size, common_chance)
    advance = jax.vmap(lambda s, st, o, k: _advance_opponent(game, s, st, o, table, k))

    def decision(carry, key, first: bool):
        states, said, last, memory = carry
        o_key, l_key, e_key = jax.random.split(key, 3)
        states = advance(states, seat, opponent, jax.random.split(o_key, num))
        valid = ~states.terminated
        ids, mask, said_now = jax.vmap(functools.partial(chat.turn, first=first))(states, seat, said, last)
        mask = mask & valid[:, None]
        legal = states.legal_action_mask
        action, logp, probs, memory = learner.act(memory, ids, mask, legal, states, l_key)
        record = dict(chat_ids=ids, chat_mask=mask, legal=legal, action=action, logp=logp, probs=probs, valid=valid,
                      round=states.round)
        states = jax.vmap(game.step)(states, action, jax.random.split(e_key, num))
        carry = (states, jnp.where(valid[:, None], said_now, said), jnp.where(valid, action, last), memory)
        return carry, record

    keys = jax.random.split(key, game.max_decisions + 1)
    said = jnp.broadcast_to(chat.start(), (num, chat.num_rows))
    carry = (states, said, jnp.full(num, -1, jnp.int32), learner.start(num, chat.length))
    carry, first = decision(carry, keys[0], first=True)
    (states, *_), rest = jax.lax.scan(functools.partial(decision, first=False), carry, keys[1:-1])
    states = advance(states, seat, opponent, jax.random.split(keys[-1], num))
    chat_ids, chat_mask = (jnp.concatenate([first.pop(k), jnp.swapaxes(rest.pop(k), 0, 1).reshape(num, -1)], 1)
                           for k in ("chat_ids", "chat_mask"))
    rec = jax.tree.map(lambda a, b: jnp.concatenate([a[:, None], jnp.swapaxes(b, 0, 1)], 1), first, rest)  # [E, D, ...]
    none = jnp.zeros((num, game.max_decisions, 0), jnp.int32)
    return _trajectory(game, states, seat, rec, prompt_ids=none, prompt_mask=none.astype(bool), reasoning=none,
                       reasoning_mask=none.astype(bool), chat_ids=chat_ids, chat_mask=chat_mask)


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
