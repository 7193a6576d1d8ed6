import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sepo_jax.model import lora
from sepo_jax.model.transformer import Decoder, ModelConfig

CFG = ModelConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                  head_dim=8)
IDS = jnp.array([[1, 2, 3, 4, 5], [0, 0, 6, 7, 8]])
MASK = IDS > 0
forward = nnx.jit(lambda m: m(IDS, MASK))


def base_and_adapted(**kw):
    base = Decoder(CFG, rngs=nnx.Rngs(0))
    adapted = lora.apply_lora(Decoder(CFG, rngs=nnx.Rngs(0)), rank=4, rngs=nnx.Rngs(1), **kw)
    return base, adapted


def test_zero_b_equals_base_and_targets():
    base, adapted = base_and_adapted(targets=("q_proj", "v_proj", "down_proj"))
    np.testing.assert_allclose(forward(adapted), forward(base), atol=1e-6)
    layer = adapted.layers
    assert layer.self_attn.q_proj.lora is not None and layer.mlp.down_proj.lora is not None
    assert layer.self_attn.k_proj.lora is None and layer.self_attn.o_proj.lora is None
    # stacked per layer, each layer's adapter drawn independently
    a = layer.self_attn.q_proj.lora.lora_a
    assert a.shape == (2, 16, 4) and layer.self_attn.q_proj.lora.lora_b.shape == (2, 4, 16)
    assert not np.allclose(a[0], a[1])


def test_disabled_is_the_base_policy():
    base, adapted = base_and_adapted()
    for _, m in nnx.iter_modules(adapted):
        if isinstance(m, lora.LoRA):
            m.lora_b[...] = jnp.ones_like(m.lora_b[...]) * 0.1
    assert float(jnp.abs(forward(adapted) - forward(base)).max()) > 1e-3

    @nnx.jit
    def reference(m):
        with lora.disabled(m):
            return m(IDS, MASK)

    np.testing.assert_allclose(reference(adapted), forward(base), atol=1e-6)
    assert float(jnp.abs(forward(adapted) - forward(base)).max()) > 1e-3  # re-enabled after the block


def test_gradient_only_reaches_lora_params():
    _, model = base_and_adapted()
    graphdef, trainable, frozen = nnx.split(model, nnx.LoRAParam, ...)
    assert {p[-1] for p, _ in nnx.to_flat_state(trainable)} == {"lora_a", "lora_b"}
    assert not any(p[-1] in ("lora_a", "lora_b") for p, _ in nnx.to_flat_state(frozen))

    def loss(m):
        return -jax.nn.log_softmax(m(IDS, MASK))[..., 3].mean()

    optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.LoRAParam)

    @nnx.jit
    def step(m, opt):
        grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(m)
        opt.update(m, grads)
        return grads

    before_frozen = jax.tree.map(jnp.copy, nnx.state(model, nnx.Not(nnx.LoRAParam)))
    before_lora = jax.tree.map(jnp.copy, nnx.state(model, nnx.LoRAParam))
    grads = step(model, optimizer)
    assert {p[-1] for p, _ in nnx.to_flat_state(grads)} == {"lora_a", "lora_b"}
    step(model, optimizer)
    for a, b in zip(jax.tree.leaves(before_frozen), jax.tree.leaves(nnx.state(model, nnx.Not(nnx.LoRAParam)))):
        np.testing.assert_array_equal(a, b)
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before_lora),
                                                          jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))]
    assert max(moved) > 0


def test_no_matching_target_is_an_error():
    with pytest.raises(ValueError, match="no Linear named"):
        lora.apply_lora(Decoder(CFG, rngs=nnx.Rngs(0)), targets=("qproj",), rngs=nnx.Rngs(0))


def test_float32_adapters_over_a_bfloat16_base():
    cfg = dataclasses.replace(CFG, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    base = Decoder(cfg, rngs=nnx.Rngs(0))
    adapted = lora.apply_lora(Decoder(cfg, rngs=nnx.Rngs(0)), rank=4, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
    q = adapted.layers.self_attn.q_proj
    assert q.kernel[...].dtype == jnp.bfloat16 and q.lora.lora_a[...].dtype == jnp.float32
    np.testing.assert_array_equal(forward(adapted), forward(base))
