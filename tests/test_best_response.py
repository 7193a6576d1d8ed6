"""Jitted best responses / values / NashConv: closed forms, batching, BR policies, host checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import cfr
from sepo_jax.equilibrium.tree import get_tree


def random_tables(game, n, seed):
    rng = np.random.default_rng(seed)
    legal = br.legal_mask(game)
    t = rng.random((n, *legal.shape)) * legal
    t = t / np.maximum(t.sum(-1, keepdims=True), 1e-30)
    return np.where(br.used_rows(game)[:, None], t, 1.0 / legal.shape[1]).astype(np.float32)


def test_kuhn_closed_forms():
    u = br.uniform_table("kuhn")
    assert float(br.nash_conv_table("kuhn", u)) == pytest.approx(11 / 12, abs=1e-6)
    for alpha in (0.0, 0.1, 1 / 3):
        t = cfr.kuhn_equilibrium(alpha)
        np.testing.assert_allclose(br.policy_values("kuhn", t), [-1 / 18, 1 / 18], atol=1e-6)
        values, _ = br.best_responses("kuhn", t)
        np.testing.assert_allclose(values, [-1 / 18, 1 / 18], atol=1e-6)
        assert float(br.exploitability_table("kuhn", t)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_batched_equals_single(game):
    tables = random_tables(game, 6, seed=0)
    batched = br.nash_conv_table(game, tables.reshape(2, 3, *tables.shape[1:]))
    assert batched.shape == (2, 3)
    single = [br.nash_conv_table(game, t) for t in tables]
    np.testing.assert_allclose(np.asarray(batched).reshape(-1), single, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(lambda t: br.nash_conv_table(game, t))(tables), single, rtol=1e-5)


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_best_response_table_attains_best_response_value(game):
    tree = get_tree(game)
    for t in random_tables(game, 3, seed=1):
        values, br_table = br.best_responses(game, t)
        br.check_table(game, br_table, atol=0)
        for p in range(2):
            mixed = np.where((tree.row_player == p)[:, None], br_table, t)
            assert float(br.policy_values(game, mixed)[p]) == pytest.approx(float(values[p]), abs=1e-5)
            assert float(values[p]) >= float(br.policy_values(game, t)[p]) - 1e-6


def test_best_response_values_match_openspiel_per_seat():
    pyspiel = pytest.importorskip("pyspiel")
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import best_response as os_br

    from sepo_jax.equilibrium import openspiel as ios

    t = random_tables("leduc", 1, seed=2)[0].astype(np.float64)
    g = pyspiel.load_game("leduc_poker")
    pol = os_policy.TabularPolicy(g)
    for s, idx in pol.state_lookup.items():
        pol.action_probability_array[idx] = t[ios.info_state_to_row("leduc", s)]
    with jax.enable_x64(True):
        values, _ = br.best_responses("leduc", t)
    for p in range(2):
        assert float(values[p]) == pytest.approx(os_br.BestResponsePolicy(g, p, pol).value(g.new_initial_state()), abs=1e-9)


def test_counterfactual_values_average_to_policy_value():
    t = random_tables("leduc", 1, seed=3)[0]
    tree = get_tree("leduc")
    for p in range(2):
        q = np.asarray(br.counterfactual_values("leduc", t, p))
        roots = (tree.row_player == p) & (tree.row_level == 0)
        assert (q * t).sum(-1)[roots].sum() == pytest.approx(float(br.policy_values("leduc", t)[p]), abs=1e-5)


def test_jits_under_outer_jit():
    f = jax.jit(lambda t: br.nash_conv_table("kuhn", jax.nn.softmax(t, -1)))
    assert float(f(jnp.zeros((12, 2)))) == pytest.approx(11 / 12, abs=1e-6)


def test_check_table_errors():
    u = br.uniform_table("leduc")
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 1116, 3\], got \(12, 2\)"):
        br.check_table("leduc", np.ones((12, 2)))
    bad = u.copy()
    bad[0] = [0.0, 1.5, -0.5]
    with pytest.raises(ValueError, match="row 0 has negative"):
        br.check_table("leduc", bad)
    bad = u.copy()
    bad[0] = [0.2, 0.4, 0.4]  # fold is illegal when not facing a bet
    with pytest.raises(ValueError, match=r"row 0 puts probability on illegal actions.*legal actions \[1, 2\]"):
        br.check_table("leduc", bad)
    bad = u.copy()
    bad[7] = [0.0, 0.3, 0.3]
    with pytest.raises(ValueError, match="row 7 does not sum to 1"):
        br.check_table("leduc", bad)
    bad = np.stack([u, u])
    bad[1, 3, 1] = np.nan
    with pytest.raises(ValueError, match="table 1, row 3 has non-finite"):
        br.check_table("leduc", bad)
    unused = u.copy()
    unused[36] = 7.0  # public == private: never reached, ignored
    br.check_table("leduc", unused)


def test_large_batches_run_in_chunks():
    tables = random_tables("leduc", 70, seed=4)  # > one chunk of 64: padded, mapped, trimmed
    values, br_tables = br.best_responses("leduc", tables)
    assert values.shape == (70, 2) and br_tables.shape == (70, 1116, 3)
    nc = br.nash_conv_table("leduc", tables)
    for i in (0, 63, 64, 69):
        assert float(nc[i]) == pytest.approx(float(br.nash_conv_table("leduc", tables[i])), rel=1e-5)
        np.testing.assert_array_equal(br_tables[i], br.best_responses("leduc", tables[i])[1])


def test_compensated_sum_is_accurate_whatever_the_order():
    """The on-policy value sums thousands of float32 terminal terms: a plain reduction's error depends
    on how XLA vectorises it for the CPU at hand (2e-6 on Leduc's uniform play on one CPU, within
    1e-6 on another); the compensated pairwise sum stays within a few ulp of the exact sum."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5880, 100_003):  # large terms that cancel: a plain float32 sum errs by ~1e-2 here
        big = rng.standard_normal((n // 2, 2)) * 1e3
        x = np.concatenate([big, -big * (1 + 1e-4), rng.standard_normal((n % 2, 2))]).astype(np.float32)
        exact = x.astype(np.float64).sum(0)
        bound = 4 * np.finfo(np.float32).eps * np.abs(exact) + 1e-10 * np.abs(x).astype(np.float64).sum(0)
        for order in (np.arange(n), rng.permutation(n), np.arange(n)[::-1]):
            got = np.asarray(jax.jit(br.compensated_sum)(jnp.asarray(x[order])), np.float64)
            assert (np.abs(got - exact) <= bound).all(), (n, got - exact, bound)


def test_leduc_values_in_float32_match_float64():
    t = random_tables("leduc", 8, seed=3)
    got = np.asarray(br.policy_values("leduc", jnp.asarray(t)))
    with jax.enable_x64(True):
        want = np.asarray(br.policy_values("leduc", t.astype(np.float64)))
    np.testing.assert_allclose(got, want, atol=1e-7)
