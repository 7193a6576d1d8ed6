"""Stage-game best responses against brute force and hand-computed values."""

import itertools

import numpy as np
import pytest

from sepo_jax.equilibrium import stage

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
    assert stage.IPD_NUM_INFOSETS == 21845
    assert stage.ipd_infoset_index(0, 0) == 0 and stage.ipd_infoset_index(1, 3) == 4
    assert stage.ipd_infoset_index(7, 4**7 - 1) == 21844
    rng = np.random.default_rng(0)
    p = rng.random(21845)
    table = np.stack([p, 1 - p], -1).astype(np.float32)
    np.testing.assert_allclose(stage.ipd_window_to_table(stage.ipd_table_to_window(table), 7), table)
    v_full, _, _ = stage.ipd_best_response(stage.ipd_table_to_window(table), 7)
    assert float(v_full) >= float(stage.ipd_values(np.tile([1.0, 0.0], (21845, 1)), table)[0]) - 1e-4


def test_ipd_report():
    always = lambda a: np.tile(np.eye(2)[a], (21845, 1)).astype(np.float32)
    tft = stage.ipd_window_to_table(tit_for_tat(), 1)
    r = stage.ipd_report(always(0), tft, tft)  # AlwaysCooperate vs TFT
    assert float(r["value"]) == 24 and float(r["br_value"]) == 26 and float(r["gain"]) == 2
    assert float(r["exposure"]) == 24  # the opponent's BR (AlwaysDefect) leaves it 0 instead of 24
    r = stage.ipd_report(always(1), always(1), always(1))
    assert float(r["gain"]) == 0 and float(r["exposure"]) == 0


def brute_auction(opp):
    """Max over all 9 pure strategies (value -> bid) of the expected payoff against `opp` [2, 3]."""
    best = -1.0
    for s in itertools.product(range(3), repeat=2):
        total = 0.0
        for vi, v in enumerate(stage.AUCTION_VALUES):
            a = stage.AUCTION_BIDS[s[vi]]
            for wi in range(2):
                for bi, b in enumerate(stage.AUCTION_BIDS):
                    win = 1.0 if a > b else 0.5 if a == b else 0.0
                    total += 0.25 * opp[wi, bi] * win * (v - a)
        best = max(best, total)
    return best


def test_auction_br_equals_brute_force():
    rng = np.random.default_rng(0)
    opp = rng.dirichlet(np.ones(3), size=(6, 2)).astype(np.float32)
    opp[0] = np.eye(3)[[2, 2]]  # AggressiveBid
    opp[1] = np.eye(3)[[0, 0]]  # CollusiveLow
    value, br = stage.auction_best_response(opp)
    assert value.shape == (6,) and br.shape == (6, 2, 3)
    for r in range(6):
        assert float(value[r]) == pytest.approx(brute_auction(opp[r]), abs=1e-6)
        assert float(stage.auction_values(br[r], opp[r])[0]) == pytest.approx(float(value[r]), abs=1e-6)
    # against always-LOW: value 2 bids MEDIUM (wins 0) or ties LOW (0.5); value 4 bids MEDIUM (2)
    np.testing.assert_allclose(br[1], np.eye(3)[[0, 1]])


def test_auction_pure_equilibria():
    eqs = stage.auction_pure_equilibria()
    assert eqs
    for e in eqs:  # brute force: no pure deviation improves either bidder
        s = [np.eye(3)[[stage.AUCTION_BIDS.index(e["bids"][i][v]) for v in stage.AUCTION_VALUES]] for i in range(2)]
        assert e["payoffs"][0] >= brute_auction(s[1]) - 1e-6 and e["payoffs"][1] >= brute_auction(s[0]) - 1e-6
    assert {"bids": ({2: 1, 4: 2}, {2: 1, 4: 2})} in [{"bids": e["bids"]} for e in eqs]


def test_negotiation_v1():
    fair = np.eye(9)[4]  # demands 5
    value, br = stage.neg_v1_best_response(fair)
    assert float(value) == 5 and int(np.argmax(br)) == 4
    mix = np.zeros(9)
    mix[[2, 6]] = 0.5  # demands 3 or 7
    value, br = stage.neg_v1_best_response(mix)  # 3 -> 3, 7 -> 3.5
    assert float(value) == pytest.approx(3.5) and int(np.argmax(br)) == 6
    r = stage.neg_v1_report(fair, fair, fair)
    assert float(r["gain"]) == 0 and float(r["exposure"]) == 0
    r = stage.neg_v1_report(np.eye(9)[2], fair, fair)  # demanding 3 vs Fair: gain 2; opponent BR takes 7
    assert float(r["gain"]) == 2 and float(r["exposure"]) == 0


def test_negotiation_v2_br_equals_brute_force():
    rng = np.random.default_rng(1)
    pool = np.array([2, 1, 3])
    values = np.array([3, 4, 1])
    legal = np.asarray(stage.neg_v2_legal(pool))
    opp = rng.random(125) * legal
    opp /= opp.sum()
    value, br = stage.neg_v2_best_response(opp, pool, values)
    d = stage.neg_v2_demands()
    brute = max(
        sum(opp[b] * (d[a] @ values) for b in range(125) if np.all(d[a] + d[b] <= pool)) for a in range(125) if legal[a]
    )
    assert float(value) == pytest.approx(brute, rel=1e-5)
    assert legal[int(np.argmax(br))]


def test_auction_report_gain_and_exposure():
    low = np.eye(3)[[0, 0]].astype(np.float32)  # always LOW (CollusiveLow)
    r = stage.auction_report(low, low, low)
    # vs LOW: ties pay 0.5 * (v - 1) -> 1.0 a round; the BR bids MEDIUM at value 4 -> 1.25
    assert float(r["value"]) == pytest.approx(1.0) and float(r["gain"]) == pytest.approx(0.25)
    # the opponent's BR outbids it at value 4: the agent keeps only its ties at opponent value 2
    assert float(r["exposure"]) == pytest.approx(0.5)
    np.testing.assert_allclose(stage.auction_revenue(low, np.eye(3)[[2, 2]]), 3.0)
