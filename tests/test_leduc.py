import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.games import leduc
from openspiel_replay import record, replay


def leduc_row(s):
    """Our tabular row from an OpenSpiel leduc info-state string (an independent parser)."""
    private = int(re.search(r"\[Private: (\d)\]", s).group(1))
    rnd = int(re.search(r"\[Round (\d)\]", s).group(1))
    seqs = [re.search(rf"\[Round{r}: ([\d ]*)\]", s).group(1).split() for r in (1, 2)]
    word = ["".join("fcr"[int(a)] for a in q) for q in seqs]
    if rnd == 1:
        return leduc.DECISION_SEQS.index(word[0]) * 6 + private
    public = int(re.search(r"\[Public: (\d)\]", s).group(1))
    done1 = leduc.DONE_SEQS.index(word[0])
    return 36 + ((done1 * 6 + leduc.DECISION_SEQS.index(word[1])) * 6 + public) * 6 + private


@pytest.mark.parametrize("num_hands", [1, 3])
def test_matches_openspiel_on_random_playouts(num_hands):
    game = games.make("leduc", num_hands=num_hands)
    n = 1200 // num_hands
    final, moves = record(game, n, seed=num_hands, opponent="Random")
    deal = lambda c, f: (c[f], c[1 - f], c[2])
    total = sum(replay("leduc_poker", final, moves, e, deal, leduc_row) for e in range(n))
    assert total > n * num_hands * 2
    assert not final.illegal.any()


def play(game, cards, actions):
    s = game.init(jax.random.key(0))
    s = game.with_cards(s, s.cards.at[0].set(jnp.array(cards)))
    for a in actions:
        s = game.step(s, a, jax.random.key(0))
    return s


@pytest.mark.parametrize(
    "cards,actions,pay0",
    [
        ((0, 2, 4), (1, 1, 1, 1), -1),  # check down, J vs Q (K public): Q wins the antes
        ((0, 2, 1), (1, 1, 1, 1), 1),  # J pairs the public J
        ((0, 1, 4), (2, 1, 2, 1), 0),  # J vs J split
        ((4, 2, 0), (2, 2, 1, 2, 0), 5),  # raise, re-raise, call (5 in), round 2 raise, fold
        ((4, 2, 0), (1, 2, 0), -1),  # check, raise, fold
    ],
)
def test_hand_worked_cases(cards, actions, pay0):
    s = play(games.make("leduc"), cards, actions)
    assert bool(s.terminated)
    assert float(s.payoffs[0, 0]) == pay0 and float(s.payoffs[0, 1]) == -pay0


def test_legal_masks():
    game = games.make("leduc")
    s = play(game, (0, 2, 4), ())
    assert s.legal_action_mask.tolist() == [False, True, True]
    s = play(game, (0, 2, 4), (2, 2))
    assert s.legal_action_mask.tolist() == [True, True, False]  # two raises: no third
    s2 = game.step(s, 2, jax.random.key(0))
    assert int(s2.illegal) == 1 and int(s2.num_steps) == int(s.num_steps)


def test_opponents():
    game = games.make("leduc")
    probs = lambda name, s: np.asarray(game.opponent_probs(game.opponent_id(name), s, s.current_player))
    s = play(game, (0, 2, 4), (2,))  # seat 1 holds a Queen facing a raise
    assert probs("Tight", s).tolist() == [0, 1, 0]
    assert probs("Aggressive", s).tolist() == [0, 0, 1]
    assert probs("AlwaysCall", s).tolist() == [0, 1, 0]
    np.testing.assert_allclose(probs("Random", s), [1 / 3] * 3)
    s = play(game, (0, 2, 4), (2, 2))  # seat 0 holds a Jack facing a re-raise
    assert probs("Tight", s).tolist() == [1, 0, 0]
    assert probs("AlwaysRaise", s).tolist() == [0, 1, 0]
    s = play(game, (0, 2, 1), (1, 1))  # round 2, seat 0 paired the public Jack
    assert probs("Tight", s).tolist() == [0, 0, 1]
