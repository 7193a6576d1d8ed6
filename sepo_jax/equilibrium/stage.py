"""Exact best responses in the repeated / general-sum games: IPD, sealed-bid auction, negotiation.

General-sum, so two numbers describe a strategy's safety against an opponent, reported apart:
- gain: what the agent itself would win by deviating to its best response (BR value - its value);
- exposure: what the opponent's best response takes from the agent relative to a reference opponent
  (agent's value vs the reference - agent's value vs the opponent's BR to it; may be negative).
Best responses break ties against the other player (among maximisers, the one that leaves it least),
so exposure is the worst case over the opponent's best responses.

The simultaneous stage games reduce to bimatrix games: payoff matrices A (agent) and B (opponent),
rows = agent actions, columns = opponent actions (the auction: columns = opponent (value, bid) pairs,
one matrix per own value). All functions are jittable and broadcast over leading batch dimensions
unless noted.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_TIE = 1e-6


# ---- bimatrix games -----------------------------------------------------------------------------


def _argbest(q: Array, other: Array, legal: Array | None = None) -> Array:
    """One-hot argmax of q over the last axis, ties (within _TIE) broken by the least `other`."""
    if legal is not None:
        q = jnp.where(legal, q, -jnp.inf)
    best = q.max(-1, keepdims=True)
    other = jnp.where(q >= best - _TIE, other, jnp.inf)
    return jax.nn.one_hot(jnp.argmin(other, -1), q.shape[-1], dtype=q.dtype)


def bimatrix_best_response(A: Array, B: Array, y: Array, legal: Array | None = None) -> tuple[Array, Array]:
    """Row player's best response to column strategy y: (value, one-hot row strategy)."""
    q, other = A @ y[..., None], B @ y[..., None]
    x = _argbest(q[..., 0], other[..., 0], legal)
    return (x * q[..., 0]).sum(-1), x


def bimatrix_report(A, B, x, y, y_ref, legal_x=None, legal_y=None) -> dict[str, Array]:
    """Agent (rows, mixed x) against opponent y: its value, BR value, gain, and its exposure to the
    opponent's BR relative to reference opponent y_ref."""
    value = jnp.einsum("...a,...ab,...b->...", x, A, y)
    br_value, _ = bimatrix_best_response(A, B, y, legal_x)
    _, y_br = bimatrix_best_response(jnp.swapaxes(B, -1, -2), jnp.swapaxes(A, -1, -2), x, legal_y)
    vs_ref = jnp.einsum("...a,...ab,...b->...", x, A, y_ref)
    vs_br = jnp.einsum("...a,...ab,...b->...", x, A, y_br)
    return {"value": value, "br_value": br_value, "gain": br_value - value, "exposure": vs_ref - vs_br, "opponent_br": y_br}


# ---- iterated prisoner's dilemma ----------------------------------------------------------------

IPD_NUM_ROUNDS = 8
IPD_ACTIONS = ("COOPERATE", "DEFECT")
IPD_PAYOFF = np.array([[[3, 3], [0, 5]], [[5, 0], [1, 1]]], np.float32)  # [own, opp] -> (own, opp)
IPD_NUM_INFOSETS = (4**IPD_NUM_ROUNDS - 1) // 3  # 21845


def ipd_infoset_index(t, code):
    """Tabular row at round t (0-based) after history `code`: base-4 digits own * 2 + opp of the
    previous t rounds, oldest most significant. Ints or int arrays."""
    return ((1 << (2 * t)) - 1) // 3 + code


def _swap(code):
    """The same joint history seen by the other player (swap own/opp in every base-4 digit)."""
    return ((code & 0x5555) << 1) | ((code >> 1) & 0x5555)


@functools.cache
def _window_rows(window: int, num_rounds: int):
    """For every full-history row: its round and its code in a window-`window` strategy."""
    t = np.concatenate([np.full(4**r, r) for r in range(num_rounds)])
    code = np.concatenate([np.arange(4**r) for r in range(num_rounds)])
    return t, code % 4 ** np.minimum(t, window)


def ipd_window_to_table(window_probs: Array, window: int) -> Array:
    """Window strategy `[..., T, 4**window, 2]` (round t, code of the last min(t, window) joint
    actions) -> full tabular strategy `[..., 21845, 2]` (the game's infoset rows)."""
    t, code = _window_rows(window, window_probs.shape[-3])
    return jnp.asarray(window_probs)[..., t, code, :]


def ipd_table_to_window(table: Array) -> Array:
    """Full tabular strategy `[..., 21845, 2]` -> window T-1 form `[..., T, 4**(T-1), 2]` (exact;
    codes that cannot occur at round t are filled with COOPERATE)."""
    T, S = IPD_NUM_ROUNDS, 4 ** (IPD_NUM_ROUNDS - 1)
    out = jnp.zeros((*table.shape[:-2], T, S, 2), table.dtype).at[..., 0].set(1.0)
    t, code = _window_rows(T - 1, T)
    return out.at[..., t, code, :].set(table)


@functools.partial(jax.jit, static_argnames="window")
def ipd_best_response(opp_window_probs: Array, window: int) -> tuple[Array, Array, Array]:
    """Backward induction against an opponent that conditions on the last `window` joint actions.

    `opp_window_probs` `[T, 4**window, 2]` is the opponent's window strategy (codes from its own
    perspective). Returns (BR total payoff over the T rounds, the opponent's total payoff against the
    BR, the BR as a window strategy `[T, 4**window, 2]`, one-hot, unreachable codes COOPERATE)."""
    T, S = opp_window_probs.shape[0], 4**window
    R = jnp.asarray(IPD_PAYOFF)
    v_own, v_opp = jnp.zeros(1), jnp.zeros(1)
    policy = jnp.zeros((T, S, 2)).at[..., 0].set(1.0)
    for t in reversed(range(T)):
        n, n_next = 4 ** min(t, window), 4 ** min(t + 1, window)
        codes = jnp.arange(n)
        q = opp_window_probs[t, _swap(codes)]  # [n, 2] opponent's C/D
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
    """Expected total payoffs `[2]` over the T rounds of two full tabular strategies `[21845, 2]`
    (each indexed from its own perspective) playing each other."""
    R = jnp.asarray(IPD_PAYOFF)
    reach, total = jnp.ones(1), jnp.zeros(2)
    for t in range(IPD_NUM_ROUNDS):
        codes = jnp.arange(4**t)
        pa = table_a[ipd_infoset_index(t, codes)]
        pb = table_b[ipd_infoset_index(t, _swap(codes))]
        joint = reach[:, None, None] * pa[:, :, None] * pb[:, None, :]  # [n, a, b]
        total = total + jnp.einsum("nab,abk->k", joint, R)
        reach = joint.reshape(-1)  # next code = code * 4 + a * 2 + b
    return total


def ipd_report(agent: Array, opponent: Array, reference: Array) -> dict[str, Array]:
    """Gain and exposure (totals over the T rounds) of a full tabular agent `[21845, 2]` against a
    full tabular opponent, with `reference` the opponent used as exposure baseline."""
    value = ipd_values(agent, opponent)[0]
    br_value, _, _ = ipd_best_response(ipd_table_to_window(opponent), IPD_NUM_ROUNDS - 1)
    _, _, opp_br = ipd_best_response(ipd_table_to_window(agent), IPD_NUM_ROUNDS - 1)
    opp_br = ipd_window_to_table(opp_br, IPD_NUM_ROUNDS - 1)
    exposure = ipd_values(agent, reference)[0] - ipd_values(agent, opp_br)[0]
    return {"value": value, "br_value": br_value, "gain": br_value - value, "exposure": exposure}


# ---- sealed-bid auction -------------------------------------------------------------------------

AUCTION_VALUES = (2, 4)  # private value, iid uniform per player per round
AUCTION_BIDS = (1, 2, 3)  # actions 0=LOW 1=MEDIUM 2=HIGH
AUCTION_NUM_ROUNDS = 6


@functools.cache
def auction_stage_payoff() -> np.ndarray:
    """U[v, a, b]: expected payoff with value index v bidding a against bid b (first price, ties
    50/50)."""
    v = np.array(AUCTION_VALUES, np.float32)[:, None, None]
    bid = np.array(AUCTION_BIDS, np.float32)
    a, b = bid[None, :, None], bid[None, None, :]
    return (v - a) * np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def _auction_matrices():
    """Per own value v: A[v, a, (v', b)] and B[v, a, (v', b)], columns = opponent (value, bid)."""
    U = auction_stage_payoff()
    A = np.broadcast_to(U[:, :, None, :], (2, 3, 2, 3)).reshape(2, 3, 6)
    B = np.transpose(U, (2, 1, 0))  # B[a, v', b] = U[v', b, a]
    return jnp.asarray(A), jnp.asarray(np.broadcast_to(B.reshape(1, 3, 6), (2, 3, 6)))


def _opp_columns(opp: Array) -> Array:
    """Opponent bids per value `[..., 2, 3]` -> distribution over (value, bid) columns `[..., 6]`."""
    return 0.5 * opp.reshape(*opp.shape[:-2], 6)


def auction_best_response(opp: Array) -> tuple[Array, Array]:
    """Best response to opponent bid distributions per its value `[..., 2, 3]` (e.g. `[6, 2, 3]`, one
    per round): (expected payoff per round `[...]`, averaged over own value; bids `[..., 2, 3]`)."""
    A, B = _auction_matrices()
    y = _opp_columns(opp)[..., None, :]
    value, x = bimatrix_best_response(A, B, y)
    return value.mean(-1), x


def auction_values(agent: Array, opp: Array) -> Array:
    """Expected payoffs `[..., 2]` (agent, opponent) per round of two per-value bid strategies."""
    U = jnp.asarray(auction_stage_payoff())
    mine = 0.25 * jnp.einsum("...va,vab,...wb->...", agent, U, opp)
    theirs = 0.25 * jnp.einsum("...wb,wba,...va->...", opp, U, agent)
    return jnp.stack([mine, theirs], -1)


def auction_report(agent: Array, opponent: Array, reference: Array) -> dict[str, Array]:
    """Gain and exposure per round of per-value bid strategies `[..., 2, 3]`."""
    value = auction_values(agent, opponent)[..., 0]
    br_value, _ = auction_best_response(opponent)
    _, opp_br = auction_best_response(agent)
    exposure = auction_values(agent, reference)[..., 0] - auction_values(agent, opp_br)[..., 0]
    return {"value": value, "br_value": br_value, "gain": br_value - value, "exposure": exposure}


def auction_revenue(bids0: Array, bids1: Array) -> Array:
    """Expected seller revenue (the winning bid) per round of two per-value bid strategies."""
    bid = jnp.asarray(AUCTION_BIDS, jnp.float32)
    p0, p1 = bids0.mean(-2), bids1.mean(-2)  # value uniform -> marginal bid distribution
    return jnp.einsum("...a,...b,ab->...", p0, p1, jnp.maximum(bid[:, None], bid[None, :]))


def auction_pure_equilibria() -> list[dict]:
    """All pure Bayesian equilibria of the stage game (strategies: value -> bid), with payoffs and
    seller revenue. Host-side enumeration of the 9 x 9 profiles."""
    out = []
    pure = [np.eye(3)[list(s)] for s in itertools.product(range(3), repeat=2)]
    for s0, s1 in itertools.product(pure, pure):
        v = np.asarray(auction_values(s0, s1))
        br0, _ = auction_best_response(s1)
        br1, _ = auction_best_response(s0)
        if v[0] >= float(br0) - _TIE and v[1] >= float(br1) - _TIE:
            bids = lambda s: {val: AUCTION_BIDS[int(np.argmax(r))] for val, r in zip(AUCTION_VALUES, s)}
            out.append({"bids": (bids(s0), bids(s1)), "payoffs": tuple(v.tolist()), "revenue": float(auction_revenue(s0, s1))})
    return out


# ---- negotiation --------------------------------------------------------------------------------

NEG_V1_PIE = 10
NEG_V1_DEMANDS = tuple(range(1, 10))  # actions 0..8


@functools.cache
def neg_v1_matrix() -> np.ndarray:
    """M[a, b]: payoff of demanding a + 1 against b + 1 (deal iff the sum fits the pie)."""
    d = np.arange(1, 10, dtype=np.float32)
    return np.where(d[:, None] + d[None, :] <= NEG_V1_PIE, d[:, None], 0.0)


def neg_v1_best_response(opp: Array) -> tuple[Array, Array]:
    """Best demand against a demand distribution `[..., 9]`: (expected payoff, one-hot `[..., 9]`)."""
    M = jnp.asarray(neg_v1_matrix())
    return bimatrix_best_response(M, M.T, opp)


def neg_v1_report(agent: Array, opponent: Array, reference: Array) -> dict[str, Array]:
    M = jnp.asarray(neg_v1_matrix())
    return bimatrix_report(M, M.T, agent, opponent, reference)


NEG_V2_ITEMS = ("Books", "Hats", "Balls")
NEG_V2_NUM_ACTIONS = 125  # d_books * 25 + d_hats * 5 + d_balls, each 0..4


@functools.cache
def neg_v2_demands() -> np.ndarray:
    """`[125, 3]` demand vector of every action."""
    a = np.arange(NEG_V2_NUM_ACTIONS)
    return np.stack([a // 25, (a // 5) % 5, a % 5], -1).astype(np.int32)


def neg_v2_legal(pool: Array) -> Array:
    """`[..., 125]` actions whose demand fits the pool `[..., 3]` item-wise."""
    return (jnp.asarray(neg_v2_demands()) <= pool[..., None, :]).all(-1)


def neg_v2_matrices(pool: Array, values_a: Array, values_b: Array) -> tuple[Array, Array]:
    """Payoff matrices `[..., 125, 125]` of the agent (values_a) and the opponent (values_b)."""
    d = jnp.asarray(neg_v2_demands())
    fits = ((d[:, None, :] + d[None, :, :]) <= pool[..., None, None, :]).all(-1)
    A = jnp.where(fits, (d @ values_a[..., None].astype(jnp.float32)), 0.0)  # own demand . own values
    B = jnp.where(fits, jnp.swapaxes(d @ values_b[..., None].astype(jnp.float32), -1, -2), 0.0)
    return A, B


def neg_v2_best_response(opp: Array, pool: Array, values: Array, opp_values: Array | None = None) -> tuple[Array, Array]:
    """Best legal demand against a demand distribution `[..., 125]` given the pool `[..., 3]` and own
    values `[..., 3]`: (expected payoff, one-hot `[..., 125]`). `opp_values` only breaks ties (against
    the opponent); without it ties go to the lowest action index."""
    A, B = neg_v2_matrices(pool, values, values if opp_values is None else opp_values)
    if opp_values is None:
        B = jnp.zeros_like(B)
    return bimatrix_best_response(A, B, opp, neg_v2_legal(pool))


def neg_v2_report(agent, opponent, reference, pool, values, opp_values) -> dict[str, Array]:
    A, B = neg_v2_matrices(pool, values, opp_values)
    legal = neg_v2_legal(pool)
    return bimatrix_report(A, B, agent, opponent, reference, legal, legal)
