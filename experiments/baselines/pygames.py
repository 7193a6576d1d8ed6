"""The baselines' Python games (`pykuhn`, `pyipd`) behind one face, so one PyTorch loop
(`torch_grpo.py`) and one TRL run (`trl_grpo.py`) serve every game.

An episode object has `done`, `player` (the seat to move), `round` (the round / hand a decision is
credited to), `step(action)`, `prompt(seat)` (our prompt as text), `payoffs` ([round][seat]),
`collusion(seat)` and `externality()` (`episode_stats` of ours).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any, Callable

from sepo_jax.games.ipd import IPD
from sepo_jax.games.kuhn import Kuhn

from . import pyipd, pykuhn


@dataclasses.dataclass(frozen=True)
class PyGame:
    name: str
    new_episode: Callable[[random.Random], Any]
    opponent_action: Callable[[str, Any, random.Random], int]  # (opponent name, episode, rng) -> action
    action_names: tuple[str, ...]
    num_rounds: int
    train_opponents: tuple[str, ...]
    max_payoff: float  # per round: SEPO's scale is 3 / max_payoff


def kuhn(num_hands: int = 6, compact: bool = True) -> PyGame:
    return PyGame("kuhn", functools.partial(pykuhn.Episode, num_hands=num_hands, compact=compact),
                  pykuhn.opponent_action, pykuhn.ACTION_NAMES, num_hands, Kuhn.pools["train"], Kuhn().max_payoff)


def ipd() -> PyGame:
    return PyGame("ipd", pyipd.Episode, pyipd.opponent_action, pyipd.ACTION_NAMES, pyipd.NUM_ROUNDS, IPD.pools["train"],
                  IPD.max_payoff)


def make(game) -> PyGame:
    """The Python twin of our game object `game` (Kuhn with its hands and prompt form, or IPD)."""
    if game.name == "kuhn":
        return kuhn(game.num_rounds, game.compact_prompt)
    if game.name == "ipd":
        return ipd()
    raise ValueError(f"no Python baseline for game {game.name!r}")


def prompt_texts(game):
    """`text(state, seat)`: our prompt of `seat` as text, its slot values computed by one jitted call."""
    import jax

    from sepo_jax import games

    groups = games.prompt_structure(game)
    values = jax.jit(lambda s, p: game.prompt(s, p).values)

    def text(state, seat: int) -> str:
        return "".join(g[v] for g, v in zip(groups, jax.device_get(values(state, seat))) if v >= 0)

    return text
