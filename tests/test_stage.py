"""Stage-game best responses and exposure against brute force and hand-computed values."""

import itertools

import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.equilibrium import stage
from sepo_jax.games import ipd
from sepo_jax.games.negotiation import COMPOSITIONS, DEMANDS

R = {(0, 0): (3, 3), (0, 1): (0, 5), (1, 0): (5, 0), (1, 1): (1, 1)}


def tit_for_tat(window=1):
    w = np.zeros((8, 4**window, 2))
    w[:, :, 0] = 1.0
    for code in range(4):  # last joint digit own * 2 + opp: copy the opponent's last move
        w[1:, code] = np.eye(2)[code & 1]
    return w


def expectimax(opp_window, window, hist=(), t=0):
    """Plain recursion over full histories (agent-perspective joint digits); returns BR total."""
    if t == 8:
        return 0.0
    last = hist[len(hist) - min(t, window):] if window else ()
    code = 0
    for own, opp in last:  # opponent's perspective: its own move first
        code = code * 4 + opp * 2 + own
    q = opp_window[t, code]
    return max(
        sum(q[b] * (R[a, b][0] + expectimax(opp_window, window, hist + ((a, b),), t + 1)) for b in range(2) if q[b] > 0)
        for a in range(2)
    )


def test_ipd_br_vs_tit_for_tat_brute_force():
    value, opp_value, policy = stage.ipd_best_response(tit_for_tat(), 1)
    brute = max(
        sum(R[a, b][0] for a, b in zip(seq, (0,) + seq[:-1])) for seq in itertools.product(range(2), repeat=8)
    )
    assert brute == 26 and float(value) == pytest.approx(26.0)  # cooperate 7 rounds, defect last
    assert float(opp_value) == pytest.approx(21.0)
    table = stage.ipd_window_to_table(policy, 1)
    np.testing.assert_allclose(stage.ipd_values(table, stage.ipd_window_to_table(tit_for_tat(), 1)), [26.0, 21.0])


@pytest.mark.parametrize("window", [1, 2])
def test_ipd_br_vs_random_window_strategy(window):
    rng = np.random.default_rng(window)
    p = rng.random((8, 4**window))
    opp = np.stack([p, 1 - p], -1)
    value, _, policy = stage.ipd_best_response(opp, window)
    assert float(value) == pytest.approx(expectimax(opp, window), abs=1e-4)
    # the BR (a window strategy) attains its value when played on the full tables
    got = stage.ipd_values(stage.ipd_window_to_table(policy, window), stage.ipd_window_to_table(opp, window))
    assert float(got[0]) == pytest.approx(float(value), abs=1e-4)


def test_ipd_full_table_round_trip_and_index():
    assert games.make("ipd").num_infosets == 21845
    assert ipd.infoset_row(0, 0) == 0 and ipd.infoset_row(1, 3) == 4
    assert ipd.infoset_row(7, 4**7 - 1) == 21844
    rng = np.random.default_rng(0)
    p = rng.random(21845)
    table = np.stack([p, 1 - p], -1).astype(np.float32)
    np.testing.assert_allclose(stage.ipd_window_to_table(stage.ipd_table_to_window(table), 7), table)
    v_full, _, _ = stage.ipd_best_response(stage.ipd_table_to_window(table), 7)
    assert float(v_full) >= float(stage.ipd_values(np.tile([1.0, 0.0], (21845, 1)), table)[0]) - 1e-4


def test_ipd_exposure():
    always = lambda a: np.tile(np.eye(2)[a], (21845, 1)).astype(np.float32)  # noqa: E731
    r = stage.exposure("ipd", always(0))  # AlwaysCooperate: AlwaysDefect takes 5 a round, leaves 0
    assert float(r["br_value"]) == 5 and float(r["learner_value"]) == 0
    r = stage.exposure("ipd", stage.ipd_window_to_table(tit_for_tat(), 1))  # cooperate 7 rounds, defect last
    assert float(r["br_value"]) == pytest.approx(26 / 8) and float(r["learner_value"]) == pytest.approx(21 / 8)


def short(name, rounds):
    """The game with fewer rounds (its rows for those rounds are the same), for brute force."""
    game = games.make(name)
    game.num_rounds, game.max_steps = rounds, 2 * rounds
    return game


def brute_auction(table, rounds, t=0, last=0):
    """Full-information expectimax of the opponent against the learner's rows (plain rules): (its
    total, the learner's total), ties against the learner."""
    if t == rounds:
        return 0.0, 0.0
    mine = theirs = 0.0
    for vb in (2, 4):
        best = None
        for b in (1, 2, 3):
            q = [0.0, 0.0]
            for vi, vl in enumerate((2, 4)):
                probs = table[(t * 2 + vi) * 4 + last]
                for a, p in zip((1, 2, 3), probs):
                    win_b = 1.0 if b > a else 0.5 if a == b else 0.0
                    cont = brute_auction(table, rounds, t + 1, b)
                    q[0] += 0.5 * p * (win_b * (vb - b) + cont[0])
                    q[1] += 0.5 * p * ((1 - win_b) * (vl - a) + cont[1])
            if best is None or q[0] > best[0] + 1e-9 or (abs(q[0] - best[0]) <= 1e-9 and q[1] < best[1]):
                best = q
        mine, theirs = mine + 0.5 * best[0], theirs + 0.5 * best[1]
    return mine, theirs


def test_auction_exposure_equals_brute_force():
    table = np.random.default_rng(0).dirichlet(np.ones(3), size=48)
    r = stage.exposure(short("auction", 2), table)
    br, kept = brute_auction(table, 2)
    assert float(r["br_value"]) == pytest.approx(br / 2, abs=1e-5)
    assert float(r["learner_value"]) == pytest.approx(kept / 2, abs=1e-5)
    # always LOW: the BR bids MEDIUM at value 4 (earns 2) and ties LOW at 2 (0.5); the learner keeps its
    # ties: half of (v - 1) when the BR's value is 2
    r = stage.exposure("auction", np.tile(np.eye(3)[0], (48, 1)))
    assert float(r["br_value"]) == pytest.approx(1.25) and float(r["learner_value"]) == pytest.approx(0.5)


def brute_negotiation_v1(table, rounds, t=0, last=(0, 0)):
    """Full-information expectimax of the opponent (plain rules: demands 1..9 of a pie of 10)."""
    if t == rounds:
        return 0.0, 0.0
    probs = table[(t * 10 + last[0]) * 10 + last[1]]
    best = None
    for b in range(1, 10):
        q = [0.0, 0.0]
        for a, p in zip(range(1, 10), probs):
            if p > 0:
                cont = brute_negotiation_v1(table, rounds, t + 1, (b, a))
                deal = a + b <= 10
                q[0] += p * (deal * b + cont[0])
                q[1] += p * (deal * a + cont[1])
        if best is None or q[0] > best[0] + 1e-9 or (abs(q[0] - best[0]) <= 1e-9 and q[1] < best[1]):
            best = q
    return tuple(best)


def test_negotiation_v1_exposure_equals_brute_force():
    rng = np.random.default_rng(1)
    table = rng.dirichlet(np.ones(9), size=400) * (rng.random((400, 9)) < 0.4)  # sparse: a cheaper brute force
    table[table.sum(1) == 0, 4] = 1.0
    table /= table.sum(1, keepdims=True)
    r = stage.exposure(short("negotiation_v1", 2), table)
    br, kept = brute_negotiation_v1(table, 2)
    assert float(r["br_value"]) == pytest.approx(br / 2, abs=1e-5)
    assert float(r["learner_value"]) == pytest.approx(kept / 2, abs=1e-5)
    r = stage.exposure("negotiation_v1", np.tile(np.eye(9)[4], (400, 1)))  # Fair: the BR demands 5 too
    assert float(r["br_value"]) == 5 and float(r["learner_value"]) == 5


def test_negotiation_v2_exposure_equals_brute_force():
    game = games.make("negotiation_v2")
    pools = list(itertools.product(range(1, 5), repeat=3))
    fair = np.zeros((game.num_infosets, 125))
    for i, pool in enumerate(pools):  # FairNeg: half of each item, whatever the round and values
        fair[[(t * 64 + i) * 36 + v for t in range(4) for v in range(36)], int(np.asarray(pool) // 2 @ [25, 5, 1])] = 1
    r = stage.exposure(game, fair)  # the BR takes the rest: E[ceil(p / 2)] = 1.5 items at mean value 10/3
    assert float(r["br_value"]) == pytest.approx(15.0) and float(r["learner_value"]) == pytest.approx(10.0)
    table = np.random.default_rng(2).dirichlet(np.ones(125), size=game.num_infosets)
    table *= (DEMANDS[None] <= np.repeat(np.asarray(pools), 36, 0)[np.arange(game.num_infosets) // 36 % 64][:, None]).all(-1)
    table /= table.sum(1, keepdims=True)
    brute = 0.0
    for t in range(4):
        for i, pool in enumerate(pools):
            mix = table[(t * 64 + i) * 36 : (t * 64 + i + 1) * 36].mean(0)  # over the learner's values
            legal = (DEMANDS <= pool).all(1)
            fit = ((DEMANDS[:, None] + DEMANDS[None]) <= pool).all(-1) @ mix  # P(deal) per own demand
            brute += np.mean([np.max(np.where(legal, fit * (DEMANDS @ v), -1)) for v in COMPOSITIONS]) / 64
    assert float(stage.exposure(game, table)["br_value"]) == pytest.approx(brute / 4, rel=1e-5)
