"""Leduc hold'em, as OpenSpiel's leduc_poker, optionally repeated over hands with alternating seats.

Six cards (J, Q, K in two suits; card c has rank c // 2). Both players ante 1 and get a private card;
a betting round (first mover first, at most two raises, raise size 2), a public card, a second round
(raise size 4), then showdown: pairing the public card wins, else the higher rank, equal ranks split.
Actions follow OpenSpiel: 0 = FOLD (only when facing a bet), 1 = CALL (check/call), 2 = RAISE.
With one hand (the default) an episode is exactly OpenSpiel's game; with more, seat 0 is the first
mover in even hands and seat 1 in odd ones.

Information-set rows (`infoset_row`): round 0: seq * 6 + private; round 1: 36 + ((done * 6 + seq) * 6 +
public) * 6 + private, with seq an index into DECISION_SEQS (the current betting round) and done an
index into DONE_SEQS (the finished round-0 betting); rows with public == private never occur (936 real
information sets, as OpenSpiel counts them). `sepo_jax.equilibrium` enumerates its game tree from
`init`/`step`.

`compact_prompt` drops the rules paragraph (see kuhn.py). Leduc is not in the SEPO paper, so its pools
are ours: simple rank-based strategies (see `_rules`).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from .base import TREE, Game, Opponent, Prompt, PromptBuilder, State, illegal_to_noop

# ---- rules ----------------------------------------------------------------------------------------

FOLD, CALL, RAISE = 0, 1, 2
RANK_NAMES = ("Jack", "Queen", "King")
NUM_CARDS = 6  # card c has rank c // 2
DECISION_SEQS = ("", "c", "r", "cr", "rr", "crr")  # betting of a round before a move (c call, r raise)
DONE_SEQS = ("cc", "rc", "crc", "rrc", "crrc")  # betting of a finished round
ROUND1_OFFSET = len(DECISION_SEQS) * NUM_CARDS  # 36
NUM_INFOSETS = ROUND1_OFFSET + len(DONE_SEQS) * len(DECISION_SEQS) * NUM_CARDS * NUM_CARDS  # 1116


def infoset_row(round, seq, private, done=0, public=0):
    """Row of an information set; `round` 0 or 1, `seq` indexes DECISION_SEQS, `done` DONE_SEQS (round
    1 only), `public` the public card (round 1). Python ints or int arrays (jit-safe)."""
    r0 = seq * NUM_CARDS + private
    r1 = ROUND1_OFFSET + ((done * len(DECISION_SEQS) + seq) * NUM_CARDS + public) * NUM_CARDS + private
    return r0 + round * (r1 - r0)


def _transitions():
    """(seq, action) -> next decision seq (or -1), completed seq index (or -1)."""
    nxt = np.full((6, 3), -1, np.int32)
    done = np.full((6, 3), -1, np.int32)
    for i, s in enumerate(DECISION_SEQS):
        for a, ch in ((CALL, "c"), (RAISE, "r")):
            t = s + ch
            if t in DECISION_SEQS:
                nxt[i, a] = DECISION_SEQS.index(t)
            elif t in DONE_SEQS:
                done[i, a] = DONE_SEQS.index(t)
    return nxt, done


_NEXT, _DONE = _transitions()
_DEALS = np.array(list(itertools.permutations(range(NUM_CARDS), 3)), np.int32)  # (seat 0, seat 1, public)
_FACING = np.array([s.endswith("r") for s in DECISION_SEQS])
_CAN_RAISE = np.array([s.count("r") < 2 for s in DECISION_SEQS])
_LEGAL = np.stack([_FACING, np.ones(6, bool), _CAN_RAISE], -1)  # [seq, action]


class LeducState(State):
    cards: jax.Array  # int32 [hand, (seat 0 private, seat 1 private, public)]
    betting: jax.Array  # int32: betting round of the current hand, 0 or 1
    seq: jax.Array  # int32: index into DECISION_SEQS
    done1: jax.Array  # int32: index into DONE_SEQS once round 0 is over
    contrib: jax.Array  # int32 [seat]: chips each seat has put in this hand
    actions: jax.Array  # int32 [hand, move]: the moves of each hand, -1 where none
    num_moves: jax.Array  # int32: moves in the current hand


# ---- opponents: (state, player) -> action weights ------------------------------------------------


def tight(state, player):
    """Raise with a pair or a King, call with a Queen, fold a Jack facing a raise (check it otherwise)."""
    cards = state.cards[state.round]
    rank, public = cards[player] // 2, cards[2] // 2
    pair = (state.betting == 1) & (rank == public)
    strong = pair | (rank == 2)
    facing = jnp.asarray(_FACING)[state.seq]
    weak_action = jnp.where(facing & (rank == 0), FOLD, CALL)
    return jax.nn.one_hot(jnp.where(strong, RAISE, weak_action), 3)


def aggressive(state, player):
    """Raise with a Queen, a King or a pair when allowed, else call (never fold)."""
    cards = state.cards[state.round]
    rank, public = cards[player] // 2, cards[2] // 2
    strong = (rank >= 1) | ((state.betting == 1) & (rank == public))
    return jax.nn.one_hot(jnp.where(strong & state.legal_action_mask[RAISE], RAISE, CALL), 3)


def always_raise(state, player):
    return jax.nn.one_hot(jnp.where(state.legal_action_mask[RAISE], RAISE, CALL), 3)


OPPONENTS = (  # rank-based
    Opponent("Tight", tight),
    Opponent("Aggressive", aggressive),
    Opponent("AlwaysCall", lambda s, p: jax.nn.one_hot(CALL, 3), "check or call"),
    Opponent("AlwaysRaise", always_raise, "raise when allowed, else call"),
    Opponent("Random", lambda s, p: s.legal_action_mask.astype(jnp.float32), "uniform over legal actions"),
)


class Leduc(Game):
    name = "leduc"
    num_actions = 3
    action_names = ("FOLD", "CALL", "RAISE")
    max_payoff = 13.0
    num_infosets = NUM_INFOSETS
    solvers = frozenset({TREE})
    pools = {
        "train": ("Tight", "AlwaysCall", "Random"),
        "exploit": ("AlwaysRaise", "Aggressive"),
        "collusive": ("Aggressive",),
    }
    demonstrators = {"Tight": 0.5, "Aggressive": 0.3, "Random": 0.2}
    opponents = OPPONENTS

    def __init__(self, num_hands: int = 1, compact_prompt: bool = False):
        if num_hands < 1:
            raise ValueError(f"leduc: num_hands must be >= 1, got {num_hands}")
        self.compact_prompt = compact_prompt
        self.num_rounds = num_hands
        self.max_steps = 8 * num_hands

    # ---- rules -------------------------------------------------------------------------------
    def one_hand(self) -> "Leduc":
        return Leduc(num_hands=1)

    def deals(self) -> np.ndarray:
        return _DEALS

    def init(self, key) -> LeducState:
        h = self.num_rounds
        cards = jnp.asarray(_DEALS)[jax.random.randint(key, (h,), 0, len(_DEALS))]
        return LeducState.start(
            jnp.asarray(_LEGAL[0]), h, cards=cards.astype(jnp.int32), betting=jnp.int32(0), seq=jnp.int32(0),
            done1=jnp.int32(0), contrib=jnp.ones(2, jnp.int32), actions=jnp.full((h, 8), -1, jnp.int32),
            num_moves=jnp.int32(0),
        )

    def with_cards(self, state: LeducState, cards) -> LeducState:
        return state.replace(cards=jnp.asarray(cards, jnp.int32))

    @illegal_to_noop
    def step(self, state: LeducState, action, key) -> LeducState:
        hand, mover = state.round, state.current_player
        seq, betting, contrib = state.seq, state.betting, state.contrib
        top = contrib.max()
        raise_size = jnp.where(betting == 0, 2, 4)
        contrib = contrib.at[mover].set(jnp.where(action == CALL, top, jnp.where(action == RAISE, top + raise_size, contrib[mover])))
        nxt, done = jnp.asarray(_NEXT)[seq, action], jnp.asarray(_DONE)[seq, action]
        folded = action == FOLD
        round_over = nxt < 0
        hand_over = folded | (round_over & (betting == 1))

        cards = state.cards[hand]
        ranks = cards // 2
        public = ranks[2]
        strength = jnp.where(ranks[:2] == public, 10 + ranks[:2], ranks[:2])
        winner = jnp.where(strength[0] > strength[1], 0, 1)
        tie = strength[0] == strength[1]
        show = jnp.where(tie, 0.0, contrib[1 - winner]) * jnp.where(jnp.arange(2) == winner, 1.0, -1.0)
        fold_pay = contrib[mover] * jnp.where(jnp.arange(2) == mover, -1.0, 1.0)
        pay = jnp.where(folded, fold_pay, show)
        payoffs = state.payoffs.at[hand].set(jnp.where(hand_over, pay, 0.0))

        actions = state.actions.at[hand, state.num_moves].set(action)
        new_round = hand + hand_over
        terminated = new_round >= self.num_rounds
        first = new_round % 2
        new_seq = jnp.where(round_over, 0, nxt)
        new_betting = jnp.where(hand_over, 0, jnp.where(round_over, 1, betting))
        n_moves = jnp.where(hand_over, 0, state.num_moves + 1)
        next_mover = (first + len_of(new_seq)) % 2
        return state.replace(
            betting=new_betting,
            seq=new_seq,
            done1=jnp.where(round_over & (betting == 0) & ~hand_over, done, jnp.where(hand_over, 0, state.done1)),
            contrib=jnp.where(hand_over, jnp.ones(2, jnp.int32), contrib),
            actions=actions,
            num_moves=n_moves,
            current_player=jnp.where(terminated, -1, next_mover),
            legal_action_mask=jnp.asarray(_LEGAL)[new_seq] & ~terminated,
            terminated=terminated,
            round=jnp.minimum(new_round, self.num_rounds - 1),
            payoffs=payoffs,
            num_steps=state.num_steps + 1,
        )

    def infoset_index(self, state: LeducState, player) -> jax.Array:
        cards = state.cards[state.round]
        return infoset_row(state.betting, state.seq, cards[player], state.done1, cards[2])

    def episode_stats(self, state: LeducState, learner) -> dict[str, jax.Array]:
        """Collusion = the learner's fold rate when facing a raise; zero-sum, so externality 0."""
        acts = state.actions  # [hand, move]
        hands = jnp.arange(self.num_rounds)[:, None]
        # the mover of move m in a hand alternates, but a betting round boundary keeps the first mover
        prev = jnp.concatenate([jnp.full((self.num_rounds, 1), -1), acts[:, :-1]], 1)
        mover = _movers(acts, hands % 2)
        faced = (prev == RAISE) & (acts >= 0) & (mover == learner)
        folds = faced & (acts == FOLD)
        n = faced.sum()
        return {"collusion": jnp.where(n > 0, folds.sum() / jnp.maximum(n, 1), 0.0), "externality": jnp.float32(0.0)}

    # ---- prompt ------------------------------------------------------------------------------
    def prompt(self, state: LeducState, player) -> "Prompt":
        hand = state.round
        cards = state.cards[hand]
        b = PromptBuilder().intro()
        b.text(
            "" if self.compact_prompt else "You are playing Leduc hold'em against one opponent. The deck has two Jacks, two Queens "
            "and two Kings. Both players ante 1 chip and get one private card. In each of two betting "
            "rounds you may FOLD (only when facing a raise), CALL (check or match) or RAISE (2 chips "
            "in round 1, 4 in round 2; at most two raises per round). After round 1 a public card is "
            "shown. At showdown a pair with the public card wins, else the higher card; equal cards split.\n"
        ).state()
        if self.num_rounds > 1:
            b.text("Hand ").number(hand + 1).text(" of ").number(self.num_rounds).text("; your total so far: ")
            b.number(state.payoffs[:, player].sum().astype(jnp.int32)).text(" chips.\n")
        b.text("Your card: ").pick(RANK_NAMES, cards[player] // 2).text(".\n")
        b.text("Public card: ", state.betting == 1).pick(RANK_NAMES, cards[2] // 2, state.betting == 1)
        b.text(".\n", state.betting == 1)
        movers = _movers(state.actions[hand][None], (hand % 2)[None])[0]
        b.text("Moves this hand:")
        for m in range(8):
            a = state.actions[hand, m]
            show = (m < state.num_moves) & (a >= 0)
            b.pick((" you", " opponent"), jnp.where(movers[m] == player, 0, 1), show)
            b.pick((" folded;", " called;", " raised;"), a, show)
        b.text(" none yet;", state.num_moves == 0)
        b.text("\nPot: ").number(state.contrib.sum()).text(" chips, you put in ").number(state.contrib[player]).text(".\n")
        legal = state.legal_action_mask
        b.text("Legal actions:").text(" FOLD", legal[FOLD]).text(" CALL", legal[CALL]).text(" RAISE", legal[RAISE])
        b.text("\nAction:")
        return b.build()


def len_of(seq):
    return jnp.asarray([len(s) for s in DECISION_SEQS])[seq]


def _movers(acts, first):
    """Seat of each move [hands, 8] given each hand's first mover: moves alternate within a betting
    round and round 2 starts again with the first mover."""

    def one(row, f):
        def body(carry, a):
            seq, mover = carry
            nxt = jnp.asarray(_NEXT)[seq, jnp.clip(a, 1, 2)]
            round_over = (a >= 1) & (nxt < 0)
            seq2 = jnp.where(round_over, 0, jnp.where(a >= 1, nxt, seq))
            return (seq2, jnp.where(round_over, f, 1 - mover)), mover

        return jax.lax.scan(body, (jnp.int32(0), f), row)[1]

    return jax.vmap(one)(acts, first.reshape(-1))

