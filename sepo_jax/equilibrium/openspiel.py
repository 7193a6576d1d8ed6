"""OpenSpiel interop: information-state strings <-> our infoset rows, policy dicts <-> tables.

OpenSpiel's action order is ours in both games (Kuhn 0=pass 1=bet, Leduc 0=fold 1=call 2=raise), so
only the rows need translating. Each row's string is printed (no pyspiel import) from the game's own
state at the row's first node in the tree, exactly as `state.information_state_string()` prints it for
`kuhn_poker` and `leduc_poker`.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import numpy as np

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium.tree import get_tree
from sepo_jax.games import kuhn, leduc

OPENSPIEL_NAMES = {"kuhn": "kuhn_poker", "leduc": "leduc_poker"}


def _kuhn_string(state, player: int) -> str:
    return f"{state.cards[0, player]}{kuhn.HISTORIES[state.hist]}"


def _leduc_string(state, player: int) -> str:
    moves = state.actions[0, : state.num_moves].tolist()
    first = len(leduc.DONE_SEQS[state.done1]) if state.betting else len(moves)
    c0, c1 = state.contrib.tolist()
    public = f"[Public: {state.cards[0, 2]}]" if state.betting else ""
    return (
        f"[Observer: {player}][Private: {state.cards[0, player]}][Round {state.betting + 1}][Player: {player}]"
        f"[Pot: {c0 + c1}][Money: {100 - c0} {100 - c1}]{public}"
        f"[Round1: {' '.join(map(str, moves[:first]))}][Round2: {' '.join(map(str, moves[first:]))}]"
    )


_PRINT = {"kuhn": _kuhn_string, "leduc": _leduc_string}


@functools.cache
def info_state_strings(game: str) -> dict[int, str]:
    """Row -> OpenSpiel information-state string, for every real infoset of `game`."""
    tree = get_tree(_check_game(game))
    rows = np.flatnonzero(tree.row_player >= 0)
    return {int(r): _PRINT[game](jax.tree.map(lambda x: x[r], tree.row_states), int(tree.row_player[r])) for r in rows}


@functools.cache
def _row_of(game: str) -> dict[str, int]:
    return {s: r for r, s in info_state_strings(game).items()}


def info_state_to_row(game: str, info_state: str) -> int:
    rows = _row_of(_check_game(game))
    if info_state not in rows:
        raise ValueError(f"{info_state!r} is not an information state of OpenSpiel's {OPENSPIEL_NAMES[game]}")
    return rows[info_state]


def _check_game(game: str) -> str:
    if game not in OPENSPIEL_NAMES:
        raise ValueError(f"unknown game {game!r}; known: {', '.join(OPENSPIEL_NAMES)}")
    return game


def policy_to_table(game: str, policy: Mapping) -> np.ndarray:
    """OpenSpiel policy dict -> validated table `[I, A]` (float64). Values may be lists over all
    actions, lists over the legal actions only (in increasing action order), {action: prob}
    mappings or [(action, prob), ...] pairs (`TabularPolicy.to_dict()`). Every information state must be present; unused rows get uniform."""
    _check_game(game)
    num_actions = get_tree(game).num_actions
    legal = br.legal_mask(game)
    table = br.uniform_table(game).copy()
    strings = info_state_strings(game)
    missing = [s for s in strings.values() if s not in policy]
    if missing:
        raise ValueError(f"{game}: policy lacks {len(missing)} of {len(strings)} information states, e.g. {missing[0]!r}")
    for key, probs in policy.items():
        row = info_state_to_row(game, key)
        acts = np.flatnonzero(legal[row])
        out = np.zeros(num_actions)
        pairs = probs.items() if isinstance(probs, Mapping) else None
        if pairs is None and np.ndim(probs) == 2:  # [(action, prob), ...] as TabularPolicy.to_dict()
            pairs = probs
        if pairs is not None:
            for a, p in pairs:
                if not 0 <= int(a) < num_actions:
                    raise ValueError(f"{game}: {key!r} has probability on unknown action {a}")
                out[int(a)] = p
        else:
            probs = np.asarray(probs, np.float64).reshape(-1)
            if len(probs) == num_actions:
                out = probs
            elif len(probs) == len(acts):
                out[acts] = probs
            else:
                raise ValueError(
                    f"{game}: {key!r} has {len(probs)} probabilities; want {num_actions} (all actions) "
                    f"or {len(acts)} (legal actions {acts.tolist()})"
                )
        table[row] = out
    return br.check_table(game, table)


def table_to_policy(game: str, table) -> dict[str, list[float]]:
    """Table `[I, A]` -> OpenSpiel policy dict (lists over all actions, OpenSpiel's order)."""
    t = br.check_table(_check_game(game), table)
    if t.ndim != 2:
        raise ValueError(f"{game}: table_to_policy takes one table [I, A], got shape {t.shape}")
    return {s: t[r].tolist() for r, s in info_state_strings(game).items()}


def _as_table(game, policy):
    if isinstance(policy, Mapping):
        return policy_to_table(game, policy)
    return br.check_table(_check_game(game), policy)


def nash_conv(game: str, policy) -> float | np.ndarray:
    """NashConv of `policy` in OpenSpiel's `kuhn_poker` / `leduc_poker` (game "kuhn" / "leduc").
    `policy`: an OpenSpiel policy dict (info-state string -> action probabilities) or a table
    `[..., I, A]`. Validated on the host, computed in float64; returns a float (an array for a batch
    of tables)."""
    t = _as_table(game, policy)
    with jax.enable_x64(True):
        out = np.asarray(br.nash_conv_table(game, t))
    return float(out) if out.ndim == 0 else out


def exploitability(game: str, policy) -> float | np.ndarray:
    """NashConv / 2 (OpenSpiel's `exploitability.exploitability` for two players)."""
    return nash_conv(game, policy) / 2
