"""Gemma 4 text decoder (sepo_jax/model/gemma4.py): parity with transformers (torch, CPU) on tiny random
checkpoints written by transformers (text-only and multimodal wrappers), cached decoding and tree attention
equal to the full forward, unsupported settings refused, LoRA, HF export, SEPO steps; under -m slow (the
default suite's 10-minute budget): the multimodal wrapper, greedy generation and FSDP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("transformers.models.gemma4")

from sepo_jax.games import template_texts  # noqa: E402
from sepo_jax.model import apply_lora, load  # noqa: E402
from sepo_jax.model import gemma4  # noqa: E402
from sepo_jax.model.sampler import _action_scores, action_log_probs, prefill  # noqa: E402
from sepo_jax.model.tokenizer import embedded_tokenizer  # noqa: E402
from sepo_jax.model.weights import config_from_hf, name_table, save_hf  # noqa: E402
from hf_oracle import assert_greedy_matches, left_padded_batch, torch_logits  # noqa: E402

S, F = "sliding_attention", "full_attention"
COMMON = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
              sliding_window=4, pad_token_id=0, bos_token_id=None, eos_token_id=None)
CONFIGS = {
    # per-layer inputs, KV sharing (2 of 4 layers), k_eq_v global layers with their own head_dim/kv heads
    "ple_shared_keqv": dict(num_hidden_layers=4, layer_types=[S, F, S, F], global_head_dim=16,
                            num_global_key_value_heads=1, attention_k_eq_v=True, num_kv_shared_layers=2,
                            hidden_size_per_layer_input=8, final_logit_softcapping=5.0),
    # a repeating block (period 2) in both segments, double-wide MLPs in the shared layers, untied head
    "periodic_wide_untied": dict(num_hidden_layers=8, layer_types=[S, F] * 4, global_head_dim=16,
                                 num_kv_shared_layers=4, use_double_wide_mlp=True, hidden_size_per_layer_input=4,
                                 tie_word_embeddings=False, rope_parameters={
                                     S: {"rope_type": "default", "rope_theta": 100.0},
                                     F: {"rope_type": "proportional", "partial_rotary_factor": 0.5,
                                         "rope_theta": 5000.0, "factor": 2.0}}),
    # no per-layer inputs, no sharing, default 5:1 layer pattern and RoPE, biases, silu
    "plain_bias_silu": dict(num_hidden_layers=6, global_head_dim=16, hidden_size_per_layer_input=0,
                            attention_bias=True, hidden_activation="silu"),
}


@pytest.fixture(scope="module")
def tok():
    return embedded_tokenizer(template_texts())


def _vocab(tok):
    return -(-tok.vocab_size // 16) * 16


def _text_config(name, vocab):
    return transformers.Gemma4TextConfig(**COMMON, **CONFIGS[name], vocab_size=vocab, vocab_size_per_layer_input=vocab)


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        for n, b in model.named_buffers():
            if n.endswith("layer_scalar"):
                b.copy_(torch.rand_like(b) + 0.5)
    model.generation_config.eos_token_id = None
    return model.eval()


def _checkpoint(name, tok, folder, multimodal=False):
    config = _text_config(name, _vocab(tok))
    if multimodal:
        config = transformers.Gemma4Config(text_config=config.to_dict(), vision_config=None, audio_config=None)
    torch.manual_seed(0)
    model = _randomise(transformers.AutoModelForCausalLM.from_config(config))
    model.save_pretrained(folder)
    tok.save(folder)
    return model



@nnx.jit
def _forward(model, ids, mask):
    return model(jnp.asarray(ids), jnp.asarray(mask))


@nnx.jit
def _step(model, ids, mask, cache):
    return model(jnp.asarray(ids), jnp.asarray(mask), cache=cache)



@pytest.fixture(scope="module")
def tiny(tok, tmp_path_factory):
    """(our model, transformers' model, folder) of the first config."""
    folder = tmp_path_factory.mktemp("g4") / "hf"
    theirs = _checkpoint("ple_shared_keqv", tok, folder)
    return load(folder)[0], theirs, folder


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers_and_export_round_trips(name, tok, tmp_path):
    theirs_model = _checkpoint(name, tok, tmp_path / "hf")
    model, loaded_tok = load(tmp_path / "hf")
    assert isinstance(model, gemma4.Gemma4) and loaded_tok.vocab_size == tok.vocab_size
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(0))
    ours = np.asarray(_forward(model, ids, mask))
    theirs = torch_logits(theirs_model, ids, mask)
    assert np.abs(theirs).max() > 1.0
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=1e-4, rtol=1e-4)
    unpadded = np.asarray(_forward(model, ids[2:, 6:], np.ones((1, 5), bool)))
    np.testing.assert_allclose(ours[2, 6:], unpadded[0], atol=1e-5, rtol=1e-5)

    save_hf(model, loaded_tok, tmp_path / "ours")  # transformers reads what we write
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert isinstance(again, transformers.Gemma4ForCausalLM)
    np.testing.assert_allclose(torch_logits(again, ids, mask)[mask], theirs[mask], atol=1e-5, rtol=1e-5)


def test_the_stacks_hold_a_repeating_block_and_shared_layers_own_no_kv():
    config = config_from_hf(_text_config("periodic_wide_untied", 64).to_dict())
    assert config.segments() == [(0, 4, 2, False), (4, 4, 2, True)]
    assert config.layer_ids == {"block0_0": (0, 2), "block0_1": (1, 3), "block1_0": (4, 6), "block1_1": (5, 7)}
    table = name_table(config)
    assert "model.layers.3.self_attn.k_proj.weight" in table
    assert not any(n.startswith(("model.layers.4.self_attn.k", "model.layers.7.self_attn.v")) for n in table)
    assert table["model.layers.5.mlp.up_proj.weight"][3] == (96, 32)  # double-wide in the shared layers
    assert table["model.layers.1.self_attn.k_proj.weight"][3] == (2 * 16, 32)  # global head_dim 16
    model = nnx.eval_shape(lambda: gemma4.Gemma4(config, rngs=nnx.Rngs(0)))
    cache = jax.eval_shape(lambda: model.init_cache(2, 8))
    assert [k.shape for k in cache.k] == [(2, 2, 8, 2, 8), (2, 2, 8, 2, 16)]  # the 4 non-shared layers only


@pytest.mark.slow
def test_multimodal_checkpoint_loads_its_language_model(tok, tmp_path):
    theirs_model = _checkpoint("ple_shared_keqv", tok, tmp_path / "hf", multimodal=True)
    assert isinstance(theirs_model, transformers.Gemma4ForConditionalGeneration)
    model, _ = load(tmp_path / "hf")
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(1))
    np.testing.assert_allclose(np.asarray(_forward(model, ids, mask))[mask],
                               torch_logits(theirs_model, ids, mask)[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_greedy_decoding_matches_transformers_generate(tiny, tok):
    model, theirs_model, _ = tiny
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(2))
    steps = 5
    assert_greedy_matches(model, theirs_model, ids, mask, steps)


def test_cached_decoding_and_tree_branches_equal_the_full_forward(tiny, tok):
    model = tiny[0]
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(3), length=12)
    full = np.asarray(_forward(model, ids, mask))
    cache = model.init_cache(3, 14)
    chunks = []
    for lo, hi in ((0, 7), (7, 8), (8, 9), (9, 12)):  # a prefill, then single tokens, then a chunk
        logits, cache = _step(model, ids[:, lo:hi], mask[:, lo:hi], cache)
        chunks.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(chunks, 1)[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert int(cache.index) == 12 and list(np.asarray(cache.next_pos)) == list(mask.sum(1))

    # cache.repeat(n) gives each row n identical copies
    rep = cache.repeat(2)
    nxt = jnp.asarray(np.repeat(ids[:, -1:], 2, 0))
    a, _ = _step(model, nxt, np.ones((6, 1), bool), rep)
    b, _ = _step(model, ids[:, -1:], np.ones((3, 1), bool), cache)
    np.testing.assert_allclose(np.asarray(a)[::2], np.asarray(b), atol=1e-5, rtol=1e-5)

    # tree attention: the A actions as branches of the cached prompt (the sampler's path) equal the uncached
    # one-pass scorer, and each branch equals running that action alone after the prompt
    actions = jnp.asarray([[5, 6, 7], [8, 9, 0], [10, 0, 0]], jnp.int32)
    lengths = jnp.asarray([3, 2, 1], jnp.int32)
    legal = jnp.ones((3, 3), bool)
    @nnx.jit
    def branched(m, ids, mask):
        last, prompt_cache = prefill(m, ids, mask, 6)
        return _action_scores(m, prompt_cache, last, actions, lengths, 1.0)

    scores = branched(model, jnp.asarray(ids), jnp.asarray(mask))
    direct = nnx.jit(action_log_probs)(model, jnp.asarray(ids), jnp.asarray(mask), actions, lengths, legal)
    np.testing.assert_allclose(np.asarray(jax.nn.log_softmax(scores, -1)), np.asarray(direct), atol=1e-5)
    alone = np.asarray(_forward(model, np.concatenate([ids, np.broadcast_to([5, 6], (3, 2))], 1),
                                np.concatenate([mask, np.ones((3, 2), bool)], 1)))
    lp = jax.nn.log_softmax(jnp.asarray(alone), -1)
    want = lp[:, 11, 5] + lp[:, 12, 6] + lp[:, 13, 7]
    np.testing.assert_allclose(np.asarray(scores[:, 0]), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("key,value,match", [
    ("enable_moe_block", True, "enable_moe_block"),
    ("use_bidirectional_attention", "all", "use_bidirectional_attention"),
    ("rope_parameters", {S: {"rope_type": "yarn", "rope_theta": 1.0, "factor": 2.0}, F: {"rope_theta": 1.0}},
     "rope_parameters"),
    ("per_layer_config", {"1": {"head_dim": 16, "intermediate_size": 4}}, "per_layer_config"),
    ("num_kv_shared_layers", 4, "num_kv_shared_layers"),
    ("hidden_activation", "relu", "activation"),
])
def test_unsupported_settings_stop_the_load(key, value, match):
    config = _text_config("ple_shared_keqv", 64).to_dict()
    config[key] = value
    with pytest.raises(ValueError, match=match):
        config_from_hf(config)


def test_lora_starts_as_the_base_model_and_merges_out_of_export(tiny, tok, tmp_path):
    model = load(tiny[2])[0]
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(4))
    before = np.asarray(_forward(model, ids, mask))
    apply_lora(model, rank=2, rngs=nnx.Rngs(1))
    lora = nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
    adapted = {".".join(map(str, p[:-2])) for p, _ in lora}
    assert "block1_0.self_attn.q_proj" in adapted and "block1_0.self_attn.k_proj" not in adapted  # shared layer
    assert "block0_1.self_attn.k_proj" in adapted and "block0_1.self_attn.v_proj" not in adapted  # k_eq_v
    np.testing.assert_allclose(np.asarray(_forward(model, ids, mask)), before, atol=1e-6)
    with pytest.raises(ValueError, match="LoRA"):
        save_hf(model, tok, tmp_path / "x")


@pytest.mark.slow  # time: ~50 s; the default suite checks the family's logits, cache and LoRA, the trainer on the others
@pytest.mark.parametrize("lora_rank", [4, 0])
def test_a_sepo_step_trains_a_tiny_gemma4(lora_rank, tok):
    """LoRA and full fine-tuning: the trainer takes the model object as it is."""
    from sepo_jax.config import default_config, settings
    from sepo_jax.rl import trainer

    c = default_config("kuhn")
    c.mesh.data = 1
    c.compact_prompt, c.num_hands = True, 1
    c.rollout.group_size, c.rollout.groups_per_opponent = 2, 1
    c.sft.episodes, c.steps = 8, 1
    c.model.lora_rank = lora_rank
    text = dict(_text_config("ple_shared_keqv", _vocab(tok)).to_dict(), num_hidden_layers=3, layer_types=[S, F, F],
                num_kv_shared_layers=1, per_layer_config=None, global_head_dim=16, num_global_key_value_heads=1)
    model = gemma4.Gemma4(config_from_hf(text), rngs=nnx.Rngs(0))
    if lora_rank:
        apply_lora(model, rank=lora_rank, rngs=nnx.Rngs(1))
    setup, params, frozen = trainer.build(settings(c), model=model, tokenizer=tok)
    variables = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    assert variables and not any(isinstance(v, gemma4.Buffer) for v in variables)  # layer_scalar stays frozen
    state = trainer.start_sepo(trainer.init_state(setup, params))
    before = jax.tree.map(jnp.copy, state.params)
    state, m = trainer.make_sepo_step(setup)(state, frozen)
    assert np.isfinite(float(m["loss"]))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), before, state.params))
    assert max(float(x) for x in moved) > 0


def test_an_e2b_shaped_config_scans_a_4_1_block_in_each_segment():
    """The published Gemma 4 E2B text config (multimodal wrapper, legacy global_head_dim keys): 15 producer
    layers and 20 KV-sharing ones, each segment one scan over a 5-layer block; nothing allocated."""
    text = dict(model_type="gemma4_text", hidden_size=1536, intermediate_size=6144, num_hidden_layers=35,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256, global_head_dim=512,
                num_global_key_value_heads=None, attention_k_eq_v=False, sliding_window=512, vocab_size=262144,
                vocab_size_per_layer_input=262144, hidden_size_per_layer_input=256, num_kv_shared_layers=20,
                use_double_wide_mlp=True, final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh",
                layer_types=([S] * 4 + [F]) * 7, tie_word_embeddings=True)
    config = config_from_hf({"model_type": "gemma4", "text_config": text, "vision_config": {},
                             "tie_word_embeddings": True})
    assert config.segments() == [(0, 15, 5, False), (15, 20, 5, True)]
    assert config.layer_ids["block1_4"] == (19, 24, 29, 34)
    assert config.kv_shape(F) == (1, 512) and config.kv_shape(S) == (1, 256)
    assert np.count_nonzero(config.inv_freq(F)) == 64  # proportional RoPE: a quarter of 256 frequencies rotate
    model = nnx.eval_shape(lambda: gemma4.Gemma4(config, rngs=nnx.Rngs(0)))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    # 4.63B for the language model (E2B's 5.1B includes the vision/audio towers); 2.35B is the per-layer table
    assert 4.6e9 < params < 4.65e9
    cache = jax.eval_shape(lambda: model.init_cache(1, 16))
    assert [k.shape for k in cache.k] == [(3, 1, 16, 1, 256)] * 4 + [(3, 1, 16, 1, 512)]


@pytest.mark.slow
def test_fsdp_forward_equals_one_device_and_leaves_the_per_layer_table_sharded():
    from sepo_jax import parallel

    config = gemma4.Gemma4Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4,
                                 num_kv_heads=2, head_dim=8, global_head_dim=16, num_global_kv_heads=1,
                                 layer_types=(S, F, S, F), sliding_window=4, vocab_size_per_layer_input=64,
                                 hidden_size_per_layer_input=6, attention_k_eq_v=True, num_kv_shared_layers=2)
    model = gemma4.Gemma4(config, rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh(2, 4)
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, parallel.logical_shardings(mesh, state))
    ids, mask = left_padded_batch(64, np.random.default_rng(5))
    ids, mask = np.concatenate([ids, ids[:1]]), np.concatenate([mask, mask[:1]])  # 4 rows: divisible by data=2

    @jax.jit
    def sharded(state, ids, mask):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return nnx.merge(graphdef, state)(ids, mask)

    out = sharded(state, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(_forward(model, ids, mask))[mask], atol=1e-5)
    hlo = sharded.lower(state, jnp.asarray(ids), jnp.asarray(mask)).compile().as_text()
    table = f"[{config.vocab_size_per_layer_input},{config.num_layers * config.hidden_size_per_layer_input}]"
    assert not any("all-gather(" in line and table in line.split("all-gather(")[0] for line in hlo.splitlines())
