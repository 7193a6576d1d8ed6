import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sepo_jax.model import sampler
from sepo_jax.model.transformer import Decoder, ModelConfig

V = 24
CFG = ModelConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)
# Three actions of lengths 1, 2 and 3 sharing a first token between the last two.
ACTION_IDS = jnp.array([[3, 0, 0], [5, 7, 0], [5, 8, 9]], jnp.int32)
ACTION_LEN = jnp.array([1, 2, 3], jnp.int32)
LEGAL = jnp.array([[True, True, True], [True, False, True], [False, True, True]])


@pytest.fixture(scope="module")
def model():
    # Scaled-up weights give peaked, prompt-dependent distributions.
    m = Decoder(CFG, rngs=nnx.Rngs(5))
    for _, mod in nnx.iter_modules(m):
        if hasattr(mod, "kernel"):
            mod.kernel[...] = mod.kernel[...] * 12
    m.embed_tokens.weight[...] = m.embed_tokens.weight[...] * 40
    return m


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, V, (3, 6))
    mask = np.arange(6)[None, :] >= np.array([0, 2, 4])[:, None]
    return jnp.asarray(np.where(mask, ids, 0), jnp.int32), jnp.asarray(mask)


forward = nnx.jit(lambda m, ids, mask: m(ids, mask))


def jitted(fn, **static):
    return nnx.jit(functools.partial(fn, **static))


def full_logp(model, ids, mask, tokens, token_mask, temperature=1.0):
    """Oracle: log-probs of ``tokens`` after the prompt by one full forward of [prompt; tokens]."""
    seq = jnp.concatenate([ids, tokens], axis=1)
    m = jnp.concatenate([mask, token_mask], axis=1)
    logits = forward(model, seq, m)[:, ids.shape[1] - 1:-1] / temperature
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
    return jnp.where(token_mask, lp, 0.0)


def test_greedy_generate_equals_full_forward_argmax(model, prompts):
    ids, mask = prompts
    out = jitted(sampler.generate, max_new_tokens=5, temperature=0.0)(model, ids, mask, jax.random.key(0))
    seq, m = ids, mask
    for _ in range(5):
        nxt = jnp.argmax(forward(model, seq, m)[:, -1], axis=-1)
        seq, m = jnp.concatenate([seq, nxt[:, None]], 1), jnp.concatenate([m, jnp.ones((3, 1), bool)], 1)
    np.testing.assert_array_equal(out.tokens, seq[:, 6:])
    assert bool(out.mask.all())
    assert len(set(np.asarray(out.tokens).ravel().tolist())) > 2  # the oracle is not trivial


def test_sampled_logp_matches_full_forward_rescoring(model, prompts):
    ids, mask = prompts
    out = jitted(sampler.generate, max_new_tokens=6, temperature=0.7, top_k=10, top_p=0.9)(
        model, ids, mask, jax.random.key(1))
    np.testing.assert_allclose(out.logp, full_logp(model, ids, mask, out.tokens, out.mask, 0.7), atol=1e-5)


def test_group_prefix_sharing_equals_prefilling_every_copy(model, prompts):
    ids, mask = prompts
    gen = jitted(sampler.generate, max_new_tokens=6, temperature=1.0)
    shared = jitted(sampler.generate, max_new_tokens=6, temperature=1.0, group_size=4)(
        model, ids, mask, jax.random.key(2))
    copies = gen(model, jnp.repeat(ids, 4, 0), jnp.repeat(mask, 4, 0), jax.random.key(2))
    np.testing.assert_array_equal(shared.tokens, copies.tokens)
    np.testing.assert_allclose(shared.logp, copies.logp, atol=1e-5)
    assert len({tuple(r) for r in np.asarray(shared.tokens[:4]).tolist()}) > 1  # samples of a group differ


def test_eos_stops_rows_and_loop(model, prompts):
    ids, mask = prompts
    greedy = jitted(sampler.generate, max_new_tokens=4, temperature=0.0)(model, ids, mask, jax.random.key(0))
    eos = int(greedy.tokens[0, 1])
    out = jitted(sampler.generate, max_new_tokens=4, temperature=0.0, eos_id=eos)(model, ids, mask, jax.random.key(0))
    first = [int(np.argmax(np.asarray(r) == eos)) if eos in np.asarray(r) else 4 for r in greedy.tokens]
    for row, stop in enumerate(first):
        np.testing.assert_array_equal(out.mask[row], np.arange(4) <= stop)
        np.testing.assert_array_equal(np.where(out.mask[row], out.tokens[row], 0),
                                      np.where(np.arange(4) <= stop, greedy.tokens[row], 0))


def test_filter_logits_top_k_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keep = lambda k, p: np.asarray(sampler._filter_logits(logits, k, p) > -1e30)[0].tolist()
    assert keep(2, 1.0) == [True, True, False, False]
    assert keep(0, 0.7) == [True, True, False, False]  # 0.5 < 0.7, 0.8 >= 0.7
    assert keep(0, 0.5) == [True, False, False, False]
    assert keep(0, 0.81) == [True, True, True, False]


def direct_action_logprobs(model, ids, mask, temperature=1.0):
    """Oracle: full forward over [prompt; action] for every (row, action), softmax over the legal ones."""
    scores = []
    for a in range(ACTION_IDS.shape[0]):
        toks = jnp.broadcast_to(ACTION_IDS[a], (ids.shape[0], ACTION_IDS.shape[1]))
        tmask = jnp.broadcast_to(jnp.arange(ACTION_IDS.shape[1]) < ACTION_LEN[a], toks.shape)
        scores.append(full_logp(model, ids, mask, toks, tmask, temperature).sum(axis=1))
    scores = np.stack(scores, axis=1)
    scores = np.where(LEGAL, scores, -np.inf)
    return scores - jax.scipy.special.logsumexp(scores, axis=1, keepdims=True)


def test_action_log_probs_match_direct_softmax(model, prompts):
    ids, mask = prompts
    for temperature in (1.0, 0.5):
        got = jitted(sampler.action_log_probs, temperature=temperature)(model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL)
        want = direct_action_logprobs(model, ids, mask, temperature)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        assert np.isneginf(np.asarray(got)[~np.asarray(LEGAL)]).all()
    assert float(jnp.exp(got).max(axis=1).min()) < 0.999  # not degenerate


def test_action_log_probs_differentiable(model, prompts):
    ids, mask = prompts
    graphdef, params = nnx.split(model)

    def loss(p):
        lp = sampler.action_log_probs(nnx.merge(graphdef, p), ids, mask, ACTION_IDS, ACTION_LEN, LEGAL)
        return jnp.where(LEGAL, lp, 0.0).sum()

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert float(jnp.abs(grads["layers"]["self_attn"]["q_proj"]["kernel"][...][0]).sum()) > 0


def test_sample_action_stays_legal_and_follows_the_distribution(model, prompts):
    ids, mask = prompts
    n = 4000
    action, logp, allp = jitted(sampler.sample_action, group_size=n)(
        model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL, jax.random.key(3))
    action, logp, allp = map(np.asarray, (action, logp, allp))
    rows = np.repeat(np.arange(3), n)
    assert np.asarray(LEGAL)[rows, action].all()
    np.testing.assert_allclose(logp, allp[np.arange(3 * n), action])
    want = np.exp(np.asarray(direct_action_logprobs(model, ids, mask)))
    for r in range(3):
        freq = np.bincount(action[rows == r], minlength=3) / n
        assert (np.abs(freq - want[r]) <= 4 * np.sqrt(want[r] * (1 - want[r]) / n) + 2e-3).all(), (freq, want[r])


def test_sample_action_prefix_sharing_and_greedy(model, prompts):
    ids, mask = prompts
    fn = lambda **kw: jitted(sampler.sample_action, **kw)
    shared = fn(group_size=5)(model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL, jax.random.key(4))
    copies = fn()(model, jnp.repeat(ids, 5, 0), jnp.repeat(mask, 5, 0), ACTION_IDS, ACTION_LEN,
                  jnp.repeat(LEGAL, 5, 0), jax.random.key(4))
    np.testing.assert_array_equal(shared[0], copies[0])
    np.testing.assert_allclose(shared[1], copies[1], atol=1e-5)
    greedy, _, allp = fn(temperature=0.0)(model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL, jax.random.key(0))
    np.testing.assert_array_equal(greedy, np.argmax(allp, axis=1))


def test_shape_errors_name_the_argument(model, prompts):
    ids, mask = prompts
    with pytest.raises(ValueError, match="legal_mask"):
        sampler.action_log_probs(model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL[:2])
    with pytest.raises(ValueError, match="action_len"):
        sampler.action_log_probs(model, ids, mask, ACTION_IDS, ACTION_LEN[:2], LEGAL)


def test_reasoning_rollout_rescored_equals_sampled(model, prompts):
    ids, mask = prompts
    suffix = jnp.array([11, 12], jnp.int32)
    greedy = jitted(sampler.generate, max_new_tokens=4, temperature=0.0)(model, ids, mask, jax.random.key(0))
    eos = int(greedy.tokens[1, 1])  # some rows stop early, others use the whole budget
    out = jitted(sampler.sample_with_reasoning, budget=4, temperature=0.8, eos_id=eos, group_size=3)(
        model, ids, mask, ACTION_IDS, ACTION_LEN, LEGAL, suffix, jax.random.key(5))
    assert not bool(out.reasoning.mask.all()) and bool(out.reasoning.mask[:, 0].all())
    assert np.asarray(jnp.repeat(LEGAL, 3, 0))[np.arange(9), np.asarray(out.action)].all()
    r_lp, a_lp, allp = jitted(sampler.score_reasoning, temperature=0.8, group_size=3)(
        model, ids, mask, out.reasoning.tokens, out.reasoning.mask, suffix, ACTION_IDS, ACTION_LEN, LEGAL, out.action)
    np.testing.assert_allclose(r_lp, out.reasoning.logp, atol=1e-5)
    np.testing.assert_allclose(a_lp, out.logp, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(allp, out.logprobs_all, atol=1e-5, rtol=1e-5)
    # Oracle for the action distribution: the prefix [prompt; reasoning; suffix] scored by full forwards.
    rep = lambda x: jnp.repeat(x, 3, 0)
    prefix = jnp.concatenate([rep(ids), out.reasoning.tokens, jnp.broadcast_to(suffix, (9, 2))], axis=1)
    pmask = jnp.concatenate([rep(mask), out.reasoning.mask, jnp.ones((9, 2), bool)], axis=1)
    direct = jitted(sampler.action_log_probs, temperature=0.8)(model, prefix, pmask, ACTION_IDS, ACTION_LEN, rep(LEGAL))
    np.testing.assert_allclose(out.logprobs_all, direct, atol=1e-5, rtol=1e-5)


def test_actions_sharing_first_tokens_are_scored_as_a_prefix_tree(model, prompts):
    """Concrete action ids run as a prefix tree of branches (shared prefixes once); traced ones as one chain
    per action. Both give the same log-probs, from the prompt and from a cached prompt."""
    triples = [[a, b, c] for a in (1, 2, 3) for b in (4, 5) for c in (6, 7, 8)]
    action_ids = jnp.asarray(triples + [[9, 0, 0], [1, 10, 0]], jnp.int32)
    action_len = jnp.asarray([3] * len(triples) + [1, 2], jnp.int32)
    ids, mask = prompts
    legal = jnp.ones((ids.shape[0], action_ids.shape[0]), bool).at[1, 5].set(False)
    assert sampler.branch_slots(action_ids, action_len) == 3 + 6 < sampler.branch_slots(action_ids)  # [1, 10] reuses (1)
    chains = jitted(sampler.action_log_probs)(model, ids, mask, action_ids, action_len, legal)
    tree = nnx.jit(lambda m, i, k: sampler.action_log_probs(m, i, k, action_ids, action_len, legal))(model, ids, mask)
    np.testing.assert_allclose(np.asarray(tree), np.asarray(chains), atol=2e-5)

    @nnx.jit
    def cached(m, i, k):
        logits, cache = sampler.prefill(m, i, k, sampler.branch_slots(action_ids, action_len))
        return sampler.cached_action_log_probs(m, cache, logits, action_ids, action_len, legal)

    np.testing.assert_allclose(np.asarray(cached(model, ids, mask)), np.asarray(chains), atol=2e-5)
