"""Repeated simultaneous-demand negotiation, two variants sharing the round logic (docs/method.md §4).

Both: 4 rounds; each round both players demand at the same time; a deal iff the demands fit,
then each scores what it demanded (at its own values), else a breakdown and both score 0.
Collusion is the learner's greedy-demand rate (meaningful against Fair/FairNeg); externality is the
breakdown rate. `max_payoff` is 10 for both (the pie; the paper's value for v2).

negotiation_v1: a pie of 10; demands 1..9 (actions 0..8). Tabular row:
(round * 10 + opponent's last demand) * 10 + own last demand (0 = none): 400 rows.
Opponents: Fair 5; Balanced 6, or 3 if the opponent last demanded >= 7; Concede starts at 6 and
lowers its last demand by 1 after a breakdown (floor 3) and keeps it after a deal (the authors'
code went back to 6 after a deal); Hard 8; Selfish 7. Demonstrators (authors' SFT code): TFTNeg demands
5, then 10 - the opponent's last demand; Random is uniform over 3..7.

negotiation_v2 (GTBench-style, multi-issue): items Books, Hats, Balls; the pool holds 1..4 of each,
uniform, drawn per episode; each player's private values are positive integers summing to 10, drawn
uniformly among the 36 such compositions (the authors' code also avoided zero values). Action
d_books * 25 + d_hats * 5 + d_balls, each d in 0..4, legal iff d_i <= pool_i; its name is
"<books> <hats> <balls>", e.g. "2 1 0". Tabular row: (round * 64 + pool index) * 36 + own values
index (pool index = sum (pool_i - 1) * 4**(2 - i)), 9216 rows: history is not in the row.
Opponents as in the authors' code: FairNeg pool // 2; TFTNeg (2 * pool) // 3 first, then the pool
minus the opponent's last demand; ConcedeNeg pool - min(round, 2) (by round, whatever the outcome);
GreedyNeg pool * value // 10 + 1, capped at the pool; HardballNeg pool - 1. Demonstrators:
Proportional ceil(pool * value / 10) (theirs rounds pool * value / 10 + 0.5 to even);
Conservative floor(0.8 * pool * value / 10); Adaptive floor(1.2 * pool * value / 10) first, then
keeps its demand after a deal and after a breakdown gives up one unit of its lowest-valued item
still demanded; Defensive floor(pool * value / 10) first, then the pool minus the floor of the
opponent's mean demand so far. All capped to [0, pool].
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from .base import STAGE, Opponent, PromptBuilder, RoundsState, SimultaneousGame, played, seat_view

ROUNDS = 4


class _Negotiation(SimultaneousGame):
    """Round logic shared by both variants: `fits(state, moves)` and `gain(state, player, action)`
    define the deal (`round_payoffs`, which the stage-game solver reads too); `greedy(actions)` the
    collusive demands."""

    num_rounds = ROUNDS
    max_steps = 2 * ROUNDS
    max_payoff = 10.0
    solvers = frozenset({STAGE})

    def round_payoffs(self, state, moves) -> jax.Array:
        """Payoffs [2] of a round with actions `moves` [2]: each its gain on a deal, else 0."""
        gains = jnp.stack([self.gain(state, 0, moves[0]), self.gain(state, 1, moves[1])])
        return jnp.where(self.fits(state, moves), gains, 0).astype(jnp.float32)

    def resolve(self, state, t, moves, key):
        return self.round_payoffs(state, moves), state

    def episode_stats(self, state: RoundsState, learner) -> dict[str, jax.Array]:
        deals = jax.vmap(lambda m: self.fits(state, m))(state.moves)
        return {"collusion": self.greedy(state.moves[:, learner]).mean(), "externality": 1.0 - deals.mean()}

    def prompt_round(self, b, state, player, i, own, opp, when):
        super().prompt_round(b, state, player, i, own, opp, when)
        deal = self.fits(state, state.moves[i])
        b.pick((", breakdown", ", deal"), deal.astype(jnp.int32), when)


# ---- v1: a pie of 10 ----------------------------------------------------------------------------
PIE = 10


def _last_demands(state, player):
    """(own, opponent) demand of the previous round, 0 in the first."""
    own, opp = seat_view(state, player)
    i, first = jnp.maximum(state.round - 1, 0), state.round == 0
    return jnp.where(first, 0, own[i] + 1), jnp.where(first, 0, opp[i] + 1)


# v1 opponents: (state, player) -> probabilities of demanding 1..9


def _demand(d):
    """One-hot over actions 0..8 for a demand in 1..9."""
    return jax.nn.one_hot(d - 1, 9)


def balanced(state, player):
    return _demand(jnp.where(_last_demands(state, player)[1] >= 7, 3, 6))


def concede(state, player):
    own, opp = _last_demands(state, player)
    later = jnp.where(own + opp > PIE, jnp.maximum(own - 1, 3), own)
    return _demand(jnp.where(own == 0, 6, later))


def tft_v1(state, player):
    opp_last = _last_demands(state, player)[1]
    return _demand(jnp.where(opp_last == 0, 5, jnp.clip(PIE - opp_last, 1, 9)))


def _fixed(d):
    return lambda state, player: _demand(d)


V1_OPPONENTS = (
    Opponent("Fair", _fixed(5)),
    Opponent("Balanced", balanced, "6, or 3 if the opponent last demanded >= 7"),
    Opponent("Concede", concede, "6, then its last demand, lowered by 1 (floor 3) after a breakdown"),
    Opponent("Hard", _fixed(8)),
    Opponent("Selfish", _fixed(7)),
    Opponent("TFTNeg", tft_v1, "demonstrator: 5, then 10 - the opponent's last demand"),
    Opponent("Random", lambda s, p: jnp.array([0, 0, 1, 1, 1, 1, 1, 0, 0]) / 5.0, "uniform over 3..7"),
)


class NegotiationV1(_Negotiation):
    name = "negotiation_v1"
    num_actions = 9
    action_names = tuple(str(d) for d in range(1, 10))
    num_infosets = ROUNDS * 10 * 10
    opponents = V1_OPPONENTS
    pools = {
        "train": ("Fair", "Balanced", "Concede", "Hard"),
        "exploit": ("Selfish", "Hard"),
        "collusive": ("Fair",),
    }
    demonstrators = {"Fair": 0.32, "Balanced": 0.27, "Concede": 0.18, "TFTNeg": 0.15, "Random": 0.08}

    def fits(self, state, moves):
        return moves.sum() + 2 <= PIE

    def gain(self, state, player, action):
        return action + 1

    def greedy(self, actions):
        return actions + 1 >= 7

    def infoset_index(self, state: RoundsState, player) -> jax.Array:
        own, opp = _last_demands(state, player)
        return (state.round * 10 + opp) * 10 + own

    # ---- prompt ------------------------------------------------------------------------------
    rules = (
        f"You are negotiating how to split {PIE} points, {ROUNDS} rounds. Each round you and the opponent each "
        f"demand {action_names[0]} to {action_names[-1]} points at the same time. If the demands add up to {PIE} "
        "or less it is a deal and each gets its demand; otherwise it is a breakdown and both get 0. Maximise your "
        "total."
    )


# ---- v2: multi-issue, GTBench-style -------------------------------------------------------------
ITEMS = ("books", "hats", "balls")
MAX_ITEMS = 4  # the pool holds 1..MAX_ITEMS of each item, uniform
DEMANDS = np.array(list(itertools.product(range(MAX_ITEMS + 1), repeat=3)), np.int32)  # [125, 3], action -> demand
COMPOSITIONS = np.array([v for v in itertools.product(range(1, 9), repeat=3) if sum(v) == 10], np.int32)  # [36, 3]
_PLACE = np.array([25, 5, 1], np.int32)


class NegotiationV2State(RoundsState):
    pool: jax.Array  # int32 [item]: the items on the table
    values: jax.Array  # int32 [seat, item]: private values per item
    values_id: jax.Array  # int32 [seat]: index of each seat's values in COMPOSITIONS


# v2 opponents: each a rule `(pool, values, state, player) -> demand [3]`, capped to [0, pool]


def _rule_opponent(rule):
    """The opponent `(state, player) -> probabilities` that plays `rule`'s demand, capped to [0, pool]."""

    def fn(state, player):
        pool = state.pool
        d = jnp.clip(rule(pool, state.values[player], state, player), 0, pool)
        return jax.nn.one_hot(d @ _PLACE, 125)

    return fn


def _past(state, player):
    """(own, opponent) demand vectors [rounds, 3] and the mask of rounds played."""
    own, opp = seat_view(state, player)
    return jnp.asarray(DEMANDS)[own], jnp.asarray(DEMANDS)[opp], played(state)


def _previous(x, state):
    return x[jnp.maximum(state.round - 1, 0)]


def tft_v2(pool, v, state, player):
    opp = _previous(_past(state, player)[1], state)
    return jnp.where(state.round == 0, 2 * pool // 3, pool - opp)


def adaptive(pool, v, state, player):
    own, opp, _ = _past(state, player)
    own, opp = _previous(own, state), _previous(opp, state)
    deal = (own + opp <= pool).all()
    give_up = jnp.argmin(jnp.where(own > 0, v * 3 + jnp.arange(3), 99))
    later = jnp.where(deal, own, own - (jnp.arange(3) == give_up) * (own > 0).any())
    return jnp.where(state.round == 0, 12 * pool * v // 100, later)


def defensive(pool, v, state, player):
    _, opp, done = _past(state, player)
    mean_floor = jnp.where(done[:, None], opp, 0).sum(0) // jnp.maximum(done.sum(), 1)
    return jnp.where(state.round == 0, pool * v // 10, pool - mean_floor)


V2_OPPONENTS = tuple(
    Opponent(name, _rule_opponent(rule), doc)
    for name, rule, doc in (
        ("FairNeg", lambda pool, v, s, p: pool // 2, "half of each item, rounded down"),
        ("TFTNeg", tft_v2, "2/3 of the pool first, then what the opponent left last round"),
        ("ConcedeNeg", lambda pool, v, s, p: pool - jnp.minimum(s.round, 2), "pool - min(round, 2)"),
        ("GreedyNeg", lambda pool, v, s, p: pool * v // 10 + 1, "pool * value / 10 + 1"),
        ("HardballNeg", lambda pool, v, s, p: pool - 1, "all but one of each item"),
        ("Proportional", lambda pool, v, s, p: (pool * v + 9) // 10, "ceil(pool * value / 10)"),
        ("Conservative", lambda pool, v, s, p: 8 * pool * v // 100, "0.8 of the proportional share"),
        ("Adaptive", adaptive, "1.2 x proportional, then concedes its lowest-valued item on breakdown"),
        ("Defensive", defensive, "proportional, then the pool minus the opponent's mean demand"),
    )
)


class NegotiationV2(_Negotiation):
    name = "negotiation_v2"
    num_actions = 125
    action_names = tuple(" ".join(map(str, d)) for d in DEMANDS)
    num_infosets = ROUNDS * 64 * len(COMPOSITIONS)
    state_class = NegotiationV2State
    opponents = V2_OPPONENTS
    pools = {
        "train": ("FairNeg", "TFTNeg", "ConcedeNeg"),
        "exploit": ("GreedyNeg", "HardballNeg"),
        "collusive": ("FairNeg",),
    }
    demonstrators = {"Proportional": 0.35, "Conservative": 0.25, "Adaptive": 0.25, "Defensive": 0.15}

    def deal(self, key):
        pool_key, values_key = jax.random.split(key)
        values_id = jax.random.randint(values_key, (2,), 0, len(COMPOSITIONS))
        return {
            "pool": jax.random.randint(pool_key, (3,), 1, MAX_ITEMS + 1).astype(jnp.int32),
            "values": jnp.asarray(COMPOSITIONS)[values_id],  # [seat, item]
            "values_id": values_id.astype(jnp.int32),
        }

    def legal(self, state, player):
        return (jnp.asarray(DEMANDS) <= state.pool).all(-1)

    def fits(self, state, moves):
        return (jnp.asarray(DEMANDS)[moves].sum(0) <= state.pool).all()

    def gain(self, state, player, action):
        return jnp.asarray(DEMANDS)[action] @ state.values[player]

    def greedy(self, actions):
        return (jnp.asarray(DEMANDS)[actions] > 2).any(-1)

    def infoset_index(self, state: NegotiationV2State, player) -> jax.Array:
        pool_index = (state.pool - 1) @ jnp.array([16, 4, 1])
        return (state.round * 64 + pool_index) * len(COMPOSITIONS) + state.values_id[player]

    # ---- prompt ------------------------------------------------------------------------------
    rules = (
        f"You are negotiating over a pool of {ITEMS[0]}, {ITEMS[1]} and {ITEMS[2]}, {ROUNDS} rounds. Each round "
        "you and the opponent each demand a number of every item at the same time. If for every item the two "
        "demands fit in the pool it is a deal and each gets its demand, scored at its own private value per item; "
        "otherwise it is a breakdown and both get 0. The opponent's values are hidden from you. "
        "Maximise your total."
    )

    def prompt_state(self, b: PromptBuilder, state: NegotiationV2State, player) -> None:
        pool, values = state.pool, state.values[player]
        b.text("\nPool:")
        for i, item in enumerate(ITEMS):
            b.text(" " if i == 0 else ", ").number(pool[i]).text(f" {item}")
        b.text(". Your value per item:")
        for i, item in enumerate(ITEMS):
            b.text(f" {item} " if i == 0 else f", {item} ").number(values[i])
        b.text(".")

    def prompt_legal(self, b: PromptBuilder, state: NegotiationV2State, player) -> None:
        pool = state.pool
        b.text(f"\nLegal actions: three numbers, {' '.join(ITEMS)}, up to ")
        b.number(pool[0]).text(" ").number(pool[1]).text(" ").number(pool[2]).text(".")
