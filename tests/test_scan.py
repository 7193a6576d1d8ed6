"""The stacked, scanned decoder: program size independent of depth, remat gives identical gradients, the
bfloat16 compute path stays close to float32, and every parameter carries logical axis names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sepo_jax.model import lora
from sepo_jax.model.transformer import Decoder, ModelConfig

# gemma3 mixes sliding and global layers (and two RoPE tables) in the one stack.
BASE = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
            head_dim=8, family="gemma3", hidden_act="gelu_tanh", qk_norm=True, sliding_window=3, rope_theta=1e6,
            rope_local_theta=1e4, layer_types=("sliding_attention", "full_attention", "sliding_attention"))
IDS = jnp.array([[0, 0, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]])
MASK = IDS > 0
NAMES = {"layers", "vocab", "embed", "q_heads", "kv_heads", "mlp", "norm", "head_dim", "lora_rank"}


def make(**kw):
    model = Decoder(ModelConfig(**(BASE | kw)), rngs=nnx.Rngs(0))
    for _, m in nnx.iter_modules(model):  # scaled weights: peaked, input-dependent logits
        if hasattr(m, "kernel"):
            m.kernel[...] = m.kernel[...] * 10
    model.embed_tokens.weight[...] = model.embed_tokens.weight[...] * 30
    return model


def test_program_size_does_not_grow_with_depth():
    def size(layers):
        model = Decoder(ModelConfig(**(BASE | {"num_layers": layers, "layer_types": None})), rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        return len(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(IDS, MASK))(state).eqns)

    assert size(2) == size(12)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_identical_gradients(remat):
    def grads(model):
        graphdef, state = nnx.split(model)

        def loss(s):
            return -jax.nn.log_softmax(nnx.merge(graphdef, s)(IDS, MASK))[..., 3].mean()

        return jax.jit(jax.value_and_grad(loss))(state)

    (v0, g0), (v1, g1) = grads(make()), grads(make(remat=remat))
    assert float(v0) == float(v1)
    for (p, a), (_, b) in zip(nnx.to_flat_state(g0), nnx.to_flat_state(g1), strict=True):
        np.testing.assert_allclose(a.get_value(), b.get_value(), atol=1e-6, rtol=1e-6, err_msg=str(p))


def test_remat_setting_is_checked():
    with pytest.raises(ValueError, match="remat"):
        ModelConfig(**(BASE | {"remat": "some"}))


def test_bfloat16_compute_stays_close_to_float32():
    """bf16 matmuls/activations over float32 master weights: log-probs within 0.15 nats (max over all
    vocabulary entries) of the float32 ones, with float32 logits and float32 parameters."""
    full, half = make(), make(dtype=jnp.bfloat16)
    assert half.layers.mlp.up_proj.kernel[...].dtype == jnp.float32
    logp = lambda m: jax.nn.log_softmax(nnx.jit(lambda m: m(IDS, MASK))(m))
    want, got = logp(full), logp(half)
    assert got.dtype == jnp.float32
    assert float(jnp.abs(want).max()) > 2.0  # far from uniform
    err = float(jnp.abs(got - want)[MASK].max())
    assert 0.0 < err < 0.15, err  # really computed in bf16, and close (0.077 measured on x86 CPU)
    graphdef, state = nnx.split(half)
    jaxpr = str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(IDS, MASK))(state))
    assert ":bf16[2,8,48] = dot_general" in jaxpr  # the MLP's projections run in bf16


@pytest.mark.parametrize("tied", [True, False])
def test_every_parameter_has_logical_axis_names(tied):
    model = lora.apply_lora(make(tie_embeddings=tied, attention_bias=True), rank=2, rngs=nnx.Rngs(1),
                            targets=("q_proj", "v_proj", "down_proj", "lm_head") if not tied else ("q_proj",))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.LoRAParam)))
    assert any(isinstance(v, nnx.LoRAParam) for _, v in flat) and len(flat) > 10
    for path, var in flat:
        names = var.get_metadata()["out_sharding"]
        assert len(names) == var.get_value().ndim and set(names) <= NAMES, (path, names)
        assert (names[0] == "layers") == (path[0] == "layers"), (path, names)
    specs = nnx.get_partition_spec(nnx.state(model))
    assert tuple(specs["layers"]["self_attn"]["q_proj"]["lora"]["lora_b"].get_value()) == ("layers", "lora_rank",
                                                                                           "q_heads")
    assert tuple(specs["embed_tokens"]["weight"].get_value()) == ("vocab", "embed")
