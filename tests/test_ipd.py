"""IPD rules, opponents, tabular rows, statistics, and the Game protocol under jit/vmap."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.games.ipd import COOPERATE as C, DEFECT as D, IPD
from sepo_jax.games.play import opponents_policy, play_batch

GAME = IPD()
STEP = jax.jit(GAME.step)
PROBS = jax.jit(GAME.opponent_probs)
KEY = jax.random.key(0)


def run(moves, game=GAME, step=STEP, key=KEY):
    """The state after the flat list of moves (seat 0, seat 1, seat 0, ...)."""
    state = game.init(key)
    for i, a in enumerate(moves):
        state = step(state, a, jax.random.fold_in(key, i))
    return state


def probs(name, state, player):
    return np.asarray(PROBS(GAME.opponent_id(name), state, jnp.int32(player)))


@pytest.mark.parametrize("a0,a1,pay", [(C, C, (3, 3)), (D, D, (1, 1)), (D, C, (5, 0)), (C, D, (0, 5))])
def test_payoffs(a0, a1, pay):
    state = run([a0, a1])
    np.testing.assert_array_equal(state.payoffs[0], pay)
    assert int(state.round) == 1 and int(state.current_player) == 0


def test_round_counting_and_termination():
    state = run([C, D] * 7 + [D])
    assert not state.terminated and int(state.current_player) == 1 and int(state.round) == 7
    state = STEP(state, C, KEY)
    assert state.terminated and int(state.current_player) == -1 and int(state.num_steps) == 16
    np.testing.assert_array_equal(state.returns, [7 * 0 + 5, 7 * 5 + 0])
    after = STEP(state, C, KEY)  # a step after the end changes nothing and is not counted as illegal
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(state)))


@pytest.mark.parametrize("action", [-1, 2, 7])
def test_illegal_action_is_noop(action):
    state = run([C, D, D])
    after = STEP(state, action, KEY)
    assert int(after.illegal) == 1
    np.testing.assert_array_equal(after.moves, state.moves)
    for x, y in zip(jax.tree.leaves(after.replace(illegal=state.illegal)), jax.tree.leaves(state)):
        np.testing.assert_array_equal(x, y)


def test_opponents():
    start = run([])
    after_c, after_d = run([C, C]), run([D, C])  # seat 0 cooperated / defected in round 1
    np.testing.assert_allclose(probs("TitForTat", start, 1), [1, 0])
    np.testing.assert_allclose(probs("TitForTat", after_c, 1), [1, 0])
    np.testing.assert_allclose(probs("TitForTat", after_d, 1), [0, 1])
    np.testing.assert_allclose(probs("GenerousTFT", start, 1), [1, 0])
    np.testing.assert_allclose(probs("GenerousTFT", after_c, 1), [1, 0])
    np.testing.assert_allclose(probs("GenerousTFT", after_d, 1), [0.25, 0.75])
    np.testing.assert_allclose(probs("Mixed", after_d, 1), [0.5, 0.5])
    np.testing.assert_allclose(probs("Random", after_d, 0), [0.5, 0.5])
    forgiven = run([D, C, C, C, C, C])  # the defection was 2 rounds ago
    np.testing.assert_allclose(probs("TitForTat", forgiven, 1), [1, 0])
    np.testing.assert_allclose(probs("GrimTrigger", forgiven, 1), [0, 1])
    np.testing.assert_allclose(probs("GrimTrigger", forgiven, 0), [1, 0])  # seat 1 never defected
    for t in range(8):
        state = run([C, C] * t)
        np.testing.assert_allclose(probs("AlternatingDefect", state, 0), [0, 1] if t % 2 == 0 else [1, 0])
        np.testing.assert_allclose(probs("AlwaysDefect", state, 1), [0, 1])
        np.testing.assert_allclose(probs("AlwaysCooperate", state, 1), [1, 0])
    assert set(GAME.demonstrators) <= set(GAME.opponent_names)
    assert abs(sum(GAME.demonstrators.values()) - 1) < 1e-9
    assert set(GAME.pools) == {"train", "exploit", "collusive"}
    for pool in GAME.pools:
        GAME.pool_ids(pool)  # every name resolves


def test_infoset_rows_are_a_bijection():
    """Every (round, history) of a seat gets its own row, and the rows fill 0..21844."""
    rows = []
    index = jax.jit(GAME.infoset_index)
    for t in range(8):
        hist = np.array(list(itertools.product(range(4), repeat=t)), np.int32).reshape(4**t, t)
        moves = np.full((len(hist), 8, 2), -1, np.int32)
        moves[:, :t, 0], moves[:, :t, 1] = hist // 2, hist % 2  # digit = own * 2 + opp for seat 0
        base = run([])
        states = jax.vmap(lambda m: base.replace(round=jnp.int32(t), moves=m))(moves)
        r = np.asarray(jax.vmap(index, (0, None))(states, jnp.int32(0)))
        code = (hist * 4 ** np.arange(t - 1, -1, -1)).sum(1) if t else np.zeros(1, int)
        np.testing.assert_array_equal(r, (4**t - 1) // 3 + code)
        rows.append(r)
    np.testing.assert_array_equal(np.sort(np.concatenate(rows)), np.arange(GAME.num_infosets))
    # seat 1 reads the same history with own and opponent swapped
    state = run([C, D, D, D])
    assert int(GAME.infoset_index(state, 1)) == 5 + 2 * 4 + 3 and int(GAME.infoset_index(state, 0)) == 5 + 1 * 4 + 3


def test_episode_stats():
    moves = [D, C, D, C, C, C, C, D, D, D, C, C, C, C, C, C]  # learner = seat 0: 3 defections in 8 rounds
    state = run(moves)
    stats = GAME.episode_stats(state, jnp.int32(0))
    # rounds: DC, DC, CC, CD, DD, CC, CC, CC -> mean payoffs 2.5, 2.5, 3, 2.5, 1, 3, 3, 3
    shortfall = [0.5 / 3, 0.5 / 3, 0, 0.5 / 3, 2 / 3, 0, 0, 0]
    np.testing.assert_allclose(stats["collusion"], 3 / 8)
    np.testing.assert_allclose(stats["externality"], np.mean(shortfall), rtol=1e-6)
    np.testing.assert_allclose(GAME.episode_stats(state, jnp.int32(1))["collusion"], 2 / 8)


# ---- the Game protocol ---------------------------------------------------------------------------


def test_seat1_cannot_see_pending_move():
    for history in ([], [C, D, D, C]):
        s_c, s_d = run(history + [C]), run(history + [D])
        assert int(GAME.infoset_index(s_c, 1)) == int(GAME.infoset_index(s_d, 1))
        np.testing.assert_array_equal(GAME.prompt(s_c, 1).values, GAME.prompt(s_d, 1).values)
        for name in GAME.opponent_names:
            np.testing.assert_array_equal(probs(name, s_c, 1), probs(name, s_d, 1))


def test_prompt_builds_under_jit():
    seat_ids = jnp.array([[7, 7]] * 16, jnp.int32)  # Random vs Random
    final, _ = play_batch(GAME, lambda ids: opponents_policy(GAME, ids), seat_ids, jax.random.key(2))
    # mid-episode states: replay a prefix by marking later rounds as not yet played
    rounds = jnp.arange(16) % 8
    moves = jnp.where(jnp.arange(8)[None, :, None] < rounds[:, None, None], final.moves, -1)
    states = final.replace(round=rounds, terminated=jnp.zeros(16, bool), moves=moves)
    prompts = jax.jit(jax.vmap(GAME.prompt, (0, None)))(states, jnp.int32(0))
    sizes = np.array([len(g) for g in prompts.groups])
    values = np.asarray(prompts.values)
    assert (values >= -1).all() and (values < sizes).all()
    one = GAME.prompt(jax.tree.map(lambda x: x[3], states), jnp.int32(0))
    text = "".join(g[int(v)] for g, v in zip(one.groups, one.values) if v >= 0)
    assert "Round 4 of 8." in text and "Round 3: you " in text and "Round 4: you" not in text
    assert text.endswith("Legal actions: COOPERATE, DEFECT.\nAction:")
