"""The flat Kuhn / Leduc trees against OpenSpiel's kuhn_poker / leduc_poker (oracle)."""

import numpy as np
import pytest

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import openspiel as ios
from sepo_jax.equilibrium.tree import get_tree
from sepo_jax.games.kuhn import infoset_row as kuhn_infoset_index
from sepo_jax.games.leduc import NUM_INFOSETS as LEDUC_INFOSETS
from sepo_jax.games.leduc import infoset_row as leduc_infoset_index

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
    assert rows == list(range(LEDUC_INFOSETS))
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


def brute_kuhn_nash_conv(ante, bet, table):
    """NashConv of a Kuhn table by enumerating both players' 64 pure strategies, on plain rules."""
    from itertools import permutations, product

    def pay0(cards, hist, bets):  # bets(player, card, hist) -> P(BET)
        if hist in ("pp", "bb", "pbb"):  # showdown
            stake = ante if hist == "pp" else ante + bet
            return stake if cards[0] > cards[1] else -stake
        if hist in ("bp", "pbp"):  # a fold: the bettor wins the ante
            return ante if hist == "bp" else -ante
        p = len(hist) % 2
        q = bets(p, cards[p], hist)
        return q * pay0(cards, hist + "b", bets) + (1 - q) * pay0(cards, hist + "p", bets)

    def value(bets):
        return np.mean([pay0(c, "", bets) for c in permutations(range(3), 2)])

    hist_row = {"": 0, "p": 1, "b": 2, "pb": 3}
    mixed = lambda p, c, h: table[hist_row[h] * 3 + c, 1]  # noqa: E731
    own = {0: ("", "pb"), 1: ("p", "b")}
    best = []
    for p in range(2):
        vals = []
        for pure in product((0.0, 1.0), repeat=6):
            choice = {(h, c): pure[i * 3 + c] for i, h in enumerate(own[p]) for c in range(3)}
            bets = lambda q, c, h: choice[h, c] if q == p else mixed(q, c, h)  # noqa: E731
            vals.append(value(bets) * (1 if p == 0 else -1))
        best.append(max(vals))
    return sum(best)  # the on-policy values of a zero-sum game cancel


@pytest.mark.parametrize("ante,bet", [(1, 1), (1, 2), (2, 1)])
def test_a_rule_changed_in_the_game_changes_the_tree(ante, bet):
    from sepo_jax.games.kuhn import Kuhn

    game = Kuhn(ante=ante, bet=bet)
    tree = get_tree(game)
    stakes = {float(abs(x)) for x in tree.payoff[tree.term]}
    assert stakes == {float(ante), float(ante + bet)}  # folds and checked showdowns win the ante
    table = np.random.default_rng(ante * 10 + bet).dirichlet([1, 1], size=12)
    got = float(br.nash_conv_table(game, table))
    assert got == pytest.approx(brute_kuhn_nash_conv(ante, bet, table), abs=1e-5)
    if (ante, bet) != (1, 1):
        assert got != pytest.approx(float(br.nash_conv_table("kuhn", table)), abs=1e-3)


def test_games_declare_their_solvers_and_never_import_them():
    import ast
    import pathlib

    from sepo_jax import games

    assert [n for n in games.GAMES if games.has_exact_solver(n)] == ["kuhn", "leduc"]
    assert all(games.STAGE in games.make(n).solvers for n in ("ipd", "auction", "negotiation_v1", "negotiation_v2"))
    with pytest.raises(ValueError, match="unknown game 'chess'"):
        games.has_exact_solver("chess")
    with pytest.raises(ValueError, match="no game tree for 'ipd'"):
        get_tree(games.make("ipd"))
    for path in pathlib.Path(games.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any("equilibrium" in n for n in names), path
