"""Checkpoint import/export without torch: save -> load round trips (safetensors, sharded, bf16, GGUF), the
llama.cpp q/k permutation, placement with a sharding, and every mismatch named before any compute."""

import json
import shutil

import gguf
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from sepo_jax.games import template_texts
from sepo_jax.model import load
from sepo_jax.model.tokenizer import embedded_tokenizer
from sepo_jax.model.transformer import Decoder, ModelConfig
from sepo_jax.model.weights import GGUF_NAMES, _unpermute, load_gguf, name_table, save_hf

CONFIG = dict(hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def tok():
    return embedded_tokenizer(template_texts())


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    """(model, folder): a random untied Llama-family model saved as a Hugging Face folder."""
    model = Decoder(ModelConfig(vocab_size=tok.vocab_size, tie_embeddings=False, rope_theta=5e4, **CONFIG),
                    rngs=nnx.Rngs(1))
    folder = tmp_path_factory.mktemp("hf")
    save_hf(model, tok, folder)
    return model, folder


@pytest.fixture
def copy(saved, tmp_path):
    shutil.copytree(saved[1], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _ids(vocab):
    ids = np.random.default_rng(0).integers(0, vocab, size=(2, 9))
    mask = np.ones(ids.shape, bool)
    mask[1, :4] = False
    return jnp.asarray(ids), jnp.asarray(mask)


def _assert_same(a, b, atol=0.0):
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(nnx.state(a, nnx.Param)),
                                  nnx.to_flat_state(nnx.state(b, nnx.Param)), strict=True):
        assert pa == pb
        np.testing.assert_allclose(np.asarray(va.get_value(), np.float32), np.asarray(vb.get_value(), np.float32),
                                   atol=atol, err_msg=str(pa))


def test_name_table_follows_the_family():
    llama = name_table(ModelConfig(vocab_size=32, tie_embeddings=False, **CONFIG))
    assert llama["model.layers.1.self_attn.q_proj.weight"] == (("layers", "self_attn", "q_proj", "kernel"), 1, True,
                                                               (64, 64))
    assert llama["lm_head.weight"][1:] == (None, True, (32, 64))
    assert llama["model.embed_tokens.weight"][1:] == (None, False, (32, 64))
    qwen2 = name_table(ModelConfig(vocab_size=32, family="qwen2", attention_bias=True, **CONFIG))
    assert "lm_head.weight" not in qwen2 and qwen2["model.layers.0.self_attn.k_proj.bias"][3] == (32,)
    gemma3 = name_table(ModelConfig(vocab_size=32, family="gemma3", qk_norm=True, sliding_window=4, **CONFIG))
    assert {"model.layers.0.self_attn.q_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"} <= set(gemma3)


def test_save_load_round_trip(saved):
    model, folder = saved
    loaded, tok = load(folder)
    _assert_same(model, loaded)
    ids, mask = _ids(tok.vocab_size)
    np.testing.assert_array_equal(np.asarray(loaded(ids, mask)), np.asarray(model(ids, mask)))


def test_sharded_index_and_bf16(saved, copy):
    model, _ = saved
    tensors = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:7], "model-00002-of-00002.safetensors": names[7:]}
    for file, part in shards.items():
        save_file({n: tensors[n].astype(ml_dtypes.bfloat16) for n in part}, copy / file)
    (copy / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: f for f, part in shards.items() for n in part}}))
    loaded, _ = load(copy, dtype=jnp.bfloat16)
    assert loaded.layers.mlp.up_proj.kernel[...].dtype == jnp.bfloat16
    _assert_same(model, loaded, atol=2e-2)


def test_placement_with_a_sharding(saved):
    _, folder = saved
    mesh = jax.make_mesh((1,), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    model, _ = load(folder, sharding=replicated)
    assert model.layers.self_attn.o_proj.kernel[...].sharding == replicated
    seen = {}

    def by_name(name, shape):
        seen[name] = shape
        return replicated

    model, _ = load(folder, sharding=by_name)
    assert seen["layers.self_attn.q_proj.kernel"] == (2, 64, 64)
    assert seen["lm_head.kernel"] == (64, model.config.vocab_size)
    model, _ = load("embedded", sharding=replicated)
    assert model.embed_tokens.weight[...].sharding == replicated


def test_embedded_source_is_seeded(tok):
    a, tok_a = load("embedded", seed=3)
    b, _ = load("embedded", seed=3)
    c, _ = load("embedded", seed=4)
    assert tok_a.hf.to_str() == tok.hf.to_str() and a.config.vocab_size == tok.vocab_size
    _assert_same(a, b)
    assert not np.allclose(a.embed_tokens.weight[...], c.embed_tokens.weight[...])
    ids, mask = _ids(tok.vocab_size)
    assert a(ids, mask).shape == (2, 9, tok.vocab_size)


def _rewrite(folder, edit):
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("model.layers.1.mlp.down_proj.weight"), "missing tensor 'model.layers.1.mlp.down_proj.weight'"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": np.zeros((16, 64), np.float32)}),
     r"'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), the model expects \(32, 64\)"),
    (lambda t: t.update({"model.layers.0.self_attn.k_proj.bias": np.zeros(32, np.float32)}),
     "unexpected tensor 'model.layers.0.self_attn.k_proj.bias'"),
    (lambda t: t.update({"model.norm.weight": np.ones(64, np.int32)}), "'model.norm.weight' has dtype I32"),
    (lambda t: t["model.layers.0.mlp.up_proj.weight"].__setitem__((3, 5), np.nan),
     "'model.layers.0.mlp.up_proj.weight' holds 1 non-finite values"),
])
def test_mismatched_checkpoint_names_the_tensor(copy, edit, message):
    _rewrite(copy, edit)
    with pytest.raises(ValueError, match=message):
        load(copy)


def test_broken_sources_are_named(copy, tmp_path):
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted safetensors file .*model.safetensors"):
        load(copy)
    (copy / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="corrupted safetensors"):
        load(copy)
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted .*config.json"):
        load(copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load(copy)
    with pytest.raises(ValueError, match="unknown model source 'gpt-17'"):
        load("gpt-17")
    with pytest.raises(FileNotFoundError, match="nothere.gguf"):
        load(tmp_path / "nothere.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 40)
    with pytest.raises(ValueError, match="corrupted GGUF file .*bad.gguf"):
        load(tmp_path / "bad.gguf")


def _llama_cpp_permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp():
    w = np.random.default_rng(0).normal(size=(48, 5))
    for heads in (1, 3, 6):
        np.testing.assert_array_equal(_unpermute(_llama_cpp_permute(w, heads), heads), w)
        assert heads == 1 or not np.array_equal(_llama_cpp_permute(w, heads), w)


def test_gguf_round_trip(saved, tok, tmp_path):
    """Our model written as llama.cpp would write it (names, permuted q/k, metadata) loads back exactly."""
    model, folder = saved
    c = model.config
    to_gguf = {f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight" for i in range(c.num_layers)
               for g, hf in GGUF_NAMES.items()}
    to_gguf |= {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}
    w = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    for add, value in [(w.add_block_count, c.num_layers), (w.add_context_length, 64),
                       (w.add_embedding_length, c.hidden_size), (w.add_feed_forward_length, c.intermediate_size),
                       (w.add_head_count, c.num_heads), (w.add_head_count_kv, c.num_kv_heads),
                       (w.add_rope_freq_base, c.rope_theta), (w.add_layer_norm_rms_eps, c.rms_norm_eps),
                       (w.add_tokenizer_model, "gpt2"), (w.add_tokenizer_pre, "default"),
                       (w.add_bos_token_id, tok.bos_id), (w.add_eos_token_id, tok.eos_id),
                       (w.add_pad_token_id, tok.pad_id), (w.add_chat_template, "{{ messages[0]['content'] }}!")]:
        add(value)
    w.add_token_list([tok.token(i) for i in range(tok.vocab_size)])
    w.add_token_types([3 if i < 4 else 1 for i in range(tok.vocab_size)])
    for name, array in load_file(folder / "model.safetensors").items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            array = _llama_cpp_permute(array, c.num_heads if "q_proj" in name else c.num_kv_heads)
        w.add_tensor(to_gguf[name], array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    loaded, gtok, hf_config = load_gguf(str(tmp_path / "m.gguf"))
    assert hf_config["tie_word_embeddings"] is False
    _assert_same(model, loaded)
    s = "".join(template_texts()[:30])
    assert gtok.decode(gtok.encode(s)) == s and gtok.encode("<eos>") == [tok.eos_id]
    assert (gtok.bos_id, gtok.eos_id, gtok.pad_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    assert gtok.chat_wrap() == ("", "!")
