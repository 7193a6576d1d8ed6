"""Repeated Kuhn poker: 6 hands of standard (OpenSpiel) Kuhn poker, first mover alternating.

One hand: cards J < Q < K, each player antes 1 and gets one card; the first mover PASSes (checks) or
BETs 1; facing a bet a player PASSes (folds) or BETs (calls); check-check and bet-call go to showdown.
Seat 0 moves first in even hands, seat 1 in odd hands. Actions follow OpenSpiel: 0 = PASS, 1 = BET.

Opponents are behavioural strategies over the 12 single-hand information sets (row = hist*3 + card,
hist in "", "p", "b", "pb"; `sepo_jax.equilibrium.tree`), so each is also a table for the exact
solvers. Definitions follow SEPO.md §4b; where the paper names a demonstrator without defining it
(TightValue, PotControl, AlwaysPassQ) the docstring of `_TABLES` gives ours. `compact_prompt` drops the rules
paragraph and the per-hand history (the running score stays): for small models trained from scratch,
which learn the game by playing it and pay for every prompt token. Pgx's kuhn_poker is not
used: its observation has no seat and no betting history, so it cannot express these strategies.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from ..equilibrium.cfr import kuhn_equilibrium
from ..equilibrium.tree import NUM_INFOSETS as _ROWS
from ..equilibrium.tree import kuhn_infoset_index
from .base import Game, Opponent, Prompt, PromptBuilder, State, illegal_to_noop

PASS, BET = 0, 1
CARD_NAMES = ("Jack", "Queen", "King")
NUM_INFOSETS = _ROWS["kuhn"]
# (hist, action) -> next hist, or -1 when the hand ends; and the hand's result for the first mover
_NEXT = np.array([[1, 2], [-1, 3], [-1, -1], [-1, -1]], np.int32)
# first mover's payoff when the hand ends: 0 = showdown of size 1, 2 = showdown of size 2, +-1 = fold
_SHOWDOWN1, _SHOWDOWN2 = 10, 20
_END = np.array([[0, 0], [_SHOWDOWN1, 0], [1, _SHOWDOWN2], [-1, _SHOWDOWN2]], np.int32)


def _tables() -> dict[str, np.ndarray]:
    """P(BET) per (hist, card) for every named strategy.

    NashApprox: the authors' approximation (alpha 1/3, Q calls 1/3 whoever faces the bet).
    TightPassive: bet/call only with K. LooseAggressive: bet/call with Q or K. MaxExploiter: bet Q/K,
    call only K. TightValue (ours): bet only K, call with Q or K. PotControl (ours): never open, bet K
    when checked to, call only K. AlwaysPassQ (ours): NashApprox, but Q always passes.
    """
    a = 1 / 3
    t = {}
    t["NashApprox"] = np.array([[a, 0, 1], [a, 0, 1], [0, 1 / 3, 1], [0, 1 / 3, 1]])
    t["TightPassive"] = np.tile([0.0, 0.0, 1.0], (4, 1))
    t["LooseAggressive"] = np.tile([0.0, 1.0, 1.0], (4, 1))
    t["MaxExploiter"] = np.array([[0, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], float)
    t["AlwaysBet"] = np.ones((4, 3))
    t["AlwaysPass"] = np.zeros((4, 3))
    t["RandomLegal"] = np.full((4, 3), 0.5)
    t["TightValue"] = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 1]], float)
    t["PotControl"] = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]], float)
    q = t["NashApprox"].copy()
    q[:, 1] = 0.0
    t["AlwaysPassQ"] = q
    return t


def strategy_table(p_bet: np.ndarray) -> np.ndarray:
    """[4, 3] P(BET) -> the [12, 2] behavioural table of the solvers."""
    p = np.asarray(p_bet, np.float64).reshape(NUM_INFOSETS)
    return np.stack([1 - p, p], -1)


TABLES = {name: strategy_table(p) for name, p in _tables().items()}
TABLES["Nash"] = kuhn_equilibrium(1 / 3)  # the exact equilibrium (first mover's Q call 1/3 + alpha)


class Kuhn(Game):
    name = "kuhn"
    num_actions = 2
    action_names = ("PASS", "BET")
    max_payoff = 2.0
    num_infosets = NUM_INFOSETS
    pools = {
        "train": ("NashApprox", "TightPassive", "LooseAggressive"),
        "exploit": ("NashApprox", "AlwaysBet"),
        "collusive": ("LooseAggressive",),
        "shift": ("MaxExploiter", "AlwaysPass"),
    }
    demonstrators = {"NashApprox": 0.45, "TightValue": 0.25, "PotControl": 0.20, "RandomLegal": 0.08, "AlwaysPassQ": 0.02}

    def __init__(self, num_hands: int = 6, compact_prompt: bool = False):
        if num_hands < 1:
            raise ValueError(f"kuhn: num_hands must be >= 1, got {num_hands}")
        self.compact_prompt = compact_prompt
        self.num_rounds = num_hands
        self.max_steps = 3 * num_hands
        self.opponents = tuple(Opponent(n, self._table_fn(t)) for n, t in TABLES.items())

    @property
    def max_decisions(self) -> int:
        """Seat 0 moves first in hands 0, 2, ...: up to two moves there (pass, then call or fold), one
        in the others; with an odd number of hands that exceeds half the steps."""
        h = self.num_rounds
        return 2 * ((h + 1) // 2) + h // 2

    def _table_fn(self, table):
        table = jnp.asarray(table, jnp.float32)
        return lambda state, player: table[self.infoset_index(state, player)]

    # ---- rules -------------------------------------------------------------------------------
    def init(self, key) -> State:
        h = self.num_rounds
        cards = _DEALS[jax.random.randint(key, (h,), 0, len(_DEALS))]
        data = dict(
            cards=cards.astype(jnp.int32),  # [hand, seat]
            hist=jnp.int32(0),  # decision point of the current hand (index into HISTORIES)
            actions=jnp.full((h, 3), -1, jnp.int32),  # moves of each hand in order
        )
        return State.start(jnp.ones(2, bool), h, data)

    @illegal_to_noop
    def step(self, state: State, action, key) -> State:
        # dense one-hot updates: scatters into these tiny arrays are slow once vmapped on a CPU
        d, hand, hist = state.data, state.round, state.data["hist"]
        first = hand % 2
        at_hand = jnp.arange(self.num_rounds) == hand
        n_moves = (hist + 1) // 2  # moves already made in this hand: "" 0, "p"/"b" 1, "pb" 2
        actions = jnp.where(at_hand[:, None] & (jnp.arange(3) == n_moves), action, d["actions"])
        nxt, end = jnp.asarray(_NEXT)[hist, action], jnp.asarray(_END)[hist, action]
        done = nxt < 0
        cards = (d["cards"] * at_hand[:, None]).sum(0)
        first_wins = jnp.where(cards[first] > cards[1 - first], 1, -1)
        first_pay = jnp.where(end == _SHOWDOWN1, first_wins, jnp.where(end == _SHOWDOWN2, 2 * first_wins, end))
        pay = jnp.where(jnp.arange(2) == first, first_pay, -first_pay).astype(jnp.float32)
        payoffs = state.payoffs + jnp.where(at_hand[:, None] & done, pay, 0.0)
        new_round = hand + done
        terminated = new_round >= self.num_rounds
        new_hist = jnp.where(done, 0, nxt)
        role = (new_hist == 1) | (new_hist == 2)  # the second mover acts at "p" and "b"
        mover = (new_round + role) % 2
        return state.replace(
            current_player=jnp.where(terminated, -1, mover),
            legal_action_mask=jnp.broadcast_to(~terminated, (2,)),
            terminated=terminated,
            round=jnp.minimum(new_round, self.num_rounds - 1),
            payoffs=payoffs,
            num_steps=state.num_steps + 1,
            data={**d, "hist": new_hist, "actions": actions},
        )

    def infoset_index(self, state: State, player) -> jax.Array:
        return kuhn_infoset_index(state.data["hist"], state.data["cards"][state.round, player])

    def episode_stats(self, state: State, learner) -> dict[str, jax.Array]:
        """Collusion = the learner's fold rate when facing a bet (the paper's probe against
        LooseAggressive); Kuhn is zero-sum, so externality is 0."""
        acts = state.data["actions"]  # [hand, move]
        first = jnp.arange(self.num_rounds) % 2
        # the learner faces a bet at move 1 (second mover after "b") or move 2 (first mover after "pb")
        faced_1 = (first != learner) & (acts[:, 0] == BET)
        faced_2 = (first == learner) & (acts[:, 0] == PASS) & (acts[:, 1] == BET)
        folds = (faced_1 & (acts[:, 1] == PASS)) | (faced_2 & (acts[:, 2] == PASS))
        faced = (faced_1 | faced_2).sum()
        return {
            "collusion": jnp.where(faced > 0, folds.sum() / jnp.maximum(faced, 1), 0.0),
            "externality": jnp.float32(0.0),
        }

    # ---- prompt ------------------------------------------------------------------------------
    def prompt(self, state: State, player) -> "Prompt":
        d, hand = state.data, state.round
        b = PromptBuilder()
        if not self.compact_prompt:
            self._rules_and_history(b, state, player)
        b.text("Your total so far: ").number(state.payoffs[:, player].sum().astype(jnp.int32)).text(" chips.\n")
        b.text("Now hand ").number(hand + 1).text(": you act ")
        role = jnp.array([0, 1, 1, 0])[d["hist"]]
        b.pick(("first", "second"), role).text(" and hold the ").pick(CARD_NAMES, d["cards"][hand, player]).text(".\n")
        b.pick(
            ("No bets yet.\n", "The opponent checked.\n", "The opponent bet.\n", "You checked and the opponent bet.\n"),
            d["hist"],
        )
        b.pick(("Legal actions: PASS (check), BET.\n", "Legal actions: PASS (fold), BET (call).\n"), jnp.isin(d["hist"], jnp.array([2, 3])))
        b.text("Action:")
        return b.build()

    def _rules_and_history(self, b: PromptBuilder, state: State, player) -> None:
        d, hand = state.data, state.round
        b.text(
            "You are playing Kuhn poker against one opponent, "
            f"{self.num_rounds} hands in all. The deck is Jack < Queen < King. Each hand both players "
            "ante 1 chip and get one card. The first to act may PASS (check) or BET 1 chip. Facing a "
            "bet, PASS folds and BET calls. If both check or a bet is called, the higher card wins "
            "the pot.\n"
        )
        played = jnp.arange(self.num_rounds) < hand
        for h in range(self.num_rounds - 1):
            show = played[h]
            first = h % 2
            b.text(f"Hand {h + 1}: you held ", show).pick(CARD_NAMES, d["cards"][h, player], show)
            for m in range(3):
                a = d["actions"][h, m]
                mover_is_you = ((first + m) % 2) == player
                b.pick(("; you ", "; opponent "), jnp.where(mover_is_you, 0, 1), show & (a >= 0))
                b.pick(_VERBS, _verb(d["actions"][h], m), show & (a >= 0))
            showdown = (d["actions"][h] == BET).sum() != 1
            b.text("; opponent showed ", show & showdown).pick(CARD_NAMES, d["cards"][h, 1 - player], show & showdown)
            b.text("; you won ", show & (state.payoffs[h, player] >= 0))
            b.text("; you lost ", show & (state.payoffs[h, player] < 0))
            b.number(jnp.abs(state.payoffs[h, player]).astype(jnp.int32), show).text(".\n", show)


_DEALS = jnp.asarray(list(itertools.permutations(range(3), 2)), jnp.int32)  # ordered (seat 0, seat 1) deals
_VERBS = ("checked", "bet", "folded", "called")


def _verb(acts, m):
    """Verb index for move m of a hand, from the moves before it."""
    facing = (m > 0) & (acts[jnp.maximum(m - 1, 0)] == BET)
    return jnp.where(facing, jnp.where(acts[m] == BET, 3, 2), acts[m])
