"""Every game under `jit` + `vmap`: a batch of episodes equals the same episodes played one at a time
(with and without the per-move record)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.games.play import opponents_policy, play, play_batch


@pytest.mark.parametrize("name", games.GAMES)
def test_batch_equals_one_at_a_time(name):
    game = games.make(name)
    n = game.tabular_id + 1  # every named opponent and the tabular one, in both seats
    seat_ids = jnp.array([[i, j] for i in range(n) for j in range(n)], jnp.int32)
    table = jax.random.dirichlet(jax.random.key(0), jnp.ones(game.num_actions), (game.num_infosets,))
    policy_for = lambda ids: opponents_policy(game, ids, table)  # noqa: E731
    key = jax.random.key(1)
    batch, _ = jax.jit(lambda k: play_batch(game, policy_for, seat_ids, k))(key)
    keys = jax.random.split(key, len(seat_ids))
    one = jax.jit(lambda ids, k: play(game, policy_for(ids), k, record=False)[0])
    for i in range(0, len(seat_ids), 7):
        single = one(seat_ids[i], keys[i])
        for x, y in zip(jax.tree.leaves(single), jax.tree.leaves(batch)):
            np.testing.assert_array_equal(x, y[i])
        for field in ("payoffs", "returns", "current_player", "legal_action_mask", "round", "terminated"):
            np.testing.assert_array_equal(getattr(single, field), getattr(batch, field)[i])  # derived on a batch too
    assert bool(batch.terminated.all()) and int(batch.illegal.sum()) == 0
