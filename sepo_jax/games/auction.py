"""Repeated sealed-bid auction: 6 simultaneous rounds (docs/method.md §4, §4b).

Each round each player draws a private value in {2, 4} (uniform, independent; all drawn at `init`,
each player only ever sees its own current and past values) and bids LOW = 1, MEDIUM = 2 or HIGH = 3
(actions 0, 1, 2). The higher bid wins and earns value - bid, the loser 0; a tie goes to either
player w.p. 1/2, drawn from the step key. As docs/method.md states it, a win above value costs value - bid
(-1 for HIGH at value 2); the authors' code clamped that at 0.
Tabular row: (round * 2 + value_index) * 4 + opponent's last bid (0 = none, else 1..3): 48 rows.
`round_payoffs` is the stage rule the game and the stage-game solver (`sepo_jax.equilibrium.stage`)
both use.

Opponents, each with its own private values. The authors' code made Conservative, Shaded and
CollusiveLow all "always LOW" and let Truthful ignore its value; here each is what its name says:
  Truthful      bids value / 2: LOW at 2, MEDIUM at 4 (the authors' intent; = the ValueBid demonstrator)
  Conservative  always LOW
  Shaded        bids value - 1: LOW at 2, HIGH at 4 (= the AggressiveValue demonstrator)
  Adaptive      MEDIUM first, then one above the opponent's last bid, capped at HIGH (value ignored)
  AggressiveBid always HIGH;  CollusiveLow always LOW
Demonstrators (docs/method.md §2) as in the authors' SFT code: ValueBid, AggressiveValue, AdaptiveValue
(their "Adaptive": value bid in round 1, then LOW at value 2, and at value 4 HIGH if the opponent's
mean bid so far is >= 2.5, else MEDIUM), Random (uniform).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import STAGE, Opponent, PromptBuilder, RoundsState, SimultaneousGame, played, seat_view

# ---- rules ----------------------------------------------------------------------------------------

LOW, MEDIUM, HIGH = 0, 1, 2
VALUES = (2, 4)  # private values, each drawn uniformly, independently per seat and round
BIDS = (1, 2, 3)  # the bid of each action


class AuctionState(RoundsState):
    values: jax.Array  # int32 [round, seat]: private values
    winner: jax.Array  # int32 [round]: who won each round (-1 before it resolves)


def round_payoffs(values, moves, coin):
    """(winner, payoffs [2]) of one round: seat values [2], actions [2], `coin` the seat a tie goes to."""
    winner = jnp.where(moves[0] > moves[1], 0, jnp.where(moves[1] > moves[0], 1, coin))
    profit = values[winner] - jnp.asarray(BIDS)[moves[winner]]
    return winner, jnp.zeros(2).at[winner].set(profit.astype(jnp.float32))


def _opp_last_bid(state, player):
    """The opponent's bid (1..3) in the previous round, 0 in the first."""
    opp = seat_view(state, player)[1]
    return jnp.where(state.round > 0, opp[jnp.maximum(state.round - 1, 0)] + 1, 0)


# ---- opponents: (state, player) -> probabilities of LOW, MEDIUM, HIGH ------------------------------


def _bid(action):
    return jax.nn.one_hot(action, 3)


def _value(state, player):
    return state.values[state.round, player]


def truthful(state, player):
    return _bid(_value(state, player) // 2 - 1)


def shaded(state, player):
    return _bid(_value(state, player) - 2)


def adaptive(state, player):
    last = _opp_last_bid(state, player)
    return _bid(jnp.where(last == 0, MEDIUM, jnp.minimum(last, HIGH)))


def adaptive_value(state, player):
    opp, done = seat_view(state, player)[1], played(state)
    mean_bid = jnp.where(done, opp + 1, 0).sum() / jnp.maximum(done.sum(), 1)
    high = _value(state, player) == 4
    later = jnp.where(high, jnp.where(mean_bid >= 2.5, HIGH, MEDIUM), LOW)
    return jnp.where(state.round == 0, truthful(state, player), _bid(later))


def _always(action):
    return lambda state, player: _bid(action)


OPPONENTS = (
    Opponent("Truthful", truthful, "bids value / 2"),
    Opponent("Conservative", _always(LOW)),
    Opponent("Shaded", shaded, "bids value - 1"),
    Opponent("Adaptive", adaptive, "MEDIUM first, then one above the opponent's last bid"),
    Opponent("AggressiveBid", _always(HIGH)),
    Opponent("CollusiveLow", _always(LOW)),
    Opponent("ValueBid", truthful, "demonstrator: LOW at value 2, MEDIUM at 4"),
    Opponent("AggressiveValue", shaded, "demonstrator: LOW at value 2, HIGH at 4"),
    Opponent("AdaptiveValue", adaptive_value, "demonstrator: value bid, HIGH at 4 against high bidders"),
    Opponent("Random", lambda s, p: jnp.full(3, 1 / 3), "uniform"),
)

# ---- the game -------------------------------------------------------------------------------------


class Auction(SimultaneousGame):
    name = "auction"
    num_actions = 3
    action_names = ("LOW", "MEDIUM", "HIGH")
    num_rounds = 6
    max_steps = 12
    max_payoff = 3.0
    num_infosets = 6 * 2 * 4
    solvers = frozenset({STAGE})
    state_class = AuctionState
    opponents = OPPONENTS
    pools = {
        "train": ("Truthful", "Conservative", "Shaded", "Adaptive"),
        "exploit": ("AggressiveBid",),
        "collusive": ("CollusiveLow",),
    }
    demonstrators = {"ValueBid": 0.44, "AggressiveValue": 0.28, "AdaptiveValue": 0.20, "Random": 0.08}

    def deal(self, key):
        values = jnp.asarray(VALUES)[jax.random.bernoulli(key, 0.5, (self.num_rounds, 2)).astype(jnp.int32)]
        return {"values": values.astype(jnp.int32), "winner": jnp.full(self.num_rounds, -1, jnp.int32)}

    def resolve(self, state, t, moves, key):
        winner, pay = round_payoffs(state.values[t], moves, jax.random.bernoulli(key).astype(jnp.int32))
        return pay, state.replace(winner=state.winner.at[t].set(winner))

    def infoset_index(self, state: AuctionState, player) -> jax.Array:
        value_index = (state.values[state.round, player] == VALUES[1]).astype(jnp.int32)
        return (state.round * 2 + value_index) * 4 + _opp_last_bid(state, player)

    def episode_stats(self, state: AuctionState, learner) -> dict[str, jax.Array]:
        """Collusion: the learner's LOW-bid rate (meaningful against CollusiveLow).
        Externality: share of rounds the learner won with bid >= its value (a win earning nothing)."""
        bid = jnp.asarray(BIDS)[state.moves[:, learner]]
        wasted = (state.winner == learner) & (bid >= state.values[:, learner])
        return {"collusion": (bid == BIDS[LOW]).mean(), "externality": wasted.mean()}

    # ---- prompt ------------------------------------------------------------------------------
    rules = (
        f"You are playing a repeated sealed-bid auction, {num_rounds} rounds. Each round you and the opponent "
        f"each get a private value for the item, {VALUES[0]} or {VALUES[1]} points, and bid at the same time: "
        f"{action_names[LOW]} ({BIDS[LOW]}), {action_names[MEDIUM]} ({BIDS[MEDIUM]}) or "
        f"{action_names[HIGH]} ({BIDS[HIGH]}). The higher bid wins the item and scores value minus bid; the "
        "loser scores 0. Ties are settled by a coin flip. Maximise your total."
    )

    def prompt_state(self, b: PromptBuilder, state: AuctionState, player) -> None:
        b.text("\nYour value this round: ").number(state.values[state.round, player]).text(".")

    def prompt_round(self, b, state, player, i, own, opp, when):
        b.text("your value ", when).number(state.values[i, player], when).text(", ", when)
        super().prompt_round(b, state, player, i, own, opp, when)
