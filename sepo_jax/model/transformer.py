"""Flax NNX decoder for the Llama (incl. SmolLM2), Qwen2/2.5, Qwen3 and Gemma 2/3 families.

The decoder layers are one stacked module (every layer parameter has a leading layer axis) run by one
``jax.lax.scan``, rematerialised per ``ModelConfig.remat``, so program size and compile time do not grow
with depth. Layers of different types share the stack: a scanned per-layer flag picks the sliding or the
full mask (both built once) and a scanned per-layer RoPE frequency table gives gemma3's sliding layers
``rope_local_theta``.

Parameter tree (mirrors Hugging Face names; Linear kernels are stored [in, out], i.e. HF ``weight.T``;
L = num_layers, N/K = query/key-value heads, D = head_dim, F = intermediate size). Each parameter carries its
logical axis names as ``out_sharding`` metadata (``nnx.get_partition_spec`` reads them); a bias is named
after its kernel's output axis::

    embed_tokens.weight                     [V, H]        (vocab, embed)
    layers.input_layernorm.weight           [L, H]        (layers, norm)
    layers.self_attn.q_proj.kernel          [L, H, N*D]   (layers, embed, q_heads)
    layers.self_attn.{k,v}_proj.kernel      [L, H, K*D]   (layers, embed, kv_heads)
    layers.self_attn.o_proj.kernel          [L, N*D, H]   (layers, q_heads, embed)
        (+ .bias on q/k/v for qwen2, on all four for llama attention_bias)
    layers.self_attn.{q,k}_norm.weight      [L, D]        (layers, head_dim)      (qwen3, gemma3)
    layers.post_attention_layernorm.weight  [L, H]        (llama/qwen: the pre-MLP norm; gemma: post-attn
                                                          norm, exactly as HF names them)
    layers.{pre,post}_feedforward_layernorm.weight  [L, H]                        (gemma)
    layers.mlp.{gate,up}_proj.kernel        [L, H, F]     (layers, embed, mlp)
    layers.mlp.down_proj.kernel             [L, F, H]     (layers, mlp, embed)
    norm.weight                             [H]           (norm)
    lm_head.kernel                          [H, V]        (embed, vocab)          (absent when tie_embeddings)

Row i of ``layers.<name>`` is HF's ``model.layers.{i}.<name>`` (``weights.py`` holds the map). Every
``Linear`` has a ``lora`` slot (``None`` unless ``sepo_jax.model.lora`` attaches an adapter).

``dtype`` is the compute dtype (matmuls, activations, KV cache) and ``param_dtype`` the stored one: with
bfloat16 compute and float32 parameters, weights are cast at each use. RMS statistics, attention scores and
softmax, and the logits are float32 whatever ``dtype``.

Calling convention:

* ``model(input_ids[B,T], attention_mask[B,T]) -> float32 logits [B,T,V]``. Positions are
  ``cumsum(mask) - 1``, so left padding (or any masked hole) gives the same logits as the unpadded row.
* KV cache: ``cache = model.init_cache(batch, max_len)``; ``logits, cache = model(ids, mask, cache=cache)``
  appends the T new slots at ``cache.index`` (the same slot for every row: shapes stay static) and
  attends over every valid slot written so far. Masked tokens are written as invalid slots and do not
  advance a row's position, so a chunk may contain padding anywhere. ``cache.repeat(n)`` copies every
  row n times (row ``b`` -> rows ``b*n .. b*n+n-1``): this is how the sampler shares one prefill
  between the n samples of a prompt.
* Tree attention: explicit ``positions`` and ``segment_ids`` let several continuations of one cached
  prefix share a row without seeing each other (the sampler scores all A actions this way, so the
  prompt's cache is never copied A times).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
_ROPE_TYPES = ("default", "linear", "llama3")
# jax.checkpoint policy of the scanned layer body per ``ModelConfig.remat`` ("none": no remat).
REMAT_POLICIES = {"full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """The sizes every family's config has (`ModelConfig`, `Gemma4Config`, `Qwen35Config` extend it)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclasses.dataclass(frozen=True)
class ModelConfig(DecoderShape):
    """Static architecture description; hashable so it can live in the NNX graph definition."""

    family: str = "llama"
    rope_theta: float = 10000.0
    # Rope scaling of the global layers, HF style ({"rope_type": "llama3", "factor": ...}); stored as a
    # sorted tuple of items so the config stays hashable. Pass a dict, it is converted.
    rope_scaling: Any = None
    rope_local_theta: float | None = None  # gemma3 sliding layers (rope_local_base_freq)
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True
    attention_bias: bool = False
    qk_norm: bool = False
    hidden_act: str = "silu"  # or "gelu_tanh"
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 (default head_dim)
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None  # "full_attention" / "sliding_attention" per layer
    dtype: Any = jnp.float32  # compute
    param_dtype: Any = jnp.float32  # storage
    remat: str = "none"  # "none" | "full" | "dots" (REMAT_POLICIES)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"ModelConfig.family={self.family!r}; expected one of {FAMILIES}")
        if self.remat != "none" and self.remat not in REMAT_POLICIES:
            raise ValueError(f"ModelConfig.remat={self.remat!r}; expected 'none' or one of {tuple(REMAT_POLICIES)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.hidden_act not in ("silu", "gelu_tanh"):
            raise ValueError(f"ModelConfig.hidden_act={self.hidden_act!r}; expected 'silu' or 'gelu_tanh'")
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        scaling = dict(self.rope_scaling or ())
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type not in _ROPE_TYPES:
            raise ValueError(f"rope_scaling type {rope_type!r} is not supported; expected one of {_ROPE_TYPES}")
        if self.layer_types is None:
            object.__setattr__(self, "layer_types", _default_layer_types(self.family, self.num_layers))
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise ValueError("layer_types contains 'sliding_attention' but sliding_window is not set")

    @property
    def is_gemma(self) -> bool:
        return self.family in ("gemma2", "gemma3")

    @classmethod
    def from_hf(cls, config: dict, **overrides) -> ModelConfig:
        """Builds the config from a Hugging Face ``config.json`` dict (transformers 4 or 5 layout)."""
        if "text_config" in config:  # multimodal wrappers (Gemma 3 4B+) keep the decoder here
            config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
        model_type = config.get("model_type", "llama")
        family = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
                  "gemma3": "gemma3", "gemma3_text": "gemma3"}.get(model_type)
        if family is None:
            raise ValueError(f"config.json model_type={model_type!r} is not supported; expected one of "
                             "llama, mistral, qwen2, qwen3, gemma2, gemma3(_text)")
        gemma = family.startswith("gemma")
        heads = config["num_attention_heads"]
        # transformers 5: rope_parameters (per layer type for gemma3); transformers 4: rope_theta/rope_scaling.
        rope = config.get("rope_parameters") or {}
        local_rope = None
        if "full_attention" in rope or "sliding_attention" in rope:
            local_rope = rope.get("sliding_attention")
            rope = rope.get("full_attention", {})
        if not rope:
            rope = dict(config.get("rope_scaling") or {})
            rope["rope_theta"] = config.get("rope_theta", 10000.0)
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling.get("rope_type", scaling.get("type", "default")) == "default":
            scaling = None
        local_theta = local_rope["rope_theta"] if local_rope else config.get("rope_local_base_freq")
        sliding = config.get("sliding_window") if (gemma or config.get("use_sliding_window")) else None
        layer_types = config.get("layer_types")
        if layer_types is not None and sliding is None:
            layer_types = ["full_attention"] * config["num_hidden_layers"]
        act = config.get("hidden_activation") or config.get("hidden_act", "silu")
        kwargs = dict(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            family=family,
            rope_theta=float(rope.get("rope_theta", 10000.0)),
            rope_scaling=scaling,
            rope_local_theta=float(local_theta) if (family == "gemma3" and local_theta) else None,
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            tie_embeddings=config.get("tie_word_embeddings", True),
            attention_bias=family == "qwen2" or bool(config.get("attention_bias", False)),
            qk_norm=family in ("qwen3", "gemma3"),
            hidden_act="gelu_tanh" if act.startswith("gelu") else "silu",
            query_pre_attn_scalar=config.get("query_pre_attn_scalar") if gemma else None,
            # transformers' Gemma 3 never applies attn_logit_softcapping (only Gemma 2 does); match it.
            attn_logit_softcapping=config.get("attn_logit_softcapping") if family == "gemma2" else None,
            final_logit_softcapping=config.get("final_logit_softcapping") if gemma else None,
            sliding_window=sliding,
            layer_types=tuple(layer_types) if layer_types else None,
        )
        if act not in ("silu", "gelu_pytorch_tanh", "gelu"):
            raise ValueError(f"config.json hidden activation {act!r} is not supported")
        kwargs.update(overrides)
        return cls(**kwargs)


def _default_layer_types(family: str, num_layers: int) -> tuple[str, ...]:
    if family == "gemma2":  # alternating, local first
        return tuple("sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers))
    if family == "gemma3":  # five local layers, then one global
        return tuple("full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(num_layers))
    return ("full_attention",) * num_layers


def embedded_config(vocab_size: int, **overrides) -> ModelConfig:
    """The embedded default: a ~3M-parameter Llama-style decoder that trains from scratch on a CPU."""
    kwargs = dict(vocab_size=vocab_size, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=8,
                  num_kv_heads=4, head_dim=32, family="llama", rope_theta=10000.0, rms_norm_eps=1e-5,
                  tie_embeddings=True)
    return ModelConfig(**(kwargs | overrides))


@flax.struct.dataclass
class KVCache:
    """Keys/values of every layer plus the per-slot bookkeeping shared by all layers."""

    k: jax.Array  # [L, B, S, K, D]
    v: jax.Array  # [L, B, S, K, D]
    pos: jax.Array  # [B, S] int32 position of each slot
    valid: jax.Array  # [B, S] bool: slot written by an unmasked token
    segment: jax.Array  # [B, S] int32 branch id: 0 = shared, visible to all; s > 0 only to branch s
    index: jax.Array  # [] int32 next slot to write (same for every row)
    next_pos: jax.Array  # [B] int32 position of the next unmasked token per row

    def repeat(self, n: int) -> KVCache:
        """Every row copied n times, consecutively (group prefix sharing)."""
        if n == 1:
            return self
        rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
        return KVCache(rep(self.k, 1), rep(self.v, 1), rep(self.pos, 0), rep(self.valid, 0), rep(self.segment, 0),
                       self.index, rep(self.next_pos, 0))


def _init(std):
    return jax.nn.initializers.normal(std)


def param(value: jax.Array, names: tuple[str, ...], kind: type[nnx.Variable] = nnx.Param) -> nnx.Variable:
    """A parameter carrying its logical axis names. The names are only metadata here (never eager sharding:
    the mesh rules that map them to mesh axes live in ``sepo_jax.parallel``)."""
    return kind(value, out_sharding=names, eager_sharding=False)


def stacked(n: int, make, rngs: nnx.Rngs) -> nnx.Module:
    """``make(rngs)`` initialised n times independently, as one module whose parameters have a leading
    ``layers`` axis (named so in their metadata)."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def build(r):
        return make(r)

    return build(rngs)


def gathered(tree):
    """Weights whole where they are used, when the caller traces under a mesh
    (`jax.sharding.use_abstract_mesh`): FSDP keeps each weight sharded at rest and gathers it for its
    use (inside the layer scan: one layer at a time), so activations are computed exactly as on one
    device instead of from partial sums over sharded hidden dimensions."""
    if jax.sharding.get_abstract_mesh().empty:
        return tree
    return jax.tree.map(lambda w: jax.lax.with_sharding_constraint(w, jax.sharding.PartitionSpec()), tree)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias) (+ lora(x)); kernel stored [in, out], logical axes ``names`` (in, out)."""

    def __init__(self, in_features: int, out_features: int, *, names: tuple[str, str], bias: bool, dtype,
                 param_dtype, rngs: nnx.Rngs):
        self.kernel = param(_init(0.02)(rngs.params(), (in_features, out_features), param_dtype), names)
        self.bias = param(jnp.zeros((out_features,), param_dtype), names[1:]) if bias else None
        self.lora = nnx.data(None)
        self.dtype = dtype

    def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), gathered(self.kernel[...]).astype(self.dtype), preferred_element_type=out_dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        if self.lora is not None:
            y = y + self.lora(x).astype(y.dtype)
        return y


class RMSNorm(nnx.Module):
    """Llama form ``w * norm(x)`` or Gemma form ``(1 + w) * norm(x)`` (weight initialised to 0)."""

    def __init__(self, dim: int, *, eps: float, plus_one: bool, param_dtype, name: str = "norm"):
        self.weight = param((jnp.zeros if plus_one else jnp.ones)((dim,), param_dtype), (name,))
        self.eps = eps
        self.plus_one = plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:  # HF Gemma: (x * (1 + w)) in float32, then cast
            return (normed * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return self.weight[...].astype(x.dtype) * normed.astype(x.dtype)  # HF Llama: cast, then scale


class Embedding(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, param_dtype, rngs: nnx.Rngs):
        self.weight = param(_init(0.02)(rngs.params(), (vocab, dim), param_dtype), ("vocab", "embed"))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(gathered(self.weight[...]), ids, axis=0)


def _inv_freq(head_dim: int, theta: float, scaling: tuple | None) -> jax.Array:
    inv = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    s = dict(scaling or ())
    rope_type = s.get("rope_type", s.get("type", "default"))
    if rope_type == "linear":
        inv = inv / s["factor"]
    elif rope_type == "llama3":
        factor, lo, hi = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = jnp.where(medium, smoothed, scaled)
    return inv


def rope_tables(cfg: ModelConfig) -> jax.Array:
    """[L, head_dim/2] inverse RoPE frequencies of every layer (gemma3's sliding layers: rope_local_theta)."""
    full = _inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    local = _inv_freq(cfg.head_dim, cfg.rope_local_theta, None) if cfg.rope_local_theta else full
    return jnp.stack([local if t == "sliding_attention" else full for t in cfg.layer_types])


def _rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """HF rotate-half RoPE. x [B,T,N,D], positions [B,T]."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,D/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.head_dim
        lin = lambda i, o, names, b: Linear(i, o, names=names, bias=b, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                            rngs=rngs)
        self.q_proj = lin(h, cfg.num_heads * d, ("embed", "q_heads"), cfg.attention_bias)
        self.k_proj = lin(h, cfg.num_kv_heads * d, ("embed", "kv_heads"), cfg.attention_bias)
        self.v_proj = lin(h, cfg.num_kv_heads * d, ("embed", "kv_heads"), cfg.attention_bias)
        self.o_proj = lin(cfg.num_heads * d, h, ("q_heads", "embed"), cfg.attention_bias and cfg.family == "llama")
        if cfg.qk_norm:
            norm = lambda: RMSNorm(d, eps=cfg.rms_norm_eps, plus_one=cfg.is_gemma, param_dtype=cfg.param_dtype,
                                   name="head_dim")
            self.q_norm, self.k_norm = norm(), norm()
        self.scale = (cfg.query_pre_attn_scalar or d) ** -0.5
        self.softcap = cfg.attn_logit_softcapping
        self.heads = (cfg.num_heads, cfg.num_kv_heads, d)
        self.qk_norm = cfg.qk_norm

    def __call__(self, x, positions, inv_freq, allowed, cache, blocks=None):
        """x [B,T,H], allowed [B,T,S]. Without a cache (``None``) the T keys are all there is (S = T); with
        ``cache = (k_all, v_all, layer, index)`` this layer's slice of the stacked caches [L,B,S,K,D] is
        written at slot ``index`` in place (no per-step copy of the whole cache) and ``(k_all, v_all)`` is
        returned with the output. ``blocks``: see ``Decoder.__call__``'s ``query_blocks``."""
        b, t, _ = x.shape
        nh, nk, d = self.heads
        q = self.q_proj(x).reshape(b, t, nh, d)
        k = self.k_proj(x).reshape(b, t, nk, d)
        v = self.v_proj(x).reshape(b, t, nk, d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _rope(q, positions, inv_freq), _rope(k, positions, inv_freq)
        k_cache, v_cache, cache = write_kv(k, v, cache)
        q = q.reshape(b, t, nk, nh // nk, d)
        k_cache = k_cache.astype(q.dtype)

        def attend(lo, hi, keys):
            scores = jnp.einsum("btkgd,bskd->bkgts", q[:, lo:hi], k_cache[:, :keys],
                                preferred_element_type=jnp.float32) * self.scale
            if self.softcap:
                scores = jnp.tanh(scores / self.softcap) * self.softcap
            # A finite floor keeps fully masked (padding) query rows NaN-free, in values and gradients.
            scores = jnp.where(allowed[:, None, None, lo:hi, :keys], scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)
            return jnp.einsum("bkgts,bskd->btkgd", probs, v_cache[:, :keys])

        blocks = blocks or ((0, t, k_cache.shape[1]),)
        out = jnp.concatenate([attend(*block) for block in blocks], axis=1).reshape(b, t, nh * d)
        return self.o_proj(out.astype(x.dtype)), cache


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        lin = lambda i, o, names: Linear(i, o, names=names, bias=False, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                         rngs=rngs)
        self.gate_proj = lin(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"))
        self.up_proj = lin(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"))
        self.down_proj = lin(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"))
        self.act = cfg.hidden_act

    def __call__(self, x):
        gate = self.gate_proj(x)
        gate = jax.nn.silu(gate) if self.act == "silu" else jax.nn.gelu(gate, approximate=True)
        return self.down_proj(gate * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """One layer; the ``Decoder`` holds all of them as one stacked instance."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        norm = lambda: RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, plus_one=cfg.is_gemma,
                               param_dtype=cfg.param_dtype)
        self.input_layernorm = norm()
        self.self_attn = Attention(cfg, rngs=rngs)
        self.post_attention_layernorm = norm()
        if cfg.is_gemma:  # sandwich norms
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()
        self.mlp = MLP(cfg, rngs=rngs)
        self.sandwich = cfg.is_gemma

    def __call__(self, x, positions, inv_freq, allowed, cache, blocks=None):
        h, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, allowed, cache, blocks)
        if self.sandwich:
            x = x + self.post_attention_layernorm(h)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))), cache
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


def write_kv(k, v, cache):
    """(keys, values to attend over, updated stacked caches): without a cache this chunk's own; with
    ``cache`` = (k_all [L,B,S,K,D], v_all, layer, index) the chunk is written at slot ``index`` of
    ``layer`` in place and that layer's whole cache is attended."""
    if cache is None:
        return k, v, None
    k_all, v_all, layer, index = cache
    k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (layer, 0, index, 0, 0))
    v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (layer, 0, index, 0, 0))
    return k_all[layer], v_all[layer], (k_all, v_all)


def token_positions(input_ids, attention_mask, cache, positions):
    """(mask [B,T] bool, positions [B,T]) of the call convention: by default a row's unmasked tokens
    continue from the cache's next position (0 without a cache)."""
    b, t = input_ids.shape
    mask = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    if positions is None:
        start = cache.next_pos if cache is not None else jnp.zeros((b,), jnp.int32)
        positions = start[:, None] + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
    return mask, positions


def visibility(mask, positions, segment_ids, shared_until, cache, segment_tree=None):
    """(allowed [B,T,S]: which key slots each query token attends to, (key positions, validity, segments) [B,S]).
    A token sees valid slots of its own segment up to its position and shared slots (segment 0) up to
    ``shared_until`` (its own position by default); with ``segment_tree`` [G,G] (static bool) a token of
    segment g > 0 sees the slots of every segment h > 0 with ``segment_tree[g, h]`` instead of its own
    only (branches that share their first tokens: a prefix tree of continuations). With a cache the
    chunk's slots are written at ``cache.index`` first."""
    segments = jnp.zeros(mask.shape, jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    if cache is not None:
        keys = tuple(jax.lax.dynamic_update_slice(old, new, (0, cache.index))
                     for old, new in ((cache.pos, positions), (cache.valid, mask), (cache.segment, segments)))
    else:
        keys = positions, mask, segments
    k_pos, k_valid, k_seg = (x[:, None, :] for x in keys)
    until = positions if shared_until is None else shared_until
    if segment_tree is None:
        own = k_seg == segments[:, :, None]
    else:
        tree = jnp.asarray(segment_tree, bool).at[0, 0].set(True)
        own = tree[segments[:, :, None], k_seg] & ((k_seg == 0) == (segments[:, :, None] == 0))
    own = own & (k_pos <= positions[:, :, None])
    shared = (k_seg == 0) & (k_pos <= until[:, :, None])
    return k_valid & (own | shared), keys


def lm_logits(model, x, last_only: bool, output_positions):
    """float32 logits of a decoder's (``model.norm``, tied ``embed_tokens`` or ``lm_head``) final hidden
    states ``x`` at the chunk indices asked for. The head accumulates in float32 whatever the compute
    dtype: log-probs feed importance ratios."""
    c = model.config
    if output_positions is not None:
        x = x[:, output_positions]
    x = model.norm(x[:, -1:] if last_only else x)
    if c.tie_embeddings:
        logits = jnp.dot(x, gathered(model.embed_tokens.weight[...]).astype(c.dtype).T, preferred_element_type=jnp.float32)
    else:
        logits = model.lm_head(x, out_dtype=jnp.float32)
    logits = logits.astype(jnp.float32)
    cap = getattr(c, "final_logit_softcapping", None)
    return jnp.tanh(logits / cap) * cap if cap else logits


class Decoder(nnx.Module):
    """The causal LM. See the module docstring for the call and cache conventions."""

    query_blocks = True  # accepts ``query_blocks``

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, param_dtype=config.param_dtype,
                                      rngs=rngs)
        self.layers = stacked(config.num_layers, lambda r: DecoderLayer(config, rngs=r), rngs)
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps, plus_one=config.is_gemma,
                            param_dtype=config.param_dtype)
        if not config.tie_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, names=("embed", "vocab"), bias=False,
                                  dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        c = self.config
        shape = (c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim)
        return KVCache(k=jnp.zeros(shape, c.dtype), v=jnp.zeros(shape, c.dtype),
                       pos=jnp.zeros((batch, max_len), jnp.int32), valid=jnp.zeros((batch, max_len), bool),
                       segment=jnp.zeros((batch, max_len), jnp.int32),
                       index=jnp.zeros((), jnp.int32), next_pos=jnp.zeros((batch,), jnp.int32))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 cache: KVCache | None = None, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, shared_until: jax.Array | None = None,
                 segment_tree=None, last_only: bool = False, output_positions: jax.Array | None = None,
                 query_blocks: tuple[tuple[int, int, int], ...] | None = None):
        """Returns float32 logits [B,T,V] ([B,1,V] with ``last_only``: prefill skips the LM head elsewhere;
        [B,P,V] at the chunk indices ``output_positions`` [P], the only tokens a scorer needs),
        or ``(logits, cache)`` when a cache is passed.

        ``positions`` [B,T] override ``cache.next_pos + cumsum(mask) - 1``; ``segment_ids`` [B,T] (default 0)
        put tokens on branches: a token attends to shared slots (segment 0) and to its own segment only. With
        both, several continuations of one cached prefix run as one row (tree attention, used to score all
        actions at once); the cache then ends at the longest branch. ``shared_until`` [B,T] (default: each
        token's own position) is the last position of the shared slots a token sees: a branch can leave a
        prefix of a longer shared sequence (every decision of a conversation scored in one row).
        ``segment_tree`` [G,G] (static): which branch segments each branch segment sees (``visibility``).
        ``query_blocks`` (static, no cache): ``(start, stop, keys)`` triples covering the T tokens in order;
        tokens start..stop-1 attend over the first ``keys`` slots only, which the caller asserts hold every
        slot they may see. Block-causal attention then computes about half of the T x T scores.
        """
        t = input_ids.shape[1]
        c = self.config
        mask, positions = token_positions(input_ids, attention_mask, cache, positions)
        use_cache = cache is not None
        index = cache.index if use_cache else None
        seen, (k_pos, k_valid, k_seg) = visibility(mask, positions, segment_ids, shared_until, cache, segment_tree)
        local = None
        if "sliding_attention" in c.layer_types:
            local = seen & (positions[:, :, None] - k_pos[:, None, :] < c.sliding_window)

        x = self.embed_tokens(input_ids).astype(c.dtype)
        if c.is_gemma:
            x = x * jnp.asarray(c.hidden_size ** 0.5, c.dtype)
        graphdef, stack = nnx.split(self.layers)

        def body(carry, xs):
            x, kv = carry
            params, layer, inv_freq, sliding = xs
            params = gathered(params)
            allowed = seen if local is None else jnp.where(sliding, local, seen)
            x, kv = nnx.merge(graphdef, params)(x, positions, inv_freq, allowed,
                                                None if kv is None else (*kv, layer, index), query_blocks)
            return (x, kv), None

        if c.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[c.remat], prevent_cse=False)
        kinds = jnp.asarray([kind == "sliding_attention" for kind in c.layer_types])
        (x, kv), _ = jax.lax.scan(body, (x, (cache.k, cache.v) if use_cache else None),
                                  (stack, jnp.arange(c.num_layers), rope_tables(c), kinds))
        logits = lm_logits(self, x, last_only, output_positions)
        if not use_cache:
            return logits
        next_pos = jnp.maximum(cache.next_pos, jnp.max(jnp.where(mask, positions + 1, 0), axis=1))
        new_cache = KVCache(k=kv[0], v=kv[1], pos=k_pos, valid=k_valid, segment=k_seg, index=index + t,
                            next_pos=next_pos)
        return logits, new_cache
