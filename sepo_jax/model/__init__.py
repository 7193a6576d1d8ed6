"""The LLM policy: NNX decoders, weight import, tokenizers, sampler, LoRA."""

from sepo_jax.model.transformer import Decoder, KVCache, ModelConfig, embedded_config
from sepo_jax.model.loader import load
