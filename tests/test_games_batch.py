"""Every game under `jit` + `vmap`: a batch of episodes equals the same episodes played one at a time
(with and without the per-move record). And the rules texts of the repeated games, which are generated from
their rule constants (payoffs, values, bids, pie, items), as written."""

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


RULES = {
    "ipd": (
        "You are playing the iterated Prisoner's Dilemma, 8 rounds. Each round you and the opponent "
        "choose COOPERATE or DEFECT at the same time. Both COOPERATE: 3 points each. Both DEFECT: 1 each. "
        "One DEFECTs, the other COOPERATEs: 5 to the defector, 0 to the cooperator. Maximise your total."
    ),
    "auction": (
        "You are playing a repeated sealed-bid auction, 6 rounds. Each round you and the opponent each get "
        "a private value for the item, 2 or 4 points, and bid at the same time: LOW (1), MEDIUM (2) or "
        "HIGH (3). The higher bid wins the item and scores value minus bid; the loser scores 0. Ties are "
        "settled by a coin flip. Maximise your total."
    ),
    "negotiation_v1": (
        "You are negotiating how to split 10 points, 4 rounds. Each round you and the opponent each demand "
        "1 to 9 points at the same time. If the demands add up to 10 or less it is a deal and each gets its "
        "demand; otherwise it is a breakdown and both get 0. Maximise your total."
    ),
    "negotiation_v2": (
        "You are negotiating over a pool of books, hats and balls, 4 rounds. Each round you and the "
        "opponent each demand a number of every item at the same time. If for every item the two demands "
        "fit in the pool it is a deal and each gets its demand, scored at its own private value per item; "
        "otherwise it is a breakdown and both get 0. The opponent's values are hidden from you. "
        "Maximise your total."
    ),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_rules_text_from_rule_constants(name):
    assert games.make(name).rules == RULES[name]
