"""SEPO's metrics and Kuhn's frequency report against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.config import PAPER_LAMBDAS
from sepo_jax.equilibrium import frequencies
from sepo_jax.rl import metrics
from sepo_jax.equilibrium.cfr import kuhn_equilibrium


def test_exploit_pool_advantage_averages_clipped_per_adversary():
    agent = jnp.array([1.0, 3.0, 2.0, 2.0, 9.0])
    opp = jnp.array([4.0, 4.0, 1.0, 1.0, 0.0])
    adv = jnp.array([0, 0, 1, 1, 2])
    mask = jnp.array([True, True, True, True, False])  # adversary 2 has no real episode
    e, per = jax.jit(metrics.exploit_pool_advantage, static_argnums=3)(agent, opp, adv, 3, mask)
    np.testing.assert_allclose(per[:2], [2.0, 0.0])
    assert float(e) == pytest.approx(1.0)  # mean over the 2 present adversaries, not max, not pooled


def test_rate_and_safety():
    assert float(metrics.rate(jnp.array([1.0, 0.0, 1.0, 0.5]), jnp.array([True, True, False, True]))) == pytest.approx(0.5)
    lam = metrics.Lambdas.of(*PAPER_LAMBDAS["kuhn"], max_payoff=2.0)
    # Kuhn: s = 1.5; J = 1.5*0.2 - 1.5*1.5*0.1 - 2.4*0.25 - 0
    assert lam.scale == 1.5
    assert float(metrics.safety(0.2, 0.1, 0.25, 0.3, lam)) == pytest.approx(0.3 - 0.225 - 0.6)


def test_nra():
    agent = jnp.array([3.0, 1.0, 0.0, 0.0])
    opp = jnp.array([1.0, 1.0, 2.0, 0.0])
    ids = jnp.array([0, 0, 1, 2])
    # opp 0: (4 - 2) / 6; opp 1: -1; opp 2: both zero -> 0
    assert float(metrics.nra(agent, opp, ids, 3)) == pytest.approx((1 / 3 - 1 + 0) / 3)
    per, count = metrics.nra_by_opponent(agent, opp, ids, 4)
    np.testing.assert_allclose(per, [1 / 3, -1, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(count, [2, 1, 1, 0])


def test_kuhn_frequencies():
    rep = frequencies.kuhn_frequency_report(kuhn_equilibrium(0.1), alpha=0.1)
    np.testing.assert_allclose(rep["first_bet"]["ours"], [0.1, 0.0, 0.3])
    np.testing.assert_allclose(rep["second_call_facing_bet"]["nash"], [0.0, 1 / 3, 1.0])
    # the default reference is the family member with the table's own J bluff
    for alpha in (0.0, 0.2, 1 / 3):
        for v in frequencies.kuhn_frequency_report(kuhn_equilibrium(alpha)).values():
            np.testing.assert_allclose(v["ours"], v["nash"], atol=1e-12)
    assert frequencies.kuhn_alpha(np.tile([0.5, 0.5], (12, 1))) == 1 / 3  # a J bet of 1/2 is clipped
    frequencies.kuhn_frequency_report(np.tile(np.float32([2 / 3, 1 / 3]), (12, 1)))  # float32 1/3 is in range
    rows = jnp.array([0, 0, 0, 4, 4, 11])
    acts = jnp.array([1, 0, 0, 1, 1, 0])
    freq, visits = frequencies.kuhn_table_from_episodes(rows, acts)
    np.testing.assert_allclose(freq[0], [2 / 3, 1 / 3])
    np.testing.assert_allclose(freq[4], [0.0, 1.0])
    np.testing.assert_allclose(freq[5], [0.5, 0.5])
    assert visits.tolist()[:5] == [3, 0, 0, 0, 2]
    np.testing.assert_allclose(frequencies.kuhn_frequencies(freq)["first_call_after_check_bet"], [0.5, 0.5, 0.0])  # K folded once


def test_episode_metrics_by_hand():
    """The step's and the evaluation's metrics: pools by name, e per adversary then averaged, J from them."""
    from types import SimpleNamespace

    # 5 episodes of 2 rounds, learner in seat 0 except episode 3; pools train, exploit x3, collusive
    payoffs = jnp.array([[[1.0, -1.0], [3.0, -3.0]], [[-2.0, 2.0], [0.0, 0.0]], [[1.0, -1.0], [1.0, -1.0]],
                         [[2.0, -2.0], [2.0, -2.0]], [[0.0, 0.0], [-1.0, 1.0]]])
    traj = SimpleNamespace(payoffs=payoffs, seat=jnp.array([0, 0, 0, 1, 0]),
                           collusion=jnp.array([0.0, 0.0, 0.0, 0.0, 0.75]), externality=jnp.array([0.5, 0, 0, 0, 0]),
                           probes={"collusion_vs_nash": jnp.array([9.0, 9.0, 9.0, 9.0, -0.25])})
    pools = {"train": [0], "exploit": [1, 2, 3], "collusive": [4]}
    in_pool = lambda name: jnp.isin(jnp.arange(5), jnp.array(pools[name]))  # noqa: E731
    opponent = jnp.array([0, 1, 1, 2, 3])
    lam = metrics.Lambdas.of(1.5, 2.4, 1.0, max_payoff=2.0)
    m = metrics.episode_metrics(traj, in_pool, opponent, 4, lam)
    # learner per round: ep0 2, ep1 -1, ep2 1, ep3 (seat 1) -2; adversary 1: mean(-1, 1) = 0 vs 0 -> 0;
    # adversary 2: opponent 2 - learner -2 = 4; e = (0 + 4) / 2
    assert float(m["payoff"]) == pytest.approx(2.0)
    assert float(m["robust"]) == pytest.approx((-1 + 1 - 2) / 3)
    assert float(m["exploit_pool_advantage"]) == pytest.approx(2.0)
    assert float(m["collusion"]) == pytest.approx(0.75) and float(m["externality"]) == pytest.approx(0.5)
    assert float(m["safety"]) == pytest.approx(1.5 * 2.0 - 1.5 * 1.5 * 2.0 - 2.4 * 0.75 - 1.0 * 0.5)
    assert float(m["penalty_exploit"]) == pytest.approx(4.5)
    assert float(m["collusion_vs_nash"]) == pytest.approx(-0.25)  # over the collusive pool only


def test_unknown_opponent_ids_are_named_not_dropped():
    agent, opp = jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])
    for fn in (metrics.per_opponent_mean, metrics.nra_by_opponent):
        args = (agent, jnp.array([0, 3])) if fn is metrics.per_opponent_mean else (agent, opp, jnp.array([0, 3]))
        with pytest.raises(ValueError, match="unknown opponent id 3: ids must lie in 0..2"):
            fn(*args, 3)
    with pytest.raises(ValueError, match="unknown opponent id -1"):
        metrics.exploit_pool_advantage(agent, opp, jnp.array([-1, 0]), 3)
    # under jit the ids are not readable: the functions still trace (callers check their layouts on the host)
    jax.jit(metrics.nra, static_argnums=3)(agent, opp, jnp.array([0, 1]), 3)
