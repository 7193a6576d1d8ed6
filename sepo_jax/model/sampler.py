"""Prefill + KV-cache decoding, group prefix sharing and constrained action choice; all jittable.

Every function takes the NNX ``Decoder`` first and is a plain traceable function: call it under
``nnx.jit`` (or inside the trainer's own jitted step) with the keyword-only sampling settings static.

Conventions:

* Prompts are LEFT-padded ``prompt_ids[B,P]`` / ``prompt_mask[B,P]``.
* ``group_size=n``: the B prompts are prefilled once and the cache is repeated to ``B*n`` rows, row
  ``b*n + i`` being sample i of prompt b (the order ``jnp.repeat(x, n, axis=0)`` gives).
* Log-probs are those of ``log_softmax(logits / temperature)`` (temperature 0 = greedy, scored at
  temperature 1), before any top-k/top-p truncation: the quantity the trainer recomputes.
* Actions: ``action_ids[A,L]`` right-padded token sequences with ``action_len[A] >= 1``, ``legal_mask[B,A]``
  (at least one legal action per row). An action's score is the sum of its token log-probs after the
  prompt; the policy is the log-softmax of the scores over the legal actions, ``-inf`` on illegal ones.
  Scoring prefills the prompt once and runs the A continuations (``L-1`` tokens each) against it as
  branches of one row (tree attention): prompt cost once and no copy of the cache per action.
  A model whose class sets ``tree_attention = False`` (recurrent layers: Qwen 3.5) gets one row per action
  instead: the cache repeated A times, or (``action_log_probs``) the prompt run once per action.
* Reasoning budget: k free tokens (a row stops after sampling ``eos_id``), then the forced ``suffix_ids``
  (e.g. the ids of "\\nAction:"), then the constrained choice. ``score_reasoning`` recomputes every
  log-prob of such a rollout differentiably (no while_loop) for the trainer.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sepo_jax.model.transformer import Decoder, KVCache


@flax.struct.dataclass
class Generation:
    tokens: jax.Array  # [R, N] int32, 0 after a row is done
    logp: jax.Array  # [R, N] float32 log-prob of each token, 0 where masked
    mask: jax.Array  # [R, N] bool, True for generated tokens (eos included)


@flax.struct.dataclass
class ReasonedAction:
    reasoning: Generation  # the k free tokens
    action: jax.Array  # [R] int32 index into action_ids
    logp: jax.Array  # [R] log-prob of the chosen action (renormalised over the legal ones)
    logprobs_all: jax.Array  # [R, A]


def _log_softmax_at(logits: jax.Array, tokens: jax.Array, temperature: float) -> jax.Array:
    """log_softmax(logits / T)[..., tokens] without materialising the full log-softmax."""
    logits = logits / (temperature if temperature > 0 else 1.0)
    picked = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def _filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    neg = jnp.finfo(logits.dtype).min
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        desc = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
        cutoff = jnp.min(jnp.where(before < top_p, desc, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg, logits)
    return logits


def _sample_token(logits, key, temperature, top_k, top_p):
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, _filter_logits(logits / temperature, top_k, top_p)).astype(jnp.int32)


def prefill(model: Decoder, ids, mask, extra: int, group_size: int = 1):
    """Prefills B prompts into a cache with ``extra`` free slots; returns (last logits [R,V], cache), both
    repeated to R = B*group_size rows."""
    cache = model.init_cache(ids.shape[0], ids.shape[1] + extra)
    logits, cache = model(ids, mask, cache=cache, last_only=True)
    return jnp.repeat(logits[:, -1], group_size, axis=0), cache.repeat(group_size)


def _decode(model: Decoder, cache: KVCache, logits, key, steps: int, temperature, top_k, top_p, eos_id):
    """Samples up to ``steps`` tokens, feeding each into the cache; stops early once every row is done."""
    rows = logits.shape[0]
    graphdef, state = nnx.split(model)

    def cond(carry):
        i, _, _, done, *_ = carry
        return (i < steps) & ~jnp.all(done)

    def body(carry):
        i, cache, logits, done, tokens, logps, masks, key = carry
        key, sub = jax.random.split(key)
        tok = _sample_token(logits, sub, temperature, top_k, top_p)
        live = ~done
        tok = jnp.where(live, tok, 0)
        lp = jnp.where(live, _log_softmax_at(logits, tok, temperature), 0.0)
        tokens, logps, masks = (jax.lax.dynamic_update_slice(buf, val[:, None], (0, i))
                                for buf, val in ((tokens, tok), (logps, lp), (masks, live)))
        if eos_id is not None:
            done = done | (tok == eos_id)
        logits, cache = nnx.merge(graphdef, state)(tok[:, None], live[:, None], cache=cache)
        return i + 1, cache, logits[:, 0], done, tokens, logps, masks, key

    init = (jnp.zeros((), jnp.int32), cache, logits, jnp.zeros((rows,), bool), jnp.zeros((rows, steps), jnp.int32),
            jnp.zeros((rows, steps), jnp.float32), jnp.zeros((rows, steps), bool), key)
    _, cache, logits, _, tokens, logps, masks, _ = jax.lax.while_loop(cond, body, init)
    return Generation(tokens, logps, masks), cache, logits


def generate(model: Decoder, prompt_ids, prompt_mask, key, *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_id: int | None = None, group_size: int = 1) -> Generation:
    """Samples ``max_new_tokens`` (or until ``eos_id``) for each of B prompts x group_size samples."""
    logits, cache = prefill(model, prompt_ids, prompt_mask, max_new_tokens, group_size)
    return _decode(model, cache, logits, key, max_new_tokens, temperature, top_k, top_p, eos_id)[0]


@dataclasses.dataclass(frozen=True)
class _Branches:
    """The action continuations as a prefix tree: node n stands for one distinct prefix t_0..t_k (k <= L-2)
    of the actions' tokens and holds its last token t_k at depth k, so actions that begin alike share
    their branch tokens (125 three-token demands of negotiation v2: 30 nodes instead of 250). With traced
    ``action_ids`` (no values to compare) every action keeps its own chain of nodes."""

    tokens: jax.Array  # [N] token of each node
    valid: jax.Array  # [N] the node is a real prefix (chains of short actions are padded)
    depth: np.ndarray  # [N]
    sees: np.ndarray  # [N+1, N+1] segment n+1 (node n) sees segment m+1 iff node m is n or an ancestor
    node: np.ndarray  # [A, L-1] node whose output predicts token j+1 of action a
    mask: jax.Array  # [A, L-1] token j+1 exists


def _branches(action_ids, action_len) -> _Branches:
    num_actions, width = action_ids.shape
    steps = np.arange(width - 1)
    try:
        ids, lens = np.asarray(action_ids), np.asarray(action_len)
    except jax.errors.TracerArrayConversionError:  # traced: one chain per action
        n = num_actions * (width - 1)
        sees = np.zeros((n + 1, n + 1), bool)
        chain = np.arange(1, n + 1).reshape(num_actions, width - 1)
        sees[chain[:, :, None], chain[:, None, :]] = steps[:, None] >= steps[None, :]
        mask = jnp.asarray(steps)[None, :] < action_len[:, None] - 1
        return _Branches(action_ids[:, :-1].reshape(-1), mask.reshape(-1), np.tile(steps, num_actions), sees,
                         chain - 1, mask)
    index, tokens, depth, parent = {}, [], [], []
    node = np.zeros((num_actions, width - 1), np.int32)
    for a in range(num_actions):
        for j in range(int(lens[a]) - 1):
            key = tuple(ids[a, : j + 1])
            if key not in index:
                index[key] = len(tokens)
                tokens.append(ids[a, j]), depth.append(j), parent.append(index[key[:-1]] if j else -1)
            node[a, j] = index[key]
    sees = np.zeros((len(tokens) + 1, len(tokens) + 1), bool)
    for n in range(len(tokens)):
        m = n
        while m >= 0:
            sees[n + 1, m + 1] = True
            m = parent[m]
    mask = steps[None, :] < lens[:, None] - 1
    return _Branches(jnp.asarray(tokens, jnp.int32).reshape(-1), jnp.ones(len(tokens), bool),
                     np.asarray(depth, np.int32).reshape(-1), sees, node, jnp.asarray(mask))


def _branch_scores(node_logits, first_logits, action_ids, branches: _Branches, temperature):
    """[..., A] summed token log-probs of every action: its first token from ``first_logits`` [..., V], each
    later token from its prefix node's logits ``node_logits`` [..., N, V]."""
    shape = first_logits.shape[:-1] + (action_ids.shape[0],)
    scores = _log_softmax_at(first_logits[..., None, :], jnp.broadcast_to(action_ids[:, 0], shape), temperature)
    if action_ids.shape[1] == 1:
        return scores
    logits = node_logits / (temperature if temperature > 0 else 1.0)
    lse = jax.nn.logsumexp(logits, axis=-1)  # [..., N]
    picked = logits[..., branches.node, action_ids[:, 1:]] - lse[..., branches.node]  # [..., A, L-1]
    return scores + jnp.where(branches.mask, picked, 0.0).sum(-1)


def _action_scores(model: Decoder, cache: KVCache, last_logits, action_ids, action_len, temperature):
    """[R, A] summed token log-probs of every action continuing each cached row.

    All continuations run in one row as a prefix tree of branches of the cached prefix (tree attention:
    node n is segment n+1 at position next_pos + its depth), so the cache needs ``branch_slots`` free
    slots, not A copies.
    """
    num_actions, length = action_ids.shape
    rows = last_logits.shape[0]
    if length == 1:
        return _branch_scores(None, last_logits, action_ids, None, temperature)
    if not getattr(model, "tree_attention", True):  # recurrent layers (qwen3_5): one row per action instead
        mask = jnp.arange(length - 1)[None, :] < action_len[:, None] - 1
        logits, _ = model(jnp.tile(action_ids[:, :-1], (rows, 1)), jnp.tile(mask, (rows, 1)),
                          cache=cache.repeat(num_actions))
        logits = logits.reshape(rows, num_actions, length - 1, -1)
        lp = _log_softmax_at(logits, jnp.broadcast_to(action_ids[:, 1:], (rows, num_actions, length - 1)), temperature)
        scores = _log_softmax_at(last_logits[:, None, :], jnp.broadcast_to(action_ids[:, 0], (rows, num_actions)),
                                 temperature)
        return scores + jnp.where(mask, lp, 0.0).sum(axis=-1)
    b = _branches(action_ids, action_len)
    flat = lambda x: jnp.broadcast_to(x, (rows,) + x.shape)  # noqa: E731
    logits, _ = model(flat(b.tokens), flat(b.valid), cache=cache, positions=cache.next_pos[:, None] + b.depth,
                      segment_ids=flat(jnp.arange(1, len(b.depth) + 1)), segment_tree=b.sees)
    return _branch_scores(logits, last_logits, action_ids, b, temperature)


def branch_slots(action_ids, action_len=None) -> int:
    """Free cache slots that scoring every action from a cached row needs (an upper bound without
    ``action_len``)."""
    if action_len is None:
        return action_ids.shape[0] * (action_ids.shape[1] - 1)
    return len(_branches(action_ids, action_len).depth)


def _renormalise(scores, legal_mask):
    legal = legal_mask.astype(bool)
    logp = jax.nn.log_softmax(jnp.where(legal, scores, -1e30), axis=-1)
    return jnp.where(legal, logp, -jnp.inf)


def _check_actions(action_ids, action_len, legal_mask, rows):
    if action_ids.ndim != 2 or action_len.shape != action_ids.shape[:1]:
        raise ValueError(f"action_ids must be [A, L] and action_len [A]; got {action_ids.shape} and {action_len.shape}")
    if legal_mask.shape != (rows, action_ids.shape[0]):
        raise ValueError(f"legal_mask must be [{rows}, {action_ids.shape[0]}]; got {legal_mask.shape}")


def action_log_probs(model: Decoder, prompt_ids, prompt_mask, action_ids, action_len, legal_mask, *,
                     temperature: float = 1.0) -> jax.Array:
    """[B, A] log-probs of the legal actions, renormalised; -inf on illegal ones. Differentiable.

    One forward pass without a KV cache: the prompt, then every action's tokens as branches of it
    (tree attention), the LM head only where a token is predicted. A cache carried through the
    differentiated layer scan would be saved once per layer for the backward pass."""
    _check_actions(action_ids, action_len, legal_mask, prompt_ids.shape[0])
    rows, length = prompt_ids.shape
    num_actions, width = action_ids.shape
    branch = lambda x: jnp.broadcast_to(x.reshape(-1), (rows, x.size))  # noqa: E731
    mask = jnp.arange(width - 1)[None, :] < action_len[:, None] - 1  # [A, L-1]
    prompt_mask = prompt_mask.astype(bool)
    if not getattr(model, "tree_attention", True):  # recurrent layers (qwen3_5): the prompt once per action
        ids = jnp.concatenate([jnp.repeat(prompt_ids, num_actions, 0), jnp.tile(action_ids[:, :-1], (rows, 1))], 1)
        full_mask = jnp.concatenate([jnp.repeat(prompt_mask, num_actions, 0), jnp.tile(mask, (rows, 1))], 1)
        logits = model(ids, full_mask, output_positions=jnp.arange(length - 1, ids.shape[1]))
        logits = logits.reshape(rows, num_actions, width, -1)
        targets = jnp.broadcast_to(action_ids, (rows, num_actions, width))
        lp = _log_softmax_at(logits, targets, temperature)
        scores = lp[..., 0] + jnp.where(mask, lp[..., 1:], 0.0).sum(axis=-1)
        return _renormalise(scores, legal_mask)
    if width == 1:
        logits = model(prompt_ids, prompt_mask, output_positions=jnp.asarray([length - 1]))
        return _renormalise(_branch_scores(None, logits[:, 0], action_ids, None, temperature), legal_mask)
    b = _branches(action_ids, action_len)
    nodes = len(b.depth)
    count = prompt_mask.sum(axis=1, dtype=jnp.int32)[:, None]
    logits = model(jnp.concatenate([prompt_ids, branch(b.tokens)], axis=1),
                   jnp.concatenate([prompt_mask, branch(b.valid)], axis=1),
                   positions=jnp.concatenate([jnp.cumsum(prompt_mask, axis=1, dtype=jnp.int32) - 1, count + b.depth], 1),
                   segment_ids=jnp.concatenate([jnp.zeros((rows, length), jnp.int32),
                                                branch(jnp.arange(1, nodes + 1))], axis=1),
                   segment_tree=b.sees, output_positions=jnp.arange(length - 1, length + nodes))
    return _renormalise(_branch_scores(logits[:, 1:], logits[:, 0], action_ids, b, temperature), legal_mask)


def cached_action_log_probs(model: Decoder, cache: KVCache, last_logits, action_ids, action_len, legal_mask, *,
                            temperature: float = 1.0) -> jax.Array:
    """[R, A] legal-action log-probs continuing each cached row (``last_logits`` [R, V] predicted after
    its last token), renormalised as ``action_log_probs``. The cache needs ``branch_slots(action_ids)`` free
    slots after its last written one; the branches are not kept in it."""
    _check_actions(action_ids, action_len, legal_mask, last_logits.shape[0])
    return _renormalise(_action_scores(model, cache, last_logits, action_ids, action_len, temperature), legal_mask)


def conversation_action_log_probs(model: Decoder, ids, mask, ends, action_ids, action_len, legal_mask, *,
                                  temperature: float = 1.0) -> jax.Array:
    """[B, D, A] legal-action log-probs at every decision of B conversations, from one forward pass.

    ``ids``/``mask`` [B, L] hold each conversation (holes allowed); decision d's prompt ends at the static
    index ``ends[d]``, ``legal_mask`` is [B, D, A]. Equal to ``action_log_probs`` of each prefix
    ``ids[:, :ends[d] + 1]`` on its own. Multi-token actions run as a prefix tree of branches per
    decision appended after the conversation (positions continuing decision d's prompt), each seeing the
    conversation only up to its decision (``shared_until``)."""
    rows, length = ids.shape
    num_actions, width = action_ids.shape
    ends = np.asarray(ends)
    num, extra = len(ends), len(ends) * (branch_slots(action_ids, action_len) if width > 1 else 0)
    if legal_mask.shape != (rows, num, num_actions):
        raise ValueError(f"legal_mask must be [{rows}, {num}, {num_actions}]; got {legal_mask.shape}")
    if width > 1 and not getattr(model, "tree_attention", True):
        raise ValueError(f"{type(model).__name__} cannot score multi-token actions of a conversation in one pass "
                         "(no tree attention); use prompt.format='restated'")
    mask = mask.astype(bool)
    # block-causal attention where the model offers it: a decision's turn never sees a later turn
    bounds = [0, *(ends + 1).tolist()] + ([length] if ends[-1] + 1 < length else []) + ([length + extra] if extra else [])
    blocked = {"query_blocks": tuple((lo, hi, hi) for lo, hi in zip(bounds[:-1], bounds[1:]))
               } if getattr(model, "query_blocks", False) else {}
    if width == 1:
        logits = model(ids, mask, output_positions=jnp.asarray(ends), **blocked)
        return _renormalise(_branch_scores(None, logits, action_ids, None, temperature), legal_mask)
    b = _branches(action_ids, action_len)
    nodes = len(b.depth)
    flat = lambda x: jnp.broadcast_to(x, (rows, num, nodes)).reshape(rows, -1)  # noqa: E731
    positions = jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
    count = positions[:, ends] + 1  # [B, D] tokens up to each decision
    tree = np.zeros((1 + num * nodes,) * 2, bool)  # decision d's nodes are segments 1 + d * nodes + n
    for d in range(num):
        tree[1 + d * nodes: 1 + (d + 1) * nodes, 1 + d * nodes: 1 + (d + 1) * nodes] = b.sees[1:, 1:]
    logits = model(jnp.concatenate([ids, flat(b.tokens)], 1), jnp.concatenate([mask, flat(b.valid)], 1),
                   positions=jnp.concatenate([positions, flat(count[:, :, None] + b.depth)], 1),
                   segment_ids=jnp.concatenate([jnp.zeros_like(positions), flat(1 + jnp.arange(num * nodes).reshape(num, nodes))], 1),
                   shared_until=jnp.concatenate([positions, flat(count[:, :, None] - 1)], 1), segment_tree=tree,
                   output_positions=jnp.concatenate([jnp.asarray(ends), length + jnp.arange(num * nodes)]), **blocked)
    scores = _branch_scores(logits[:, num:].reshape(rows, num, nodes, -1), logits[:, :num], action_ids, b, temperature)
    return _renormalise(scores, legal_mask)


def _choose(logprobs_all, key, temperature):
    if temperature == 0:
        action = jnp.argmax(logprobs_all, axis=-1)
    else:
        action = jax.random.categorical(key, logprobs_all)
    action = action.astype(jnp.int32)
    return action, jnp.take_along_axis(logprobs_all, action[:, None], axis=-1)[:, 0]


def sample_action(model: Decoder, prompt_ids, prompt_mask, action_ids, action_len, legal_mask, key, *,
                  temperature: float = 1.0, group_size: int = 1):
    """Draws ``group_size`` legal actions per prompt from one scoring pass.

    Returns ``(action [B*n], logp [B*n], logprobs_all [B*n, A])``; ``logprobs_all`` is
    ``action_log_probs(..., temperature)`` (temperature 1 when greedy) and is what the draw uses.
    """
    logprobs = action_log_probs(model, prompt_ids, prompt_mask, action_ids, action_len, legal_mask,
                                temperature=temperature)
    logprobs = jnp.repeat(logprobs, group_size, axis=0)
    action, logp = _choose(logprobs, key, temperature)
    return action, logp, logprobs


def sample_with_reasoning(model: Decoder, prompt_ids, prompt_mask, action_ids, action_len, legal_mask,
                          suffix_ids, key, *, budget: int, temperature: float = 1.0, top_k: int = 0,
                          top_p: float = 1.0, eos_id: int | None = None, group_size: int = 1) -> ReasonedAction:
    """k=``budget`` free tokens, then ``suffix_ids[S]`` forced, then the constrained action choice."""
    rows = prompt_ids.shape[0] * group_size
    _check_actions(action_ids, action_len, legal_mask, prompt_ids.shape[0])
    extra = budget + suffix_ids.shape[0] + branch_slots(action_ids)
    logits, cache = prefill(model, prompt_ids, prompt_mask, extra, group_size)
    key_reason, key_action = jax.random.split(key)
    reasoning, cache, _ = _decode(model, cache, logits, key_reason, budget, temperature, top_k, top_p, eos_id)
    suffix = jnp.broadcast_to(suffix_ids, (rows, suffix_ids.shape[0]))
    logits, cache = model(suffix, jnp.ones(suffix.shape, bool), cache=cache, last_only=True)
    scores = _action_scores(model, cache, logits[:, -1], action_ids, action_len, temperature)
    logprobs = _renormalise(scores, jnp.repeat(legal_mask, group_size, axis=0))
    action, logp = _choose(logprobs, key_action, temperature)
    return ReasonedAction(reasoning, action, logp, logprobs)


def score_reasoning(model: Decoder, prompt_ids, prompt_mask, reasoning: jax.Array, reasoning_mask: jax.Array,
                    suffix_ids, action_ids, action_len, legal_mask, action, *, temperature: float = 1.0,
                    group_size: int = 1):
    """Differentiable re-scoring of ``sample_with_reasoning`` output under the model's current params.

    ``reasoning``/``reasoning_mask``/``action`` have B*group_size rows (prompt b's samples consecutive);
    the B prompts are prefilled once. Returns ``(reasoning_logp [R,k] (0 where masked), action_logp [R],
    logprobs_all [R,A])``.
    """
    _check_actions(action_ids, action_len, legal_mask, prompt_ids.shape[0])
    rows, budget = reasoning.shape
    extra = budget + suffix_ids.shape[0] + branch_slots(action_ids)
    last, cache = prefill(model, prompt_ids, prompt_mask, extra, group_size)
    chunk = jnp.concatenate([reasoning, jnp.broadcast_to(suffix_ids, (rows, suffix_ids.shape[0]))], axis=1)
    mask = jnp.concatenate([reasoning_mask.astype(bool), jnp.ones((rows, suffix_ids.shape[0]), bool)], axis=1)
    logits, cache = model(chunk, mask, cache=cache)
    prev = jnp.concatenate([last[:, None], logits[:, :budget]], axis=1)[:, :budget]  # predicts each token
    reasoning_logp = jnp.where(reasoning_mask, _log_softmax_at(prev, reasoning, temperature), 0.0)
    scores = _action_scores(model, cache, logits[:, -1], action_ids, action_len, temperature)
    logprobs = _renormalise(scores, jnp.repeat(legal_mask, group_size, axis=0))
    return reasoning_logp, jnp.take_along_axis(logprobs, action[:, None], axis=-1)[:, 0], logprobs
