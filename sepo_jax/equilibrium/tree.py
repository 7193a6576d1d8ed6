"""Kuhn and Leduc poker (single hand, OpenSpiel's rules) as static flat-array game trees.

The infoset row indexing defined here is shared with `sepo_jax.games` (a tabular strategy is a float
array `[NUM_INFOSETS[game], NUM_ACTIONS[game]]`), so keep this module light: constants and index
functions at import time, trees built lazily by `get_tree` and cached.

Kuhn: actions 0=PASS (check/fold), 1=BET (bet/call); row = hist * 3 + card with hist an index into
KUHN_HISTORIES and card 0=J, 1=Q, 2=K; OpenSpiel's info-state string is f"{card}{hist}".

Leduc: six cards 0..5 (rank = card // 2); actions 0=FOLD 1=CALL 2=RAISE; ante 1; raise 2 in round 0
and 4 in round 1; at most 2 raises per round; player 0 acts first in both rounds. Rows:
round 0: seq * 6 + private; round 1: 36 + ((done * 6 + seq) * 6 + public) * 6 + private, with seq an
index into LEDUC_DECISION_SEQS and done an index into LEDUC_DONE_SEQS (the finished round-0 betting).
Rows with public == private never occur (936 real infosets, as OpenSpiel counts them).

Chance is folded into the roots: every full deal is its own root with probability `chance` (Kuhn 6
deals, Leduc 120 ordered (private0, private1, public) deals), so no chance nodes appear in the tree.
The public card is part of every Leduc deal from the start; round-0 infosets do not depend on it, so
this splits each round-0 history into 4 equally likely copies and changes no value.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

GAMES = ("kuhn", "leduc")

KUHN_HISTORIES = ("", "p", "b", "pb")
KUHN_CARDS = "JQK"
KUHN_ACTIONS = ("PASS", "BET")

LEDUC_DECISION_SEQS = ("", "c", "r", "cr", "rr", "crr")
LEDUC_DONE_SEQS = ("cc", "rc", "crc", "rrc", "crrc")
LEDUC_ACTIONS = ("FOLD", "CALL", "RAISE")
LEDUC_NUM_CARDS = 6
LEDUC_ROUND1_OFFSET = len(LEDUC_DECISION_SEQS) * LEDUC_NUM_CARDS  # 36

NUM_ACTIONS = {"kuhn": 2, "leduc": 3}
NUM_INFOSETS = {"kuhn": len(KUHN_HISTORIES) * 3, "leduc": LEDUC_ROUND1_OFFSET + 5 * 6 * 6 * 6}  # 12, 1116


def kuhn_infoset_index(hist, card):
    """Row of Kuhn infoset (hist index into KUHN_HISTORIES, card 0..2); ints or int arrays."""
    return hist * 3 + card


def leduc_infoset_index(round, seq, private, done=0, public=0):
    """Row of a Leduc infoset; `round` is 0 or 1, `seq` indexes LEDUC_DECISION_SEQS (the betting of
    the current round), `done` indexes LEDUC_DONE_SEQS (round-0 betting, used in round 1), `public`
    is the public card (round 1). Works on Python ints and on int arrays (jit-safe)."""
    r0 = seq * LEDUC_NUM_CARDS + private
    r1 = LEDUC_ROUND1_OFFSET + ((done * 6 + seq) * 6 + public) * 6 + private
    return r0 + round * (r1 - r0)


def seq_player(seq: str) -> int:
    """Player to move after betting sequence `seq` of the current round (both games)."""
    return len(seq) % 2


@dataclasses.dataclass(frozen=True)
class Tree:
    """A two-player zero-sum tree as flat arrays (numpy, host side; jitted code closes over them).

    Nodes (all histories, roots = deals): `parent` (-1 at roots), `action` (from the parent, -1 at
    roots), `depth`, `player` (-1 at terminals), `infoset` (row, -1 at terminals), `chance` (deal
    probability), `payoff` (to player 0 at terminals, 0 elsewhere).
    Rows: `row_player` (-1 for unused rows), `legal` [I, A], `row_level` (own decisions before the row),
    `row_parent_seq` (own sequence leading to the row: row * A + action, or the empty sequence I * A).
    Terminals: `term` (node ids), `term_seq[p]` (player p's last sequence, I * A if none) and
    `term_path[p]` [num_terminals, K] (player p's sequences along the path, padded with I * A).
    """

    game: str
    num_infosets: int
    num_actions: int
    parent: np.ndarray
    action: np.ndarray
    depth: np.ndarray
    player: np.ndarray
    infoset: np.ndarray
    chance: np.ndarray
    payoff: np.ndarray
    row_player: np.ndarray
    legal: np.ndarray
    row_level: np.ndarray
    row_parent_seq: np.ndarray
    term: np.ndarray
    term_seq: np.ndarray  # [2, Z]
    term_path: np.ndarray  # [2, Z, K]

    @property
    def num_seqs(self) -> int:  # sequences plus the empty one, which is the last index
        return self.num_infosets * self.num_actions + 1

    @property
    def max_level(self) -> int:
        return int(self.row_level.max())


# ---- rules -----------------------------------------------------------------------------------------


def _kuhn_children(deal, hist):
    """(decision) -> (player, row, legal actions, {action: next}) or (terminal) -> payoff to p0."""
    cards = deal
    if hist in ("pp", "bb", "pbb"):
        stake = 1 if hist == "pp" else 2
        return stake if cards[0] > cards[1] else -stake
    if hist == "bp":
        return 1
    if hist == "pbp":
        return -1
    p = seq_player(hist)
    row = kuhn_infoset_index(KUHN_HISTORIES.index(hist), cards[p])
    return p, row, (0, 1), {0: hist + "p", 1: hist + "b"}


def _leduc_strength(card, public):
    rank, prank = card // 2, public // 2
    return 100 + rank if rank == prank else rank


def _leduc_contrib(seqs):
    contrib = [1, 1]
    for rnd, seq in enumerate(seqs):
        bet = 2 if rnd == 0 else 4
        for i, a in enumerate(seq):
            p = i % 2
            if a == "c":
                contrib[p] = max(contrib)
            elif a == "r":
                contrib[p] = max(contrib) + bet
    return contrib


def _leduc_children(deal, hist):
    """`hist` is "seq0" in round 0 or "done0/seq1" in round 1."""
    c0, c1, public = deal
    seqs = hist.split("/")
    rnd, seq = len(seqs) - 1, seqs[-1]
    contrib = _leduc_contrib(seqs)
    if seq.endswith("f"):
        folder = (len(seq) - 1) % 2
        return -contrib[0] if folder == 0 else contrib[1]
    if seq in LEDUC_DONE_SEQS:
        if rnd == 0:
            return _leduc_children(deal, hist + "/")
        s0, s1 = _leduc_strength(c0, public), _leduc_strength(c1, public)
        return 0 if s0 == s1 else (contrib[1] if s0 > s1 else -contrib[0])
    p = seq_player(seq)
    si = LEDUC_DECISION_SEQS.index(seq)
    done = LEDUC_DONE_SEQS.index(seqs[0]) if rnd == 1 else 0
    row = leduc_infoset_index(rnd, si, deal[p], done, public)
    facing = seq.endswith("r")
    legal = tuple(a for a, ok in ((0, facing), (1, True), (2, seq.count("r") < 2)) if ok)
    return p, row, legal, {a: hist + "fcr"[a] for a in legal}


def _deals(game):
    if game == "kuhn":
        return list(itertools.permutations(range(3), 2))
    return list(itertools.permutations(range(LEDUC_NUM_CARDS), 3))


@functools.cache
def get_tree(game: str) -> Tree:
    """The cached flat-array tree of `game` ("kuhn" or "leduc")."""
    if game not in GAMES:
        raise ValueError(f"no game tree for {game!r}; known: {', '.join(GAMES)}")
    children = _kuhn_children if game == "kuhn" else _leduc_children
    I, A = NUM_INFOSETS[game], NUM_ACTIONS[game]
    empty = I * A
    deals = _deals(game)
    nodes = []  # (parent, action, depth, player, row, chance, payoff)
    row_player = np.full(I, -1, np.int32)
    legal = np.zeros((I, A), bool)
    row_parent_seq = np.full(I, empty, np.int32)
    row_level = np.zeros(I, np.int32)
    term, term_paths = [], []

    def visit(deal, hist, parent, action, depth, paths):
        node = len(nodes)
        out = children(deal, hist)
        if not isinstance(out, tuple):
            nodes.append((parent, action, depth, -1, -1, 1.0 / len(deals), float(out)))
            term.append(node)
            term_paths.append(tuple(tuple(p) for p in paths))
            return
        p, row, acts, nxt = out
        nodes.append((parent, action, depth, p, row, 1.0 / len(deals), 0.0))
        parent_seq = paths[p][-1] if paths[p] else empty
        if row_player[row] >= 0:  # perfect recall: every node of a row agrees
            assert row_player[row] == p and row_parent_seq[row] == parent_seq, (game, hist, row)
        row_player[row], row_parent_seq[row], row_level[row] = p, parent_seq, len(paths[p])
        legal[row, list(acts)] = True
        for a in acts:
            new = [list(paths[0]), list(paths[1])]
            new[p].append(row * A + a)
            visit(deal, nxt[a], node, a, depth + 1, new)

    for deal in deals:
        visit(deal, "", -1, -1, 0, [[], []])
    cols = [np.array(c) for c in zip(*nodes)]
    K = max(len(p) for paths in term_paths for p in paths)
    term_path = np.full((2, len(term), K), empty, np.int32)
    term_seq = np.full((2, len(term)), empty, np.int32)
    for z, paths in enumerate(term_paths):
        for p in range(2):
            term_path[p, z, : len(paths[p])] = paths[p]
            if paths[p]:
                term_seq[p, z] = paths[p][-1]
    return Tree(
        game=game,
        num_infosets=I,
        num_actions=A,
        parent=cols[0].astype(np.int32),
        action=cols[1].astype(np.int32),
        depth=cols[2].astype(np.int32),
        player=cols[3].astype(np.int32),
        infoset=cols[4].astype(np.int32),
        chance=cols[5].astype(np.float64),
        payoff=cols[6].astype(np.float64),
        row_player=row_player,
        legal=legal,
        row_level=row_level,
        row_parent_seq=row_parent_seq,
        term=np.array(term, np.int32),
        term_seq=term_seq,
        term_path=term_path,
    )
