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
import numpy as np

from .base import INTRO, STATE, Game, Prompt, State


class TextTokenizer(Protocol):
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def _abstract_prompt(game: Game) -> Prompt:
    state = jax.eval_shape(game.init, jax.random.key(0))
    return jax.eval_shape(lambda s: game.prompt(s, jnp.int32(0)), state)


def prompt_structure(game: Game) -> tuple[tuple[str, ...], ...]:
    """The static slot groups of `game.prompt` (traced abstractly, no compute)."""
    return _abstract_prompt(game).groups


def render_text(game: Game, state: State, player: int | None = None) -> str:
    """The prompt of `player` (default: the player to move) as text, on the host."""
    player = int(state.current_player) if player is None else player
    prompt = jax.device_get(game.prompt(state, jnp.int32(max(player, 0))))
    return "".join(g[int(v)] for g, v in zip(prompt.groups, prompt.values) if v >= 0)


class _Pieces:
    """The token ids of every text a list of slot groups can show, and the assembly of a slot-value
    vector into a fixed, left-padded id buffer."""

    def __init__(self, game: Game, tokenizer: TextTokenizer, groups: Sequence[tuple[str, ...]]):
        pieces = sorted({t for g in groups for t in g})
        encoded = {t: tokenizer.encode(t) for t in pieces}
        for t, ids in encoded.items():
            if t and not ids:
                raise ValueError(f"{game.name}: tokenizer encodes prompt piece {t!r} to no tokens")
        index = {t: i for i, t in enumerate(pieces)}
        width = max(len(g) for g in groups)
        self.slot_piece = jnp.asarray([[index[t] for t in g] + [0] * (width - len(g)) for g in groups], jnp.int32)
        self.piece_len = jnp.asarray([len(encoded[t]) for t in pieces], jnp.int32)
        max_piece = max(1, int(self.piece_len.max()))
        self.piece_ids = jnp.asarray(
            [encoded[t] + [tokenizer.pad_id] * (max_piece - len(encoded[t])) for t in pieces], jnp.int32)
        self.slot_len = [max(len(encoded[t]) for t in g) for g in groups]  # the longest text of each slot
        self.pad_id = tokenizer.pad_id

    def lengths(self, values: jax.Array) -> jax.Array:
        """Tokens each slot shows [num_slots]."""
        piece = self.slot_piece[jnp.arange(values.shape[0]), jnp.maximum(values, 0)]
        return jnp.where(values >= 0, self.piece_len[piece], 0)

    def ids(self, values: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
        piece = self.slot_piece[jnp.arange(values.shape[0]), jnp.maximum(values, 0)]
        lens = self.lengths(values)
        ends = jnp.cumsum(lens)
        q = jnp.arange(length) - (length - ends[-1])  # position within the content
        slot = jnp.clip(jnp.searchsorted(ends, q, side="right"), 0, values.shape[0] - 1)
        j = q - (ends[slot] - lens[slot])
        tok = self.piece_ids[piece[slot], jnp.clip(j, 0, self.piece_ids.shape[1] - 1)]
        mask = q >= 0
        return jnp.where(mask, tok, self.pad_id), mask


class _Actions:
    """`action_ids` [num_actions, action_width] / `action_len` [num_actions]: each action's token sequence
    (" " + action name) as it follows the prompt, right-padded; checked to decode back exactly."""

    def __init__(self, game: Game, tokenizer: TextTokenizer):
        actions = []
        for name in game.action_names:
            ids = tokenizer.encode(" " + name)
            if not ids or tokenizer.decode(ids) != " " + name:
                raise ValueError(f"{game.name}: tokenizer cannot encode action {name!r} exactly (got {ids})")
            actions.append(ids)
        self.action_width = max(len(a) for a in actions)
        self.action_ids = jnp.asarray([a + [tokenizer.pad_id] * (self.action_width - len(a)) for a in actions], jnp.int32)
        self.action_len = jnp.asarray([len(a) for a in actions], jnp.int32)


class PromptRenderer(_Actions):
    """Turns `Prompt`s of one game into token ids for one tokenizer.

    `wrap` = (prefix, suffix) texts around every prompt, e.g. a chat template's user turn.
    `ids(prompt)` -> (ids [length], mask [length]) left-padded with `tokenizer.pad_id`.
    `action_ids` [num_actions, action_len] / `action_len` [num_actions]: each action's token
    sequence (" " + action name) as it follows the prompt.
    """

    def __init__(self, game: Game, tokenizer: TextTokenizer, wrap: tuple[str, str] = ("", "")):
        super().__init__(game, tokenizer)
        groups = list(prompt_structure(game))
        self.num_template_slots = len(groups)
        self._pieces = _Pieces(game, tokenizer, [(wrap[0],)] + groups + [(wrap[1],)])
        self.length = int(sum(self._pieces.slot_len))
        self.pad_id = tokenizer.pad_id

    def ids(self, prompt: Prompt) -> tuple[jax.Array, jax.Array]:
        if len(prompt.groups) != self.num_template_slots:
            raise ValueError("prompt does not come from the game this renderer was built for")
        values = jnp.concatenate([jnp.zeros(1, jnp.int32), prompt.values, jnp.zeros(1, jnp.int32)])
        return self._pieces.ids(values, self.length)

    def render(self, game: Game, state: State, player) -> tuple[jax.Array, jax.Array]:
        return self.ids(game.prompt(state, player))


class ChatRenderer(_Actions):
    """A game's prompts as one conversation per episode and seat (`prompt.format = "conversation"`).

    The first turn says the prompt's `INTRO` part (the rules), its history rows and its `STATE`
    part; every later turn starts with the action the player took last (the assistant's answer),
    then the chat template's turn separator, then only the history rows that appeared since, and the
    `STATE` part again. So at every decision the conversation holds the same facts as the restated
    prompt (each row said once, when it appears) and grows by one turn per decision instead of
    restating everything. `turns` = the tokenizer's `chat_turns()` (prefix, suffix, between).

    Static shapes: the first turn is `first_width` tokens, every later one `turn_width` (left
    padded), so the conversation of an episode is `length` tokens and decision d's prompt ends at
    `ends[d]`. A turn has room for `game.rows_per_turn` new history rows.
    """

    def __init__(self, game: Game, tokenizer: TextTokenizer, turns: tuple[str, str, str] = ("", "", "")):
        super().__init__(game, tokenizer)
        prompt = _abstract_prompt(game)
        prefix, suffix, between = turns
        self.game = game
        self.num_template_slots = len(prompt.groups)
        actions = tuple(" " + a for a in game.action_names)
        self._pieces = _Pieces(game, tokenizer, [actions, (prefix, between)] + list(prompt.groups) + [(suffix,)])
        parts = np.asarray(prompt.parts)
        self._intro = jnp.asarray(parts == INTRO)
        self._state = jnp.asarray(parts == STATE)
        self.num_rows = int(parts.max(initial=-1)) + 1
        self._row_of = jnp.asarray(np.maximum(parts, 0))
        self._is_row = jnp.asarray(parts >= 0)
        slot_len = np.asarray(self._pieces.slot_len[2:-1])
        rows = max((slot_len[parts == i].sum() for i in range(self.num_rows)), default=0)
        body = int(slot_len[parts == STATE].sum() + game.rows_per_turn * rows + self._pieces.slot_len[-1])
        self.first_width = len(tokenizer.encode(prefix)) + int(slot_len[parts == INTRO].sum()) + body
        self.turn_width = self._pieces.slot_len[0] + len(tokenizer.encode(between)) + body
        self.length = self.first_width + (game.max_decisions - 1) * self.turn_width
        self.ends = self.first_width - 1 + np.arange(game.max_decisions) * self.turn_width

    def start(self) -> jax.Array:
        """What a conversation has said before its first turn: no history row."""
        return jnp.zeros(self.num_rows, bool)

    def turn_values(self, state: State, player, said: jax.Array, last_action, first: bool):
        """(slot values of the turn [slots + 3], rows said after it)."""
        prompt = self.game.prompt(state, player)
        if len(prompt.groups) != self.num_template_slots:
            raise ValueError("prompt does not come from the game this renderer was built for")
        shown = prompt.values >= 0
        row_shown = jnp.zeros(max(self.num_rows, 1), bool).at[self._row_of].max(shown & self._is_row)[: self.num_rows]
        new_row = row_shown & ~said
        keep = self._state | (self._is_row & new_row[self._row_of] if self.num_rows else False)
        if first:
            keep = keep | self._intro
        values = jnp.where(keep, prompt.values, -1)
        head = jnp.stack([jnp.int32(-1) if first else jnp.asarray(last_action, jnp.int32), jnp.int32(0 if first else 1)])
        return jnp.concatenate([head, values, jnp.zeros(1, jnp.int32)]), said | row_shown

    def turn(self, state: State, player, said: jax.Array, last_action, first: bool):
        """(ids [width], mask [width], rows said after it) of `player`'s turn at `state`; `last_action`
        is the player's previous action (ignored in the first turn)."""
        values, said = self.turn_values(state, player, said, last_action, first)
        return (*self._pieces.ids(values, self.first_width if first else self.turn_width), said)

    def turn_length(self, values: jax.Array) -> jax.Array:
        """Tokens a turn's slot values need (must not exceed its width)."""
        return self._pieces.lengths(values).sum()
