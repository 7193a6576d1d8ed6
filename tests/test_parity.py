"""Parity with transformers (torch, CPU): tiny random Llama / Qwen2 / Qwen3 / Gemma2 / Gemma3 checkpoints
written by transformers, loaded by `sepo_jax.model.load`, must give the same logits (also left-padded) and
the same greedy tokens; saved back by `save_hf`, transformers must load them and give the same logits."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sepo_jax.games import template_texts  # noqa: E402
from sepo_jax.model import load  # noqa: E402
from sepo_jax.model.tokenizer import embedded_tokenizer  # noqa: E402
from sepo_jax.model.weights import save_hf  # noqa: E402
from hf_oracle import assert_greedy_matches, left_padded_batch, torch_logits  # noqa: E402

SIZES = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


def _configs(vocab):
    c = transformers
    common = dict(SIZES, vocab_size=vocab, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return {
        "llama": c.LlamaConfig(**common, tie_word_embeddings=False, rope_parameters=dict(
            rope_type="llama3", rope_theta=50000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=8)),
        "qwen2": c.Qwen2Config(**common, tie_word_embeddings=True),
        "qwen3": c.Qwen3Config(**common, tie_word_embeddings=False),
        "gemma2": c.Gemma2Config(**common, sliding_window=4, query_pre_attn_scalar=24,
                                 attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
        "gemma3": c.Gemma3TextConfig(**common, sliding_window=4, query_pre_attn_scalar=16,
                                     layer_types=["sliding_attention", "full_attention"]),
    }


@pytest.fixture(scope="module")
def tok():
    return embedded_tokenizer(template_texts())


def _checkpoint(family, tok, folder):
    """A random transformers model of `family` saved (with `tok`) under `folder`."""
    vocab = -(-tok.vocab_size // 16) * 16  # a padded vocabulary, as real checkpoints have
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_configs(vocab)[family]).eval()
    with torch.no_grad():
        for p in model.parameters():  # far from the near-zero default init, so every weight matters
            p.copy_(torch.randn_like(p) * 0.3)
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    tok.save(folder)
    return model




@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_logits_and_greedy_tokens_match_transformers(family, tok, tmp_path):
    theirs_model = _checkpoint(family, tok, tmp_path / "hf")
    model, loaded_tok = load(tmp_path / "hf")
    assert model.config.family == family and loaded_tok.vocab_size == tok.vocab_size
    ids, mask = left_padded_batch(tok.vocab_size, np.random.default_rng(0))

    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    theirs = torch_logits(theirs_model, ids, mask)
    assert np.abs(theirs).max() > 1.0  # the weights are not trivially small
    np.testing.assert_allclose(ours[mask], theirs[mask], atol=1e-4, rtol=1e-4)
    unpadded = np.asarray(model(jnp.asarray(ids[2:, 6:]), jnp.ones((1, 5), bool)))
    np.testing.assert_allclose(ours[2, 6:], unpadded[0], atol=1e-5, rtol=1e-5)  # left padding is invisible

    steps = 4
    assert_greedy_matches(model, theirs_model, ids, mask, steps)

    save_hf(model, loaded_tok, tmp_path / "ours")  # and back: transformers reads what we write
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    np.testing.assert_allclose(torch_logits(again, ids, mask)[mask], theirs[mask], atol=1e-5, rtol=1e-5)
    # (AutoTokenizer would swap in Qwen2Tokenizer and its own pre-tokenizer for model_type qwen2)
    hf_tok = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path / "ours")
    text = "".join(template_texts()[:20])
    assert hf_tok.encode(text, add_special_tokens=False) == loaded_tok.encode(text)
