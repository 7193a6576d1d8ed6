"""LoRA adapters on chosen projections of a ``Decoder``; the base stays frozen.

A small module of our own rather than ``qwix``: our ``Linear`` already has a ``lora`` slot, so an
adapter is ~20 lines, adds no dependency, keeps the parameter tree (and so the HF name table and
checkpoints) predictable, and composes with plain ``nnx.split``. qwix's LoRA intercepts
Flax's own layers/ops at trace time, which buys nothing here.

Usage with the trainer's split/optax flow::

    apply_lora(model, rank=8, alpha=16.0, rngs=nnx.Rngs(0))          # q,k,v,o (+ DeltaNet's) by default
    graphdef, lora_params, frozen = nnx.split(model, nnx.LoRAParam, ...)  # trainable vs frozen
    # or: optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.LoRAParam)
    with disabled(model):                                            # the reference policy
      ref_logits = model(ids, mask)

``lora_b`` starts at zero, so a fresh adapter leaves the model's outputs unchanged. On the decoder's stacked
layers an adapter is stacked too (rank-r adapters per layer: ``lora_a`` [L, in, r], ``lora_b`` [L, r, out]).
Logical axis names: ``lora_a`` (in, "lora_rank"), ``lora_b`` ("lora_rank", out), after the kernel's own
names, plus the leading "layers".
``disabled`` flips a static flag, read at trace time: use it inside the traced function.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from sepo_jax.model.transformer import Linear, param, stacked

# Attention's q/k/v/o; in Qwen 3.5's gated DeltaNet layers their counterparts in_proj_qkv and out_proj.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "out_proj")


class LoRA(nnx.Module):
    """delta(x) = (alpha / rank) * x @ lora_a @ lora_b."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float, param_dtype,
                 names: tuple[str, str], rngs: nnx.Rngs):
        init = jax.nn.initializers.he_uniform()
        self.lora_a = param(init(rngs.params(), (in_features, rank), param_dtype), (names[0], "lora_rank"),
                            nnx.LoRAParam)
        self.lora_b = param(jnp.zeros((rank, out_features), param_dtype), ("lora_rank", names[1]), nnx.LoRAParam)
        self.scale = alpha / rank
        self.enabled = True

    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.enabled:
            return jnp.zeros((), x.dtype)
        return (x @ self.lora_a[...].astype(x.dtype) @ self.lora_b[...].astype(x.dtype)) * self.scale


def apply_lora(model: nnx.Module, *, rank: int = 8, alpha: float = 16.0,
               targets: tuple[str, ...] = DEFAULT_TARGETS, param_dtype=None, rngs: nnx.Rngs) -> nnx.Module:
    """Attaches an adapter to every ``Linear`` named in ``targets`` (in place); returns the model. Adapters are
    stored in ``param_dtype`` (default: the adapted kernel's dtype), e.g. float32 over a bfloat16 frozen base."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    hits = 0
    for path, module in list(nnx.iter_modules(model)):
        if isinstance(module, Linear) and path and path[-1] in targets:
            *layers, d_in, d_out = module.kernel.shape
            names = module.kernel.get_metadata()["out_sharding"][-2:]
            dtype = module.kernel[...].dtype if param_dtype is None else param_dtype
            make = lambda r: LoRA(d_in, d_out, rank=rank, alpha=alpha, param_dtype=dtype, names=names, rngs=r)
            module.lora = stacked(layers[0], make, rngs) if layers else make(rngs)
            hits += 1
    if not hits:
        raise ValueError(f"apply_lora: no Linear named any of {targets} in the model")
    return model


@contextlib.contextmanager
def disabled(model: nnx.Module):
    """Runs the model without its adapters (the frozen reference policy) inside the block."""
    adapters = [m for _, m in nnx.iter_modules(model) if isinstance(m, LoRA)]
    for m in adapters:
        m.enabled = False
    try:
        yield model
    finally:
        for m in adapters:
            m.enabled = True
