"""The supervised warm start: expert traces generated on device and the cross-entropy on their actions.

The expert (`config.sft.expert`) is either `equilibrium` — the CFR+ equilibrium, on games with an exact
solver — or `demonstrators` — the paper's demonstrator mixture (docs/method.md §2), one demonstrator drawn
per episode. Expert episodes are played against the training pool; every decision becomes a target:
the expert's whole action distribution there (a lower-variance target than its sampled action, with
the same optimum). With the equilibrium expert, every information set of the first hand is added
with its exact equilibrium distribution, so rare histories are taught too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from sepo_jax.games import ChatRenderer, Game, PromptRenderer

from . import rollout

Array = jax.Array


class Batch(NamedTuple):
    """Supervised decisions [N]: prompt, legal actions, the expert's distribution, a validity mask."""

    ids: Array
    mask: Array
    legal: Array
    target: Array
    valid: Array


def demonstrator_ids(game: Game, key: Array, num: int) -> Array:
    """One demonstrator per episode, drawn from the game's mixture."""
    if not game.demonstrators:
        raise ValueError(f"game {game.name!r} defines no SFT demonstrators; use config.sft.expert='equilibrium'")
    names = list(game.demonstrators)
    weights = jnp.asarray([game.demonstrators[n] for n in names])
    ids = jnp.asarray([game.opponent_id(n) for n in names], jnp.int32)
    return jax.random.choice(key, ids, (num,), p=weights / weights.sum())


def expert_batch(game: Game, renderer: PromptRenderer | ChatRenderer, expert: Array, table: Array | None,
                 opponent: Array, seat: Array, key: Array) -> Batch:
    """Play one episode per slot with `expert[E]` (opponent ids; the tabular id plays `table`) in the
    learner's seat against `opponent[E]`, and return every decision it made as a target: one row per
    decision, or with a `ChatRenderer` one row per episode (its conversation; legal, target [E, D, A],
    valid [E, D])."""
    traj = rollout.rollout(game, renderer, rollout.opponent_learner(game, expert, table), opponent, seat, key, table)
    if isinstance(renderer, ChatRenderer):
        return Batch(traj.chat_ids, traj.chat_mask, traj.legal, traj.probs, traj.valid)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    return Batch(flat(traj.prompt_ids), flat(traj.prompt_mask), flat(traj.legal), flat(traj.probs), flat(traj.valid))


def with_table(batch: Batch, ids: Array, mask: Array, legal: Array, target: Array, valid: Array | None = None) -> Batch:
    """Append fixed decisions (e.g. every first-hand information set with the equilibrium's distribution);
    `valid` says which of them are targets (default: all)."""
    cat = jnp.concatenate
    valid = jnp.ones(target.shape[:-1], bool) if valid is None else valid
    return Batch(cat([batch.ids, ids]), cat([batch.mask, mask]), cat([batch.legal, legal]), cat([batch.target, target]),
                 cat([batch.valid, valid]))


def cross_entropy(logp: Array, batch: Batch) -> Array:
    """Mean over valid decisions of -sum_a target(a) log pi(a)."""
    ce = -jnp.where(batch.legal & (batch.target > 0), batch.target * logp, 0.0).sum(-1)
    return jnp.where(batch.valid, ce, 0.0).sum() / jnp.maximum(batch.valid.sum(), 1)
