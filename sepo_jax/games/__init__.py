"""The games: `make(name)` returns a `Game` (see `base.py` for the protocol); `to_pgx(name)` the same
game behind Pgx's environment API; `has_exact_solver(name)` whether `sepo_jax.equilibrium` builds an
exact game tree for it."""

from __future__ import annotations

from .base import STAGE, TREE, Game, Opponent, Prompt, PromptBuilder, State
from . import play as play_lib
from .play import opponents_policy, play, play_batch
from .prompts import ChatRenderer, PromptRenderer, prompt_structure, render_text


def _registry():
    from .auction import Auction
    from .ipd import IPD
    from .kuhn import Kuhn
    from .leduc import Leduc
    from .negotiation import NegotiationV1, NegotiationV2

    return {
        "kuhn": Kuhn, "leduc": Leduc, "ipd": IPD, "auction": Auction,
        "negotiation_v1": NegotiationV1, "negotiation_v2": NegotiationV2,
    }


GAMES = ("kuhn", "leduc", "ipd", "auction", "negotiation_v1", "negotiation_v2")


def make(name: str, **kwargs) -> Game:
    """The game called `name` (one of `GAMES`); kwargs go to its constructor (e.g. num_hands)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown game {name!r}; known games: {', '.join(GAMES)}")
    return registry[name](**kwargs)


def to_pgx(name: str, **kwargs):
    """Game `name` behind Pgx's environment API (`pgx.Env`: `init(key)`, `step(state, action, key)`,
    `id`, `num_players`, `num_actions`), jit- and vmap-safe; kwargs go to the game (see `pgx_face.py`)."""
    from .pgx_face import PgxEnv  # imports pgx

    return PgxEnv(make(name, **kwargs))


def has_exact_solver(name: str) -> bool:
    """Whether game `name` declares an exact game tree (Kuhn, Leduc): exact best responses, NashConv,
    the `exact` credit mode and the CFR+ expert."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown game {name!r}; known games: {', '.join(GAMES)}")
    return TREE in registry[name].solvers


def template_texts() -> list[str]:
    """Every text piece any game's prompt can show, plus the action texts: the embedded
    tokenizer's vocabulary source. Deterministic order."""
    texts: set[str] = set()
    for name in _registry():
        game = make(name)
        for group in prompt_structure(game):
            texts.update(group)
        texts.update(" " + a for a in game.action_names)
    return sorted(texts)


__all__ = [
    "GAMES", "STAGE", "TREE", "ChatRenderer", "Game", "has_exact_solver", "Opponent", "Prompt", "PromptBuilder", "PromptRenderer", "State", "make", "opponents_policy", "play_lib",
    "play", "play_batch", "prompt_structure", "render_text", "template_texts", "to_pgx",
]
