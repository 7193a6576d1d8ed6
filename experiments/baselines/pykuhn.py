"""Repeated Kuhn poker as plain Python, the way a PyTorch + TRL user writes a game loop: the rules,
the opponent strategies and the prompt text of `sepo_jax.games.kuhn` (compact, or full: the rules
paragraph and every finished hand restated), one episode an object.

The baselines of `experiments/bench_train.py` play with it; `check_against_sepo_jax` asserts that its
prompts and payoffs equal ours on random playouts, so both sides of a benchmark do the same work.
"""

from __future__ import annotations

import random

import numpy as np

from sepo_jax.games.kuhn import CARD_NAMES, TABLES, Kuhn

PASS, BET = 0, 1
ACTION_NAMES = Kuhn.action_names
# node of one hand: decisions 0 "", 1 "p", 2 "b", 3 "pb"; ends 4 "pp", 5 "pbp", 6 "pbb", 7 "bp", 8 "bb"
NEXT = ((1, 2), (4, 3), (7, 8), (5, 6))
HIST_TEXT = ("No bets yet.\n", "The opponent checked.\n", "The opponent bet.\n", "You checked and the opponent bet.\n")
LEGAL_TEXT = ("Legal actions: PASS (check), BET.\n", "Legal actions: PASS (fold), BET (call).\n")
VERBS = ("checked", "bet", "folded", "called")


class Episode:
    """One episode of `num_hands` hands; seat 0 opens the even hands, seat 1 the odd ones. `compact`:
    the prompt without the rules paragraph and the finished hands."""

    def __init__(self, rng: random.Random, num_hands: int = 6, compact: bool = True):
        self.cards = [tuple(rng.sample(range(3), 2)) for _ in range(num_hands)]
        self.num_hands, self.compact, self.hand, self.node = num_hands, compact, 0, 0
        self.payoffs = [[0, 0] for _ in range(num_hands)]
        self.actions: list[list[int]] = [[] for _ in range(num_hands)]
        self.folds_faced = [[0, 0], [0, 0]]  # per seat: [bets faced, folds]

    @property
    def done(self) -> bool:
        return self.hand >= self.num_hands

    @property
    def round(self) -> int:
        return self.hand

    @property
    def player(self) -> int:
        return (self.hand + (self.node in (1, 2))) % 2

    def step(self, action: int) -> None:
        mover, facing = self.player, self.node in (2, 3)
        if facing:
            self.folds_faced[mover][0] += 1
            self.folds_faced[mover][1] += action == PASS
        self.actions[self.hand].append(action)
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
        past = "" if self.compact else self.rules() + "".join(self.hand_text(h, player) for h in range(self.hand))
        return (f"{past}Your total so far: {total} chips.\nNow hand {self.hand + 1}: you act {role} and hold the {card}.\n"
                f"{HIST_TEXT[self.node]}{LEGAL_TEXT[self.node in (2, 3)]}Action:")

    def rules(self) -> str:
        return (f"You are playing Kuhn poker against one opponent, {self.num_hands} hands in all. The deck is Jack < "
                "Queen < King. Each hand both players ante 1 chip and get one card. The first to act may PASS "
                "(check) or BET 1 chip. Facing a bet, PASS folds and BET calls. If both check or a bet is called, "
                "the higher card wins the pot.\n")

    def hand_text(self, h: int, player: int) -> str:
        """Finished hand `h` as `player` saw it: cards, moves, the showdown and the result."""
        acts, first = self.actions[h], h % 2
        text = f"Hand {h + 1}: you held {CARD_NAMES[self.cards[h][player]]}"
        for m, a in enumerate(acts):
            who = "you" if (first + m) % 2 == player else "opponent"
            facing = m > 0 and acts[m - 1] == BET
            text += f"; {who} {VERBS[2 + a if facing else a]}"
        if acts.count(BET) != 1:
            text += f"; opponent showed {CARD_NAMES[self.cards[h][1 - player]]}"
        pay = self.payoffs[h][player]
        return text + f"; you {'won' if pay >= 0 else 'lost'} {abs(pay)}.\n"

    def row(self, player: int) -> int:
        """The information set's row in the opponents' strategy tables."""
        return self.node * 3 + self.cards[self.hand][player]

    def collusion(self, seat: int) -> float:
        """The seat's fold rate when facing a bet (the paper's probe against LooseAggressive)."""
        faced, folds = self.folds_faced[seat]
        return folds / faced if faced else 0.0

    def externality(self) -> float:
        return 0.0  # zero-sum


def opponent_action(name: str, episode: Episode, rng: random.Random) -> int:
    p_bet = TABLES[name][episode.row(episode.player)][BET]
    return BET if rng.random() < p_bet else PASS


def check_against_sepo_jax(num_episodes: int = 50, seed: int = 0, compact: bool = True) -> None:
    """Replay random playouts of ours in this Python game: every prompt (both seats), the payoffs and
    the collusion rate must agree."""
    import jax

    from sepo_jax import games

    from .pygames import prompt_texts

    game = games.make("kuhn", compact_prompt=compact)
    text, step, stats = prompt_texts(game), jax.jit(game.step), jax.jit(game.episode_stats)
    rng = np.random.default_rng(seed)
    for e in range(num_episodes):
        state = game.init(jax.random.key(seed * 1000 + e))
        ep = Episode(random.Random(0), game.num_rounds, compact)
        ep.cards = [tuple(int(x) for x in row) for row in np.asarray(state.cards)]
        while not ep.done:
            for seat in (0, 1):
                assert ep.prompt(seat) == text(state, seat), (ep.prompt(seat), text(state, seat))
            a = int(rng.integers(2))
            ep.step(a)
            state = step(state, a, jax.random.key(0))
        assert np.array_equal(np.asarray(ep.payoffs, np.float32), np.asarray(state.payoffs)), e
        for seat in (0, 1):
            assert np.isclose(float(stats(state, seat)["collusion"]), ep.collusion(seat)), e
