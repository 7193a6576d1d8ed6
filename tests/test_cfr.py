"""CFR+ convergence and the closed-form Kuhn equilibrium family."""

import numpy as np
import pytest

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import cfr


def test_cfr_plus_kuhn():
    t = np.asarray(cfr.equilibrium_table("kuhn"), np.float64)
    assert br.check_table("kuhn", t, atol=1e-4) is not None
    from sepo_jax.equilibrium import nash_conv

    assert nash_conv("kuhn", t / t.sum(-1, keepdims=True)) < 1e-5
    np.testing.assert_allclose(br.policy_values("kuhn", t), [-1 / 18, 1 / 18], atol=1e-4)
    # the second player's strategy is unique (docs/method.md §4)
    np.testing.assert_allclose(t[[3, 4, 5, 6, 7, 8], 1], [1 / 3, 0, 1, 0, 1 / 3, 1], atol=1e-2)


def test_cfr_plus_leduc():
    from sepo_jax.equilibrium import nash_conv

    t = np.asarray(cfr.cfr_plus("leduc", 1000), np.float64)
    assert nash_conv("leduc", t / t.sum(-1, keepdims=True)) < 1e-3


def test_kuhn_equilibrium_family():
    t = cfr.kuhn_equilibrium(0.2)
    assert t[0, 1] == pytest.approx(0.2) and t[2, 1] == pytest.approx(0.6) and t[1, 1] == 0
    assert t[10, 1] == pytest.approx(1 / 3 + 0.2)
    for alpha in np.linspace(0, 1 / 3, 7):
        assert float(br.nash_conv_table("kuhn", cfr.kuhn_equilibrium(alpha))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="alpha must lie in"):
        cfr.kuhn_equilibrium(0.5)


def test_own_reach():
    t = cfr.kuhn_equilibrium(1 / 3)
    reach = np.asarray(cfr.own_reach("kuhn", t))
    np.testing.assert_allclose(reach[9:12], 1 - t[0:3, 1], atol=1e-6)  # "pb" rows: player 0 passed first
    np.testing.assert_allclose(reach[:9], 1.0)
