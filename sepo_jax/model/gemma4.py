"""Flax NNX decoder for the Gemma 4 text model (HF ``gemma4_text``, and the language model of ``gemma4``).

What differs from Gemma 2/3 (``transformer.py``), exactly as transformers' ``modeling_gemma4.py`` does it:

* Norms are ``w * norm(x)`` (weights start at 1), q/k are RMS-normed per head, v is RMS-normed without a
  weight; the attention scale is 1 (no 1/sqrt(d)); no attention-logit softcapping; each layer ends with
  ``x *= layer_scalar`` (a stored, non-trained [1] tensor).
* Sliding and global ("full_attention") layers have their own head_dim and kv heads (``global_head_dim``,
  ``num_global_key_value_heads`` / ``per_layer_config``) and RoPE (``rope_parameters`` per layer type;
  global layers use "proportional" RoPE: only ``partial_rotary_factor`` of the frequencies rotate). With
  ``attention_k_eq_v`` global layers have no v_proj: v = v_norm(k_proj(x)).
* Per-layer inputs (PLE): ``embed_tokens_per_layer`` [Vp, L*P] (scaled by sqrt(P)) plus a projection of the
  scaled token embedding (``per_layer_model_projection``, * H^-1/2, RMS-normed over P), averaged (* 2^-1/2);
  layer i adds ``post_per_layer_input_norm(per_layer_projection(act(per_layer_input_gate(x)) * ple_i))``.
* KV sharing: the last ``num_kv_shared_layers`` layers have no k/v projections; each attends over the
  keys/values of the last non-shared layer of its own type (its "store" layer), cache included. The KV
  cache holds the non-shared layers only. ``use_double_wide_mlp`` doubles the MLP of the shared layers.

Layers are stacked and scanned as a repeating block: the non-shared layers and the shared layers form one
segment each, and a segment is a scan over blocks of its smallest period of ``layer_types`` (Gemma 4 E2B:
4 sliding + 1 global). Block position j of segment s is one stacked module ``block{s}_{j}`` whose row b
is HF's ``model.layers.{start_s + b*period_s + j}`` (``Gemma4Config.layer_ids``, which ``weights.py``'s
import/export reads); so the program grows with the period, not the depth (an aperiodic ``layer_types``
just makes a block of the whole segment). The parameter names below each ``block{s}_{j}`` are HF's.
MoE blocks (``enable_moe_block``), bidirectional attention ("all"), RoPE types other than default and
proportional, and per-layer overrides other than the global layers' head_dim / kv heads are not supported:
each stops the load with an error naming the setting.

Calling convention and cache interface: the same as ``transformer.Decoder`` (see its module docstring):
``model(ids, mask) -> float32 logits``; ``init_cache``/``cache=`` returning ``(logits, cache)``;
``positions``/``segment_ids`` for tree attention; ``last_only``; ``output_positions``.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .transformer import (MLP, REMAT_POLICIES, DecoderShape, Embedding, Linear, RMSNorm, _rope, gathered, lm_logits, param, stacked,
                          token_positions, visibility)

MODEL_TYPES = ("gemma4", "gemma4_text")
LAYER_TYPES = ("sliding_attention", "full_attention")
_ROPE_KEYS = {"rope_type", "rope_theta", "factor", "partial_rotary_factor"}


def _items(d: dict | tuple | None) -> tuple:
    return tuple(sorted(dict(d or ()).items()))


@dataclasses.dataclass(frozen=True)
class Gemma4Config(DecoderShape):
    """Static architecture description (hashable). ``hidden_size_per_layer_input=0``: no per-layer inputs."""

    global_head_dim: int
    num_global_kv_heads: int
    layer_types: tuple[str, ...]
    sliding_window: int = 512
    rope_sliding: Any = (("rope_theta", 10000.0), ("rope_type", "default"))
    rope_full: Any = (("partial_rotary_factor", 0.25), ("rope_theta", 1e6), ("rope_type", "proportional"))
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True
    attention_bias: bool = False
    hidden_act: str = "gelu_tanh"  # or "silu"
    final_logit_softcapping: float | None = None
    vocab_size_per_layer_input: int = 0
    hidden_size_per_layer_input: int = 0
    attention_k_eq_v: bool = False
    num_kv_shared_layers: int = 0
    use_double_wide_mlp: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat: str = "none"

    family = "gemma4"

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "rope_sliding", _items(self.rope_sliding))
        object.__setattr__(self, "rope_full", _items(self.rope_full))
        if len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for num_layers={self.num_layers}")
        bad = set(self.layer_types) - set(LAYER_TYPES)
        if bad:
            raise ValueError(f"Gemma 4 layer_types {sorted(bad)} are not supported; expected {LAYER_TYPES}")
        if self.remat != "none" and self.remat not in REMAT_POLICIES:
            raise ValueError(f"Gemma4Config.remat={self.remat!r}; expected 'none' or one of {tuple(REMAT_POLICIES)}")
        if self.hidden_act not in ("silu", "gelu_tanh"):
            raise ValueError(f"Gemma4Config.hidden_act={self.hidden_act!r}; expected 'silu' or 'gelu_tanh'")
        for t in set(self.layer_types):
            kv, _ = self.kv_shape(t)
            if self.num_heads % kv:
                raise ValueError(f"num_heads={self.num_heads} is not a multiple of the {t} layers' {kv} kv heads")
        for name, rope in (("sliding_attention", self.rope_sliding), ("full_attention", self.rope_full)):
            rope = dict(rope)
            if set(rope) - _ROPE_KEYS or rope.get("rope_type", "default") not in ("default", "proportional"):
                raise ValueError(f"rope_parameters[{name!r}]={rope} is not supported (rope_type default or proportional, "
                                 f"keys {sorted(_ROPE_KEYS)})")
        if not 0 <= self.num_kv_shared_layers < self.num_layers:
            raise ValueError(f"num_kv_shared_layers={self.num_kv_shared_layers} must be in [0, num_layers={self.num_layers})")
        first = self.num_layers - self.num_kv_shared_layers
        if self.num_kv_shared_layers and set(self.layer_types[first:]) - set(self.layer_types[:first]):
            raise ValueError("the KV-shared layers have a layer type that no earlier layer produces a cache for")

    @property
    def model_class(self):
        return Gemma4

    @property
    def layer_ids(self) -> dict[str, tuple[int, ...]]:
        """Stack name -> the HF layer index of each of its rows (``weights.py`` reads it)."""
        return {_stack_name(s, j): tuple(start + b * period + j for b in range(length // period))
                for s, (start, length, period, _) in enumerate(self.segments()) for j in range(period)}

    def kv_shape(self, layer_type: str) -> tuple[int, int]:
        """(kv heads, head_dim) of a layer of this type."""
        if layer_type == "full_attention":
            return self.num_global_kv_heads, self.global_head_dim
        return self.num_kv_heads, self.head_dim

    def segments(self) -> list[tuple[int, int, int, bool]]:
        """(start, length, period, shared) of the non-shared and the shared runs of layers."""
        first = self.num_layers - self.num_kv_shared_layers
        out = []
        for start, end, shared in ((0, first, False), (first, self.num_layers, True)):
            kinds = self.layer_types[start:end]
            n = end - start
            if n:
                period = next(p for p in range(1, n + 1) if n % p == 0 and all(kinds[k] == kinds[k % p] for k in range(n)))
                out.append((start, n, period, shared))
        return out

    def inv_freq(self, layer_type: str) -> np.ndarray:
        """[head_dim/2] inverse RoPE frequencies of a layer type (transformers' default / proportional RoPE)."""
        _, d = self.kv_shape(layer_type)
        rope = dict(self.rope_full if layer_type == "full_attention" else self.rope_sliding)
        theta = float(rope.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") == "default":  # Gemma 4's own default ignores partial_rotary_factor
            return (1.0 / theta ** (np.arange(0, d, 2, dtype=np.float32) / d)).astype(np.float32)
        angles = int(rope.get("partial_rotary_factor", 1.0) * d // 2)
        rotated = 1.0 / theta ** (np.arange(0, 2 * angles, 2, dtype=np.float32) / d)
        inv = np.concatenate([rotated, np.zeros(d // 2 - angles, np.float32)])
        return (inv / rope.get("factor", 1.0)).astype(np.float32)

    @classmethod
    def from_hf(cls, config: dict, **overrides) -> Gemma4Config:
        """From a ``config.json`` dict of ``gemma4_text`` or ``gemma4`` (whose ``text_config`` is used)."""
        if config.get("model_type") == "gemma4" or "text_config" in config:
            config = dict(config.get("text_config") or {})
        g = lambda key, default=None: default if config.get(key) is None else config[key]  # noqa: E731
        if g("enable_moe_block", False):
            raise ValueError("Gemma 4 config enable_moe_block=True (mixture of experts) is not supported")
        if g("use_bidirectional_attention") == "all":
            raise ValueError("Gemma 4 config use_bidirectional_attention='all' is not supported (causal LM only)")
        if g("use_bidirectional_attention") not in (None, "vision"):
            raise ValueError(f"Gemma 4 config use_bidirectional_attention={g('use_bidirectional_attention')!r} "
                             "is not supported")
        layers = config["num_hidden_layers"]
        layer_types = list(g("layer_types") or ["sliding_attention" if (i + 1) % 6 else "full_attention"
                                                for i in range(layers)])
        if layer_types:
            layer_types[-1] = "full_attention"  # transformers forces it too
        heads = config["num_attention_heads"]
        kv_heads = g("num_key_value_heads", heads)
        head_dim = g("head_dim") or config["hidden_size"] // heads
        k_eq_v = bool(g("attention_k_eq_v", False))
        per_layer = g("per_layer_config")
        if per_layer is not None:  # transformers >= 5.2x: sparse {layer index: overrides}
            per_layer = {int(k): dict(v) for k, v in per_layer.items()}
            for i, over in per_layer.items():
                if set(over) - {"head_dim", "num_key_value_heads"}:
                    raise ValueError(f"Gemma 4 per_layer_config[{i}] sets {sorted(over)}; only head_dim and "
                                     "num_key_value_heads are supported")
            by_type = {t: {tuple(sorted(per_layer.get(i, {}).items())) for i, x in enumerate(layer_types) if x == t}
                       for t in set(layer_types)}
            sliding = {dict(o).get("head_dim", head_dim) for o in by_type.get("sliding_attention", ())}
            sliding_kv = {dict(o).get("num_key_value_heads", kv_heads) for o in by_type.get("sliding_attention", ())}
            if len(by_type.get("full_attention", ())) > 1 or sliding - {head_dim} or sliding_kv - {kv_heads}:
                raise ValueError("Gemma 4 per_layer_config must give every full_attention layer the same head_dim / "
                                 f"num_key_value_heads and no sliding layer others; got {per_layer}")
            full = dict(next(iter(by_type.get("full_attention", {()}))))
            global_head_dim = full.get("head_dim", head_dim)
            global_kv = full.get("num_key_value_heads", kv_heads)
        else:  # the keys Gemma4TextConfig turns into per_layer_config
            global_head_dim = g("global_head_dim", 512)
            global_kv = g("num_global_key_value_heads") if k_eq_v else None
            global_kv = kv_heads if global_kv is None else global_kv
        rope = g("rope_parameters") or {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0}}
        if set(rope) - set(LAYER_TYPES):
            raise ValueError(f"Gemma 4 rope_parameters must be keyed by layer type; got keys {sorted(rope)}")
        act = g("hidden_activation") or g("hidden_act", "gelu_pytorch_tanh")
        if act not in ("gelu_pytorch_tanh", "gelu_tanh", "silu"):
            raise ValueError(f"Gemma 4 hidden activation {act!r} is not supported")
        ple = g("hidden_size_per_layer_input", 0) or 0
        kwargs = dict(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"], num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
            head_dim=head_dim, global_head_dim=global_head_dim, num_global_kv_heads=global_kv,
            layer_types=tuple(layer_types), sliding_window=g("sliding_window", 512),
            rope_sliding=_items(rope.get("sliding_attention")), rope_full=_items(rope.get("full_attention")),
            rms_norm_eps=g("rms_norm_eps", 1e-6), tie_embeddings=bool(g("tie_word_embeddings", True)),
            attention_bias=bool(g("attention_bias", False)), hidden_act="silu" if act == "silu" else "gelu_tanh",
            final_logit_softcapping=g("final_logit_softcapping"),
            vocab_size_per_layer_input=g("vocab_size_per_layer_input", 262_144) if ple else 0,
            hidden_size_per_layer_input=ple, attention_k_eq_v=k_eq_v, num_kv_shared_layers=g("num_kv_shared_layers", 0),
            use_double_wide_mlp=bool(g("use_double_wide_mlp", False)))
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """The ``config.json`` dict (``Gemma4ForCausalLM``, transformers 5 layout)."""
        out = {
            "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "hidden_activation": "silu" if self.hidden_act == "silu" else "gelu_pytorch_tanh",
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.attention_bias, "sliding_window": self.sliding_window,
            "layer_types": list(self.layer_types), "final_logit_softcapping": self.final_logit_softcapping,
            "rope_parameters": {"sliding_attention": dict(self.rope_sliding), "full_attention": dict(self.rope_full)},
            "vocab_size_per_layer_input": self.vocab_size_per_layer_input or self.vocab_size,
            "hidden_size_per_layer_input": self.hidden_size_per_layer_input,
            "attention_k_eq_v": self.attention_k_eq_v, "num_kv_shared_layers": self.num_kv_shared_layers,
            "use_double_wide_mlp": self.use_double_wide_mlp, "enable_moe_block": False,
            "max_position_embeddings": 131072, "dtype": jnp.dtype(self.param_dtype).name,
            "per_layer_config": {str(i): {"head_dim": self.global_head_dim, "num_key_value_heads": self.num_global_kv_heads}
                                 for i, t in enumerate(self.layer_types) if t == "full_attention"},
        }
        return out


@flax.struct.dataclass
class Gemma4Cache:
    """As ``transformer.KVCache``, but ``k``/``v`` are tuples (one per block position of the non-shared
    segment) of [blocks, B, S, K_j, D_j]: sliding and global layers differ in K and D, shared layers store nothing."""

    k: tuple
    v: tuple
    pos: jax.Array  # [B, S]
    valid: jax.Array  # [B, S]
    segment: jax.Array  # [B, S]
    index: jax.Array  # []
    next_pos: jax.Array  # [B]

    def repeat(self, n: int) -> Gemma4Cache:
        if n == 1:
            return self
        rep = lambda x, axis: jnp.repeat(x, n, axis=axis)  # noqa: E731
        return Gemma4Cache(tuple(rep(x, 1) for x in self.k), tuple(rep(x, 1) for x in self.v), rep(self.pos, 0),
                           rep(self.valid, 0), rep(self.segment, 0), self.index, rep(self.next_pos, 0))


class Buffer(nnx.Variable):
    """A stored, non-trained tensor (HF ``nn.Buffer`` saved in the checkpoint: ``layer_scalar``)."""


def _rms(x, eps):
    """RMSNorm without a weight (v_norm)."""
    xf = x.astype(jnp.float32)
    return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)).astype(x.dtype)


def _attend(q, k, v, allowed):
    """Scale-1 GQA attention. q [B,T,N,D], k/v [B,S,K,D], allowed [B,T,S] -> [B,T,N*D]."""
    b, t, nh, d = q.shape
    nk = k.shape[2]
    q = q.reshape(b, t, nk, nh // nk, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, nh * d)


class Gemma4Attention(nnx.Module):
    def __init__(self, cfg: Gemma4Config, layer_type: str, shared: bool, *, rngs: nnx.Rngs):
        kv, d = cfg.kv_shape(layer_type)
        h, n = cfg.hidden_size, cfg.num_heads
        lin = lambda i, o, names: Linear(i, o, names=names, bias=cfg.attention_bias, dtype=cfg.dtype,  # noqa: E731
                                         param_dtype=cfg.param_dtype, rngs=rngs)
        norm = lambda: RMSNorm(d, eps=cfg.rms_norm_eps, plus_one=False, param_dtype=cfg.param_dtype,  # noqa: E731
                               name="head_dim")
        self.q_proj = lin(h, n * d, ("embed", "q_heads"))
        self.q_norm = norm()
        self.k_eq_v = cfg.attention_k_eq_v and layer_type == "full_attention"
        if not shared:  # KV-shared layers own no k/v weights
            self.k_proj = lin(h, kv * d, ("embed", "kv_heads"))
            if not self.k_eq_v:
                self.v_proj = lin(h, kv * d, ("embed", "kv_heads"))
            self.k_norm = norm()
        self.o_proj = lin(n * d, h, ("q_heads", "embed"))
        self.shared, self.heads, self.eps = shared, (n, kv, d), cfg.rms_norm_eps

    def __call__(self, x, positions, inv_freq, allowed, kv):
        """``kv``: the store layer's (k, v) [B,S,K,D] (shared layers); None (no cache: the T keys are all there
        is); or (k_all, v_all, row, index): this position's stacked cache [blocks,B,S,K,D], written in place at
        (row, slot index). Returns (out, (k, v) attended over, updated (k_all, v_all) or None)."""
        b, t, _ = x.shape
        nh, nk, d = self.heads
        q = _rope(self.q_norm(self.q_proj(x).reshape(b, t, nh, d)), positions, inv_freq)
        stacks = None
        if self.shared:
            k, v = kv
        else:
            raw = self.k_proj(x).reshape(b, t, nk, d)
            k = _rope(self.k_norm(raw), positions, inv_freq)
            v = _rms(raw if self.k_eq_v else self.v_proj(x).reshape(b, t, nk, d), self.eps)
            if kv is not None:
                k_all, v_all, row, index = kv
                k_all = jax.lax.dynamic_update_slice(k_all, k[None].astype(k_all.dtype), (row, 0, index, 0, 0))
                v_all = jax.lax.dynamic_update_slice(v_all, v[None].astype(v_all.dtype), (row, 0, index, 0, 0))
                k, v, stacks = k_all[row], v_all[row], (k_all, v_all)
        out = _attend(q, k, v, allowed)
        return self.o_proj(out.astype(x.dtype)), (k, v), stacks


class Gemma4Layer(nnx.Module):
    def __init__(self, cfg: Gemma4Config, layer_type: str, shared: bool, *, rngs: nnx.Rngs):
        norm = lambda dim: RMSNorm(dim, eps=cfg.rms_norm_eps, plus_one=False, param_dtype=cfg.param_dtype)  # noqa: E731
        h, p = cfg.hidden_size, cfg.hidden_size_per_layer_input
        self.input_layernorm = norm(h)
        self.self_attn = Gemma4Attention(cfg, layer_type, shared, rngs=rngs)
        self.post_attention_layernorm = norm(h)
        self.pre_feedforward_layernorm = norm(h)
        wide = 2 if (cfg.use_double_wide_mlp and shared) else 1
        self.mlp = MLP(types.SimpleNamespace(hidden_size=h, intermediate_size=cfg.intermediate_size * wide,
                                             hidden_act=cfg.hidden_act, dtype=cfg.dtype, param_dtype=cfg.param_dtype),
                       rngs=rngs)
        self.post_feedforward_layernorm = norm(h)
        if p:
            lin = lambda i, o, names: Linear(i, o, names=names, bias=False, dtype=cfg.dtype,  # noqa: E731
                                             param_dtype=cfg.param_dtype, rngs=rngs)
            self.per_layer_input_gate = lin(h, p, ("embed", "mlp"))
            self.per_layer_projection = lin(p, h, ("mlp", "embed"))
            self.post_per_layer_input_norm = norm(h)
        self.layer_scalar = param(jnp.ones((1,), cfg.param_dtype), ("norm",), Buffer)
        self.ple, self.act = bool(p), cfg.hidden_act

    def __call__(self, x, per_layer_input, positions, inv_freq, allowed, kv):
        h, used, stacks = self.self_attn(self.input_layernorm(x), positions, inv_freq, allowed, kv)
        x = x + self.post_attention_layernorm(h)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        if self.ple:
            gate = self.per_layer_input_gate(x)
            gate = jax.nn.silu(gate) if self.act == "silu" else jax.nn.gelu(gate, approximate=True)
            x = x + self.post_per_layer_input_norm(self.per_layer_projection(gate * per_layer_input.astype(x.dtype)))
        return x * self.layer_scalar[...].astype(x.dtype), used, stacks


class Gemma4(nnx.Module):
    """The Gemma 4 causal LM. See the module docstring."""

    buffer_types = (Buffer,)  # exported with the parameters by ``weights.save_hf``

    def __init__(self, config: Gemma4Config, *, rngs: nnx.Rngs):
        c = self.config = config
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size, param_dtype=c.param_dtype, rngs=rngs)
        if c.hidden_size_per_layer_input:
            lp = c.num_layers * c.hidden_size_per_layer_input
            self.embed_tokens_per_layer = Embedding(c.vocab_size_per_layer_input, lp, param_dtype=c.param_dtype, rngs=rngs)
            self.per_layer_model_projection = Linear(c.hidden_size, lp, names=("embed", "mlp"), bias=False, dtype=c.dtype,
                                                     param_dtype=c.param_dtype, rngs=rngs)
            self.per_layer_projection_norm = RMSNorm(c.hidden_size_per_layer_input, eps=c.rms_norm_eps, plus_one=False,
                                                     param_dtype=c.param_dtype)
        for s, (start, length, period, shared) in enumerate(c.segments()):
            for j, kind in enumerate(c.layer_types[start:start + period]):
                make = lambda r, kind=kind, shared=shared: Gemma4Layer(c, kind, shared, rngs=r)  # noqa: E731
                setattr(self, _stack_name(s, j), stacked(length // period, make, rngs))
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, plus_one=False, param_dtype=c.param_dtype)
        if not c.tie_embeddings:
            self.lm_head = Linear(c.hidden_size, c.vocab_size, names=("embed", "vocab"), bias=False, dtype=c.dtype,
                                  param_dtype=c.param_dtype, rngs=rngs)

    def _cached_positions(self):
        """(block count, [layer type]) of the non-shared segment, whose layers hold the cache."""
        start, length, period, _ = self.config.segments()[0]
        return length // period, self.config.layer_types[start:start + period]

    def init_cache(self, batch: int, max_len: int) -> Gemma4Cache:
        c = self.config
        nb, kinds = self._cached_positions()
        shapes = [(nb, batch, max_len, *c.kv_shape(t)) for t in kinds]
        return Gemma4Cache(k=tuple(jnp.zeros(s, c.dtype) for s in shapes), v=tuple(jnp.zeros(s, c.dtype) for s in shapes),
                           pos=jnp.zeros((batch, max_len), jnp.int32), valid=jnp.zeros((batch, max_len), bool),
                           segment=jnp.zeros((batch, max_len), jnp.int32), index=jnp.zeros((), jnp.int32),
                           next_pos=jnp.zeros((batch,), jnp.int32))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 cache: Gemma4Cache | None = None, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, shared_until: jax.Array | None = None,
                 segment_tree=None, last_only: bool = False, output_positions: jax.Array | None = None):
        """As ``transformer.Decoder.__call__``."""
        b, t = input_ids.shape
        c = self.config
        mask, positions = token_positions(input_ids, attention_mask, cache, positions)
        use_cache = cache is not None
        index = cache.index if use_cache else None
        seen, (k_pos, k_valid, k_seg) = visibility(mask, positions, segment_ids, shared_until, cache, segment_tree)
        allowed = {"full_attention": seen,
                   "sliding_attention": seen & (positions[:, :, None] - k_pos[:, None, :] < c.sliding_window)}
        freqs = {kind: jnp.asarray(c.inv_freq(kind)) for kind in set(c.layer_types)}

        x = self.embed_tokens(input_ids).astype(c.dtype) * jnp.asarray(c.hidden_size ** 0.5, c.dtype)
        p = c.hidden_size_per_layer_input
        ple = None
        if p:
            # Looked up from the table as it lies (FSDP: sharded over L*P, no partial sums to avoid), not gathered
            # whole like the other weights: at 2.35B parameters (E2B) it is most of the model.
            token = jnp.take(self.embed_tokens_per_layer.weight[...], input_ids, axis=0)
            token = token.astype(c.dtype) * jnp.asarray(p ** 0.5, c.dtype)
            proj = self.per_layer_model_projection(x) * jnp.asarray(c.hidden_size ** -0.5, c.dtype)
            proj = self.per_layer_projection_norm(proj.reshape(b, t, c.num_layers, p))
            ple = (proj + token.reshape(b, t, c.num_layers, p)) * jnp.asarray(2.0 ** -0.5, c.dtype)

        store = {}  # layer type -> (k, v) of its store layer, for the shared segment
        new_k = new_v = ()
        for s, (start, length, period, shared) in enumerate(c.segments()):
            nb, kinds = length // period, c.layer_types[start:start + period]
            graphdefs, stacks = zip(*(nnx.split(getattr(self, _stack_name(s, j))) for j in range(period)))
            last = {kind: j for j, kind in enumerate(kinds)}  # the last position of each type in a block
            seg_ple = (jnp.zeros((nb, 0)) if ple is None else
                       jnp.moveaxis(ple[:, :, start:start + length].reshape(b, t, nb, period, p), 2, 0))
            if shared:
                kv0 = None
                carried = {}
            else:
                kv0 = tuple(zip(cache.k, cache.v)) if use_cache else None
                carried = {} if use_cache else {
                    kind: tuple(jnp.zeros((b, t, *c.kv_shape(kind)), c.dtype) for _ in range(2)) for kind in last}

            def body(carry, xs, kinds=kinds, graphdefs=graphdefs, shared=shared, last=last, store=store):
                x, kvs, carried = carry
                params, row, pl = xs
                kvs = None if kvs is None else list(kvs)
                carried = dict(carried)
                for j, kind in enumerate(kinds):
                    layer = nnx.merge(graphdefs[j], gathered(params[j]))
                    if shared:
                        kv = store[kind]
                    else:
                        kv = None if kvs is None else (*kvs[j], row, index)
                    x, used, stacked_kv = layer(x, None if ple is None else pl[:, :, j], positions, freqs[kind],
                                                allowed[kind], kv)
                    if stacked_kv is not None:
                        kvs[j] = stacked_kv
                    if not shared and kvs is None and last[kind] == j:
                        carried[kind] = tuple(a.astype(c.dtype) for a in used)
                return (x, None if kvs is None else tuple(kvs), carried), None

            if c.remat != "none":
                body = jax.checkpoint(body, policy=REMAT_POLICIES[c.remat], prevent_cse=False)
            (x, kvs, carried), _ = jax.lax.scan(body, (x, kv0, carried), (stacks, jnp.arange(nb), seg_ple))
            if not shared:
                if use_cache:
                    new_k, new_v = tuple(k for k, _ in kvs), tuple(v for _, v in kvs)
                    store = {kind: (new_k[j][nb - 1], new_v[j][nb - 1]) for kind, j in last.items()}
                else:
                    store = carried

        logits = lm_logits(self, x, last_only, output_positions)
        if not use_cache:
            return logits
        next_pos = jnp.maximum(cache.next_pos, jnp.max(jnp.where(mask, positions + 1, 0), axis=1))
        return logits, Gemma4Cache(k=new_k, v=new_v, pos=k_pos, valid=k_valid, segment=k_seg, index=index + t,
                                   next_pos=next_pos)


def _stack_name(segment: int, position: int) -> str:
    return f"block{segment}_{position}"


def is_gemma4(hf_config: dict) -> bool:
    text = hf_config.get("text_config") or {}
    return hf_config.get("model_type") in MODEL_TYPES or text.get("model_type") in MODEL_TYPES
