"""Exact best responses in the repeated simultaneous-move games (IPD, auction, negotiation v1/v2).

The rules come from the game modules: payoffs (`ipd.PAYOFF`, `auction.round_payoffs`, the
negotiations' `round_payoffs`, `legal`, `fits`, `gain`), the chance distributions (`auction.VALUES`,
the negotiation v2 pools and value compositions) and the information-set rows (each table row is
found by asking the game's own `infoset_index` of a state built for it).

`exposure(game, table)` is the safety number of a learner's tabular strategy (rows as the game's
`infoset_index`, e.g. read from the model like `sepo_jax.rl.readout` does for Kuhn and Leduc): the
opponent's exact best response to it, found by backward induction over what the learner's rows
condition on, and what it earns per round (`br_value`), with what the learner keeps against it
(`learner_value`). Among the opponent's best responses, ties go against the learner (the least it
keeps), so `learner_value` is the worst case. All of it runs under `jit`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax import games
from sepo_jax.games import Game, auction, ipd, negotiation

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
    t, last, v = np.meshgrid(np.arange(T), np.arange(nb + 1), np.arange(nv), indexing="ij")  # last: bid index + 1, 0 none
    moves = lambda t_, l_: jnp.full((T, 2), -1, jnp.int32).at[jnp.maximum(t_ - 1, 0), 0].set(jnp.where(t_ > 0, l_ - 1, -1))
    base = game.init(jax.random.key(0))
    rows = jax.vmap(lambda t_, l_, v_: game.infoset_index(
        base.replace(round=t_, moves=moves(t_, l_), values=base.values.at[t_, 1].set(jnp.asarray(auction.VALUES)[v_])), 1))(
        jnp.asarray(t.reshape(-1)), jnp.asarray(last.reshape(-1)), jnp.asarray(v.reshape(-1))).reshape(t.shape)
    W = jnp.zeros((nb + 1, 2))  # continuation (br, learner) after the BR's bid index + 1
    for k in reversed(range(T)):
        pi = table[rows[k]]  # [last, v_learner, a]
        q = jnp.einsum("lva,wvbak->lwbk", pi, U) / nv + W[1:][None, None]  # [last, v_br, b, (br, learner)]
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
    t, lb, la = np.meshgrid(np.arange(T), np.arange(A + 1), np.arange(A + 1), indexing="ij")  # last demands + 1, 0 none
    moves = lambda t_, lb_, la_: jnp.full((T, 2), -1, jnp.int32).at[jnp.maximum(t_ - 1, 0)].set(
        jnp.where(t_ > 0, jnp.stack([lb_, la_]) - 1, -1))
    rows = jax.vmap(lambda t_, lb_, la_: game.infoset_index(base.replace(round=t_, moves=moves(t_, lb_, la_)), 1))(
        jnp.asarray(t.reshape(-1)), jnp.asarray(lb.reshape(-1)), jnp.asarray(la.reshape(-1))).reshape(t.shape)
    W = jnp.zeros((A + 1, A + 1, 2))  # continuation after (br demand + 1, learner demand + 1)
    for k in reversed(range(T)):
        pi = table[rows[k]]  # [lb, la, a]
        q = jnp.einsum("xya,bak->xybk", pi, U + W[1:, 1:])  # [lb, la, b, (br, learner)]
        x = _argbest(q[..., 0], q[..., 1])
        W = (x[..., None] * q).sum(2)
    return W[0, 0, 0], W[0, 0, 1]


# ---- negotiation v2: the learner conditions on (round, pool, its values): one round at a time ------


@functools.partial(jax.jit, static_argnums=0)
def _negotiation_v2_exposure(game, table):
    T, A = game.num_rounds, game.num_actions
    comps = jnp.asarray(negotiation.COMPOSITIONS)
    pools = jnp.asarray(np.array(np.meshgrid(*[np.arange(1, negotiation.MAX_ITEMS + 1)] * 3, indexing="ij")).reshape(3, -1).T)
    base = game.init(jax.random.key(0))
    at = lambda p: base.replace(pool=p, values=comps[:2])
    legal = jax.vmap(lambda p: game.legal(at(p), 0))(pools)  # [P, A]
    fits = jax.vmap(lambda p: jax.vmap(lambda b: jax.vmap(lambda a: game.fits(at(p), jnp.stack([b, a])))(jnp.arange(A)))(jnp.arange(A)))(pools)
    gain = jax.vmap(lambda v: jax.vmap(lambda a: game.gain(base.replace(values=jnp.stack([v, v])), 0, a))(jnp.arange(A)))(comps)
    gain = gain.astype(jnp.float32)  # [V, A]: what demand a earns at values v
    t, p, v = np.meshgrid(np.arange(T), np.arange(len(pools)), np.arange(len(comps)), indexing="ij")
    rows = jax.vmap(lambda t_, p_, v_: game.infoset_index(
        base.replace(round=t_, pool=pools[p_], values_id=jnp.stack([0, v_])), 1))(
        jnp.asarray(t.reshape(-1)), jnp.asarray(p.reshape(-1)), jnp.asarray(v.reshape(-1))).reshape(t.shape)
    pi = table[rows]  # [T, P, V_learner, a]
    fit_prob = jnp.einsum("tpva,pba->tpb", pi, fits.astype(jnp.float32)) / len(comps)  # P(deal | br demand b)
    kept = jnp.einsum("tpva,pba,va->tpb", pi, fits.astype(jnp.float32), gain) / len(comps)  # learner's payoff
    q = fit_prob[:, :, None, :] * gain[None, None]  # [T, P, V_br, b]
    x = _argbest(q, jnp.broadcast_to(kept[:, :, None, :], q.shape), legal[None, :, None, :])
    return (x * q).sum(-1).mean((1, 2)).sum(), (x * kept[:, :, None, :]).sum(-1).mean((1, 2)).sum()


_EXPOSURE = {
    "ipd": _ipd_exposure,
    "auction": _auction_exposure,
    "negotiation_v1": _negotiation_v1_exposure,
    "negotiation_v2": _negotiation_v2_exposure,
}
