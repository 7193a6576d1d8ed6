"""Prompt token ids on device: a game's `Prompt` slots -> a fixed, left-padded id buffer.

Every text piece a game's template can show is tokenized once on the host; under `jit` a prompt is
assembled by gathering the pieces' ids into a buffer whose length is the exact upper bound of the
template (the sum over slots of the longest piece the slot can show), so nothing is ever cut.
Pieces are tokenized separately, so the ids decode to exactly `render_text` of the same state.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import jax
import jax.numpy as jnp

from .base import Game, Prompt, State


class TextTokenizer(Protocol):
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def prompt_structure(game: Game) -> tuple[tuple[str, ...], ...]:
    """The static slot groups of `game.prompt` (traced abstractly, no compute)."""
    state = jax.eval_shape(game.init, jax.random.key(0))
    return jax.eval_shape(lambda s: game.prompt(s, jnp.int32(0)), state).groups


def render_text(game: Game, state: State, player: int | None = None) -> str:
    """The prompt of `player` (default: the player to move) as text, on the host."""
    player = int(state.current_player) if player is None else player
    prompt = jax.device_get(game.prompt(state, jnp.int32(max(player, 0))))
    return "".join(g[int(v)] for g, v in zip(prompt.groups, prompt.values) if v >= 0)


class PromptRenderer:
    """Turns `Prompt`s of one game into token ids for one tokenizer.

    `wrap` = (prefix, suffix) texts around every prompt, e.g. a chat template's user turn.
    `ids(prompt)` -> (ids [length], mask [length]) left-padded with `tokenizer.pad_id`.
    `action_ids` [num_actions, action_len] / `action_len` [num_actions]: each action's token
    sequence (" " + action name) as it follows the prompt.
    """

    def __init__(self, game: Game, tokenizer: TextTokenizer, wrap: tuple[str, str] = ("", "")):
        groups = list(prompt_structure(game))
        self.num_template_slots = len(groups)
        groups = [(wrap[0],)] + groups + [(wrap[1],)]
        pieces = sorted({t for g in groups for t in g})
        encoded = {t: tokenizer.encode(t) for t in pieces}
        for t, ids in encoded.items():
            if t and not ids:
                raise ValueError(f"{game.name}: tokenizer encodes prompt piece {t!r} to no tokens")
        index = {t: i for i, t in enumerate(pieces)}
        width = max(len(g) for g in groups)
        self._slot_piece = jnp.asarray([[index[t] for t in g] + [0] * (width - len(g)) for g in groups], jnp.int32)
        self._piece_len = jnp.asarray([len(encoded[t]) for t in pieces], jnp.int32)
        max_piece = max(1, int(self._piece_len.max()))
        self._piece_ids = jnp.asarray(
            [encoded[t] + [tokenizer.pad_id] * (max_piece - len(encoded[t])) for t in pieces], jnp.int32
        )
        self.length = int(sum(max(len(encoded[t]) for t in g) for g in groups))
        self.pad_id = tokenizer.pad_id
        actions = []
        for name in game.action_names:
            ids = tokenizer.encode(" " + name)
            if not ids or tokenizer.decode(ids) != " " + name:
                raise ValueError(f"{game.name}: tokenizer cannot encode action {name!r} exactly (got {ids})")
            actions.append(ids)
        self.action_width = max(len(a) for a in actions)
        self.action_ids = jnp.asarray([a + [tokenizer.pad_id] * (self.action_width - len(a)) for a in actions], jnp.int32)
        self.action_len = jnp.asarray([len(a) for a in actions], jnp.int32)

    def ids(self, prompt: Prompt) -> tuple[jax.Array, jax.Array]:
        if len(prompt.groups) != self.num_template_slots:
            raise ValueError("prompt does not come from the game this renderer was built for")
        values = jnp.concatenate([jnp.zeros(1, jnp.int32), prompt.values, jnp.zeros(1, jnp.int32)])
        piece = self._slot_piece[jnp.arange(values.shape[0]), jnp.maximum(values, 0)]
        lens = jnp.where(values >= 0, self._piece_len[piece], 0)
        ends = jnp.cumsum(lens)
        q = jnp.arange(self.length) - (self.length - ends[-1])  # position within the content
        slot = jnp.clip(jnp.searchsorted(ends, q, side="right"), 0, values.shape[0] - 1)
        j = q - (ends[slot] - lens[slot])
        tok = self._piece_ids[piece[slot], jnp.clip(j, 0, self._piece_ids.shape[1] - 1)]
        mask = q >= 0
        return jnp.where(mask, tok, self.pad_id), mask

    def render(self, game: Game, state: State, player) -> tuple[jax.Array, jax.Array]:
        return self.ids(game.prompt(state, player))
