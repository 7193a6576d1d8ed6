"""Exact best responses in the repeated simultaneous-move games (IPD, auction, negotiation v1/v2).

The rules come from the game modules: payoffs (`ipd.PAYOFF`, `auction.round_payoffs`, the
negotiations' `round_payoffs`, `legal`, `fits`, `gain`), the chance distributions (`auction.VALUES`,
the negotiation v2 pools and value compositions) and the information-set rows. `histories(game)` holds
one representative history per row a solver models (the learner in seat 0): its private chance and
the actions of both seats, replayed with the game's own `step`; the row is the game's `infoset_index`
of the state it reaches. The solvers read their rows from it and `sepo_jax.rl.readout` prompts the
model with the same histories, so the table read from the model is the one the solver assumes.

`exposure(game, table)` is the safety number of a learner's tabular strategy (rows as the game's
`infoset_index`, e.g. read from the model like `sepo_jax.rl.readout` does for Kuhn and Leduc): the
opponent's exact best response to it, found by backward induction over what the learner's rows
condition on, and what it earns per round (`br_value`), with what the learner keeps against it
(`learner_value`). Among the opponent's best responses, ties go against the learner (the least it
keeps), so `learner_value` is the worst case. All of it runs under `jit`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax import games
from sepo_jax.games import Game, State, auction, ipd, negotiation

Array = jax.Array
_TIE = 1e-6


def _argbest(q: Array, other: Array, legal: Array | None = None) -> Array:
    """One-hot argmax of q over the last axis, ties (within _TIE) broken by the least `other`."""
    if legal is not None:
        q = jnp.where(legal, q, -jnp.inf)
    best = q.max(-1, keepdims=True)
    other = jnp.where(q >= best - _TIE, other, jnp.inf)
    return jax.nn.one_hot(jnp.argmin(other, -1), q.shape[-1], dtype=q.dtype)


def exposure(game: Game | str, table: Array) -> dict[str, Array]:
    """The opponent's best response to the learner's table `[game.num_infosets, game.num_actions]`:
    `br_value` (what it earns per round) and `learner_value` (what the learner keeps per round)."""
    game = games.make(game) if isinstance(game, str) else game
    if games.STAGE not in game.solvers:
        raise ValueError(f"no stage-game solver for {game.name!r}: the game does not declare {games.STAGE!r}")
    table = jnp.asarray(table, jnp.float32)
    want = (game.num_infosets, game.num_actions)
    if table.shape != want:
        raise ValueError(f"{game.name}: strategy table must have shape {want}, got {table.shape}")
    br, learner = _EXPOSURE[game.name](game, table)
    return {"br_value": br / game.num_rounds, "learner_value": learner / game.num_rounds}


# ---- the rows: one representative history each --------------------------------------------------


class Histories(NamedTuple):
    """One history per table row a stage solver models, the learner in seat 0 at its decision:
    `start` [N] the state before the first move with the history's private chance dealt, `path`
    [N, W] the actions of both seats from it (seat 0 then seat 1 each round; -1 padding) and `row` [N]
    the game's `infoset_index` of the state they reach. Rows no history reaches are not listed."""

    start: State
    path: Array
    row: Array


def histories(game: Game) -> Histories:
    """The representative histories of a stage game's rows, in the order of its solver's cells."""
    start, path = _HISTORIES[game.name](game)
    reached = jax.vmap(functools.partial(replay, game))(start, path)
    return Histories(start, path, jax.vmap(game.infoset_index)(reached, jnp.zeros_like(reached.round)))


def advance(game: Game, state: State, a: Array) -> State:
    """`state` after action `a` (the chance of a step from a fixed key); unchanged for a = -1 (padding)."""
    return jax.tree.map(lambda n, o: jnp.where(a >= 0, n, o), game.step(state, jnp.maximum(a, 0), jax.random.key(0)),
                        state)


def replay(game: Game, state: State, path: Array) -> State:
    """`state` after the actions of `path` [W] (-1 padding)."""
    return jax.lax.scan(lambda s, a: (advance(game, s, a), None), state, path)[0]


def _dealt(game, n: int, **fields) -> State:
    """`n` states before the first move with the private chance `fields` ([n, ...] each) set."""
    state = game.init(jax.random.key(0))
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), state).replace(**fields)
    return state.replace(legal_action_mask=jax.vmap(game.legal)(state, jnp.zeros(n, jnp.int32)))


def _path(t, own, opp):
    """Actions [2 (T - 1)] of the rounds before `t`: the learner (seat 0) `own[r]`, then the opponent
    `opp[r]` in round r; -1 from round t on."""
    moves = jnp.stack([own, opp], -1)[:-1]
    return jnp.where(jnp.arange(moves.shape[0])[:, None] < t, moves, -1).reshape(-1)


def _plays(game, name: str, state: State, player) -> Array:
    """The action of the deterministic opponent `name` playing `player` at `state`."""
    return jnp.argmax(game.opponents[game.opponent_id(name)].fn(state, player)).astype(jnp.int32)


def _ipd_histories(game):
    """Every row is a full history (round t, code): exact, in row order."""
    T = game.num_rounds
    t, code = (jnp.asarray(x) for x in _window_rows(T - 1, T))  # code < 4**t: unchanged
    digit = (code[:, None] >> (2 * jnp.maximum(t[:, None] - 1 - jnp.arange(T), 0))) & 3  # own * 2 + opp
    return _dealt(game, t.shape[0]), jax.vmap(_path)(t, digit >> 1, digit & 1)


def _auction_histories(game):
    """Row (round t, the learner's value v, the opponent's last bid b). Not in the row, so fixed: the
    values are v in every round for both seats, and in every earlier round the learner bid as Truthful
    (LOW at 2, MEDIUM at 4) and the opponent bid b (ties settled by `advance`'s fixed coin). Cells:
    round 0 by v, then rounds 1.. by (b, v); the opponent's last bid "none" after round 0 is unreachable."""
    T, nb, nv = game.num_rounds, game.num_actions, len(auction.VALUES)
    t = np.concatenate([np.zeros(nv, int), np.repeat(np.arange(1, T), nb * nv)])
    b = np.concatenate([np.zeros(nv, int), np.tile(np.repeat(np.arange(nb), nv), T - 1)])
    v = np.tile(np.arange(nv), len(t) // nv)
    values = jnp.asarray(auction.VALUES, jnp.int32)[jnp.asarray(v)]
    start = _dealt(game, len(t), values=jnp.broadcast_to(values[:, None, None], (len(t), T, 2)))
    own = jax.vmap(lambda s: _plays(game, "Truthful", s, 0))(start)
    return start, jax.vmap(lambda t_, a, b_: _path(t_, jnp.full(T, a), jnp.full(T, b_)))(jnp.asarray(t), own,
                                                                                         jnp.asarray(b))


def _negotiation_v1_histories(game):
    """Row (round t, the opponent's last demand, the learner's): every earlier round repeats the last
    one. Cells: round 0, then rounds 1.. by (the opponent's demand, the learner's); a last demand "none"
    after round 0 is unreachable."""
    A, T = game.num_actions, game.num_rounds
    t = np.concatenate([[0], np.repeat(np.arange(1, T), A * A)])
    opp = np.concatenate([[0], np.tile(np.repeat(np.arange(A), A), T - 1)])
    own = np.concatenate([[0], np.tile(np.arange(A), A * (T - 1))])
    path = jax.vmap(lambda t_, a, b: _path(t_, jnp.full(T, a), jnp.full(T, b)))(*map(jnp.asarray, (t, own, opp)))
    return _dealt(game, len(t)), path


def _v2_pools():
    """Every pool [64, 3], in the order of the game's pool index."""
    grid = np.meshgrid(*[np.arange(1, negotiation.MAX_ITEMS + 1)] * 3, indexing="ij")
    return jnp.asarray(np.array(grid).reshape(3, -1).T, jnp.int32)


def _negotiation_v2_histories(game):
    """Row (round t, pool, the learner's values): history is not in the row, so fixed: the opponent has
    the learner's values, and in every earlier round both seats demanded half the pool, rounded down
    (as FairNeg; a deal). Cells by (t, pool, values): every row, in row order."""
    T, pools, comps = game.num_rounds, _v2_pools(), jnp.asarray(negotiation.COMPOSITIONS)
    t, p, v = (jnp.asarray(x.reshape(-1)) for x in np.meshgrid(np.arange(T), np.arange(len(pools)),
                                                                np.arange(len(comps)), indexing="ij"))
    ids = jnp.stack([v, v], -1).astype(jnp.int32)
    start = _dealt(game, t.shape[0], pool=pools[p], values=comps[ids], values_id=ids)
    half = jax.vmap(lambda s: _plays(game, "FairNeg", s, 0))(start)
    return start, jax.vmap(lambda t_, a: _path(t_, jnp.full(T, a), jnp.full(T, a)))(t, half)


# ---- iterated prisoner's dilemma: backward induction over window strategies ---------------------


@functools.cache
def _window_rows(window: int, num_rounds: int):
    """For every full-history row: its round and its code in a window-`window` strategy."""
    t = np.concatenate([np.full(4**r, r) for r in range(num_rounds)])
    code = np.concatenate([np.arange(4**r) for r in range(num_rounds)])
    return t, code % 4 ** np.minimum(t, window)


def ipd_window_to_table(window_probs: Array, window: int) -> Array:
    """Window strategy `[..., T, 4**window, 2]` (round t, code of the last min(t, window) joint
    actions) -> full tabular strategy `[..., rows, 2]` (the game's infoset rows)."""
    t, code = _window_rows(window, window_probs.shape[-3])
    return jnp.asarray(window_probs)[..., t, code, :]


def ipd_table_to_window(table: Array) -> Array:
    """Full tabular strategy `[..., rows, 2]` -> window T-1 form `[..., T, 4**(T-1), 2]` (exact;
    codes that cannot occur at round t are filled with COOPERATE)."""
    T = ipd.IPD.num_rounds
    out = jnp.zeros((*table.shape[:-2], T, 4 ** (T - 1), 2), table.dtype).at[..., 0].set(1.0)
    t, code = _window_rows(T - 1, T)
    return out.at[..., t, code, :].set(table)


@functools.partial(jax.jit, static_argnames="window")
def ipd_best_response(opp_window_probs: Array, window: int) -> tuple[Array, Array, Array]:
    """Backward induction against an opponent that conditions on the last `window` joint actions.

    `opp_window_probs` `[T, 4**window, 2]` is the opponent's window strategy (codes from its own
    perspective). Returns (BR total payoff over the T rounds, the opponent's total payoff against the
    BR, the BR as a window strategy `[T, 4**window, 2]`, one-hot, unreachable codes COOPERATE)."""
    T, S = opp_window_probs.shape[0], 4**window
    R = jnp.asarray(ipd.PAYOFF)  # [own, opp] -> (own, opp): the game is symmetric
    v_own, v_opp = jnp.zeros(1), jnp.zeros(1)
    policy = jnp.zeros((T, S, 2)).at[..., 0].set(1.0)
    for t in reversed(range(T)):
        n, n_next = 4 ** min(t, window), 4 ** min(t + 1, window)
        codes = jnp.arange(n)
        q = opp_window_probs[t, ipd.swap_seats(codes)]  # [n, 2] opponent's C/D
        nxt = (codes[:, None] * 4 + jnp.arange(4)) % n_next  # joint digit own * 2 + opp
        cont_own = v_own[nxt].reshape(n, 2, 2) if t + 1 < T else jnp.zeros((n, 2, 2))
        cont_opp = v_opp[nxt].reshape(n, 2, 2) if t + 1 < T else jnp.zeros((n, 2, 2))
        q_own = jnp.einsum("nb,nab->na", q, R[..., 0] + cont_own)
        q_opp = jnp.einsum("nb,nab->na", q, R[..., 1] + cont_opp)
        x = _argbest(q_own, q_opp)
        policy = policy.at[t, :n].set(x)
        v_own, v_opp = (x * q_own).sum(-1), (x * q_opp).sum(-1)
    return v_own[0], v_opp[0], policy


@jax.jit
def ipd_values(table_a: Array, table_b: Array) -> Array:
    """Expected total payoffs `[2]` over the T rounds of two full tabular strategies (each indexed
    from its own perspective) playing each other."""
    R = jnp.asarray(ipd.PAYOFF)
    reach, total = jnp.ones(1), jnp.zeros(2)
    for t in range(ipd.IPD.num_rounds):
        codes = jnp.arange(4**t)
        pa = table_a[ipd.infoset_row(t, codes)]
        pb = table_b[ipd.infoset_row(t, ipd.swap_seats(codes))]
        joint = reach[:, None, None] * pa[:, :, None] * pb[:, None, :]  # [n, a, b]
        total = total + jnp.einsum("nab,abk->k", joint, R)
        reach = joint.reshape(-1)  # next code = code * 4 + a * 2 + b
    return total


def _ipd_exposure(game, table):
    br, learner, _ = ipd_best_response(ipd_table_to_window(table), game.num_rounds - 1)
    return br, learner


# ---- auction: the learner conditions on (round, its value, the opponent's last bid) --------------


@functools.partial(jax.jit, static_argnums=0)
def _auction_exposure(game, table):
    nv, nb = len(auction.VALUES), game.num_actions
    # U[v_br, v_learner, b, a] -> (br, learner) payoffs, the tie coin averaged
    vb, vl, b, a, coin = np.meshgrid(*(np.arange(k) for k in (nv, nv, nb, nb, 2)), indexing="ij")
    values = jnp.asarray(auction.VALUES)[jnp.stack([vb, vl], -1)]
    pay = jax.vmap(lambda v, m, c: auction.round_payoffs(v, m, c)[1])(
        values.reshape(-1, 2), jnp.stack([b, a], -1).reshape(-1, 2), coin.reshape(-1))
    U = pay.reshape(nv, nv, nb, nb, 2, 2).mean(4)
    T = game.num_rounds
    rows = histories(game).row
    first, later = table[rows[:nv]][None], table[rows[nv:]].reshape(T - 1, nb, nv, nb)  # [last bid, v, a]
    W = jnp.zeros((nb, 2))  # continuation (br, learner) after the BR's bid
    for k in reversed(range(T)):
        pi = later[k - 1] if k else first
        q = jnp.einsum("lva,wvbak->lwbk", pi, U) / nv + W[None, None]  # [last, v_br, b, (br, learner)]
        x = _argbest(q[..., 0], q[..., 1])
        W = (x[..., None] * q).sum(2).mean(1)  # [last, 2]
    return W[0, 0], W[0, 1]


# ---- negotiation v1: the learner conditions on (round, the opponent's last demand, its own) ------


@functools.partial(jax.jit, static_argnums=0)
def _negotiation_v1_exposure(game, table):
    A, T = game.num_actions, game.num_rounds
    base = game.init(jax.random.key(0))
    b, a = np.meshgrid(np.arange(A), np.arange(A), indexing="ij")
    U = jax.vmap(lambda m: game.round_payoffs(base, m))(jnp.stack([b, a], -1).reshape(-1, 2)).reshape(A, A, 2)
    rows = histories(game).row
    first, later = table[rows[:1]].reshape(1, 1, A), table[rows[1:]].reshape(T - 1, A, A, A)  # [lb, la, a]
    W = jnp.zeros((A, A, 2))  # continuation after (br demand, learner demand)
    for k in reversed(range(T)):
        pi = later[k - 1] if k else first
        q = jnp.einsum("xya,bak->xybk", pi, U + W)  # [lb, la, b, (br, learner)]
        x = _argbest(q[..., 0], q[..., 1])
        W = (x[..., None] * q).sum(2)
    return W[0, 0, 0], W[0, 0, 1]


# ---- negotiation v2: the learner conditions on (round, pool, its values): one round at a time ------


@functools.partial(jax.jit, static_argnums=0)
def _negotiation_v2_exposure(game, table):
    T, A = game.num_rounds, game.num_actions
    comps = jnp.asarray(negotiation.COMPOSITIONS)
    pools = _v2_pools()
    base = game.init(jax.random.key(0))
    at = lambda p: base.replace(pool=p, values=comps[:2])
    legal = jax.vmap(lambda p: game.legal(at(p), 0))(pools)  # [P, A]
    fits = jax.vmap(lambda p: jax.vmap(lambda b: jax.vmap(lambda a: game.fits(at(p), jnp.stack([b, a])))(jnp.arange(A)))(jnp.arange(A)))(pools)
    gain = jax.vmap(lambda v: jax.vmap(lambda a: game.gain(base.replace(values=jnp.stack([v, v])), 0, a))(jnp.arange(A)))(comps)
    gain = gain.astype(jnp.float32)  # [V, A]: what demand a earns at values v
    pi = table[histories(game).row].reshape(T, len(pools), len(comps), A)  # [T, P, V_learner, a]
    fit_prob = jnp.einsum("tpva,pba->tpb", pi, fits.astype(jnp.float32)) / len(comps)  # P(deal | br demand b)
    kept = jnp.einsum("tpva,pba,va->tpb", pi, fits.astype(jnp.float32), gain) / len(comps)  # learner's payoff
    q = fit_prob[:, :, None, :] * gain[None, None]  # [T, P, V_br, b]
    x = _argbest(q, jnp.broadcast_to(kept[:, :, None, :], q.shape), legal[None, :, None, :])
    return (x * q).sum(-1).mean((1, 2)).sum(), (x * kept[:, :, None, :]).sum(-1).mean((1, 2)).sum()


_HISTORIES = {
    "ipd": _ipd_histories,
    "auction": _auction_histories,
    "negotiation_v1": _negotiation_v1_histories,
    "negotiation_v2": _negotiation_v2_histories,
}
_EXPOSURE = {
    "ipd": _ipd_exposure,
    "auction": _auction_exposure,
    "negotiation_v1": _negotiation_v1_exposure,
    "negotiation_v2": _negotiation_v2_exposure,
}
