"""Game trees of one hand of a card game (Kuhn, Leduc), enumerated from the game's own `init`/`step`.

The game module owns the rules, the deals and the information-set rows (a tabular strategy is a
float array `[game.num_infosets, game.num_actions]`); this module only walks them: every equally
likely deal of `game.deals()` is a root (so no chance nodes appear in the tree: Kuhn 6 deals, Leduc
120 ordered (private0, private1, public) deals), and every legal action of every state found so far
is applied with the game's jitted `step`, one vmapped call per depth. A rule changed in the game
module therefore changes the tree. Seat 0 opens the hand, as player 0 does in OpenSpiel.

Trees are cached by `game.rules_key`; `get_tree` takes a game or its name. A Leduc deal fixes the
public card from the start; round-0 rows do not depend on it, so this splits each round-0 history into
4 equally likely copies and changes no value.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax import games
from sepo_jax.games import Game


@dataclasses.dataclass(frozen=True)
class Tree:
    """A two-player zero-sum tree as flat arrays (numpy, host side; jitted code closes over them).

    Nodes in depth-first order (deal by deal, actions in increasing order): `parent` (-1 at roots),
    `action` (from the parent, -1 at roots), `depth`, `player` (-1 at terminals), `infoset` (row, -1 at
    terminals), `chance` (deal probability), `payoff` (to player 0 at terminals, 0 elsewhere), `deal`
    (index into `deals`).
    Rows: `row_player` (-1 for unused rows), `legal` [I, A], `row_level` (own decisions before the row),
    `row_parent_seq` (own sequence leading to the row: row * A + action, or the empty sequence I * A),
    `row_node` (the first node of the row, -1 for unused rows) and `row_states` (the game's state at
    that node, a pytree of numpy arrays with a leading row axis; meaningless on unused rows).
    Terminals: `term` (node ids), `term_seq[p]` (player p's last sequence, I * A if none) and
    `term_path[p]` [num_terminals, K] (player p's sequences along the path, padded with I * A).
    """

    game: str
    num_infosets: int
    num_actions: int
    deals: np.ndarray
    parent: np.ndarray
    action: np.ndarray
    depth: np.ndarray
    player: np.ndarray
    infoset: np.ndarray
    chance: np.ndarray
    payoff: np.ndarray
    deal: np.ndarray
    row_player: np.ndarray
    legal: np.ndarray
    row_level: np.ndarray
    row_parent_seq: np.ndarray
    row_node: np.ndarray
    row_states: object
    term: np.ndarray
    term_seq: np.ndarray  # [2, Z]
    term_path: np.ndarray  # [2, Z, K]

    @property
    def num_seqs(self) -> int:  # sequences plus the empty one, which is the last index
        return self.num_infosets * self.num_actions + 1

    @property
    def max_level(self) -> int:
        return int(self.row_level.max())


def tree_game(game: Game | str) -> Game:
    """`game` (or the game called so) if it declares an exact tree; else a ValueError naming it."""
    if isinstance(game, str):
        if game not in games.GAMES or not games.has_exact_solver(game):
            known = ", ".join(n for n in games.GAMES if games.has_exact_solver(n))
            raise ValueError(f"no game tree for {game!r}; games with one: {known}")
        return games.make(game)
    if games.TREE not in game.solvers:
        raise ValueError(f"no game tree for {game.name!r}: the game does not declare the {games.TREE!r} solver")
    return game


_TREES: dict[tuple, Tree] = {}


def get_tree(game: Game | str) -> Tree:
    """The cached tree of one hand of `game` (a game declaring `TREE`, or its name)."""
    game = tree_game(game)
    if game.rules_key not in _TREES:
        _TREES[game.rules_key] = _build(game.one_hand())
    return _TREES[game.rules_key]


def cached_tree(rules_key: tuple) -> Tree:
    """The tree `get_tree` built for these rules (jitted solvers take the key as a static argument)."""
    return _TREES[rules_key]


_CHUNK = 512  # states expanded per call of the jitted expansion (one compile per game)


def _levels(game: Game):
    """Breadth-first enumeration: per depth, (deal index [n], path [n, depth], states [n], node info)
    with node info = (terminated, current player, legal mask, row, payoff of seat 0), numpy throughout."""
    deals = np.asarray(game.deals())
    roots = jax.jit(jax.vmap(lambda d: game.with_cards(game.init(jax.random.key(0)), d[None])))
    states = jax.device_get(roots(deals))

    def expand(s):
        player = jnp.maximum(s.current_player, 0)
        info = (s.terminated, s.current_player, s.legal_action_mask, game.infoset_index(s, player), s.payoffs[0, 0])
        children = jax.vmap(lambda a: game.step(s, a, jax.random.key(0)))(jnp.arange(game.num_actions))
        return info, children

    expand = jax.jit(jax.vmap(expand))
    deal, path = np.arange(len(deals)), np.zeros((len(deals), 0), np.int32)
    while len(deal):
        n = len(deal)
        padded = jax.tree.map(lambda x: np.concatenate([x, np.repeat(x[:1], -n % _CHUNK, 0)]), states)
        out = [jax.device_get(expand(jax.tree.map(lambda x: x[k : k + _CHUNK], padded))) for k in range(0, n + (-n % _CHUNK), _CHUNK)]
        info, children = jax.tree.map(lambda *x: np.concatenate(x)[:n], *out)
        yield deal, path, states, info
        node, act = np.nonzero(info[2] & ~info[0][:, None])
        deal, path = deal[node], np.concatenate([path[node], act[:, None].astype(np.int32)], 1)
        states = jax.tree.map(lambda x: x[node, act], children)


def _build(game: Game) -> Tree:
    I, A = game.num_infosets, game.num_actions
    empty = I * A
    deals = np.asarray(game.deals())
    levels = list(_levels(game))
    depth_max = len(levels) - 1
    deal = np.concatenate([lv[0] for lv in levels])
    paths = np.concatenate([np.pad(lv[1], ((0, 0), (0, depth_max - lv[1].shape[1])), constant_values=-1) for lv in levels])
    states, info = (jax.tree.map(lambda *x: np.concatenate(x), *[lv[k] for lv in levels]) for k in (2, 3))
    order = np.lexsort(tuple(paths[:, k] for k in range(depth_max - 1, -1, -1)) + (deal,))  # depth-first
    deal, paths = deal[order], paths[order]
    states, (terminal, player, legal_at, rows, pay0) = jax.tree.map(lambda x: x[order], (states, info))
    depth = (paths >= 0).sum(1)
    player = np.where(terminal, -1, player)
    infoset = np.where(terminal, -1, rows)
    payoff = np.where(terminal, pay0, 0.0)
    index = {(int(d), tuple(p[:k].tolist())): n for n, (d, p, k) in enumerate(zip(deal, paths, depth))}
    parent = np.array([index[(int(d), tuple(p[: k - 1].tolist()))] if k else -1 for d, p, k in zip(deal, paths, depth)], np.int32)
    action = np.array([p[k - 1] if k else -1 for p, k in zip(paths, depth)], np.int32)

    row_player = np.full(I, -1, np.int32)
    legal = np.zeros((I, A), bool)
    row_parent_seq = np.full(I, empty, np.int32)
    row_level = np.zeros(I, np.int32)
    row_node = np.full(I, -1, np.int32)
    own = [None] * len(deal)  # per node: both players' sequences along its path
    for n in range(len(deal)):
        q = parent[n]
        own[n] = ([], []) if q < 0 else tuple(list(s) for s in own[q])
        if q >= 0:
            own[n][player[q]].append(int(infoset[q]) * A + int(action[n]))
        if terminal[n]:
            continue
        p, row = player[n], infoset[n]
        parent_seq = own[n][p][-1] if own[n][p] else empty
        if row_node[row] < 0:
            row_node[row], row_player[row], row_parent_seq[row], row_level[row] = n, p, parent_seq, len(own[n][p])
            legal[row] = legal_at[n]
        elif row_player[row] != p or row_parent_seq[row] != parent_seq:  # perfect recall: a row's nodes agree
            raise ValueError(f"{game.name}: information set row {row} breaks perfect recall at node {n}")
    term = np.flatnonzero(terminal).astype(np.int32)
    K = max(len(own[z][p]) for z in term for p in range(2))
    term_path = np.full((2, len(term), K), empty, np.int32)
    term_seq = np.full((2, len(term)), empty, np.int32)
    for i, z in enumerate(term):
        for p in range(2):
            term_path[p, i, : len(own[z][p])] = own[z][p]
            if own[z][p]:
                term_seq[p, i] = own[z][p][-1]
    return Tree(
        game=game.name, num_infosets=I, num_actions=A, deals=deals, parent=parent, action=action,
        depth=depth.astype(np.int32), player=player.astype(np.int32), infoset=infoset.astype(np.int32),
        chance=np.full(len(deal), 1.0 / len(deals)), payoff=payoff.astype(np.float64), deal=deal.astype(np.int32),
        row_player=row_player, legal=legal, row_level=row_level, row_parent_seq=row_parent_seq, row_node=row_node,
        row_states=jax.tree.map(lambda x: x[np.maximum(row_node, 0)], states), term=term, term_seq=term_seq,
        term_path=term_path,
    )
