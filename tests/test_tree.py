"""The flat Kuhn / Leduc trees against OpenSpiel's kuhn_poker / leduc_poker (oracle)."""

import numpy as np
import pytest

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import openspiel as ios
from sepo_jax.equilibrium.tree import NUM_INFOSETS, get_tree, kuhn_infoset_index, leduc_infoset_index

pyspiel = pytest.importorskip("pyspiel")


def openspiel_decisions(game):
    """{info-state string: (player, legal actions)} over every decision node, and
    {tuple(history): (probability, returns of player 0)} over every terminal."""
    g = pyspiel.load_game(ios.OPENSPIEL_NAMES[game])
    infos, terms = {}, {}

    def visit(state, prob):
        if state.is_terminal():
            terms[tuple(state.history())] = (prob, state.returns()[0])
        elif state.is_chance_node():
            for a, p in state.chance_outcomes():
                visit(state.child(a), prob * p)
        else:
            infos[state.information_state_string()] = (state.current_player(), tuple(state.legal_actions()))
            for a in state.legal_actions():
                visit(state.child(a), prob)

    visit(g.new_initial_state(), 1.0)
    return infos, terms


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_rows_players_and_legal_actions_match_openspiel(game):
    infos, terms = openspiel_decisions(game)
    tree = get_tree(game)
    assert len(infos) == (tree.row_player >= 0).sum() == {"kuhn": 12, "leduc": 936}[game]
    for s, (player, legal) in infos.items():
        row = ios.info_state_to_row(game, s)
        assert tree.row_player[row] == player, s
        assert tuple(np.flatnonzero(tree.legal[row])) == legal, s
    # chance mass of terminals per payoff value: folding chance into deal roots changes none of it
    ours, theirs = {}, {}
    for z in tree.term:
        ours[tree.payoff[z]] = ours.get(tree.payoff[z], 0.0) + tree.chance[z]
    for prob, ret in terms.values():
        theirs[ret] = theirs.get(ret, 0.0) + prob
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == pytest.approx(theirs[k], abs=1e-12) for k in ours)


def test_index_functions():
    assert [kuhn_infoset_index(h, c) for h in range(4) for c in range(3)] == list(range(12))
    rows = [leduc_infoset_index(0, s, p) for s in range(6) for p in range(6)]
    rows += [leduc_infoset_index(1, s, pv, d, pb) for d in range(5) for s in range(6) for pb in range(6) for pv in range(6)]
    assert rows == list(range(NUM_INFOSETS["leduc"]))
    assert ios.info_state_to_row("kuhn", "2pb") == kuhn_infoset_index(3, 2)
    s = "[Observer: 0][Private: 0][Round 2][Player: 0][Pot: 6][Money: 97 97][Public: 4][Round1: 2 1][Round2: ]"
    assert ios.info_state_to_row("leduc", s) == leduc_infoset_index(1, 0, 0, 1, 4)


@pytest.mark.parametrize("game", ["kuhn", "leduc"])
def test_expected_payoff_of_uniform_play_matches_openspiel(game):
    _, terms = openspiel_decisions(game)
    g = pyspiel.load_game(ios.OPENSPIEL_NAMES[game])
    # OpenSpiel's expected return of player 0 when both play uniformly over legal actions
    def value(state):
        if state.is_terminal():
            return state.returns()[0]
        outs = state.chance_outcomes() if state.is_chance_node() else [(a, 1 / len(state.legal_actions())) for a in state.legal_actions()]
        return sum(p * value(state.child(a)) for a, p in outs)

    want = value(g.new_initial_state())
    got = np.asarray(br.policy_values(game, br.uniform_table(game)))
    assert got[0] == pytest.approx(want, abs=1e-6) and got[1] == pytest.approx(-want, abs=1e-6)


def test_tree_arrays_are_consistent():
    tree = get_tree("leduc")
    assert len(tree.parent) == 120 * 85 and len(tree.term) == 120 * 49
    inner = tree.parent >= 0
    assert (tree.depth[inner] == tree.depth[tree.parent[inner]] + 1).all()
    assert (tree.player[tree.term] == -1).all() and (tree.infoset[tree.term] == -1).all()
    assert (tree.payoff[tree.player >= 0] == 0).all()


def test_unknown_game():
    with pytest.raises(ValueError, match="no game tree"):
        get_tree("chess")
