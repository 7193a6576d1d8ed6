"""Repeated Kuhn poker as plain Python, the way a PyTorch + TRL user writes a game loop: the rules,
the opponent strategies and the compact prompt text of `sepo_jax.games.kuhn`, one episode an object.

The baselines of `experiments/bench_train.py` play with it; `check_against_sepo_jax` asserts that its
prompts and payoffs equal ours on random playouts, so both sides of a benchmark do the same work.
"""

from __future__ import annotations

import random

import numpy as np

from sepo_jax.games.kuhn import CARD_NAMES, TABLES

PASS, BET = 0, 1
# node of one hand: decisions 0 "", 1 "p", 2 "b", 3 "pb"; ends 4 "pp", 5 "pbp", 6 "pbb", 7 "bp", 8 "bb"
NEXT = ((1, 2), (4, 3), (7, 8), (5, 6))
HIST_TEXT = ("No bets yet.\n", "The opponent checked.\n", "The opponent bet.\n", "You checked and the opponent bet.\n")
LEGAL_TEXT = ("Legal actions: PASS (check), BET.\n", "Legal actions: PASS (fold), BET (call).\n")


class Episode:
    """One episode of `num_hands` hands; seat 0 opens the even hands, seat 1 the odd ones."""

    def __init__(self, rng: random.Random, num_hands: int = 6):
        self.cards = [tuple(rng.sample(range(3), 2)) for _ in range(num_hands)]
        self.num_hands, self.hand, self.node = num_hands, 0, 0
        self.payoffs = [[0, 0] for _ in range(num_hands)]
        self.folds_faced = [[0, 0], [0, 0]]  # per seat: [bets faced, folds]

    @property
    def done(self) -> bool:
        return self.hand >= self.num_hands

    @property
    def player(self) -> int:
        return (self.hand + (self.node in (1, 2))) % 2

    def step(self, action: int) -> None:
        mover, facing = self.player, self.node in (2, 3)
        if facing:
            self.folds_faced[mover][0] += 1
            self.folds_faced[mover][1] += action == PASS
        node = NEXT[self.node][action]
        if node < 4:
            self.node = node
            return
        first = self.hand % 2
        c = self.cards[self.hand]
        wins = 1 if c[first] > c[1 - first] else -1
        pay = {4: wins, 5: -1, 6: 2 * wins, 7: 1, 8: 2 * wins}[node]
        self.payoffs[self.hand][first], self.payoffs[self.hand][1 - first] = pay, -pay
        self.hand, self.node = self.hand + 1, 0

    def prompt(self, player: int) -> str:
        total = sum(p[player] for p in self.payoffs)
        role = "second" if self.node in (1, 2) else "first"
        card = CARD_NAMES[self.cards[self.hand][player]]
        return (f"Your total so far: {total} chips.\nNow hand {self.hand + 1}: you act {role} and hold the {card}.\n"
                f"{HIST_TEXT[self.node]}{LEGAL_TEXT[self.node in (2, 3)]}Action:")

    def row(self, player: int) -> int:
        """The information set's row in the opponents' strategy tables."""
        return self.node * 3 + self.cards[self.hand][player]

    def fold_rate(self, seat: int) -> float:
        faced, folds = self.folds_faced[seat]
        return folds / faced if faced else 0.0


def opponent_action(name: str, episode: Episode, rng: random.Random) -> int:
    p_bet = TABLES[name][episode.row(episode.player)][BET]
    return BET if rng.random() < p_bet else PASS


def check_against_sepo_jax(num_episodes: int = 50, seed: int = 0) -> None:
    """Replay random playouts of ours in this Python game: every prompt and payoff must agree."""
    import jax

    from sepo_jax import games

    game = games.make("kuhn", compact_prompt=True)
    rng = np.random.default_rng(seed)
    for e in range(num_episodes):
        state = game.init(jax.random.key(seed * 1000 + e))
        ep = Episode(random.Random(0))
        ep.cards = [tuple(int(x) for x in row) for row in np.asarray(state.cards)]
        while not ep.done:
            for seat in (0, 1):
                if seat == ep.player:
                    assert ep.prompt(seat) == games.render_text(game, state, seat), (ep.prompt(seat), games.render_text(game, state, seat))
            a = int(rng.integers(2))
            ep.step(a)
            state = game.step(state, a, None)
        assert np.array_equal(np.asarray(ep.payoffs, np.float32), np.asarray(state.payoffs)), e
