import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openspiel_replay import record, replay

from sepo_jax import games
from sepo_jax.games.kuhn import HISTORIES as KUHN_HISTORIES


def kuhn_row(s):
    return KUHN_HISTORIES.index(s[1:]) * 3 + int(s[0])


def test_matches_openspiel_on_random_playouts():
    game = games.make("kuhn")
    final, moves = record(game, 400, seed=0, opponent="RandomLegal")  # 2,400 hands: every deal and history
    total = sum(replay("kuhn_poker", final, moves, e, lambda c, f: (c[f], c[1 - f]), kuhn_row) for e in range(400))
    assert total > 400 * 6 * 2
    assert not final.illegal.any()


def play_hand(game, cards, actions, first_hand=0):
    """One hand with fixed cards: returns payoffs of the hand and the final state."""
    state = game.init(jax.random.key(0))
    state = game.with_cards(state, state.cards.at[first_hand].set(jnp.array(cards)))
    for a in actions:
        state = game.step(state, a, jax.random.key(1))
    return state


@pytest.mark.parametrize(
    "cards,actions,pay0",
    [
        ((2, 0), (0, 0), 1),  # check-check, K beats J
        ((0, 2), (1, 1), -2),  # bet-call, J loses 2
        ((0, 2), (1, 0), 1),  # bet-fold
        ((1, 0), (0, 1, 0), -1),  # check-bet-fold
        ((1, 2), (0, 1, 1), -2),  # check-bet-call, Q loses to K
    ],
)
def test_hand_worked_cases(cards, actions, pay0):
    game = games.make("kuhn")
    s = play_hand(game, cards, actions)
    assert float(s.payoffs[0, 0]) == pay0 and float(s.payoffs[0, 1]) == -pay0
    assert int(s.round) == 1 and int(s.current_player) == 1  # seat 1 opens hand 2


def test_episode_length_and_alternation():
    game = games.make("kuhn")
    s = game.init(jax.random.key(0))
    openers = []
    while not bool(s.terminated):
        openers.append(int(s.current_player))
        s = game.step(s, 0, jax.random.key(0))
        s = game.step(s, 0, jax.random.key(0))  # check-check ends every hand
    assert openers == [0, 1, 0, 1, 0, 1]
    assert int(s.current_player) == -1 and not s.legal_action_mask.any()
    assert np.all(np.abs(np.asarray(s.payoffs)) == 1)


def test_illegal_action_is_a_counted_noop():
    game = games.make("kuhn")
    s = game.init(jax.random.key(0))
    s2 = game.step(s, 5, jax.random.key(0))
    assert int(s2.illegal) == 1 and int(s2.num_steps) == 0
    with pytest.raises(ValueError, match="not legal"):
        game.check_action(s, 5)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown game 'chess'"):
        games.make("chess")
    game = games.make("kuhn")
    with pytest.raises(ValueError, match="unknown opponent 'Bob'"):
        game.opponent_id("Bob")
    with pytest.raises(ValueError, match="no pool 'friends'"):
        game.pool_ids("friends")


def _probs(game, name, cards, actions):
    s = play_hand(game, cards, actions)
    return float(game.opponent_probs(game.opponent_id(name), s, s.current_player)[1])


@pytest.mark.parametrize(
    "name,cards,actions,p_bet",
    [
        ("NashApprox", (2, 0), (), 1.0), ("NashApprox", (0, 1), (), 1 / 3), ("NashApprox", (1, 0), (), 0.0),
        ("NashApprox", (0, 1), (1,), 1 / 3), ("NashApprox", (0, 0), (1,), 0.0), ("NashApprox", (1, 1), (0, 1), 1 / 3),
        ("Nash", (1, 0), (0, 1), 2 / 3), ("Nash", (0, 0), (0,), 1 / 3), ("Nash", (2, 0), (), 1.0),
        ("TightPassive", (1, 0), (), 0.0), ("TightPassive", (0, 2), (1,), 1.0),
        ("LooseAggressive", (1, 0), (), 1.0), ("LooseAggressive", (0, 0), (), 0.0),
        ("MaxExploiter", (1, 0), (), 1.0), ("MaxExploiter", (0, 1), (1,), 0.0), ("MaxExploiter", (0, 2), (1,), 1.0),
        ("AlwaysBet", (0, 1), (), 1.0), ("AlwaysPass", (0, 2), (1,), 0.0), ("RandomLegal", (0, 2), (), 0.5),
        ("AlwaysPassQ", (1, 0), (), 0.0), ("AlwaysPassQ", (0, 1), (1,), 0.0),
    ],
)
def test_opponents_follow_their_definitions(name, cards, actions, p_bet):
    # cards are (seat 0, seat 1); seat 0 opens hand 1, so the mover's card is cards[len(actions) % 2]
    assert _probs(games.make("kuhn"), name, cards, actions) == pytest.approx(p_bet)


def test_tabular_opponent_plays_its_table():
    game = games.make("kuhn")
    table = jnp.asarray(np.random.default_rng(0).dirichlet([1, 1], size=12), jnp.float32)
    s = play_hand(game, (1, 2), (0,))
    p = game.opponent_probs(game.tabular_id, s, s.current_player, table)
    np.testing.assert_allclose(p, table[1 * 3 + 2])


def test_collusion_is_fold_rate_facing_bets():
    game = games.make("kuhn")
    s = game.init(jax.random.key(0))
    # hand 1 (seat 0 first): seat 0 bets, seat 1 folds; hand 2 (seat 1 first): seat 1 bets, seat 0 calls
    for a in (1, 0, 1, 1):
        s = game.step(s, a, jax.random.key(0))
    for _ in range(4):
        s = game.step(s, 0, jax.random.key(0))
        s = game.step(s, 0, jax.random.key(0))
    assert bool(s.terminated)
    assert float(game.episode_stats(s, 1)["collusion"]) == 1.0
    assert float(game.episode_stats(s, 0)["collusion"]) == 0.0


def test_collusion_vs_nash_does_not_punish_equilibrium_folds():
    """The paper's probe (fold rate facing a bet, against LooseAggressive) is high for equilibrium play,
    since J must fold; `collusion_vs_nash` counts only folds beyond the most folding equilibrium."""
    from sepo_jax.games import kuhn
    from sepo_jax.games.play import play_batch

    game = games.make("kuhn")
    loose = game.opponent_names.index("LooseAggressive")

    def stats(table):
        policy = lambda state, player: jnp.where(  # noqa: E731  learner in seat 0 plays `table`
            player == 0, jnp.asarray(table, jnp.float32)[game.infoset_index(state, player)],
            game.opponent_probs(jnp.int32(loose), state, player))
        final, _ = play_batch(game, lambda _: policy, jnp.zeros(4000), jax.random.key(0))
        s = jax.vmap(game.episode_stats, (0, None))(final, 0)
        return float(s["collusion"].mean()), float(s["collusion_vs_nash"].mean())

    for alpha in (0.0, 1 / 3):  # equilibrium play: the paper's probe is well above 0, ours is not
        paper, ours = stats(kuhn.nash_table(alpha))
        assert paper > 0.3 and ours < 0.02, (alpha, paper, ours)
    paper, ours = stats(np.tile([1.0, 0.0], (12, 1)))  # always folds: both see it
    assert paper > 0.95 and ours > 0.3  # (an episode that never faces a bet counts 0)
    assert "collusion_vs_nash" not in games.make("kuhn", bet=2).episode_stats(game.init(jax.random.key(0)), 0)
