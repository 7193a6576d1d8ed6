"""`sepo_jax.equilibrium.nash_conv` and the dict <-> table conversions against OpenSpiel."""

import numpy as np
import pytest

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import cfr
from sepo_jax.equilibrium import openspiel as ios

pyspiel = pytest.importorskip("pyspiel")
from open_spiel.python import policy as os_policy  # noqa: E402
from open_spiel.python.algorithms import exploitability  # noqa: E402


def random_tables(game, n, seed):
    """Random valid tables: Dirichlet-like rows, some near-deterministic, on legal actions."""
    rng = np.random.default_rng(seed)
    legal = br.legal_mask(game)
    t = rng.random((n, *legal.shape)) ** rng.choice([0.3, 1.0, 4.0], (n, 1, 1)) * legal
    t = t / np.maximum(t.sum(-1, keepdims=True), 1e-300)
    return np.where(br.used_rows(game)[:, None], t, 1.0 / legal.shape[1])


def openspiel_nash_conv(game, table):
    g = pyspiel.load_game(ios.OPENSPIEL_NAMES[game])
    pol = os_policy.TabularPolicy(g)
    for s, idx in pol.state_lookup.items():
        pol.action_probability_array[idx] = table[ios.info_state_to_row(game, s)]
    return exploitability.nash_conv(g, pol)


def named_kuhn_tables():
    always = lambda a: np.tile(np.eye(2)[a], (12, 1))
    k_only = np.tile(np.eye(2)[0], (12, 1))
    k_only[2::3] = np.eye(2)[1]  # bet and call only with K
    tables = {"uniform": br.uniform_table("kuhn"), "always_pass": always(0), "always_bet": always(1), "k_only": k_only}
    tables.update({f"alpha={a:.3f}": cfr.kuhn_equilibrium(a) for a in np.linspace(0, 1 / 3, 5)})
    return tables


def test_kuhn_random_tables_match_openspiel():
    tables = random_tables("kuhn", 300, seed=0)
    ours = ios.nash_conv("kuhn", tables)
    ref = np.array([openspiel_nash_conv("kuhn", t) for t in tables])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_kuhn_named_tables_match_openspiel():
    for name, t in named_kuhn_tables().items():
        assert ios.nash_conv("kuhn", t) == pytest.approx(openspiel_nash_conv("kuhn", t), abs=1e-6), name
    assert ios.nash_conv("kuhn", named_kuhn_tables()["uniform"]) == pytest.approx(11 / 12, abs=1e-9)
    assert ios.exploitability("kuhn", named_kuhn_tables()["k_only"]) == pytest.approx(1 / 4, abs=1e-9)


def leduc_named_tables():
    legal = br.legal_mask("leduc").astype(float)
    first = lambda order: np.where(br.used_rows("leduc")[:, None], np.eye(3)[[next((a for a in order if m[a]), 1) for m in legal]], 1 / 3)
    return {"uniform": br.uniform_table("leduc"), "always_call": first([1]), "raise_first": first([2, 1]), "fold_first": first([0, 1])}


@pytest.mark.parametrize("name", ["uniform", "always_call", "raise_first", "fold_first"])
def test_leduc_named_tables_match_openspiel(name):
    t = leduc_named_tables()[name]
    assert ios.nash_conv("leduc", t) == pytest.approx(openspiel_nash_conv("leduc", t), abs=1e-6)


def test_leduc_random_tables_match_openspiel():
    tables = random_tables("leduc", 3, seed=1)
    np.testing.assert_allclose(ios.nash_conv("leduc", tables), [openspiel_nash_conv("leduc", t) for t in tables], atol=1e-6)


@pytest.mark.slow
def test_leduc_many_random_tables_match_openspiel():
    tables = random_tables("leduc", 200, seed=2)
    np.testing.assert_allclose(ios.nash_conv("leduc", tables), [openspiel_nash_conv("leduc", t) for t in tables], atol=1e-6)


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_strings_are_openspiels(game):
    pol = os_policy.TabularPolicy(pyspiel.load_game(ios.OPENSPIEL_NAMES[game]))
    assert set(pol.state_lookup) == set(ios.info_state_strings(game).values())


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_dict_forms_round_trip(game):
    t = random_tables(game, 1, seed=3)[0]
    d = ios.table_to_policy(game, t)
    np.testing.assert_allclose(ios.policy_to_table(game, d), t)
    legal = br.legal_mask(game)
    legal_only = {s: [p for p, ok in zip(v, legal[ios.info_state_to_row(game, s)]) if ok] for s, v in d.items()}
    as_pairs = {s: [(a, p) for a, p in enumerate(v)] for s, v in d.items()}
    as_maps = {s: dict(enumerate(v)) for s, v in d.items()}
    for form in (legal_only, as_pairs, as_maps):
        np.testing.assert_allclose(ios.policy_to_table(game, form), t)
    assert ios.nash_conv(game, d) == pytest.approx(ios.nash_conv(game, t), abs=1e-12)


def test_openspiel_to_dict_is_accepted():
    g = pyspiel.load_game("leduc_poker")
    pol = os_policy.TabularPolicy(g)
    assert ios.nash_conv("leduc", pol.to_dict()) == pytest.approx(exploitability.nash_conv(g, pol), abs=1e-6)


def test_bad_policy_dicts():
    d = ios.table_to_policy("kuhn", br.uniform_table("kuhn"))
    with pytest.raises(ValueError, match="lacks 1 of 12"):
        ios.nash_conv("kuhn", {k: v for k, v in list(d.items())[1:]})
    with pytest.raises(ValueError, match="not an information state"):
        ios.nash_conv("kuhn", {**d, "3pp": [0.5, 0.5]})
    with pytest.raises(ValueError, match="3 probabilities"):
        ios.nash_conv("kuhn", {**d, "0": [0.2, 0.3, 0.5]})
    with pytest.raises(ValueError, match="does not sum to 1"):
        ios.nash_conv("kuhn", {**d, "0": [0.2, 0.3]})
    with pytest.raises(ValueError, match="unknown game"):
        ios.nash_conv("poker", d)
