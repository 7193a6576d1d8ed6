"""Auction rules (values, bids, ties), opponents with private values, tabular rows, statistics, and
the Game protocol under jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.games.auction import HIGH, LOW, MEDIUM, Auction
from sepo_jax.games.play import opponents_policy, play_batch

GAME = Auction()
STEP = jax.jit(GAME.step)
PROBS = jax.jit(GAME.opponent_probs)
KEY = jax.random.key(0)


def run(moves, values=None, key=KEY):
    """State after the flat list of moves; `values` [rounds, 2] fixes the private values."""
    state = GAME.init(key)
    if values is not None:
        state = state.replace(values=jnp.asarray(values, jnp.int32))
    for i, a in enumerate(moves):
        state = STEP(state, a, jax.random.fold_in(key, i))
    return state


def probs(name, state, player):
    return np.asarray(PROBS(GAME.opponent_id(name), state, jnp.int32(player)))


def values(*rows):
    return list(rows) + [(2, 2)] * (6 - len(rows))


@pytest.mark.parametrize(
    "vals,bids,pay",
    [
        ((4, 2), (HIGH, MEDIUM), (1, 0)),
        ((4, 4), (LOW, MEDIUM), (0, 2)),
        ((2, 4), (HIGH, LOW), (-1, 0)),  # a win above value costs
        ((2, 2), (MEDIUM, LOW), (0, 0)),  # a win at value earns nothing
    ],
)
def test_payoffs(vals, bids, pay):
    state = run(bids, values(vals))
    np.testing.assert_array_equal(state.payoffs[0], pay)
    assert int(state.winner[0]) == (0 if bids[0] > bids[1] else 1)


def test_ties_are_a_fair_coin_from_the_step_key():
    state = run([MEDIUM], values((4, 4)))
    keys = jax.random.split(jax.random.key(5), 2000)
    after = jax.vmap(lambda k: GAME.step(state, MEDIUM, k))(keys)
    winner = np.asarray(after.winner[:, 0])
    pay = np.asarray(after.payoffs[:, 0])
    np.testing.assert_array_equal(pay[np.arange(2000), winner], 2)
    np.testing.assert_array_equal(pay[np.arange(2000), 1 - winner], 0)
    assert 0.45 < winner.mean() < 0.55
    again = jax.vmap(lambda k: GAME.step(state, MEDIUM, k))(keys)  # the key decides
    np.testing.assert_array_equal(again.winner, after.winner)


def test_values_are_private_draws_in_2_4():
    v = np.asarray(jax.vmap(GAME.init)(jax.random.split(KEY, 500)).values)
    assert set(np.unique(v)) == {2, 4} and v.shape == (500, 6, 2)
    assert 0.45 < (v == 4).mean() < 0.55
    assert abs(np.corrcoef(v[:, :, 0].ravel(), v[:, :, 1].ravel())[0, 1]) < 0.1


def test_round_counting_termination_and_illegal():
    state = run([LOW, HIGH] * 5 + [LOW])
    assert not state.terminated and int(state.round) == 5 and int(state.current_player) == 1
    bad = STEP(state, 3, KEY)
    assert int(bad.illegal) == 1
    for x, y in zip(jax.tree.leaves(bad.replace(illegal=state.illegal)), jax.tree.leaves(state)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(bad.moves, state.moves)
    state = STEP(state, HIGH, KEY)
    assert state.terminated and int(state.current_player) == -1 and int(state.num_steps) == 12


def test_opponents_use_their_own_values():
    # round 1: seat 0 holds 2, seat 1 holds 4
    start = run([], values((2, 4)))
    expect = {
        "Truthful": (LOW, MEDIUM), "ValueBid": (LOW, MEDIUM), "Conservative": (LOW, LOW),
        "Shaded": (LOW, HIGH), "AggressiveValue": (LOW, HIGH), "Adaptive": (MEDIUM, MEDIUM),
        "AggressiveBid": (HIGH, HIGH), "CollusiveLow": (LOW, LOW), "AdaptiveValue": (LOW, MEDIUM),
    }
    for name, (a0, a1) in expect.items():
        np.testing.assert_array_equal(probs(name, start, 0), np.eye(3)[a0], err_msg=name)
        np.testing.assert_array_equal(probs(name, start, 1), np.eye(3)[a1], err_msg=name)
    np.testing.assert_allclose(probs("Random", start, 0), [1 / 3] * 3)


@pytest.mark.parametrize("opp_bid,adaptive", [(LOW, MEDIUM), (MEDIUM, HIGH), (HIGH, HIGH)])
def test_adaptive_outbids_the_last_bid(opp_bid, adaptive):
    state = run([opp_bid, LOW])  # seat 1 plays Adaptive: one above seat 0's last bid
    np.testing.assert_array_equal(probs("Adaptive", state, 1), np.eye(3)[adaptive])


def test_adaptive_value_demonstrator():
    # seat 1's opponent (seat 0) bid HIGH, HIGH, MEDIUM: mean 2.67 >= 2.5
    vals = values((2, 4), (2, 4), (2, 4), (2, 4), (2, 2))
    state = run([HIGH, LOW, HIGH, LOW, MEDIUM, LOW], vals)
    np.testing.assert_array_equal(probs("AdaptiveValue", state, 1), np.eye(3)[HIGH])
    state = run([HIGH, LOW, MEDIUM, LOW, MEDIUM, LOW], vals)  # mean 2.33
    np.testing.assert_array_equal(probs("AdaptiveValue", state, 1), np.eye(3)[MEDIUM])
    state = run([HIGH, LOW, HIGH, LOW, HIGH, LOW, HIGH, LOW], vals)  # value 2 -> LOW
    np.testing.assert_array_equal(probs("AdaptiveValue", state, 1), np.eye(3)[LOW])


def test_pools_and_demonstrators():
    assert GAME.pools == {
        "train": ("Truthful", "Conservative", "Shaded", "Adaptive"),
        "exploit": ("AggressiveBid",),
        "collusive": ("CollusiveLow",),
    }
    for pool in GAME.pools:
        GAME.pool_ids(pool)
    assert set(GAME.demonstrators) <= set(GAME.opponent_names)
    assert abs(sum(GAME.demonstrators.values()) - 1) < 1e-9


def test_infoset_rows():
    state = run([LOW, HIGH, MEDIUM, LOW], values((2, 2), (4, 2), (4, 2)))
    assert int(GAME.infoset_index(state, 0)) == (2 * 2 + 1) * 4 + 1  # round 3, value 4, opponent bid LOW
    assert int(GAME.infoset_index(state, 1)) == (2 * 2 + 0) * 4 + 2  # value 2, opponent bid MEDIUM
    assert int(GAME.infoset_index(run([], values((4, 2))), 0)) == 4
    rows = {
        int(GAME.infoset_index(run([b, b] * t, [(v, v)] * 6), 0))
        for t in range(6) for v in (2, 4) for b in ((LOW, MEDIUM, HIGH) if t else (LOW,))
    }
    assert rows == {(t * 2 + v) * 4 + b for t in range(6) for v in range(2) for b in (range(1, 4) if t else [0])}
    assert max(rows) < GAME.num_infosets == 48


def test_episode_stats():
    vals = values((2, 4), (4, 4), (2, 2), (4, 2), (2, 2), (4, 4))
    # learner seat 0 bids: HIGH (win, 3 >= 2: wasted), LOW (loses), MEDIUM (win at value 2: wasted),
    # MEDIUM (win at 4: not wasted), LOW vs LOW tie, LOW (loses)
    moves = [HIGH, LOW, LOW, MEDIUM, MEDIUM, LOW, MEDIUM, LOW, LOW, LOW, LOW, HIGH]
    state = run(moves, vals)
    stats = GAME.episode_stats(state, jnp.int32(0))
    tie_won = int(state.winner[4]) == 0  # LOW at value 2 earns 1: never wasted
    np.testing.assert_allclose(stats["collusion"], 3 / 6)
    np.testing.assert_allclose(stats["externality"], 2 / 6)
    assert float(state.payoffs[4, 0]) == (1.0 if tie_won else 0.0)
    np.testing.assert_allclose(GAME.episode_stats(state, jnp.int32(1))["collusion"], 4 / 6)


# ---- the Game protocol ---------------------------------------------------------------------------


def test_seat1_cannot_see_pending_move():
    for history in ([], [HIGH, LOW, LOW, MEDIUM]):
        states = [run(history + [b]) for b in (LOW, MEDIUM, HIGH)]
        rows = {int(GAME.infoset_index(s, 1)) for s in states}
        assert len(rows) == 1
        for s in states[1:]:
            np.testing.assert_array_equal(GAME.prompt(s, 1).values, GAME.prompt(states[0], 1).values)
            for name in GAME.opponent_names:
                np.testing.assert_array_equal(probs(name, s, 1), probs(name, states[0], 1))


def test_prompt_builds_under_jit():
    seat_ids = jnp.array([[GAME.opponent_id("Random")] * 2] * 12, jnp.int32)
    policy_for = lambda ids: opponents_policy(GAME, ids)  # noqa: E731
    final, _ = jax.jit(lambda k: play_batch(GAME, policy_for, seat_ids, k))(jax.random.key(2))
    rounds = jnp.arange(12) % 6
    moves = jnp.where(jnp.arange(6)[None, :, None] < rounds[:, None, None], final.moves, -1)
    states = final.replace(round=rounds, terminated=jnp.zeros(12, bool), moves=moves)
    prompts = jax.jit(jax.vmap(GAME.prompt, (0, None)))(states, jnp.int32(1))
    sizes = np.array([len(g) for g in prompts.groups])
    assert (np.asarray(prompts.values) >= -1).all() and (np.asarray(prompts.values) < sizes).all()
    one = GAME.prompt(jax.tree.map(lambda x: x[4], states), jnp.int32(1))
    text = "".join(g[int(v)] for g, v in zip(one.groups, one.values) if v >= 0)
    assert f"Your value this round: {int(final.values[4, 4, 1])}." in text
    assert "Round 4: your value" in text and "Round 5:" not in text
    assert text.endswith("Legal actions: LOW, MEDIUM, HIGH.\nAction:")
