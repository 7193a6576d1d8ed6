"""The training step at scale without weights: lower and compile the SEPO step of an abstract model
(`jax.ShapeDtypeStruct` weights, nothing allocated) on any mesh, and read what the program costs:
the bytes of constants it embeds, its per-device memory and its FLOPs.

`experiments/scale_check.py` uses it for 4B models on fake 8- and 64-device meshes; the tests use it
to prove that no weight is compiled into the step as a constant.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from sepo_jax import games as games_lib
from sepo_jax import parallel
from sepo_jax.model import lora as lora_lib
from sepo_jax.model import tokenizer as tokenizer_lib
from sepo_jax.model.transformer import Decoder, ModelConfig
from sepo_jax.rl import trainer

# Decoder shapes of real checkpoints (their Hugging Face config.json values)
SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                         num_kv_heads=3, head_dim=64, family="llama", rope_theta=100000.0, rms_norm_eps=1e-5,
                         tie_embeddings=True),
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                     num_kv_heads=8, head_dim=128, family="qwen3", rope_theta=1000000.0, rms_norm_eps=1e-6,
                     tie_embeddings=True, qk_norm=True),
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


def abstract_model(shape: ModelConfig, lora_rank: int = 0, lora_alpha: float = 32.0) -> Decoder:
    """The decoder (with LoRA adapters when `lora_rank` > 0) as shapes only."""
    def make():
        model = Decoder(shape, rngs=nnx.Rngs(0))
        if lora_rank:
            lora_lib.apply_lora(model, rank=lora_rank, alpha=lora_alpha, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
        return model

    return nnx.eval_shape(make)


def model_config(name: str, c: ml_collections.ConfigDict) -> ModelConfig:
    """The decoder shape `name` (a key of SHAPES) with the config's dtype and remat."""
    dtype = jnp.bfloat16 if c.model.dtype == "bfloat16" else jnp.float32
    base = jnp.bfloat16 if (dtype == jnp.bfloat16 and c.model.lora_rank) else jnp.float32
    return ModelConfig(**SHAPES[name], dtype=dtype, param_dtype=base, remat=c.model.remat)


def lower_sepo_step(c: ml_collections.ConfigDict, shape: ModelConfig, mesh, prompt_tokens: int | None = None):
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
