"""Flax NNX decoder for Qwen 3.5 text (Hugging Face ``qwen3_5`` / ``qwen3_5_text``): a hybrid of gated DeltaNet
linear-attention layers and gated full-attention layers, exactly as transformers' ``modeling_qwen3_5.py``.

Layers (``config.layer_types``; by default three ``linear_attention`` then one ``full_attention``, repeated):

* every layer: ``x += mixer(input_layernorm(x)); x += mlp(post_attention_layernorm(x))`` with Qwen 3.5's
  zero-centred RMSNorm ``(1 + w) * norm(x)`` (``RMSNorm(plus_one=True)``) and a SwiGLU MLP.
* ``full_attention``: ``q_proj`` yields per head the query and an output gate (``[N, 2D]``, query first);
  RMS qk-norm (zero-centred) on the head dim; RoPE on the first ``head_dim * partial_rotary_factor`` dims
  only (the text positions of Qwen's multimodal RoPE are all equal, so mrope reduces to plain RoPE);
  GQA softmax attention; ``out * sigmoid(gate)`` then ``o_proj``.
* ``linear_attention`` (gated DeltaNet): ``in_proj_qkv`` -> short causal depthwise convolution
  (``conv1d``, kernel ``linear_conv_kernel_dim``, no bias) -> SiLU -> split q, k, v; ``beta = sigmoid(in_proj_b)``,
  decay ``g = -exp(A_log) * softplus(in_proj_a + dt_bias)``; q and k L2-normalised, q scaled by ``Dk**-0.5``,
  key heads shared by ``Nv/Nk`` consecutive value heads; the gated delta rule
  ``S <- exp(g) S;  S <- S + k (beta (v - S^T k))^T;  o = S^T q``, computed in chunks (``chunk_size``
  tokens: within a chunk by a unit-triangular solve (the UT transform), across chunks by one ``lax.scan``);
  then a gated RMSNorm ``w * norm(o) * silu(in_proj_z)`` per value head and ``out_proj``.

Parameters live in two stacks, one per layer kind (leading axis: the layers of that kind, in order)::

    embed_tokens.weight                                  [V, H]
    linear_layers.{input,post_attention}_layernorm.weight [Ll, H]
    linear_layers.linear_attn.in_proj_qkv.kernel         [Ll, H, 2*Nk*Dk + Nv*Dv]
    linear_layers.linear_attn.in_proj_z.kernel           [Ll, H, Nv*Dv]
    linear_layers.linear_attn.in_proj_{a,b}.kernel       [Ll, H, Nv]
    linear_layers.linear_attn.conv1d.weight              [Ll, C, 1, K]  (HF layout)
    linear_layers.linear_attn.{dt_bias,A_log}            [Ll, Nv]
    linear_layers.linear_attn.norm.weight                [Ll, Dv]
    linear_layers.linear_attn.out_proj.kernel            [Ll, Nv*Dv, H]
    full_layers.self_attn.q_proj.kernel                  [Lf, H, N*2D]
    full_layers.self_attn.{k,v}_proj.kernel              [Lf, H, K*D]
    full_layers.self_attn.o_proj.kernel                  [Lf, N*D, H]   (+ biases with attention_bias)
    full_layers.self_attn.{q,k}_norm.weight              [Lf, D]
    {linear,full}_layers.mlp.{gate,up,down}_proj.kernel
    norm.weight, lm_head.kernel (absent when tied)

Row j of a stack is HF's ``model.layers.{i}`` for the j-th layer of that kind (``Qwen35Config.layer_ids``;
``weights.py`` reads the name table off the model as for ``Decoder``).

The forward pass scans over *blocks*: the shortest repeating period of ``layer_types`` (for Qwen 3.5, 3
linear + 1 full layers) is one scanned step, and inside it each run of same-kind layers is an inner scan,
so the program holds one layer of each kind per run and does not grow with depth. ``remat`` applies per layer.

Calling convention: as ``transformer.Decoder`` (``model(ids[B,T], mask[B,T]) -> float32 logits [B,T,V]``,
positions ``cumsum(mask) - 1``, ``last_only``, ``output_positions``, ``cache=`` -> ``(logits, cache)``).
Masked tokens are exact no-ops for the recurrent layers wherever they sit in a chunk: they neither decay
nor update the delta-rule state (g = beta = 0) and the convolution runs over the unmasked tokens only.
``HybridCache`` holds the full layers' KV slots (as ``KVCache``) and each linear layer's recurrent state
and last ``K - 1`` convolution inputs; ``cache.repeat(n)``, ``cache.index``, ``cache.next_pos`` work as for
``KVCache``. Tree attention (``segment_ids``) cannot share one row across branches of a recurrence, so the
model refuses it; ``Qwen35Decoder.tree_attention = False`` makes the sampler score actions as separate rows.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from sepo_jax.model.transformer import (MLP, REMAT_POLICIES, DecoderShape, Embedding, Linear, RMSNorm, _init, _inv_freq, _rope,
                                        gathered, lm_logits, param, stacked, token_positions,
                                        write_kv)

MODEL_TYPES = ("qwen3_5", "qwen3_5_text")
LAYER_KINDS = ("linear_attention", "full_attention")
# config.json keys that change the architecture away from what this file implements, with the only value
# supported (checked on load).
_FIXED = {"hidden_act": "silu", "attention_dropout": 0.0}


@dataclasses.dataclass(frozen=True)
class Qwen35Config(DecoderShape):
    """Static architecture of a Qwen 3.5 text decoder; hashable (lives in the NNX graph definition)."""

    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int = 4
    layer_types: tuple[str, ...] | None = None  # default: every 4th layer full attention
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.25
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    attention_bias: bool = False
    chunk_size: int = 64  # delta-rule chunk length of a prefill
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: str = "none"
    family: str = "qwen3_5"
    hidden_act: str = "silu"  # read by transformer.MLP

    def __post_init__(self):
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", tuple(
                "full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(self.num_layers)))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}")
        bad = sorted(set(self.layer_types) - set(LAYER_KINDS))
        if bad:
            raise ValueError(f"Qwen 3.5 layer_types entry {bad[0]!r} is not supported; expected {LAYER_KINDS}")
        if self.remat != "none" and self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; expected 'none' or one of {tuple(REMAT_POLICIES)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.linear_num_value_heads % self.linear_num_key_heads:
            raise ValueError(f"linear_num_value_heads={self.linear_num_value_heads} is not a multiple of "
                             f"linear_num_key_heads={self.linear_num_key_heads}")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise ValueError(f"partial_rotary_factor={self.partial_rotary_factor} gives rotary dim {self.rotary_dim} "
                             f"for head_dim={self.head_dim}; expected an even number in (0, head_dim]")
        if self.hidden_act != "silu":
            raise ValueError(f"Qwen 3.5 hidden_act={self.hidden_act!r} is not supported (only 'silu')")

    is_gemma = False

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def period(self) -> tuple[str, ...]:
        """The shortest block of layer kinds whose repetition is ``layer_types`` (one scan step)."""
        n = self.num_layers
        for p in range(1, n + 1):
            if n % p == 0 and all(self.layer_types[i] == self.layer_types[i % p] for i in range(n)):
                return self.layer_types[:p]
        return self.layer_types

    @property
    def layer_ids(self) -> dict[str, tuple[int, ...]]:
        """Parameter stack -> the HF layer index of each of its rows."""
        return {"linear_layers": tuple(i for i, t in enumerate(self.layer_types) if t == "linear_attention"),
                "full_layers": tuple(i for i, t in enumerate(self.layer_types) if t == "full_attention")}

    @property
    def model_class(self):
        return Qwen35Decoder

    @property
    def conv_dim(self) -> int:
        return 2 * self.linear_num_key_heads * self.linear_key_head_dim + self.value_dim

    @property
    def value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @classmethod
    def from_hf(cls, config: dict, **overrides) -> Qwen35Config:
        """From a ``config.json`` dict of model_type ``qwen3_5`` (text_config inside) or ``qwen3_5_text``. Every
        setting this implementation does not follow stops with an error naming it."""
        top = config
        if "text_config" in config:
            config = {**config["text_config"]}
            config.setdefault("model_type", "qwen3_5_text")
        model_type = top.get("model_type") or config.get("model_type")
        if model_type not in MODEL_TYPES and config.get("model_type") not in MODEL_TYPES:
            raise ValueError(f"config.json model_type={model_type!r} is not a Qwen 3.5 model ({MODEL_TYPES})")
        for key, value in _FIXED.items():
            if key in config and config[key] != value:
                raise ValueError(f"Qwen 3.5 config.json {key}={config[key]!r} is not supported (only {value!r})")
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"Qwen 3.5 rope_parameters rope_type={rope_type!r} is not supported (only 'default')")
        extra = sorted(set(rope) - {"rope_type", "type", "rope_theta", "partial_rotary_factor", "mrope_section",
                                    "mrope_interleaved"})
        if extra:
            raise ValueError(f"Qwen 3.5 rope_parameters key {extra[0]!r} is not supported")
        tie = top.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
        heads = config["num_attention_heads"]
        kwargs = dict(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"], num_layers=config["num_hidden_layers"],
            num_heads=heads, num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            linear_num_key_heads=config["linear_num_key_heads"], linear_num_value_heads=config["linear_num_value_heads"],
            linear_key_head_dim=config["linear_key_head_dim"], linear_value_head_dim=config["linear_value_head_dim"],
            linear_conv_kernel_dim=config.get("linear_conv_kernel_dim", 4),
            layer_types=tuple(config["layer_types"]) if config.get("layer_types") else tuple(
                "linear_attention" if (i + 1) % config.get("full_attention_interval", 4) else "full_attention"
                for i in range(config["num_hidden_layers"])),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            partial_rotary_factor=float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.25))),
            rms_norm_eps=config.get("rms_norm_eps", 1e-6), tie_embeddings=bool(tie),
            attention_bias=bool(config.get("attention_bias", False)), hidden_act=config.get("hidden_act", "silu"))
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """The ``config.json`` dict (model_type ``qwen3_5_text``, ``Qwen3_5ForCausalLM``)."""
        return {
            "architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "linear_num_key_heads": self.linear_num_key_heads, "linear_num_value_heads": self.linear_num_value_heads,
            "linear_key_head_dim": self.linear_key_head_dim, "linear_value_head_dim": self.linear_value_head_dim,
            "linear_conv_kernel_dim": self.linear_conv_kernel_dim, "layer_types": list(self.layer_types),
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta,
                                "partial_rotary_factor": self.partial_rotary_factor},
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.attention_bias, "hidden_act": "silu", "max_position_embeddings": 32768,
            "dtype": jnp.dtype(self.param_dtype).name,
        }


@flax.struct.dataclass
class HybridCache:
    """KV slots of the full-attention layers plus the recurrent and convolution state of the linear ones."""

    k: jax.Array  # [Lf, B, S, K, D]
    v: jax.Array  # [Lf, B, S, K, D]
    pos: jax.Array  # [B, S] int32
    valid: jax.Array  # [B, S] bool
    segment: jax.Array  # [B, S] int32 (always 0: no tree attention)
    index: jax.Array  # [] int32 next slot to write
    next_pos: jax.Array  # [B] int32
    conv: jax.Array  # [Ll, B, K-1, C] the last K-1 unmasked convolution inputs (zeros before any)
    state: jax.Array  # [Ll, B, Nv, Dk, Dv] float32 delta-rule state

    def repeat(self, n: int) -> HybridCache:
        if n == 1:
            return self
        rep = lambda x, axis: jnp.repeat(x, n, axis=axis)  # noqa: E731
        return HybridCache(rep(self.k, 1), rep(self.v, 1), rep(self.pos, 0), rep(self.valid, 0), rep(self.segment, 0),
                           self.index, rep(self.next_pos, 0), rep(self.conv, 1), rep(self.state, 1))


# ---------------------------------------------------------------------------------------------------------
# Gated delta rule and the masked causal convolution
# ---------------------------------------------------------------------------------------------------------

def gated_delta_rule(q, k, v, g, beta, state, chunk_size: int):
    """Chunked gated delta rule (transformers' ``torch_chunk_gated_delta_rule``, with the sequential phase one
    ``lax.scan`` over chunks). q, k [B,T,H,Dk] (normalised, q scaled), v [B,T,H,Dv], g, beta [B,T,H], state
    [B,H,Dk,Dv]; all float32. Returns (out [B,T,H,Dv], final state). Tokens with g = beta = 0 are no-ops."""
    b, t, h, dk = k.shape
    c = max(1, min(chunk_size, t))
    pad = (-t) % c
    n = (t + pad) // c

    def chunks(x):  # [B,T,H,...] -> [n, B, H, c, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(b, n, c, *x.shape[2:])
        return jnp.moveaxis(x, (1, 3), (0, 2))

    q, k, v, g, beta = map(chunks, (q, k, v, g, beta))  # q [n,B,H,c,Dk], g [n,B,H,c]
    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    cum = jnp.cumsum(g, axis=-1)
    upper = jnp.triu(jnp.ones((c, c), bool), 1)
    pair = jnp.exp(jnp.where(upper, -jnp.inf, cum[..., :, None] - cum[..., None, :]))  # decay j -> i
    ut = jnp.einsum("...id,...jd->...ij", k_beta, k) * pair
    intra = jnp.einsum("...id,...jd->...ij", q, k) * pair
    solve = lambda rhs: jax.scipy.linalg.solve_triangular(ut, rhs, lower=True, unit_diagonal=True)  # noqa: E731
    new_values = solve(v_beta)
    k_cumdecay = solve(k_beta * jnp.exp(cum)[..., None])
    q_dec = q * jnp.exp(cum)[..., None]
    k_dec = k * jnp.exp(cum[..., -1:] - cum)[..., None]
    chunk_decay = jnp.exp(cum[..., -1])[..., None, None]

    def step(s, xs):
        nv, kc, qd, kd, att, cd = xs
        v_new = nv - kc @ s
        out = qd @ s + att @ v_new
        return s * cd + jnp.swapaxes(kd, -1, -2) @ v_new, out

    state, out = jax.lax.scan(step, state, (new_values, k_cumdecay, q_dec, k_dec, intra, chunk_decay))
    out = jnp.moveaxis(out, (0, 2), (1, 3)).reshape(b, n * c, h, -1)[:, :t]
    return out, state


def masked_causal_conv(x, mask, conv_state, weight):
    """Depthwise causal convolution over the unmasked tokens only, continuing ``conv_state``.

    x [B,T,C], mask [B,T], conv_state [B,K-1,C] (the previous K-1 unmasked inputs), weight [C,K] (HF conv1d
    weight squeezed). Returns (out [B,T,C] before the activation (0 at masked tokens), new conv_state)."""
    b, t, ch = x.shape
    width = weight.shape[-1]
    full = jnp.concatenate([conv_state.astype(x.dtype), x], axis=1)  # [B, K-1+T, C]
    valid = jnp.concatenate([jnp.ones((b, width - 1), bool), mask], axis=1)
    rank_all = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    dest = jnp.where(valid, rank_all, full.shape[1])  # unmasked first, in order; masked dropped
    # per row under vmap: a scatter indexed by arange(B) loses the batch sharding and replicates the batch
    compact = jax.vmap(lambda f, d: jnp.zeros_like(f).at[d].set(f, mode="drop"))(full, dest)
    count = valid.sum(axis=1, dtype=jnp.int32)
    w = weight.astype(x.dtype)
    out_c = sum(compact[:, j:j + t] * w[:, j] for j in range(width))  # out_c[i]: conv ending at compact[i+K-1]
    rank = jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1  # compact index (minus K-1) of each unmasked token
    out = jnp.take_along_axis(out_c, jnp.clip(rank, 0, t - 1)[..., None], axis=1)
    out = jnp.where(mask[..., None], out, 0)
    tail = count[:, None] - (width - 1) + jnp.arange(width - 1)
    new_state = jnp.take_along_axis(compact, tail[..., None], axis=1)
    return out, new_state


def _l2norm(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


# ---------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------

class GatedRMSNorm(nnx.Module):
    """``w * norm(x) * silu(gate)`` (HF ``Qwen3_5RMSNormGated``: weight initialised to 1, Llama-style cast)."""

    def __init__(self, dim: int, *, eps: float, param_dtype):
        self.weight = param(jnp.ones((dim,), param_dtype), ("head_dim",))
        self.eps = eps

    def __call__(self, x, gate):
        xf = x.astype(jnp.float32)
        normed = (xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)).astype(x.dtype)
        return (self.weight[...].astype(x.dtype) * normed * jax.nn.silu(gate.astype(jnp.float32))).astype(x.dtype)


class _Conv1d(nnx.Module):
    """The depthwise convolution's weight, in HF's ``nn.Conv1d`` layout [C, 1, K]."""

    def __init__(self, channels: int, width: int, *, param_dtype, rngs: nnx.Rngs):
        self.weight = param(_init(width ** -0.5)(rngs.params(), (channels, 1, width), param_dtype),
                            ("conv", "conv_group", "conv_width"))


class GatedDeltaNet(nnx.Module):
    def __init__(self, cfg: Qwen35Config, *, rngs: nnx.Rngs):
        h, nv = cfg.hidden_size, cfg.linear_num_value_heads
        lin = lambda i, o, names: Linear(i, o, names=names, bias=False, dtype=cfg.dtype,  # noqa: E731
                                         param_dtype=cfg.param_dtype, rngs=rngs)
        self.in_proj_qkv = lin(h, cfg.conv_dim, ("embed", "q_heads"))
        self.in_proj_z = lin(h, cfg.value_dim, ("embed", "q_heads"))
        self.in_proj_b = lin(h, nv, ("embed", "v_heads"))
        self.in_proj_a = lin(h, nv, ("embed", "v_heads"))
        width = cfg.linear_conv_kernel_dim
        self.conv1d = _Conv1d(cfg.conv_dim, width, param_dtype=cfg.param_dtype, rngs=rngs)
        self.dt_bias = param(jnp.ones((nv,), cfg.param_dtype), ("v_heads",))
        self.A_log = param(jnp.log(jax.random.uniform(rngs.params(), (nv,), jnp.float32, 0.01, 16.0)
                                   ).astype(cfg.param_dtype), ("v_heads",))
        self.norm = GatedRMSNorm(cfg.linear_value_head_dim, eps=cfg.rms_norm_eps, param_dtype=cfg.param_dtype)
        self.out_proj = lin(cfg.value_dim, h, ("q_heads", "embed"))
        self.dims = (cfg.linear_num_key_heads, nv, cfg.linear_key_head_dim, cfg.linear_value_head_dim)
        self.chunk_size = cfg.chunk_size

    def __call__(self, x, mask, conv_state, state):
        """x [B,T,H], mask [B,T]; conv_state [B,K-1,C], state [B,Nv,Dk,Dv] (zeros: a fresh sequence)."""
        b, t, _ = x.shape
        nk, nv, dk, dv = self.dims
        x = jnp.where(mask[..., None], x, 0)
        mixed, conv_state = masked_causal_conv(self.in_proj_qkv(x), mask, conv_state, self.conv1d.weight[..., 0, :])
        mixed = jax.nn.silu(mixed)
        q, k, v = jnp.split(mixed, [nk * dk, 2 * nk * dk], axis=-1)
        q = q.reshape(b, t, nk, dk).astype(jnp.float32)
        k = k.reshape(b, t, nk, dk).astype(jnp.float32)
        v = v.reshape(b, t, nv, dv).astype(jnp.float32)
        z = self.in_proj_z(x).reshape(b, t, nv, dv)
        beta = jax.nn.sigmoid(self.in_proj_b(x).astype(jnp.float32))
        a = self.in_proj_a(x).astype(jnp.float32)
        g = -jnp.exp(self.A_log[...].astype(jnp.float32)) * jax.nn.softplus(a + self.dt_bias[...].astype(jnp.float32))
        g, beta = jnp.where(mask[..., None], g, 0.0), jnp.where(mask[..., None], beta, 0.0)  # masked: no-op
        q, k = _l2norm(q) * dk ** -0.5, _l2norm(k)
        if nv != nk:
            q, k = jnp.repeat(q, nv // nk, axis=2), jnp.repeat(k, nv // nk, axis=2)
        out, state = gated_delta_rule(q, k, v, g, beta, state.astype(jnp.float32), self.chunk_size)
        out = self.norm(out.astype(x.dtype), z).reshape(b, t, nv * dv)
        return self.out_proj(out), conv_state, state


class GatedAttention(nnx.Module):
    def __init__(self, cfg: Qwen35Config, *, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        lin = lambda i, o, names: Linear(i, o, names=names, bias=cfg.attention_bias, dtype=cfg.dtype,  # noqa: E731
                                         param_dtype=cfg.param_dtype, rngs=rngs)
        self.q_proj = lin(h, cfg.num_heads * d * 2, ("embed", "q_heads"))
        self.k_proj = lin(h, cfg.num_kv_heads * d, ("embed", "kv_heads"))
        self.v_proj = lin(h, cfg.num_kv_heads * d, ("embed", "kv_heads"))
        self.o_proj = lin(cfg.num_heads * d, h, ("q_heads", "embed"))
        norm = lambda: RMSNorm(d, eps=cfg.rms_norm_eps, plus_one=True, param_dtype=cfg.param_dtype,  # noqa: E731
                               name="head_dim")
        self.q_norm, self.k_norm = norm(), norm()
        self.heads = (cfg.num_heads, cfg.num_kv_heads, d, cfg.rotary_dim)

    def __call__(self, x, positions, inv_freq, allowed, cache):
        """As ``transformer.Attention``: ``cache`` None or ``(k_all, v_all, layer, index)``."""
        b, t, _ = x.shape
        nh, nk, d, rot = self.heads
        q, gate = jnp.split(self.q_proj(x).reshape(b, t, nh, 2 * d), 2, axis=-1)
        q = self.q_norm(q)
        k = self.k_norm(self.k_proj(x).reshape(b, t, nk, d))
        v = self.v_proj(x).reshape(b, t, nk, d)
        partial = lambda y: jnp.concatenate([_rope(y[..., :rot], positions, inv_freq), y[..., rot:]], axis=-1)  # noqa: E731
        q, k = partial(q), partial(k)
        k_cache, v_cache, cache = write_kv(k, v, cache)
        q = q.reshape(b, t, nk, nh // nk, d)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k_cache.astype(q.dtype), preferred_element_type=jnp.float32) * d ** -0.5
        scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, v_cache).reshape(b, t, nh * d).astype(x.dtype)
        out = out * jax.nn.sigmoid(gate.reshape(b, t, nh * d).astype(jnp.float32)).astype(x.dtype)
        return self.o_proj(out), cache


class _Layer(nnx.Module):
    def __init__(self, cfg: Qwen35Config, kind: str, *, rngs: nnx.Rngs):
        norm = lambda: RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, plus_one=True,  # noqa: E731
                               param_dtype=cfg.param_dtype)
        self.input_layernorm = norm()
        if kind == "linear_attention":
            self.linear_attn = GatedDeltaNet(cfg, rngs=rngs)
        else:
            self.self_attn = GatedAttention(cfg, rngs=rngs)
        self.post_attention_layernorm = norm()
        self.mlp = MLP(cfg, rngs=rngs)

    def mix_linear(self, x, mask, conv_state, state):
        h, conv_state, state = self.linear_attn(self.input_layernorm(x), mask, conv_state, state)
        return self._mlp(x + h), conv_state, state

    def mix_full(self, x, positions, inv_freq, allowed, cache):
        h, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, allowed, cache)
        return self._mlp(x + h), cache

    def _mlp(self, x):
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen35Decoder(nnx.Module):
    """The Qwen 3.5 causal LM (text). See the module docstring."""

    tree_attention = False  # branches of one row cannot share a recurrence: the sampler scores them as rows

    def __init__(self, config: Qwen35Config, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, param_dtype=config.param_dtype, rngs=rngs)
        ids = config.layer_ids
        self.linear_layers = (stacked(len(ids["linear_layers"]), lambda r: _Layer(config, "linear_attention", rngs=r),
                                      rngs) if ids["linear_layers"] else None)
        self.full_layers = (stacked(len(ids["full_layers"]), lambda r: _Layer(config, "full_attention", rngs=r), rngs)
                            if ids["full_layers"] else None)
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, plus_one=True, param_dtype=config.param_dtype)
        if not config.tie_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, names=("embed", "vocab"), bias=False,
                                  dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)

    def init_cache(self, batch: int, max_len: int) -> HybridCache:
        c = self.config
        ids = c.layer_ids
        nl, nf = len(ids["linear_layers"]), len(ids["full_layers"])
        kv = (nf, batch, max_len, c.num_kv_heads, c.head_dim)
        return HybridCache(
            k=jnp.zeros(kv, c.dtype), v=jnp.zeros(kv, c.dtype), pos=jnp.zeros((batch, max_len), jnp.int32),
            valid=jnp.zeros((batch, max_len), bool), segment=jnp.zeros((batch, max_len), jnp.int32),
            index=jnp.zeros((), jnp.int32), next_pos=jnp.zeros((batch,), jnp.int32),
            conv=jnp.zeros((nl, batch, c.linear_conv_kernel_dim - 1, c.conv_dim), c.dtype),
            state=jnp.zeros((nl, batch, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim),
                            jnp.float32))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 cache: HybridCache | None = None, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, last_only: bool = False,
                 output_positions: jax.Array | None = None):
        """As ``Decoder.__call__``; ``segment_ids`` (tree attention) is not supported."""
        if segment_ids is not None:
            raise ValueError("Qwen 3.5 (gated DeltaNet layers) cannot run tree-attention branches (segment_ids) in one "
                             "row: score each branch as its own row")
        b, t = input_ids.shape
        c = self.config
        mask, positions = token_positions(input_ids, attention_mask, cache, positions)
        use_cache = cache is not None
        index = cache.index if use_cache else None
        if use_cache:
            k_pos = jax.lax.dynamic_update_slice(cache.pos, positions, (0, index))
            k_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
            k_seg = cache.segment
        else:
            k_pos, k_valid = positions, mask
        allowed = k_valid[:, None, :] & (k_pos[:, None, :] <= positions[:, :, None])
        inv_freq = _inv_freq(c.rotary_dim, c.rope_theta, None)

        period = c.period
        blocks = c.num_layers // len(period)
        n_lin, n_full = period.count("linear_attention"), period.count("full_attention")
        per_block = lambda tree, n: jax.tree.map(lambda a: a.reshape(blocks, n, *a.shape[1:]), tree)  # noqa: E731
        lin_def = full_def = None
        lin_params = full_params = None
        if self.linear_layers is not None:
            lin_def, lin_params = nnx.split(self.linear_layers)
            lin_params = per_block(lin_params, n_lin)
        if self.full_layers is not None:
            full_def, full_params = nnx.split(self.full_layers)
            full_params = per_block(full_params, n_full)
        if n_lin:
            if use_cache:
                lin_states = (cache.conv.reshape(blocks, n_lin, *cache.conv.shape[1:]),
                              cache.state.reshape(blocks, n_lin, *cache.state.shape[1:]))
            else:
                lin_states = None

        runs, seen_kinds = [], {"linear_attention": 0, "full_attention": 0}  # (kind, first row in block, count)
        for kind, group in itertools.groupby(period):
            count = len(list(group))
            runs.append((kind, seen_kinds[kind], count))
            seen_kinds[kind] += count

        def lin_step(x, xs):  # one linear-attention layer; its states are scanned in and out
            params, conv0, state0 = xs
            if conv0 is None:
                conv0 = jnp.zeros((b, c.linear_conv_kernel_dim - 1, c.conv_dim), c.dtype)
                state0 = jnp.zeros((b, c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim),
                                   jnp.float32)
            x, conv1, state1 = nnx.merge(lin_def, gathered(params)).mix_linear(x, mask, conv0, state0)
            return x, ((conv1, state1) if use_cache else None)

        def full_step(carry, xs):  # one full-attention layer; the KV cache is carried and written in place
            x, kv = carry
            params, layer = xs
            x, kv = nnx.merge(full_def, gathered(params)).mix_full(x, positions, inv_freq, allowed,
                                                                   None if kv is None else (*kv, layer, index))
            return (x, kv), None

        if c.remat != "none":
            lin_step = jax.checkpoint(lin_step, policy=REMAT_POLICIES[c.remat], prevent_cse=False)
            full_step = jax.checkpoint(full_step, policy=REMAT_POLICIES[c.remat], prevent_cse=False)

        def body(carry, xs):  # one period of layer kinds; each run of same-kind layers is an inner scan
            x, kv = carry
            block, lp, fp, states = xs
            new_conv, new_state = [], []
            for kind, first, count in runs:
                rows = lambda tree: jax.tree.map(lambda a: a[first:first + count], tree)  # noqa: E731
                if kind == "linear_attention":
                    conv0, state0 = (None, None) if states is None else rows(states)
                    x, ys = jax.lax.scan(lin_step, x, (rows(lp), conv0, state0))
                    if ys is not None:
                        new_conv.append(ys[0])
                        new_state.append(ys[1])
                else:
                    (x, kv), _ = jax.lax.scan(full_step, (x, kv), (rows(fp), block * n_full + first + jnp.arange(count)))
            ys = (jnp.concatenate(new_conv), jnp.concatenate(new_state)) if new_conv else None
            return (x, kv), ys

        x = self.embed_tokens(input_ids).astype(c.dtype)
        kv0 = (cache.k, cache.v) if (use_cache and n_full) else None
        xs = (jnp.arange(blocks), lin_params, full_params, lin_states if n_lin else None)
        (x, kv), ys = jax.lax.scan(body, (x, kv0), xs)
        logits = lm_logits(self, x, last_only, output_positions)
        if not use_cache:
            return logits
        new_next = jnp.maximum(cache.next_pos, jnp.max(jnp.where(mask, positions + 1, 0), axis=1))
        conv, state = cache.conv, cache.state
        if n_lin:
            conv = ys[0].reshape(cache.conv.shape).astype(cache.conv.dtype)
            state = ys[1].reshape(cache.state.shape)
        k_new, v_new = kv if n_full else (cache.k, cache.v)
        return logits, HybridCache(k=k_new, v=v_new, pos=k_pos, valid=k_valid, segment=k_seg, index=index + t,
                                   next_pos=new_next, conv=conv, state=state)
