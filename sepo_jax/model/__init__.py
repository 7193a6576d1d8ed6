"""The LLM policy: NNX decoders, weight import, tokenizers, sampler, LoRA."""

from sepo_jax.model.gemma4 import Gemma4, Gemma4Config
from sepo_jax.model.loader import load
from sepo_jax.model.lora import apply_lora
from sepo_jax.model.sampler import (action_log_probs, generate, sample_action, sample_with_reasoning,
                                     score_reasoning)
from sepo_jax.model.qwen3_5 import Qwen35Config, Qwen35Decoder
from sepo_jax.model.transformer import Decoder, KVCache, ModelConfig, embedded_config

__all__ = [
    "Decoder", "Gemma4", "Gemma4Config", "KVCache", "ModelConfig", "Qwen35Config", "Qwen35Decoder", "action_log_probs",
    "apply_lora", "embedded_config", "generate", "load",
    "sample_action", "sample_with_reasoning", "score_reasoning",
]
