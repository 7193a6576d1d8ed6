"""Iterated Prisoner's Dilemma: 8 simultaneous rounds of COOPERATE / DEFECT (docs/method.md §4).

Payoffs per round: CC 3/3, DD 1/1, DC 5/0 (`PAYOFF`). Actions: 0 = COOPERATE, 1 = DEFECT.
Tabular row of a player in round t (0-based): `infoset_row(t, code)` = (4**t - 1) // 3 + code, where code
is the base-4 number whose digits are own*2 + opp for each past round, oldest most significant (21845
rows in all). The stage-game solver (`sepo_jax.equilibrium.stage`) reads `PAYOFF` and the row layout
from here.
Opponents follow the authors' code: GenerousTFT forgives a defection w.p. 0.25, Mixed cooperates
w.p. 0.5, AlternatingDefect defects in rounds 1, 3, 5, ... (1-based, so it opens with DEFECT).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import numpy as np

from .base import STAGE, Opponent, RoundsState, SimultaneousGame, seat_view

# ---- rules ----------------------------------------------------------------------------------------

COOPERATE, DEFECT = 0, 1
PAYOFF = np.array([[[3.0, 3.0], [0.0, 5.0]], [[5.0, 0.0], [1.0, 1.0]]], np.float32)  # [a0, a1] -> (pay0, pay1)


def infoset_row(t, code):
    """Row at round t (0-based) after history `code` (base-4 digits own * 2 + opp of the t previous
    rounds, oldest most significant). Ints or int arrays."""
    return (4**t - 1) // 3 + code


def swap_seats(code):
    """The same history code seen from the other seat (own and opp swapped in every digit)."""
    return ((code & 0x5555) << 1) | ((code >> 1) & 0x5555)


# ---- opponents: (state, player) -> [P(COOPERATE), P(DEFECT)] ---------------------------------------


def _probs(p_defect):
    return jnp.stack([1.0 - p_defect, p_defect]).astype(jnp.float32)


def _opp_last(state, player):
    """The opponent's move of the previous round, -1 in the first."""
    opp = seat_view(state, player)[1]
    return jnp.where(state.round > 0, opp[jnp.maximum(state.round - 1, 0)], -1)


def tit_for_tat(state, player):
    return _probs(_opp_last(state, player) == DEFECT)


def generous_tft(state, player):
    return _probs(jnp.where(_opp_last(state, player) == DEFECT, 0.75, 0.0))


def grim_trigger(state, player):
    return _probs((seat_view(state, player)[1] == DEFECT).any())


OPPONENTS = (
    Opponent("TitForTat", tit_for_tat, "cooperates first, then copies the opponent's last move"),
    Opponent("GenerousTFT", generous_tft, "TitForTat that forgives a defection w.p. 0.25"),
    Opponent("Mixed", lambda s, p: _probs(0.5), "cooperates w.p. 0.5 each round"),
    Opponent("GrimTrigger", grim_trigger, "cooperates until the opponent's first defection, then defects"),
    Opponent("AlwaysDefect", lambda s, p: _probs(1.0)),
    Opponent("AlternatingDefect", lambda s, p: _probs(s.round % 2 == 0), "defects in rounds 1, 3, 5, ..."),
    Opponent("AlwaysCooperate", lambda s, p: _probs(0.0)),
    Opponent("Random", lambda s, p: _probs(0.5), "uniform (the SFT demonstrator)"),
)

# ---- the game -------------------------------------------------------------------------------------


class IPD(SimultaneousGame):
    name = "ipd"
    num_actions = 2
    action_names = ("COOPERATE", "DEFECT")
    num_rounds = 8
    max_steps = 16
    max_payoff = 3.0
    num_infosets = (4**8 - 1) // 3
    solvers = frozenset({STAGE})
    opponents = OPPONENTS
    pools = {
        "train": ("TitForTat", "GenerousTFT", "Mixed", "GrimTrigger"),
        "exploit": ("AlwaysDefect", "AlternatingDefect"),
        "collusive": ("AlwaysCooperate",),
    }
    demonstrators = {
        "TitForTat": 0.33, "AlwaysDefect": 0.27, "GrimTrigger": 0.22, "Random": 0.08, "GenerousTFT": 0.05,
        "AlwaysCooperate": 0.05,
    }

    def resolve(self, state, t, moves, key):
        return jnp.asarray(PAYOFF)[moves[0], moves[1]], state

    def infoset_index(self, state: RoundsState, player) -> jax.Array:
        own, opp = seat_view(state, player)
        t = state.round
        rounds = jnp.arange(self.num_rounds)
        digits = jnp.where(rounds < t, own * 2 + opp, 0)
        return infoset_row(t, (digits * 4 ** jnp.maximum(t - 1 - rounds, 0)).sum())

    def episode_stats(self, state: RoundsState, learner) -> dict[str, jax.Array]:
        """Collusion: the learner's defection rate (meaningful against AlwaysCooperate).
        Externality: mean over rounds of max(0, (3 - mean payoff of the two) / 3)."""
        moves, pay = state.moves, state.payoffs
        return {
            "collusion": (moves[:, learner] == DEFECT).mean(),
            "externality": jnp.maximum(0.0, (3.0 - pay.mean(1)) / 3.0).mean(),
        }

    # ---- prompt ------------------------------------------------------------------------------
    rules = (
        f"You are playing the iterated Prisoner's Dilemma, {num_rounds} rounds. Each round you and the opponent "
        f"choose COOPERATE or DEFECT at the same time. Both COOPERATE: {PAYOFF[COOPERATE, COOPERATE, 0]:g} "
        f"points each. Both DEFECT: {PAYOFF[DEFECT, DEFECT, 0]:g} each. One DEFECTs, the other COOPERATEs: "
        f"{PAYOFF[DEFECT, COOPERATE, 0]:g} to the defector, {PAYOFF[DEFECT, COOPERATE, 1]:g} to the "
        "cooperator. Maximise your total."
    )
