"""The iterated Prisoner's Dilemma as plain Python, the way a PyTorch + TRL user writes a game loop: the
rules, payoffs, opponents and full prompt text of `sepo_jax.games.ipd`, one episode an object.

A round is played as seat 0, then seat 1, and resolves on seat 1's move; a player sees only resolved
rounds, so seat 1 never sees seat 0's pending move. `check_against_sepo_jax` asserts that prompts (both
seats), payoffs, collusion and externality, and every opponent's action distribution equal ours on
random playouts, so both sides of a benchmark do the same work.
"""

from __future__ import annotations

import random

import numpy as np

from sepo_jax.games.ipd import IPD, PAYOFF

COOPERATE, DEFECT = 0, 1
ACTION_NAMES = IPD.action_names
NUM_ROUNDS = IPD.num_rounds


class Episode:
    """One episode of 8 rounds; `moves[t]` holds the round's (seat 0, seat 1) actions once resolved."""

    def __init__(self, rng: random.Random | None = None):  # no chance in the rules: `rng` is unused
        self.round, self.pending = 0, None
        self.moves: list[tuple[int, int]] = []
        self.payoffs = [[0, 0] for _ in range(NUM_ROUNDS)]

    @property
    def done(self) -> bool:
        return self.round >= NUM_ROUNDS

    @property
    def player(self) -> int:
        return 0 if self.pending is None else 1

    def step(self, action: int) -> None:
        if self.pending is None:
            self.pending = action
            return
        a0, a1 = self.pending, action
        self.moves.append((a0, a1))
        self.payoffs[self.round] = [int(x) for x in PAYOFF[a0, a1]]
        self.round, self.pending = self.round + 1, None

    def view(self, seat: int) -> tuple[list[int], list[int]]:
        """(own moves, opponent moves) of the resolved rounds."""
        return [m[seat] for m in self.moves], [m[1 - seat] for m in self.moves]

    def prompt(self, seat: int) -> str:
        t = min(self.round, NUM_ROUNDS - 1)
        rows = [f"\nRound {i + 1}: you {ACTION_NAMES[m[seat]]}, opponent {ACTION_NAMES[m[1 - seat]]}; "
                f"points {self.payoffs[i][seat]} and {self.payoffs[i][1 - seat]}."
                for i, m in enumerate(self.moves[:NUM_ROUNDS - 1])]
        mine = sum(p[seat] for p in self.payoffs)
        theirs = sum(p[1 - seat] for p in self.payoffs)
        return (IPD.rules + f"\nRound {t + 1} of {NUM_ROUNDS}." + ("" if self.moves else "\nNo rounds played yet.")
                + "".join(rows) + f"\nScore: you {mine}, opponent {theirs}.\nLegal actions: "
                + ", ".join(ACTION_NAMES) + ".\nAction:")

    def collusion(self, seat: int) -> float:
        """The seat's defection rate (the paper's probe against AlwaysCooperate)."""
        return sum(m[seat] == DEFECT for m in self.moves) / NUM_ROUNDS

    def externality(self) -> float:
        """Mean over rounds of max(0, (3 - mean payoff of the two) / 3)."""
        return sum(max(0.0, (3.0 - sum(p) / 2) / 3.0) for p in self.payoffs) / NUM_ROUNDS


def p_defect(name: str, episode: Episode, seat: int) -> float:
    """The probability that opponent `name`, sitting in `seat`, defects now."""
    t = episode.round
    _, theirs = episode.view(seat)
    last_defect = bool(theirs) and theirs[-1] == DEFECT
    return {
        "TitForTat": float(last_defect),
        "GenerousTFT": 0.75 if last_defect else 0.0,
        "Mixed": 0.5,
        "GrimTrigger": float(DEFECT in theirs),
        "AlwaysDefect": 1.0,
        "AlternatingDefect": float(t % 2 == 0),
        "AlwaysCooperate": 0.0,
        "Random": 0.5,
    }[name]


def opponent_action(name: str, episode: Episode, rng: random.Random) -> int:
    return DEFECT if rng.random() < p_defect(name, episode, episode.player) else COOPERATE


def check_against_sepo_jax(num_episodes: int = 20, seed: int = 0) -> None:
    """Replay random playouts of ours in this Python game: every prompt (both seats), every opponent's
    action distribution, the payoffs and the episode statistics must agree."""
    import jax
    import jax.numpy as jnp

    from sepo_jax import games

    from .pygames import prompt_texts

    game = games.make("ipd")
    text = prompt_texts(game)
    opponents = jax.jit(jax.vmap(game.opponent_probs, in_axes=(0, None, None)))
    stats = jax.jit(game.episode_stats)
    step = jax.jit(game.step)
    ids = jnp.arange(len(game.opponents))
    rng = np.random.default_rng(seed)
    for e in range(num_episodes):
        state, ep = game.init(jax.random.key(e)), Episode()
        while not ep.done:
            mover = ep.player
            assert int(state.current_player) == mover, e
            for seat in (0, 1):
                assert ep.prompt(seat) == text(state, seat), (ep.prompt(seat), text(state, seat))
            probs = np.asarray(opponents(ids, state, mover))[:, DEFECT]
            mine = [p_defect(name, ep, mover) for name in game.opponent_names]
            assert np.allclose(probs, mine), (e, dict(zip(game.opponent_names, zip(probs, mine))))
            a = int(rng.integers(2))
            ep.step(a)
            state = step(state, a, jax.random.key(0))
        assert np.array_equal(np.asarray(ep.payoffs, np.float32), np.asarray(state.payoffs)), e
        for seat in (0, 1):
            s = stats(state, seat)
            assert np.isclose(float(s["collusion"]), ep.collusion(seat)), e
            assert np.isclose(float(s["externality"]), ep.externality()), e
