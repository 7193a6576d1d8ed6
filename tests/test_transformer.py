import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sepo_jax.model import transformer
from sepo_jax.model.transformer import Decoder, ModelConfig, embedded_config

BASE = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
            head_dim=8)
FAMILIES = {
    "llama": dict(tie_embeddings=False, attention_bias=True,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2": dict(attention_bias=True, rope_theta=1e6),
    "qwen3": dict(qk_norm=True),
    "gemma2": dict(hidden_act="gelu_tanh", query_pre_attn_scalar=16, attn_logit_softcapping=5.0,
                   final_logit_softcapping=3.0, sliding_window=3),
    "gemma3": dict(hidden_act="gelu_tanh", qk_norm=True, query_pre_attn_scalar=16, sliding_window=3,
                   rope_theta=1e6, rope_local_theta=1e4, num_layers=7,
                   rope_scaling={"rope_type": "linear", "factor": 8.0}),
}


def make(family, seed=0):
    model = Decoder(ModelConfig(**(BASE | {"family": family} | FAMILIES[family])), rngs=nnx.Rngs(seed))
    # Random norm weights so the (1 + w) / w forms and q/k norms are actually exercised.
    for i, (_, module) in enumerate(nnx.iter_modules(model)):
        if isinstance(module, transformer.RMSNorm):
            module.weight[...] = jax.random.normal(jax.random.key(i), module.weight.shape) * 0.5 + 0.2
    return model


forward = nnx.jit(lambda model, ids, mask=None: model(ids, mask))


def left_padded(rng, batch, length, vocab, pads):
    ids = rng.integers(1, vocab, (batch, length))
    mask = np.arange(length)[None, :] >= np.asarray(pads)[:, None]
    return jnp.asarray(np.where(mask, ids, 0)), jnp.asarray(mask)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cache_decode_equals_full_forward(family):
    model = make(family)
    ids, mask = left_padded(np.random.default_rng(0), 2, 10, BASE["vocab_size"], [0, 3])
    full = forward(model, ids, mask)
    assert full.dtype == jnp.float32 and full.shape == (2, 10, BASE["vocab_size"])
    step = nnx.jit(lambda m, i, k, c: m(i, k, cache=c))
    logits, cache = step(model, ids[:, :5], mask[:, :5], model.init_cache(2, 10))
    chunks = [logits]
    for t in range(5, 10):
        logits, cache = step(model, ids[:, t:t + 1], mask[:, t:t + 1], cache)
        chunks.append(logits)
    got = jnp.concatenate(chunks, axis=1)
    np.testing.assert_allclose(np.where(mask[..., None], got, 0), np.where(mask[..., None], full, 0), atol=1e-5)


def test_branches_and_last_only():
    """Two continuations as segments of one row equal two separate rows; last_only is the last column."""
    model = make("gemma2")
    ids, mask = left_padded(np.random.default_rng(3), 1, 6, BASE["vocab_size"], [1])
    step = nnx.jit(lambda m, i, k, c, p=None, s=None: m(i, k, cache=c, positions=p, segment_ids=s))
    last, cache = step(model, ids, mask, model.init_cache(1, 10))
    branches = jnp.array([[7, 8, 9, 10]])
    got, _ = step(model, branches, jnp.ones((1, 4), bool), cache, cache.next_pos[:, None] + jnp.array([[0, 1, 0, 1]]),
                  jnp.array([[1, 1, 2, 2]]))
    for b in range(2):
        want = forward(model, jnp.concatenate([ids, branches[:, 2 * b:2 * b + 2]], 1), jnp.pad(mask, ((0, 0), (0, 2)),
                                                                                                constant_values=True))
        np.testing.assert_allclose(got[:, 2 * b:2 * b + 2], want[:, 6:], atol=1e-5)
    np.testing.assert_allclose(nnx.jit(lambda m: m(ids, mask, last_only=True))(model), last[:, -1:], atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_left_padding_matches_unpadded_row(family):
    model = make(family)
    rng = np.random.default_rng(1)
    row = jnp.asarray(rng.integers(1, BASE["vocab_size"], (1, 7)))
    padded = jnp.concatenate([jnp.zeros((1, 4), row.dtype), row], axis=1)
    mask = jnp.arange(11)[None] >= 4
    np.testing.assert_allclose(forward(model, padded, mask)[:, 4:], forward(model, row), atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_variant_runs(family):
    model = make(family)
    logits = forward(model, jnp.arange(12)[None] % BASE["vocab_size"])
    assert bool(jnp.isfinite(logits).all())
    cap = FAMILIES[family].get("final_logit_softcapping")
    if cap:
        assert float(jnp.abs(logits).max()) <= cap
    layers = model.config.layer_types
    if family == "gemma2":
        assert layers == ("sliding_attention", "full_attention", "sliding_attention")
    if family == "gemma3":
        assert layers.count("full_attention") == 1 and layers[5] == "full_attention"
        rope = transformer.rope_tables(model.config)
        np.testing.assert_array_equal(rope[0], transformer._inv_freq(8, 1e4, None))
        np.testing.assert_array_equal(rope[5], transformer._inv_freq(8, 1e6, model.config.rope_scaling))


def test_sliding_window_limits_context():
    # Two local layers of window 3: position 8 reaches back to position 4 only.
    cfg = ModelConfig(**(BASE | FAMILIES["gemma2"] | {"family": "gemma2", "num_layers": 2,
                                                      "layer_types": ("sliding_attention",) * 2}))
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(2).integers(1, 40, (1, 9)))
    a, b = forward(model, ids), forward(model, ids.at[0, 4].set((ids[0, 4] + 1) % 40))
    c = forward(model, ids.at[0, 3].set((ids[0, 3] + 1) % 40))
    assert float(jnp.abs(a[0, 8] - b[0, 8]).max()) > 0.0
    assert float(jnp.abs(a[0, 8] - c[0, 8]).max()) == 0.0


def test_llama3_rope_matches_transformers():
    modeling_rope = pytest.importorskip("transformers.modeling_rope_utils")
    transformers = pytest.importorskip("transformers")
    scaling = FAMILIES["llama"]["rope_scaling"]
    hf = transformers.LlamaConfig(head_dim=8, hidden_size=32, num_attention_heads=4, max_position_embeddings=64,
                                  rope_scaling=dict(scaling), rope_theta=10000.0)
    inv_hf, _ = modeling_rope.ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    ours = transformer._inv_freq(8, 10000.0, tuple(sorted(scaling.items())))
    np.testing.assert_allclose(ours, inv_hf.numpy(), rtol=1e-6)


def test_from_hf_both_layouts():
    transformers = pytest.importorskip("transformers")
    legacy = dict(model_type="qwen2", vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=123.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=False)
    cfg = ModelConfig.from_hf(legacy)
    assert (cfg.rope_theta, cfg.head_dim, cfg.attention_bias, cfg.tie_embeddings) == (123.0, 8, True, False)
    v5 = transformers.Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  rope_parameters={"rope_type": "default", "rope_theta": 321.0}).to_dict()
    cfg = ModelConfig.from_hf(v5)
    assert (cfg.family, cfg.rope_theta, cfg.head_dim, cfg.qk_norm, cfg.sliding_window) == ("qwen3", 321.0, 16, True,
                                                                                            None)
    g3 = transformers.Gemma3TextConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=7,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=8).to_dict()
    cfg = ModelConfig.from_hf(g3)
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.hidden_act) == (1e6, 1e4, "gelu_tanh")
    assert cfg.layer_types[5] == "full_attention" and cfg.attn_logit_softcapping is None
    g2 = ModelConfig.from_hf(transformers.Gemma2Config(num_hidden_layers=2).to_dict())
    assert (g2.attn_logit_softcapping, g2.final_logit_softcapping, g2.query_pre_attn_scalar) == (50.0, 30.0, 256)


def test_config_errors_name_the_culprit():
    with pytest.raises(ValueError, match="family"):
        ModelConfig(**BASE, family="gpt2")
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelConfig(**(BASE | {"num_kv_heads": 3}))
    with pytest.raises(ValueError, match="yarn"):
        ModelConfig(**BASE, rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="model_type"):
        ModelConfig.from_hf({"model_type": "gpt2"})


def test_embedded_config_is_a_few_million_params():
    model = Decoder(embedded_config(vocab_size=512), rngs=nnx.Rngs(0))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert 1_000_000 < n < 10_000_000
    assert forward(model, jnp.zeros((1, 4), jnp.int32)).shape == (1, 4, 512)


def test_bfloat16_params_give_float32_logits():
    cfg = ModelConfig(**BASE, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    model = Decoder(cfg, rngs=nnx.Rngs(0))
    assert model.layers.self_attn.q_proj.kernel[...].dtype == jnp.bfloat16
    logits = forward(model, jnp.arange(5)[None])
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())

