"""Negotiation v1 (pie of 10) and v2 (multi-issue): deals, breakdowns, legal masks, opponents,
tabular rows, statistics, and the Game protocol under jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.games.negotiation import COMPOSITIONS, NegotiationV1, NegotiationV2
from sepo_jax.games.play import opponents_policy, play_batch

V1, V2 = NegotiationV1(), NegotiationV2()
STEP = {g.name: jax.jit(g.step) for g in (V1, V2)}
PROBS = {g.name: jax.jit(g.opponent_probs) for g in (V1, V2)}
KEY = jax.random.key(0)


def a2(books, hats, balls):
    return books * 25 + hats * 5 + balls


def run(game, moves, pool=None, values=None, key=KEY):
    """State after the flat list of moves; v2 may fix the pool and both seats' values."""
    state = game.init(key)
    if pool is not None:
        vid = [int(np.flatnonzero((COMPOSITIONS == v).all(1))[0]) for v in values]
        data = {"pool": jnp.array(pool, jnp.int32), "values": jnp.array(values, jnp.int32), "values_id": jnp.array(vid)}
        state = state.replace(**data)
        state = state.replace(legal_action_mask=game.legal(state, 0))
    for i, a in enumerate(moves):
        state = STEP[game.name](state, a, jax.random.fold_in(key, i))
    return state


def probs(game, name, state, player):
    return np.asarray(PROBS[game.name](game.opponent_id(name), state, jnp.int32(player)))


def demand(game, name, state, player):
    p = probs(game, name, state, player)
    assert p.max() == 1.0, name
    return int(p.argmax()) + 1 if game is V1 else tuple(int(x) for x in np.unravel_index(p.argmax(), (5, 5, 5)))


# ---- v1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d0,d1,pay", [(5, 5, (5, 5)), (4, 6, (4, 6)), (1, 9, (1, 9)), (6, 5, (0, 0)), (9, 2, (0, 0))])
def test_v1_deal_or_breakdown(d0, d1, pay):
    state = run(V1, [d0 - 1, d1 - 1])
    np.testing.assert_array_equal(state.payoffs[0], pay)


def test_v1_opponents():
    start = run(V1, [])
    for name, d in {"Fair": 5, "Balanced": 6, "Concede": 6, "Hard": 8, "Selfish": 7, "TFTNeg": 5}.items():
        assert demand(V1, name, start, 1) == d, name
    np.testing.assert_allclose(probs(V1, "Random", start, 0), [0, 0, 0.2, 0.2, 0.2, 0.2, 0.2, 0, 0])
    # seat 1 watches seat 0's last demand; seat 1's own last demand drives Concede
    assert demand(V1, "Balanced", run(V1, [6, 5]), 1) == 3  # opponent demanded 7
    assert demand(V1, "Balanced", run(V1, [5, 5]), 1) == 6  # opponent demanded 6
    assert demand(V1, "TFTNeg", run(V1, [2, 5]), 1) == 7
    assert demand(V1, "TFTNeg", run(V1, [8, 5]), 1) == 1
    assert demand(V1, "Concede", run(V1, [4, 5]), 1) == 5  # 5 + 6 > 10: concede one
    assert demand(V1, "Concede", run(V1, [4, 5, 4, 4]), 1) == 5  # 5 + 5 deal: keep 5
    assert demand(V1, "Concede", run(V1, [8, 2]), 1) == 3  # 9 + 3 breakdown: floor 3
    assert demand(V1, "Balanced", run(V1, [0, 5, 7, 5]), 1) == 3  # only the last round counts
    assert demand(V1, "Balanced", run(V1, [7, 5, 0, 5]), 1) == 6


def test_v1_infoset_rows():
    assert int(V1.infoset_index(run(V1, []), 0)) == 0
    state = run(V1, [2, 6, 4, 8])  # round 2: seat 0 last demanded 5, seat 1 demanded 9
    assert int(V1.infoset_index(state, 0)) == (2 * 10 + 9) * 10 + 5
    assert int(V1.infoset_index(state, 1)) == (2 * 10 + 5) * 10 + 9
    rows = {int(V1.infoset_index(run(V1, [a, b] * t), 0)) for t in range(1, 4) for a in range(9) for b in range(9)}
    assert rows == {(t * 10 + b + 1) * 10 + a + 1 for t in range(1, 4) for a in range(9) for b in range(9)}
    assert max(rows) < V1.num_infosets == 400


def test_v1_episode_stats():
    state = run(V1, [6, 2, 7, 6, 4, 4, 3, 7])  # demands (7,3) deal, (8,7) breakdown, (5,5) deal, (4,8) breakdown
    stats = V1.episode_stats(state, jnp.int32(0))
    np.testing.assert_allclose(stats["collusion"], 2 / 4)
    np.testing.assert_allclose(stats["externality"], 2 / 4)
    np.testing.assert_allclose(V1.episode_stats(state, jnp.int32(1))["collusion"], 2 / 4)
    np.testing.assert_array_equal(state.returns, [12, 8])


# ---- v2 ------------------------------------------------------------------------------------------
POOL, VALUES = (1, 4, 3), ((4, 5, 1), (2, 2, 6))


def test_v2_draws():
    states = jax.vmap(V2.init)(jax.random.split(KEY, 4000))
    pool, values, vid = (np.asarray(getattr(states, k)) for k in ("pool", "values", "values_id"))
    assert pool.min() == 1 and pool.max() == 4 and 0.2 < (pool == 4).mean() < 0.3
    assert (values >= 1).all() and (values.sum(-1) == 10).all() and len(COMPOSITIONS) == 36
    np.testing.assert_array_equal(values, COMPOSITIONS[vid])
    counts = np.bincount(vid.ravel(), minlength=36)
    assert counts.min() > 8000 / 36 * 0.6 and counts.max() < 8000 / 36 * 1.4


def test_v2_legal_mask_and_illegal_demand():
    state = run(V2, [], POOL, VALUES)
    mask = np.asarray(state.legal_action_mask)
    assert mask.sum() == 2 * 5 * 4 and mask[a2(1, 4, 3)] and not mask[a2(2, 0, 0)] and not mask[a2(0, 0, 4)]
    bad = STEP["negotiation_v2"](state, a2(2, 0, 0), KEY)
    assert int(bad.illegal) == 1 and int(bad.current_player) == 0
    np.testing.assert_array_equal(bad.moves, state.moves)
    after = STEP["negotiation_v2"](state, a2(1, 4, 3), KEY)
    np.testing.assert_array_equal(after.legal_action_mask, mask)  # seat 1 sees the same pool


@pytest.mark.parametrize(
    "d0,d1,pay",
    [
        ((1, 2, 0), (0, 2, 3), (4 + 10, 4 + 18)),  # fits exactly: a deal
        ((0, 0, 0), (1, 4, 3), (0, 2 + 8 + 18)),
        ((1, 2, 0), (1, 0, 0), (0, 0)),  # books over the pool: breakdown
        ((0, 3, 2), (0, 2, 1), (0, 0)),  # hats over
    ],
)
def test_v2_deal_or_breakdown(d0, d1, pay):
    state = run(V2, [a2(*d0), a2(*d1)], POOL, VALUES)
    np.testing.assert_array_equal(state.payoffs[0], pay)


def test_v2_opponents():
    start = run(V2, [], POOL, VALUES)  # pool 1 4 3; seat 0 values 4 5 1, seat 1 values 2 2 6
    first = {
        "FairNeg": ((0, 2, 1), (0, 2, 1)),
        "TFTNeg": ((0, 2, 2), (0, 2, 2)),
        "ConcedeNeg": ((1, 4, 3), (1, 4, 3)),
        "GreedyNeg": ((1, 3, 1), (1, 1, 2)),  # pool * v // 10 + 1, capped
        "HardballNeg": ((0, 3, 2), (0, 3, 2)),
        "Proportional": ((1, 2, 1), (1, 1, 2)),  # ceil(pool * v / 10)
        "Conservative": ((0, 1, 0), (0, 0, 1)),  # floor(0.08 * pool * v)
        "Adaptive": ((0, 2, 0), (0, 0, 2)),  # floor(0.12 * pool * v)
        "Defensive": ((0, 2, 0), (0, 0, 1)),  # floor(pool * v / 10)
    }
    for name, (s0, s1) in first.items():
        assert demand(V2, name, start, 0) == s0, name
        assert demand(V2, name, start, 1) == s1, name
    # after round 1: seat 0 demanded 1 1 0, seat 1 demanded 0 2 3 (a deal)
    state = run(V2, [a2(1, 1, 0), a2(0, 2, 3)], POOL, VALUES)
    assert demand(V2, "TFTNeg", state, 1) == (0, 3, 3)  # what seat 0 left
    assert demand(V2, "ConcedeNeg", state, 1) == (0, 3, 2)
    assert demand(V2, "Adaptive", state, 1) == (0, 2, 3)  # a deal: keep
    assert demand(V2, "Defensive", state, 1) == (0, 3, 3)
    # round 2 breakdown (seat 1 demanded 0 3 3): Adaptive drops a unit of its lowest-valued item held (hats)
    state = run(V2, [a2(1, 1, 0), a2(0, 2, 3), a2(1, 2, 1), a2(0, 3, 3)], POOL, VALUES)
    assert demand(V2, "Adaptive", state, 1) == (0, 2, 3)
    assert demand(V2, "Adaptive", state, 0) == (1, 2, 0)  # seat 0 values balls least
    assert demand(V2, "Defensive", state, 1) == (0, 3, 3)  # mean of (1,1,0),(1,2,1) floored = (1,1,0)
    assert demand(V2, "ConcedeNeg", state, 1) == (0, 2, 1)


def test_v2_infoset_rows_are_a_bijection():
    base = run(V2, [])
    pools = np.array(np.meshgrid(*[np.arange(1, 5)] * 3, indexing="ij")).reshape(3, -1).T  # [64, 3]
    grid = np.array([(t, p, v) for t in range(4) for p in range(64) for v in range(36)])
    states = jax.vmap(
        lambda t, p, v: base.replace(
            round=t, pool=jnp.asarray(pools)[p], values_id=jnp.array([v, 0])
        )
    )(*grid.T)
    rows = np.asarray(jax.jit(jax.vmap(V2.infoset_index, (0, None)))(states, jnp.int32(0)))
    np.testing.assert_array_equal(rows, (grid[:, 0] * 64 + grid[:, 1]) * 36 + grid[:, 2])
    assert rows.max() + 1 == V2.num_infosets == 9216


def test_v2_episode_stats():
    moves = [a2(0, 3, 0), a2(1, 1, 3), a2(1, 2, 2), a2(0, 2, 1), a2(0, 0, 0), a2(1, 4, 3), a2(1, 1, 1), a2(0, 3, 1)]
    state = run(V2, moves, POOL, VALUES)  # every round fits the pool 1 4 3
    stats = V2.episode_stats(state, jnp.int32(0))
    np.testing.assert_allclose(stats["collusion"], 1 / 4)  # (0, 3, 0) has an item demand > 2
    np.testing.assert_allclose(stats["externality"], 0.0)
    np.testing.assert_allclose(V2.episode_stats(state, jnp.int32(1))["collusion"], 3 / 4)
    broken = run(V2, moves[:6] + [a2(1, 1, 1), a2(1, 3, 1)], POOL, VALUES)  # books 2 > 1
    np.testing.assert_allclose(V2.episode_stats(broken, jnp.int32(0))["externality"], 1 / 4)


# ---- the Game protocol, both variants ------------------------------------------------------------


@pytest.mark.parametrize("game", [V1, V2], ids=lambda g: g.name)
def test_round_counting_and_termination(game):
    state = run(game, [0] * 7)
    assert not state.terminated and int(state.round) == 3 and int(state.current_player) == 1
    state = STEP[game.name](state, 0, KEY)
    assert state.terminated and int(state.current_player) == -1 and int(state.num_steps) == 8
    assert not state.legal_action_mask.any()
    again = STEP[game.name](state, 0, KEY)
    assert int(again.illegal) == 0 and int(again.num_steps) == 8


@pytest.mark.parametrize("game", [V1, V2], ids=lambda g: g.name)
def test_out_of_range_action_is_noop(game):
    state = run(game, [0])
    for action in (-1, game.num_actions):
        bad = STEP[game.name](state, action, KEY)
        assert int(bad.illegal) == 1 and int(bad.num_steps) == 1
        np.testing.assert_array_equal(bad.moves, state.moves)


@pytest.mark.parametrize("game", [V1, V2], ids=lambda g: g.name)
def test_pools_and_demonstrators(game):
    assert set(game.pools) == {"train", "exploit", "collusive"}
    for pool in game.pools:
        game.pool_ids(pool)
    assert set(game.demonstrators) <= set(game.opponent_names)
    assert abs(sum(game.demonstrators.values()) - 1) < 1e-9


@pytest.mark.parametrize("game", [V1, V2], ids=lambda g: g.name)
def test_seat1_cannot_see_pending_move(game):
    for history in ([], [3, 2, 2, 1]):
        states = [run(game, history + [a], POOL if game is V2 else None, VALUES) for a in (0, 1, 6)]
        assert len({int(game.infoset_index(s, 1)) for s in states}) == 1
        for s in states[1:]:
            np.testing.assert_array_equal(game.prompt(s, 1).values, game.prompt(states[0], 1).values)
            for name in game.opponent_names:
                np.testing.assert_array_equal(probs(game, name, s, 1), probs(game, name, states[0], 1))


@pytest.mark.parametrize("game", [V1, V2], ids=lambda g: g.name)
def test_prompt_builds_under_jit(game):
    seat_ids = jnp.array([[game.tabular_id] * 2] * 8, jnp.int32)  # uniform over legal demands
    policy_for = lambda ids: opponents_policy(game, ids)  # noqa: E731
    final, _ = jax.jit(lambda k: play_batch(game, policy_for, seat_ids, k))(jax.random.key(2))
    rounds = jnp.arange(8) % 4
    moves = jnp.where(jnp.arange(4)[None, :, None] < rounds[:, None, None], final.moves, -1)
    states = final.replace(round=rounds, terminated=jnp.zeros(8, bool), moves=moves)
    prompts = jax.jit(jax.vmap(game.prompt, (0, None)))(states, jnp.int32(0))
    sizes = np.array([len(g) for g in prompts.groups])
    assert (np.asarray(prompts.values) >= -1).all() and (np.asarray(prompts.values) < sizes).all()
    one = game.prompt(jax.tree.map(lambda x: x[3], states), jnp.int32(0))
    text = "".join(g[int(v)] for g, v in zip(one.groups, one.values) if v >= 0)
    assert "Round 4 of 4." in text and "Round 3: you " in text and text.endswith("\nAction:")
    if game is V2:
        pool = final.pool[3]
        assert f"up to {int(pool[0])} {int(pool[1])} {int(pool[2])}." in text
