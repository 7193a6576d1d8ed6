"""Checkpoint import/export without torch: Hugging Face safetensors folders and GGUF files.

Hugging Face names are the lingua franca. The name table is read off the model itself: every HF tensor is one
NNX parameter, or one row of a stacked layer parameter (``model.layers.3.self_attn.q_proj.weight`` <-> row 3 of
``layers.self_attn.q_proj.kernel``), kernels transposed because we store Linear kernels [in, out] and HF stores
[out, in]; so the families differ only through `ModelConfig` and there is no per-family table to drift out of
sync. A GGUF file is first translated to HF names and layout (`GGUF_NAMES`, dequantisation, llama.cpp's q/k
row permutation undone), then goes through the same import. Every mismatch (missing, unexpected, wrong shape,
non-float tensor) stops with an error naming the tensor before any array is built.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import tokenizer as tokenizer_lib
from .transformer import Decoder, ModelConfig

Sharding = jax.sharding.Sharding | Callable[[str, tuple[int, ...]], jax.sharding.Sharding] | None
# Tensors some HF checkpoints carry that hold no parameter of ours (Qwen 3.5: the multi-token-prediction head).
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$|mtp\..*")


# --------------------------------------------------------------------------------------------------------
# Name table: NNX path <-> HF name
# --------------------------------------------------------------------------------------------------------

def _hf_names(path: tuple, shape: tuple[int, ...], layer_ids: Mapping | None = None
              ) -> list[tuple[str, int | None, bool, tuple[int, ...]]]:
    """(HF name, layer index (None: not stacked), transposed, HF shape) of every HF tensor held by the NNX
    parameter at `path` of shape `shape`. `layer_ids` (a config's, for families with several layer stacks):
    stack name -> the HF layer index of each row; default: one `layers` stack whose row i is layer i."""
    *module, leaf = (str(p) for p in path)
    transposed = leaf == "kernel"
    name = ".".join((*module, "weight" if transposed else leaf))
    stacks = layer_ids or {"layers": None}
    if module[0] in stacks:  # stacked: row i is HF's model.layers.{ids[i]}.*
        ids = stacks[module[0]] or range(shape[0])
        row = shape[1:][::-1] if transposed else shape[1:]
        rest = name[len(module[0]) + 1:]
        return [(f"model.layers.{ids[i]}.{rest}", i, transposed, row) for i in range(shape[0])]
    return [(("" if module[0] == "lm_head" else "model.") + name, None, transposed,
             shape[::-1] if transposed else shape)]


def _abstract(config: ModelConfig):
    model_class = getattr(config, "model_class", Decoder)  # a family with its own module (qwen3_5)
    model = nnx.eval_shape(lambda: model_class(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_flat_state(state)


def name_table(config: ModelConfig) -> dict[str, tuple[tuple, int | None, bool, tuple[int, ...]]]:
    """HF name -> (NNX path, layer index or None, transposed, HF shape) for every tensor of a `Decoder(config)`."""
    return _table(_abstract(config)[1], config)


def _table(flat, config) -> dict[str, tuple[tuple, int | None, bool, tuple[int, ...]]]:
    ids = getattr(config, "layer_ids", None)
    return {name: (path, *rest) for path, var in flat for name, *rest in _hf_names(path, var.get_value().shape, ids)}


def config_from_hf(hf_config: dict, **fields):
    """The architecture config of a `config.json` dict, routed by `model_type` (`ModelConfig` or a family's own)."""
    from . import gemma4
    from .qwen3_5 import MODEL_TYPES, Qwen35Config

    if gemma4.is_gemma4(hf_config):
        return gemma4.Gemma4Config.from_hf(hf_config, **fields)
    if hf_config.get("model_type") in MODEL_TYPES:
        return Qwen35Config.from_hf(hf_config, **fields)
    return ModelConfig.from_hf(hf_config, **fields)


# --------------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------------

def sharding_for(sharding: Sharding, path: tuple, shape: tuple[int, ...]) -> jax.sharding.Sharding | None:
    """The placement of the parameter at `path`: one sharding for all, or `sharding(name, shape)`."""
    if sharding is None or isinstance(sharding, jax.sharding.Sharding):
        return sharding
    return sharding(".".join(map(str, path)), shape)


class TensorSource:
    """Lazily readable named tensors: shapes and dtypes up front, arrays on demand."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str],
                 read: Callable[[str], np.ndarray], origin: str):
        self.shapes, self.dtypes, self.read, self.origin = shapes, dtypes, read, origin

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], origin: str = "arrays") -> TensorSource:
        return cls({k: tuple(v.shape) for k, v in arrays.items()}, {k: v.dtype.name for k, v in arrays.items()},
                   arrays.__getitem__, origin)


def build_model(config: ModelConfig, tensors: TensorSource, *, sharding: Sharding = None) -> Decoder:
    """A `Decoder(config)` holding `tensors` (HF names and layout); every mismatch raises first."""
    graphdef, flat = _abstract(config)
    table = _table(flat, config)
    names = {n for n in tensors.shapes if not _IGNORED.match(n)}
    if config.tie_embeddings:
        names.discard("lm_head.weight")  # some tied checkpoints still store the (identical) head
    missing = sorted(set(table) - names)
    extra = sorted(names - set(table))
    if missing:
        raise ValueError(f"{tensors.origin}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    if extra:
        raise ValueError(f"{tensors.origin}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all); "
                         f"does config.json describe this checkpoint?")
    for name, (_, _, _, shape) in table.items():
        if tensors.shapes[name] != shape:
            raise ValueError(f"{tensors.origin}: tensor {name!r} has shape {tensors.shapes[name]}, "
                             f"the model expects {shape}")
        if not tensors.dtypes[name].upper().startswith(("F", "BF")):  # F32, BF16, float16, bfloat16...
            raise ValueError(f"{tensors.origin}: tensor {name!r} has dtype {tensors.dtypes[name]}, "
                             "expected a floating-point type")
    values = {}
    for path, var in flat:  # one parameter (a stack of L rows) at a time on the host
        stack = np.empty(var.get_value().shape, config.param_dtype)
        for name, layer, transposed, _ in _hf_names(path, stack.shape, getattr(config, "layer_ids", None)):
            array = np.asarray(tensors.read(name))
            array = np.asarray(array.T if transposed else array, config.param_dtype)
            if not np.isfinite(array).all():  # NaN/inf in the file, or overflow in the dtype conversion
                raise ValueError(f"{tensors.origin}: tensor {name!r} holds {int((~np.isfinite(array)).sum())} "
                                 f"non-finite values (NaN or inf) as {np.dtype(config.param_dtype).name}")
            stack[() if layer is None else layer] = array
        place = sharding_for(sharding, path, stack.shape)
        values[path] = jnp.asarray(stack) if place is None else jax.device_put(stack, place)
    state = nnx.from_flat_state([(path, var.replace(values[path])) for path, var in flat])
    return nnx.merge(graphdef, state)


def safetensors_source(folder: str) -> TensorSource:
    """All tensors of a HF folder's `*.safetensors` shards (through `model.safetensors.index.json` if any)."""
    from safetensors import SafetensorError, safe_open

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            files = sorted({os.path.join(folder, v) for v in json.load(f)["weight_map"].values()})
    else:
        files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"no *.safetensors file in {folder}")
    shapes, dtypes, where = {}, {}, {}
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"checkpoint shard {file} (listed in {index}) does not exist")
        try:
            with safe_open(file, framework="np") as f:
                for name in f.keys():
                    s = f.get_slice(name)
                    shapes[name], where[name] = tuple(s.get_shape()), file
                    dtypes[name] = s.get_dtype()
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"corrupted safetensors file {file}: {e}") from e

    def read(name):
        try:
            with safe_open(where[name], framework="np") as f:
                return f.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"corrupted safetensors file {where[name]} (tensor {name!r}): {e}") from e

    return TensorSource(shapes, dtypes, read, folder)


def load_hf(folder: str, *, sharding: Sharding = None, **fields) -> tuple[Decoder, dict]:
    """(model, config.json dict) from a Hugging Face checkpoint folder; `fields`: the `ModelConfig` fields
    the checkpoint does not fix (dtype, param_dtype, remat)."""
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"no config.json in {folder}")
    try:
        with open(config_file) as f:
            hf_config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupted {config_file}: {e}") from e
    config = config_from_hf(hf_config, **fields)
    tensors = safetensors_source(folder)
    prefix = next((p for p in ("model.language_model.", "language_model.model.")
                   if p + "embed_tokens.weight" in tensors.shapes), None)
    if prefix is not None:  # a multimodal wrapper: keep the language model only
        tensors = _renamed(tensors, prefix)
    return build_model(config, tensors, sharding=sharding), hf_config


def _renamed(tensors: TensorSource, prefix: str) -> TensorSource:
    """Tensors under `prefix` renamed to `model.`; the rest (vision tower, projector) dropped."""
    rename = {("model." + n[len(prefix):] if n.startswith(prefix) else n): n for n in tensors.shapes
              if n.startswith(prefix) or n.startswith("lm_head.") or n.startswith("language_model.lm_head.")}
    rename = {k.replace("language_model.lm_head.", "lm_head."): v for k, v in rename.items()}
    return TensorSource({k: tensors.shapes[v] for k, v in rename.items()},
                        {k: tensors.dtypes[v] for k, v in rename.items()},
                        lambda k: tensors.read(rename[k]), tensors.origin)


# --------------------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------------------

# GGUF per-block tensor name -> HF per-layer module name.
GGUF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
_GGUF_ARCHS = ("llama", "qwen2", "qwen3")


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert-time permutation of q/k rows (interleaved -> HF rotate-half RoPE)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(file: str, *, sharding: Sharding = None, **fields) -> tuple[Decoder, tokenizer_lib.Tokenizer, dict]:
    """(model, tokenizer, HF-style config dict) from a GGUF file (llama / qwen2 / qwen3 architectures);
    `fields` as for `load_hf`."""
    import gguf
    from gguf.quants import dequantize

    if not os.path.isfile(file):
        raise FileNotFoundError(f"GGUF file {file} does not exist")
    try:
        reader = gguf.GGUFReader(file)
    except Exception as e:
        raise ValueError(f"corrupted GGUF file {file}: {e}") from e
    meta = {k: f.contents() for k, f in reader.fields.items()}
    hf_config = gguf_config(meta, has_output="output.weight" in {t.name for t in reader.tensors})
    heads, kv_heads = hf_config["num_attention_heads"], hf_config["num_key_value_heads"]
    tensors = {}
    for t in reader.tensors:
        if t.name in _GGUF_GLOBAL:
            tensors[_GGUF_GLOBAL[t.name]] = t
            continue
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", t.name)
        if m is None or m.group(2) not in GGUF_NAMES:
            raise ValueError(f"{file}: unexpected GGUF tensor {t.name!r}")
        tensors[f"model.layers.{m.group(1)}.{GGUF_NAMES[m.group(2)]}.{m.group(3)}"] = t

    def read(name):
        t = tensors[name]
        w = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(tuple(int(d) for d in t.shape[::-1]))
        if hf_config["model_type"] == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute(w, heads if "q_proj" in name else kv_heads)
        return w

    source = TensorSource({n: tuple(int(d) for d in t.shape[::-1]) for n, t in tensors.items()},
                          {n: "float32" for n in tensors}, read, file)
    model = build_model(ModelConfig.from_hf(hf_config, **fields), source, sharding=sharding)
    return model, gguf_tokenizer(meta, file), hf_config


def gguf_config(meta: Mapping, *, has_output: bool) -> dict:
    """A Hugging Face `config.json` dict from GGUF metadata."""
    arch = meta["general.architecture"]
    if arch not in _GGUF_ARCHS:
        raise ValueError(f"GGUF architecture {arch!r} is not supported; expected one of {_GGUF_ARCHS}")
    g = lambda key, default=None: meta.get(f"{arch}.{key}", default)
    hidden, heads = int(g("embedding_length")), int(g("attention.head_count"))
    if g("rope.scaling.type", "none") not in ("none", None):
        raise ValueError(f"GGUF rope scaling {g('rope.scaling.type')!r} is not supported")
    return {
        "model_type": arch, "vocab_size": int(g("vocab_size", len(meta["tokenizer.ggml.tokens"]))),
        "hidden_size": hidden, "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")), "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "head_dim": int(g("attention.key_length", hidden // heads)),
        "rope_theta": float(g("rope.freq_base", 10000.0)), "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "tie_word_embeddings": not has_output, "max_position_embeddings": int(g("context_length", 2048)),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }


# llama.cpp pre-tokenizer names -> the regex split before byte-level BPE (None: GPT-2's own regex).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_GGUF_PRE = {"gpt2": None, "gpt-2": None, "default": None, "smollm": "digits", "starcoder": "digits",
             "refact": "digits", "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT,
             "qwen2": _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")}


def gguf_tokenizer(meta: Mapping, origin: str = "GGUF") -> tokenizer_lib.Tokenizer:
    """A byte-level BPE `Tokenizer` from GGUF `tokenizer.ggml.*` metadata (llama.cpp's "gpt2" model)."""
    import tokenizers
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ValueError(f"{origin}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    if pre not in _GGUF_PRE:
        raise ValueError(f"{origin}: pre-tokenizer {pre!r} is not supported; expected one of {sorted(_GGUF_PRE)}")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    hf = tokenizers.Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    split = _GGUF_PRE[pre]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None or split == "digits")
    if split is None:
        hf.pre_tokenizer = byte_level
    elif split == "digits":
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
    if pre == "qwen2":
        hf.normalizer = normalizers.NFC()
    hf.decoder = decoders.ByteLevel()
    # token types (llama.cpp): 3 = control (special), 4 = user defined (added, not special)
    hf.add_tokens([AddedToken(tokens[i], special=types[i] == 3, normalized=False)
                   for i in range(len(tokens)) if types[i] in (3, 4)])
    ident = lambda key: None if meta.get(key) is None else int(meta[key])
    return tokenizer_lib.Tokenizer(hf, bos_id=ident("tokenizer.ggml.bos_token_id"),
                                   eos_id=ident("tokenizer.ggml.eos_token_id"),
                                   pad_id=ident("tokenizer.ggml.padding_token_id"), unk_id=None,
                                   chat_template=meta.get("tokenizer.chat_template"))


# --------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------

_ARCHITECTURES = {"llama": ("llama", "LlamaForCausalLM"), "qwen2": ("qwen2", "Qwen2ForCausalLM"),
                  "qwen3": ("qwen3", "Qwen3ForCausalLM"), "gemma2": ("gemma2", "Gemma2ForCausalLM"),
                  "gemma3": ("gemma3_text", "Gemma3ForCausalLM")}


def hf_config(config: ModelConfig, tok: tokenizer_lib.Tokenizer | None = None) -> dict:
    """The Hugging Face `config.json` dict of `config` (transformers 5 layout, legacy rope keys too)."""
    if hasattr(config, "to_hf"):  # a family with its own config class (qwen3_5)
        out = config.to_hf()
        return out | ({"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
                      if tok is not None else {})
    model_type, arch = _ARCHITECTURES[config.family]
    rope = {"rope_type": "default", **dict(config.rope_scaling or ()), "rope_theta": config.rope_theta}
    out = {
        "architectures": [arch], "model_type": model_type, "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_norm_eps, "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": config.attention_bias, "rope_theta": config.rope_theta, "rope_parameters": rope,
        ("hidden_activation" if config.is_gemma else "hidden_act"):
            "gelu_pytorch_tanh" if config.hidden_act == "gelu_tanh" else "silu",
        "layer_types": list(config.layer_types), "max_position_embeddings": 8192,
        "dtype": jnp.dtype(config.param_dtype).name,
    }
    if config.sliding_window:
        out["sliding_window"] = config.sliding_window
        out["use_sliding_window"] = True
    if config.is_gemma:
        out |= {"query_pre_attn_scalar": config.query_pre_attn_scalar or config.head_dim,
                "attn_logit_softcapping": config.attn_logit_softcapping,
                "final_logit_softcapping": config.final_logit_softcapping}
    if config.family == "gemma3":
        local = {"rope_type": "default", "rope_theta": config.rope_local_theta or config.rope_theta}
        out["rope_parameters"] = {"full_attention": rope, "sliding_attention": local}
        out["rope_local_base_freq"] = local["rope_theta"]
    if tok is not None:
        out |= {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    return out


def save_hf(model: Decoder, tok: tokenizer_lib.Tokenizer | None, folder: str) -> None:
    """Write `model` (and `tok`) as a Hugging Face folder: config.json, model.safetensors, tokenizer.json."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    arrays = {}
    stored = nnx.Any(nnx.Param, *getattr(model, "buffer_types", ()))  # + non-trained stored tensors (gemma4)
    for path, var in nnx.to_flat_state(nnx.state(model, stored)):
        if "lora" in map(str, path):
            raise ValueError(f"parameter {'.'.join(map(str, path))} is a LoRA adapter; merge it before saving")
        array = np.asarray(jax.device_get(var.get_value()))
        for name, layer, transposed, _ in _hf_names(path, array.shape, getattr(model.config, "layer_ids", None)):
            row = array if layer is None else array[layer]
            arrays[name] = np.ascontiguousarray(row.T if transposed else row)
    save_file(arrays, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(model.config, tok), f, indent=2)
    if tok is not None:
        tok.save(folder)
