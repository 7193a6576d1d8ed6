"""The training step at scale without weights: lower and compile the SEPO step of an abstract model
(`jax.ShapeDtypeStruct` weights, nothing allocated) on any mesh, and read what the program costs:
the bytes of constants it embeds, its per-device memory and its FLOPs.

`experiments/scale_check.py` uses it for 4B models on fake 8- and 64-device meshes; the tests use it
to prove that no weight is compiled into the step as a constant.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sepo_jax import games as games_lib
from sepo_jax import parallel
from sepo_jax.model import lora as lora_lib
from sepo_jax.model import tokenizer as tokenizer_lib
from sepo_jax.model.transformer import Decoder
from sepo_jax.model.weights import config_from_hf
from sepo_jax.rl import trainer
from sepo_jax.settings import Settings

# config.json of real checkpoints (the architecture keys only). SmolLM2 and Qwen3 as published; Qwen3.5-4B
# and Gemma-4-E4B as recalled from their published config.json without network access to check them here:
# `experiments/scale_check.py --hf-config FILE` compiles any real config.json instead.
SHAPES = {
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
    "qwen3-4b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "qwen3.5-4b": dict(model_type="qwen3_5_text", vocab_size=248320, hidden_size=2560, intermediate_size=9216,
                       num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4, head_dim=256,
                       linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                       linear_value_head_dim=128, linear_conv_kernel_dim=4, full_attention_interval=4,
                       rope_parameters=dict(rope_type="default", rope_theta=10000000.0, partial_rotary_factor=0.25),
                       rms_norm_eps=1e-6, tie_word_embeddings=True),
    "gemma-4-e4b": dict(model_type="gemma4_text", vocab_size=262144, hidden_size=2560, intermediate_size=10240,
                        num_hidden_layers=42, num_attention_heads=8, num_key_value_heads=2, head_dim=256,
                        global_head_dim=512, sliding_window=512, num_kv_shared_layers=18,
                        hidden_size_per_layer_input=256, vocab_size_per_layer_input=262144,
                        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(42)],
                        final_logit_softcapping=30.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
}


class PaddedPromptTokenizer:
    """The embedded tokenizer whose chat wrap adds a system-prompt-like prefix, so every rendered
    prompt is `prompt_tokens` long (a pretrained model's chat template and the rules make prompts
    this long; the embedded vocabulary alone makes them short)."""

    def __init__(self, game, prompt_tokens: int):
        self.base = tokenizer_lib.embedded_tokenizer(games_lib.template_texts())
        short = games_lib.PromptRenderer(game, self.base).length
        if prompt_tokens < short:
            raise ValueError(f"prompt_tokens={prompt_tokens} is shorter than the game's own prompt ({short} tokens)")
        word = " PASS"
        assert len(self.base.encode(word * 3)) == 3, "filler word must be one token"
        self.prefix = word * (prompt_tokens - short)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def chat_wrap(self) -> tuple[str, str]:
        return self.prefix, ""


def abstract_model(shape, lora_rank: int = 0, lora_alpha: float = 32.0):
    """The model of architecture config `shape` (any family's) with LoRA adapters when `lora_rank` > 0,
    as shapes only."""
    def make():
        model = getattr(shape, "model_class", Decoder)(shape, rngs=nnx.Rngs(0))
        if lora_rank:
            lora_lib.apply_lora(model, rank=lora_rank, alpha=lora_alpha, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
        return model

    return nnx.eval_shape(make)


def model_config(name_or_hf: str | dict, c: Settings):
    """The architecture config of a SHAPES key or a config.json dict, with the config's dtype and remat."""
    hf = SHAPES[name_or_hf] if isinstance(name_or_hf, str) else name_or_hf
    dtype = jnp.bfloat16 if c.model.dtype == "bfloat16" else jnp.float32
    base = jnp.bfloat16 if (dtype == jnp.bfloat16 and c.model.lora_rank) else jnp.float32
    return config_from_hf(hf, dtype=dtype, param_dtype=base, remat=c.model.remat)


def matmul_parameters(frozen, shape) -> int:
    """Weights that multiply every token in a forward pass: all of them but the lookup tables (token and
    per-layer embeddings), plus the LM head where it is the tied embedding."""
    n = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(frozen)[0]:
        if not any("embed_tokens" in str(getattr(k, "key", k)) for k in path):
            n += int(np.prod(leaf.shape))
    return n + (shape.hidden_size * shape.vocab_size if shape.tie_embeddings else 0)


def lower_sepo_step(c: Settings, shape, mesh, prompt_tokens: int | None = None):
    """(setup, (abstract state, abstract frozen weights), `jax.stages.Lowered`) of config `c`'s SEPO
    step for a model of `shape` on `mesh`: state and weights as shapes with their shardings."""
    game = games_lib.make(c.game, **({"num_hands": c.num_hands} if c.num_hands else {}),
                          **({"compact_prompt": True} if c.compact_prompt else {}))
    tok = PaddedPromptTokenizer(game, prompt_tokens) if prompt_tokens else tokenizer_lib.embedded_tokenizer(
        games_lib.template_texts())
    setup, params, frozen = trainer.build(c, mesh, model=abstract_model(shape, c.model.lora_rank, c.model.lora_alpha),
                                          tokenizer=tok)
    state = trainer.abstract_state(setup, params)
    frozen = parallel.abstract(frozen, setup.frozen_shardings)
    return setup, (state, frozen), trainer.make_sepo_step(setup).lower(state, frozen)


_HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
              "s64": 8, "u64": 8, "f64": 8}
_CONSTANT = re.compile(r"=\s*(\w+)\[([\d,]*)\][^=]*?\bconstant\(")


def constant_bytes(lowered) -> int:
    """Bytes of the array constants compiled into a lowered program (from its HLO text)."""
    total = 0
    for dtype, dims in _CONSTANT.findall(lowered.as_text(dialect="hlo")):
        total += _HLO_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return total
