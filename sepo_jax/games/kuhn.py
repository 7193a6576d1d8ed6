"""Repeated Kuhn poker: 6 hands of standard (OpenSpiel) Kuhn poker, first mover alternating.

One hand: cards J < Q < K, each player antes 1 and gets one card; the first mover PASSes (checks) or
BETs 1; facing a bet a player PASSes (folds) or BETs (calls); check-check and bet-call go to showdown.
Seat 0 moves first in even hands, seat 1 in odd hands. Actions follow OpenSpiel: 0 = PASS, 1 = BET.

The module is in three layers: the rules (`KuhnState`, the rule tables, `Kuhn.init`/`step`, the
information-set index `infoset_row`), the opponents (behavioural strategies over the 12 single-hand
information sets, row = hist * 3 + card with hist in `HISTORIES`, so each is also a table for the exact
solvers) and the prompt template. `ante` and `bet` are rule parameters (1 and 1 in the paper and in
OpenSpiel); `sepo_jax.equilibrium` builds its game tree from `init`/`step`, so a change here changes
the solver too. Definitions follow docs/method.md §4b; where the paper names a demonstrator without defining it
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
from flax import struct

from .base import TREE, Game, Opponent, Prompt, PromptBuilder, illegal_to_noop

# ---- rules ----------------------------------------------------------------------------------------

PASS, BET = 0, 1
CARD_NAMES = ("Jack", "Queen", "King")
HISTORIES = ("", "p", "b", "pb")  # the decision nodes of one hand (OpenSpiel's history letters)
NUM_INFOSETS = len(HISTORIES) * len(CARD_NAMES)


def infoset_row(hist, card):
    """Row of the information set (hist index into HISTORIES, card 0..2); ints or int arrays.
    OpenSpiel's information-state string of the row is f"{card}{HISTORIES[hist]}"."""
    return hist * 3 + card

# Nodes of one hand: decisions 0 "", 1 "p", 2 "b", 3 "pb"; ends 4 "pp", 5 "pbp", 6 "pbb", 7 "bp", 8 "bb".
_NEXT = np.array([[1, 2], [4, 3], [7, 8], [5, 6]], np.int32)  # (decision node, action) -> node
_ENDED = 4  # nodes >= this end the hand
_NODE_ACTIONS = np.array([[-1] * 3, [0, -1, -1], [1, -1, -1], [0, 1, -1],
                          [0, 0, -1], [0, 1, 0], [0, 1, 1], [1, 0, -1], [1, 1, -1]], np.int32)
# the first mover's payoff at each node in antes: +-1 after a fold, SHOWDOWN1/2 for a showdown without
# or with a called bet
_SHOWDOWN1, _SHOWDOWN2 = 10, 20
_NODE_END = np.array([0, 0, 0, 0, _SHOWDOWN1, -1, _SHOWDOWN2, 1, _SHOWDOWN2], np.int32)
_HANDS_PER_WORD, _BITS = 7, 4  # ended hands' nodes are packed 4 bits each into int32 words


@struct.dataclass
class KuhnState:
    """Repeated Kuhn's state, packed so a move touches a few scalars (the env's hot loop on XLA:CPU
    costs about one pass per state element per move). The `State` read interface (current player,
    legal mask, per-hand payoffs, ...) is derived from it and works on batched states too."""

    cards: jax.Array  # int32 [hand, seat]
    codes: jax.Array  # int32 [words]: the end node of each finished hand, 4 bits per hand
    hand: jax.Array  # int32: hands finished so far (the current hand; num_hands once the episode is over)
    hist: jax.Array  # int32: the current hand's decision node, 0..3
    num_steps: jax.Array  # int32: moves made so far
    illegal: jax.Array  # int32: illegal moves attempted (each left the state unchanged)
    ante: int = struct.field(pytree_node=False, default=1)  # the stakes (rules, static)
    bet: int = struct.field(pytree_node=False, default=1)

    @property
    def num_hands(self) -> int:
        return self.cards.shape[-2]

    @property
    def terminated(self) -> jax.Array:
        return self.hand >= self.num_hands

    @property
    def round(self) -> jax.Array:
        return jnp.minimum(self.hand, self.num_hands - 1)

    @property
    def current_player(self) -> jax.Array:
        second = (self.hist == 1) | (self.hist == 2)  # the second mover acts at "p" and "b"
        return jnp.where(self.terminated, -1, (self.hand + second) % 2)

    @property
    def legal_action_mask(self) -> jax.Array:
        return jnp.broadcast_to(~self.terminated[..., None], self.hand.shape + (2,))

    @property
    def nodes(self) -> jax.Array:
        """int32 [..., hand]: the end node of finished hands, the current node, 0 for later hands."""
        h = np.arange(self.num_hands)
        ended = (self.codes[..., h // _HANDS_PER_WORD] >> (_BITS * (h % _HANDS_PER_WORD))) & (2**_BITS - 1)
        return jnp.where(h == self.hand[..., None], self.hist[..., None], ended)

    @property
    def actions(self) -> jax.Array:
        """int32 [..., hand, move]: the moves of each hand in order, -1 where none was made."""
        return jnp.asarray(_NODE_ACTIONS)[self.nodes]

    @property
    def payoffs(self) -> jax.Array:
        """float32 [..., hand, seat]: what each hand paid each seat (0 until it ends)."""
        h = np.arange(self.num_hands)
        first = h % 2
        wins = jnp.where(self.cards[..., h, first] > self.cards[..., h, 1 - first], 1, -1)
        end = jnp.asarray(_NODE_END)[self.nodes]
        stake = jnp.where(end == _SHOWDOWN2, self.ante + self.bet, self.ante)
        first_pay = jnp.where((end == _SHOWDOWN1) | (end == _SHOWDOWN2), wins, end) * stake
        return jnp.where(np.arange(2) == first[:, None], first_pay[..., None], -first_pay[..., None]).astype(jnp.float32)

    @property
    def returns(self) -> jax.Array:
        return self.payoffs.sum(-2)

    @property
    def data(self) -> dict:
        """The game-specific fields under the names the other games' `state.data` uses."""
        return {"cards": self.cards, "hist": self.hist, "actions": self.actions, "illegal": self.illegal}

    def with_illegal(self, count: jax.Array) -> "KuhnState":
        return self.replace(illegal=count)


_DEALS = np.array(list(itertools.permutations(range(3), 2)), np.int32)  # ordered (seat 0, seat 1) deals


# ---- opponents: behavioural strategy tables -------------------------------------------------------


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


def nash_table(alpha: float) -> np.ndarray:
    """Kuhn's Nash equilibrium with parameter alpha in [0, 1/3] (docs/method.md §4) as a table `[12, 2]`.

    First player: bets J w.p. alpha, K w.p. 3 alpha, never Q; after check-bet calls Q w.p. 1/3 + alpha,
    K always, J never. Second player: after a check bets K, J w.p. 1/3; facing a bet calls K, Q w.p. 1/3."""
    if not 0.0 <= alpha <= 1.0 / 3.0 + 1e-12:
        raise ValueError(f"Kuhn equilibrium parameter alpha must lie in [0, 1/3], got {alpha}")
    bet = {  # history -> probability of BET (bet or call) per card J, Q, K
        "": (alpha, 0.0, 3 * alpha),
        "pb": (0.0, 1.0 / 3.0 + alpha, 1.0),
        "p": (1.0 / 3.0, 0.0, 1.0),
        "b": (0.0, 1.0 / 3.0, 1.0),
    }
    return strategy_table([bet[h] for h in HISTORIES])


# the fold rate facing a bet of the most folding member of the equilibrium family, per row (fold
# probabilities are linear in alpha, so the family's extremes bound them)
NASH_FOLD = np.maximum(nash_table(0.0)[:, PASS], nash_table(1.0 / 3.0)[:, PASS]).astype(np.float32)

TABLES = {name: strategy_table(p) for name, p in _tables().items()}
TABLES["Nash"] = nash_table(1 / 3)  # the exact equilibrium (first mover's Q call 1/3 + alpha)


def _table_opponent(table: np.ndarray):
    return lambda state, player: jnp.asarray(table, jnp.float32)[infoset_row(state.hist, state.cards[state.round, player])]


OPPONENTS = tuple(Opponent(name, _table_opponent(t)) for name, t in TABLES.items())


class Kuhn(Game):
    name = "kuhn"
    num_actions = 2
    action_names = ("PASS", "BET")
    num_infosets = NUM_INFOSETS
    solvers = frozenset({TREE})
    pools = {
        "train": ("NashApprox", "TightPassive", "LooseAggressive"),
        "exploit": ("NashApprox", "AlwaysBet"),
        "collusive": ("LooseAggressive",),
        "shift": ("MaxExploiter", "AlwaysPass"),
    }
    demonstrators = {"NashApprox": 0.45, "TightValue": 0.25, "PotControl": 0.20, "RandomLegal": 0.08, "AlwaysPassQ": 0.02}
    opponents = OPPONENTS

    def __init__(self, num_hands: int = 6, compact_prompt: bool = False, ante: int = 1, bet: int = 1):
        if num_hands < 1:
            raise ValueError(f"kuhn: num_hands must be >= 1, got {num_hands}")
        if ante < 1 or bet < 1:
            raise ValueError(f"kuhn: ante and bet must be >= 1, got ante={ante}, bet={bet}")
        self.compact_prompt = compact_prompt
        self.ante, self.bet = int(ante), int(bet)
        self.num_rounds = num_hands
        self.max_steps = 3 * num_hands
        self.max_payoff = float(self.ante + self.bet)

    @property
    def max_decisions(self) -> int:
        """Seat 0 moves first in hands 0, 2, ...: up to two moves there (pass, then call or fold), one
        in the others; with an odd number of hands that exceeds half the steps."""
        h = self.num_rounds
        return 2 * ((h + 1) // 2) + h // 2

    # ---- rules -------------------------------------------------------------------------------
    @property
    def rules_key(self) -> tuple:
        return (self.name, self.ante, self.bet)

    def one_hand(self) -> "Kuhn":
        return Kuhn(num_hands=1, ante=self.ante, bet=self.bet)

    def deals(self) -> np.ndarray:
        return _DEALS

    def init(self, key) -> KuhnState:
        # one 32-bit word per hand picks the deal: bias below 2**-29, half the bits of randint
        deal = jax.random.bits(key, (self.num_rounds,)) % len(_DEALS)
        zero = jnp.int32(0)
        return KuhnState(cards=jnp.asarray(_DEALS)[deal.astype(jnp.int32)], codes=jnp.zeros(-(-self.num_rounds // _HANDS_PER_WORD), jnp.int32),
                         hand=zero, hist=zero, num_steps=zero, illegal=zero, ante=self.ante, bet=self.bet)

    def with_cards(self, state: KuhnState, cards) -> KuhnState:
        return state.replace(cards=jnp.asarray(cards, jnp.int32))

    @illegal_to_noop
    def step(self, state: KuhnState, action, key) -> KuhnState:
        node = jnp.where(action == PASS, jnp.asarray(_NEXT[:, PASS])[state.hist], jnp.asarray(_NEXT[:, BET])[state.hist])
        done = node >= _ENDED
        word = jnp.arange(state.codes.shape[0]) == state.hand // _HANDS_PER_WORD
        packed = state.codes | (node << (_BITS * (state.hand % _HANDS_PER_WORD)))
        return state.replace(
            codes=jnp.where(word & done, packed, state.codes),
            hand=state.hand + done,
            hist=jnp.where(done, 0, node),
            num_steps=state.num_steps + 1,
        )

    def infoset_index(self, state: KuhnState, player) -> jax.Array:
        return infoset_row(state.hist, state.cards[state.round, player])

    def episode_stats(self, state: KuhnState, learner) -> dict[str, jax.Array]:
        """Collusion = the learner's fold rate when facing a bet (the paper's probe against
        LooseAggressive; it counts the folds the equilibrium itself makes: J always folds). With the
        standard stakes also `collusion_vs_nash`: the folds beyond those of the most folding equilibrium
        (per card and situation, `NASH_FOLD`) per bet faced; about 0 or below for equilibrium play,
        negative when folding less. Kuhn is zero-sum, so externality is 0."""
        acts = state.actions  # [hand, move]
        first = jnp.arange(self.num_rounds) % 2
        # the learner faces a bet at move 1 (second mover after "b") or move 2 (first mover after "pb")
        faced_1 = (first != learner) & (acts[:, 0] == BET)
        faced_2 = (first == learner) & (acts[:, 0] == PASS) & (acts[:, 1] == BET)
        folds = (faced_1 & (acts[:, 1] == PASS)) | (faced_2 & (acts[:, 2] == PASS))
        faced = (faced_1 | faced_2).sum()
        stats = {
            "collusion": jnp.where(faced > 0, folds.sum() / jnp.maximum(faced, 1), 0.0),
            "externality": jnp.float32(0.0),
        }
        if (self.ante, self.bet) == (1, 1):  # the equilibrium family of NASH_FOLD is that of the standard stakes
            card = state.cards[:, learner]
            nash = jnp.asarray(NASH_FOLD)
            expected = (jnp.where(faced_1, nash[infoset_row(HISTORIES.index("b"), card)], 0.0)
                        + jnp.where(faced_2, nash[infoset_row(HISTORIES.index("pb"), card)], 0.0))
            stats["collusion_vs_nash"] = jnp.where(faced > 0, (folds.sum() - expected.sum()) / jnp.maximum(faced, 1), 0.0)
        return stats

    # ---- prompt ------------------------------------------------------------------------------
    def prompt(self, state: KuhnState, player) -> "Prompt":
        hand = state.round
        b = PromptBuilder()
        if not self.compact_prompt:
            self._rules_and_history(b, state, player)
        b.text("Your total so far: ").number(state.payoffs[:, player].sum().astype(jnp.int32)).text(" chips.\n")
        b.text("Now hand ").number(hand + 1).text(": you act ")
        role = jnp.array([0, 1, 1, 0])[state.hist]
        b.pick(("first", "second"), role).text(" and hold the ").pick(CARD_NAMES, state.cards[hand, player]).text(".\n")
        b.pick(
            ("No bets yet.\n", "The opponent checked.\n", "The opponent bet.\n", "You checked and the opponent bet.\n"),
            state.hist,
        )
        b.pick(("Legal actions: PASS (check), BET.\n", "Legal actions: PASS (fold), BET (call).\n"), jnp.isin(state.hist, jnp.array([2, 3])))
        b.text("Action:")
        return b.build()

    def _rules_and_history(self, b: PromptBuilder, state: KuhnState, player) -> None:
        hand, cards, actions = state.round, state.cards, state.actions
        b.intro().text(
            "You are playing Kuhn poker against one opponent, "
            f"{self.num_rounds} hands in all. The deck is Jack < Queen < King. Each hand both players "
            f"ante {_chips(self.ante)} and get one card. The first to act may PASS (check) or BET {_chips(self.bet)}. Facing a "
            "bet, PASS folds and BET calls. If both check or a bet is called, the higher card wins "
            "the pot.\n"
        )
        played = jnp.arange(self.num_rounds) < hand
        for h in range(self.num_rounds - 1):
            show = played[h]
            first = h % 2
            b.row(h).text(f"Hand {h + 1}: you held ", show).pick(CARD_NAMES, cards[h, player], show)
            for m in range(3):
                a = actions[h, m]
                mover_is_you = ((first + m) % 2) == player
                b.pick(("; you ", "; opponent "), jnp.where(mover_is_you, 0, 1), show & (a >= 0))
                b.pick(_VERBS, _verb(actions[h], m), show & (a >= 0))
            showdown = (actions[h] == BET).sum() != 1
            b.text("; opponent showed ", show & showdown).pick(CARD_NAMES, cards[h, 1 - player], show & showdown)
            b.text("; you won ", show & (state.payoffs[h, player] >= 0))
            b.text("; you lost ", show & (state.payoffs[h, player] < 0))
            b.number(jnp.abs(state.payoffs[h, player]).astype(jnp.int32), show).text(".\n", show)
        b.state()


_VERBS = ("checked", "bet", "folded", "called")


def _chips(n: int) -> str:
    return "1 chip" if n == 1 else f"{n} chips"


def _verb(acts, m):
    """Verb index for move m of a hand, from the moves before it."""
    facing = (m > 0) & (acts[jnp.maximum(m - 1, 0)] == BET)
    return jnp.where(facing, jnp.where(acts[m] == BET, 3, 2), acts[m])
