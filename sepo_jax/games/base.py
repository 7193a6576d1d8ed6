"""The Game protocol: two-player games as pure functions over a typed state pytree.

Every game is sequential at the interface: a simultaneous-move round (IPD, auction, negotiation) is
played as player 0 then player 1, where player 1's information state does not contain player 0's
pending choice. One `step` applies the move of `state.current_player`; chance (card deals, private
values, tie breaks) is drawn from the key passed to `step`, so a state plus a key stream fixes an
episode. An episode is the paper's whole repeated game (6 Kuhn hands, 8 IPD rounds, ...).

A game is three layers, each a section of its module: the environment (its `State` subclass with
typed fields, `init`/`step`, `infoset_index`, `episode_stats`: the rules), its opponents and pools
(pure functions `(state, player) -> action probabilities`, selected per episode by an integer id with
`lax.switch`, so one batch mixes opponents; id `game.tabular_id` plays a behavioural strategy table
indexed by `game.infoset_index(state, player)`), and its prompt template (`prompt(state, player)`
returns a `Prompt` of slots, each a piece of text chosen from a static group;
`sepo_jax.games.prompts` turns that into token ids on device).

A game declares the exact solvers that read its rules in `solvers`: `TREE` (one hand enumerated into
a game tree from `init`/`step` by `sepo_jax.equilibrium.tree`; the game gives `one_hand()`, `deals()`
and `with_cards`) or `STAGE` (the stage-game best responses of `sepo_jax.equilibrium.stage`, which
read the game module's payoff rules). Games never import the solvers.

Kuhn keeps its own packed state class (for speed) with the same read interface as `State`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array
OpponentFn = Callable[[Any, Array], Array]  # (state, player) -> probs [num_actions]

POOLS = ("train", "exploit", "collusive", "shift")
TREE, STAGE = "tree", "stage"  # the exact solvers a game can declare in `Game.solvers`


class State(struct.PyTreeNode):
    """What every game's state carries; each game subclasses it with its own typed fields (the full
    information of both players)."""

    current_player: Array  # int32: whose move it is; -1 once terminated
    legal_action_mask: Array  # bool [num_actions] for the current player
    terminated: Array  # bool
    round: Array  # int32: index of the current round / hand
    payoffs: Array  # float32 [num_rounds, 2]: per-round payoffs of both players
    num_steps: Array  # int32: moves made so far in the episode
    illegal: Array  # int32: illegal moves attempted so far (each left the state unchanged)

    @property
    def returns(self) -> Array:
        return self.payoffs.sum(-2)

    @property
    def data(self) -> dict[str, Array]:
        """The game's own fields by name (a read-only view for code that serves every game)."""
        common = {f.name for f in dataclasses.fields(State)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in common}

    def with_illegal(self, count: Array) -> "State":
        return self.replace(illegal=count)

    @classmethod
    def start(cls, legal_action_mask: Array, num_rounds: int, **fields) -> "State":
        """The state before the first move: seat 0 to move, no payoffs yet; `fields` are the game's own."""
        return cls(
            current_player=jnp.int32(0),
            legal_action_mask=legal_action_mask,
            terminated=jnp.bool_(False),
            round=jnp.int32(0),
            payoffs=jnp.zeros((num_rounds, 2), jnp.float32),
            num_steps=jnp.int32(0),
            illegal=jnp.int32(0),
            **fields,
        )


@dataclasses.dataclass(frozen=True)
class Opponent:
    name: str
    fn: OpponentFn
    doc: str = ""


class Game:
    """Static description plus pure `init`/`step`. Subclasses fill the class attributes."""

    name: str
    num_actions: int
    action_names: tuple[str, ...]  # the fixed action vocabulary, index = action id
    num_rounds: int
    max_steps: int  # upper bound on moves of both players in one episode (static scan length)
    max_payoff: float  # per round, for SEPO's scale s = 3 / max_payoff
    num_infosets: int  # rows of a tabular strategy
    solvers: frozenset[str] = frozenset()  # exact solvers that read these rules: TREE, STAGE
    opponents: tuple[Opponent, ...]
    pools: Mapping[str, tuple[str, ...]]
    demonstrators: Mapping[str, float] = {}  # SFT expert mixture: opponent name -> weight
    rows_per_turn: int = 1  # history rows that can appear between two decisions of one seat (conversations)

    # ---- rules -------------------------------------------------------------------------------
    @property
    def max_decisions(self) -> int:
        """Upper bound on one seat's moves in an episode (moves alternate, or come in pairs)."""
        return self.max_steps // 2

    def init(self, key: Array) -> State:
        raise NotImplementedError

    @property
    def rules_key(self) -> tuple:
        """Hashable identity of the rules (what a solver's cache is keyed by)."""
        return (self.name,)

    def step(self, state: State, action: Array, key: Array) -> State:
        """Apply `action` of `state.current_player`. A no-op once terminated."""
        raise NotImplementedError

    def infoset_index(self, state: State, player: Array) -> Array:
        """Row of a tabular strategy for `player`'s current information state."""
        raise NotImplementedError

    def prompt(self, state: State, player: Array) -> "Prompt":
        raise NotImplementedError

    def episode_stats(self, state: State, learner: Array) -> dict[str, Array]:
        """Per-episode collusion and externality rates in [0, 1] of a finished episode, for the
        learner sitting in seat `learner` (its partner is the other seat)."""
        raise NotImplementedError

    # ---- opponents ---------------------------------------------------------------------------
    @property
    def opponent_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.opponents)

    @property
    def tabular_id(self) -> int:
        return len(self.opponents)

    def opponent_id(self, name: str) -> int:
        if name == "tabular":
            return self.tabular_id
        names = self.opponent_names
        if name not in names:
            raise ValueError(f"unknown opponent {name!r} for game {self.name!r}; known: {', '.join(names)}, tabular")
        return names.index(name)

    def pool_ids(self, pool: str) -> tuple[int, ...]:
        if pool not in self.pools:
            raise ValueError(f"game {self.name!r} has no pool {pool!r}; pools: {', '.join(self.pools)}")
        return tuple(self.opponent_id(n) for n in self.pools[pool])

    def opponent_probs(self, opponent_id: Array, state: State, player: Array, table: Array | None = None) -> Array:
        """Action distribution of opponent `opponent_id` playing seat `player`, masked to legal."""
        if table is None:
            table = jnp.full((self.num_infosets, self.num_actions), 1.0 / self.num_actions)
        branches = [lambda s, p, t, fn=o.fn: fn(s, p) for o in self.opponents]
        branches.append(lambda s, p, t: t[self.infoset_index(s, p)])
        probs = jax.lax.switch(opponent_id, branches, state, player, table)
        return normalize_legal(probs, state.legal_action_mask)

    def check_action(self, state: State, action) -> None:
        """Host-side guard: raise if `action` is outside the legal mask (for unjitted use)."""
        mask = jax.device_get(state.legal_action_mask)
        a = int(action)
        if not (0 <= a < self.num_actions) or not bool(mask[a]):
            legal = [self.action_names[i] for i in range(self.num_actions) if mask[i]]
            raise ValueError(f"{self.name}: action {a} is not legal here; legal: {legal}")


def normalize_legal(probs: Array, legal: Array) -> Array:
    """Zero illegal actions and renormalise; all-zero rows fall back to uniform over legal ones."""
    p = jnp.where(legal, probs, 0.0)
    total = p.sum(-1, keepdims=True)
    uniform = legal / jnp.maximum(legal.sum(-1, keepdims=True), 1)
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), uniform)


def illegal_to_noop(game_step):
    """Decorator for `Game.step`: an illegal action (or a step after the end) leaves the state
    unchanged except `state.illegal` counting the attempt. This is the documented jitted outcome;
    `Game.check_action` raises on the host instead."""

    def step(self, state: State, action: Array, key: Array) -> State:
        action = jnp.asarray(action, jnp.int32)
        legal = (~state.terminated) & (action >= 0) & (action < self.num_actions)
        legal = legal & state.legal_action_mask[jnp.clip(action, 0, self.num_actions - 1)]
        new = game_step(self, state, jnp.clip(action, 0, self.num_actions - 1), key)
        out = jax.tree.map(lambda n, o: jnp.where(legal, n, o), new, state)
        return out.with_illegal(state.illegal + ((~legal) & (~state.terminated)).astype(jnp.int32))

    return step


# ---- prompts as templates -----------------------------------------------------------------------


INTRO, STATE = -2, -1  # prompt parts besides history rows (row i is part i >= 0)


@struct.dataclass
class Prompt:
    """A prompt as slots: slot k shows text `groups[k][values[k]]`, or nothing when values[k] < 0.

    `parts[k]` says what slot k belongs to: `INTRO` (the rules, said once at the start of a
    conversation), history row i >= 0 (a finished round or hand, said once, in the first turn after
    it appears) or `STATE` (what the player knows now, said at every decision). The restated prompt
    shows every part; `sepo_jax.games.prompts.ChatRenderer` builds a conversation's turns from them."""

    values: Array  # int32 [num_slots]
    groups: tuple[tuple[str, ...], ...] = struct.field(pytree_node=False)
    parts: tuple[int, ...] = struct.field(pytree_node=False, default=())


class PromptBuilder:
    """Builds a `Prompt` at trace time: fixed text and choices from static groups of text. Slots
    belong to the part last set by `intro()`, `row(i)` or `state()` (`STATE` at first)."""

    def __init__(self):
        self._values: list[Array] = []
        self._groups: list[tuple[str, ...]] = []
        self._parts: list[int] = []
        self._part = STATE

    def intro(self) -> "PromptBuilder":
        self._part = INTRO
        return self

    def row(self, i: int) -> "PromptBuilder":
        self._part = i
        return self

    def state(self) -> "PromptBuilder":
        self._part = STATE
        return self

    def text(self, s: str, when: Array | bool = True) -> "PromptBuilder":
        return self.pick((s,), 0, when)

    def pick(self, group: Sequence[str], index: Array | int, when: Array | bool = True) -> "PromptBuilder":
        self._groups.append(tuple(group))
        self._values.append(jnp.where(when, jnp.asarray(index, jnp.int32), -1))
        self._parts.append(self._part)
        return self

    def number(self, value: Array | int, when: Array | bool = True) -> "PromptBuilder":
        return self.pick(NUMBERS, jnp.asarray(value, jnp.int32) - NUMBER_MIN, when)

    def build(self) -> Prompt:
        return Prompt(values=jnp.stack(self._values), groups=tuple(self._groups), parts=tuple(self._parts))


NUMBER_MIN, NUMBER_MAX = -99, 99
NUMBERS = tuple(str(i) for i in range(NUMBER_MIN, NUMBER_MAX + 1))
SCORE_MIN, SCORE_MAX = -99, 199  # running scores of repeated games can pass 99
SCORES = tuple(str(i) for i in range(SCORE_MIN, SCORE_MAX + 1))


class RoundsState(State):
    """State of a repeated simultaneous-move game: `moves[t, p]` is seat p's action in round t (-1
    before it is made)."""

    moves: Array  # int32 [num_rounds, 2]


def played(state: RoundsState) -> Array:
    """bool [num_rounds]: rounds already resolved."""
    return (jnp.arange(state.moves.shape[0]) < state.round) | state.terminated


def seat_view(state: RoundsState, player: Array) -> tuple[Array, Array]:
    """(own moves, opponent moves) [num_rounds] of `player`, -1 for rounds not yet resolved."""
    moves = jnp.where(played(state)[:, None], state.moves, -1)
    return moves[:, player], moves[:, 1 - player]


class SimultaneousGame(Game):
    """Shared bookkeeping of a repeated simultaneous-move game (IPD, auction, negotiation): each round
    seat 0 moves, then seat 1, and the round resolves on seat 1's move. Information functions
    (infoset rows, opponents, prompts) must read history through the module function `seat_view`, which
    only shows resolved rounds, so seat 1 never sees seat 0's pending move.

    Subclasses give `state_class` (a `RoundsState` subclass), `deal(key)` (its per-episode private
    fields), `resolve(state, t, moves, key)` (payoffs of round t and the updated state) and optionally
    `legal(state, player)`."""

    state_class: type[RoundsState] = RoundsState

    def deal(self, key: Array) -> dict:
        return {}

    def resolve(self, state: RoundsState, t: Array, moves: Array, key: Array) -> tuple[Array, RoundsState]:
        raise NotImplementedError

    def legal(self, state: RoundsState, player: Array) -> Array:
        return jnp.ones(self.num_actions, bool)

    def init(self, key: Array) -> RoundsState:
        fields = {**self.deal(key), "moves": jnp.full((self.num_rounds, 2), -1, jnp.int32)}
        state = self.state_class.start(jnp.ones(self.num_actions, bool), self.num_rounds, **fields)
        return state.replace(legal_action_mask=self.legal(state, jnp.int32(0)))

    @illegal_to_noop
    def step(self, state: RoundsState, action: Array, key: Array) -> RoundsState:
        p, t = state.current_player, state.round
        moved = state.replace(moves=state.moves.at[t, p].set(action))
        pay, resolved = self.resolve(moved, t, moved.moves[t], key)
        last = p == 1
        new = jax.tree.map(lambda r, d: jnp.where(last, r, d), resolved, moved)
        terminated = last & (t + 1 >= self.num_rounds)
        return new.replace(
            current_player=jnp.where(terminated, -1, 1 - p),
            legal_action_mask=self.legal(new, 1 - p) & ~terminated,
            terminated=terminated,
            round=jnp.minimum(t + last, self.num_rounds - 1),
            payoffs=jnp.where(last, state.payoffs.at[t].set(pay), state.payoffs),
            num_steps=state.num_steps + 1,
        )

    # ---- the shared prompt layout: rules, round, state, history rows, scores, legal actions ---------
    rules: str = ""

    def prompt(self, state: State, player: Array) -> Prompt:
        own, opp = seat_view(state, player)
        done, pay = played(state), state.payoffs.astype(jnp.int32)
        b = PromptBuilder().intro().text(self.rules).state()
        b.text("\nRound ").number(state.round + 1).text(f" of {self.num_rounds}.")
        self.prompt_state(b, state, player)
        b.text("\nNo rounds played yet.", ~done[0])
        for i in range(self.num_rounds - 1):
            w = done[i]
            b.row(i).text(f"\nRound {i + 1}: ", w)
            self.prompt_round(b, state, player, i, own[i], opp[i], w)
            b.text("; points ", w).number(pay[i, player], w).text(" and ", w).number(pay[i, 1 - player], w).text(".", w)
        b.state()
        total = jnp.where(done[:, None], pay, 0).sum(0)
        b.text("\nScore: you ").pick(SCORES, total[player] - SCORE_MIN)
        b.text(", opponent ").pick(SCORES, total[1 - player] - SCORE_MIN).text(".")
        self.prompt_legal(b, state, player)
        return b.text("\nAction:").build()

    def prompt_state(self, b: PromptBuilder, state: State, player: Array) -> None:
        """What `player` privately knows this round (a value, an item pool): nothing by default."""

    def prompt_round(self, b: PromptBuilder, state: State, player: Array, i: int, own: Array, opp: Array, when: Array):
        b.text("you ", when).pick(self.action_names, own, when)
        b.text(", opponent ", when).pick(self.action_names, opp, when)

    def prompt_legal(self, b: PromptBuilder, state: State, player: Array) -> None:
        b.text("\nLegal actions: " + ", ".join(self.action_names) + ".")
