"""Tokenizers: the embedded default is lossless, deterministic and loadable by transformers; chat templates
render like transformers' `apply_chat_template`; unencodable actions are named."""

import json

import numpy as np
import pytest
import tokenizers

from sepo_jax.games import template_texts
from sepo_jax.model.tokenizer import Tokenizer, check_encodable, embedded_tokenizer, from_file

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GEMMA_LIKE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
              "{{ raise_exception('no system role') }}{% endif %}"
              "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
              "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")


@pytest.fixture(scope="module")
def texts():
    return template_texts()


@pytest.fixture(scope="module")
def tok(texts):
    return embedded_tokenizer(texts)


def test_embedded_is_deterministic_and_has_the_special_tokens(texts, tok):
    again = embedded_tokenizer(list(reversed(texts)))
    assert again.hf.to_str() == tok.hf.to_str()
    assert [tok.token(i) for i in (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)] == [
        "<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.encode("<eos>") == [tok.eos_id]


def test_every_piece_is_whole_words_and_concatenations_round_trip(texts, tok):
    words = tok.hf.pre_tokenizer
    for t in texts:  # a word the games print is a single token
        assert len(tok.encode(t)) == len(words.pre_tokenize_str(t)), t
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = "".join(rng.choice(texts, size=rng.integers(1, 12)))
        ids = tok.encode(s)
        assert tok.unk_id not in ids and tok.decode(ids) == s
    odd = "Ünïcødé 🂡 tabs\tand\r\nnewlines  42 -7 x" + "".join(map(chr, range(1, 40)))
    assert tok.decode(tok.encode(odd)) == odd and tok.unk_id not in tok.encode(odd)


def test_embedded_loads_in_transformers_and_from_file(texts, tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    loaded = from_file(tmp_path)
    s = "".join(texts[::3])
    assert hf.encode(s, add_special_tokens=False) == tok.encode(s) == loaded.encode(s)
    assert hf.decode(tok.encode(s)) == s
    assert (hf.pad_token_id, hf.eos_token_id, hf.bos_token_id) == (tok.pad_id, tok.eos_id, tok.bos_id)
    assert (loaded.pad_id, loaded.eos_id, loaded.bos_id, loaded.unk_id) == (
        tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id)
    assert tok.chat_wrap() == ("", "")


@pytest.mark.parametrize("template", [CHATML, GEMMA_LIKE])
def test_chat_wrap_matches_transformers_apply_chat_template(tok, template, tmp_path):
    transformers = pytest.importorskip("transformers")
    chat = Tokenizer(tok.hf, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id, unk_id=tok.unk_id,
                     chat_template=template)
    chat.save(tmp_path)
    assert from_file(tmp_path).chat_template == template
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    message = "You hold the King. Action:"
    expected = hf.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                      add_generation_prompt=True)
    prefix, suffix = chat.chat_wrap()
    assert prefix + message + suffix == expected
    assert prefix and suffix


def test_check_encodable_names_the_action(tok):
    check_encodable(tok, [" BET", " FOLD", "anything at all ✓"])
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "bet": 1}, unk_token="<unk>"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    narrow = Tokenizer(word_level, bos_id=None, eos_id=0, unk_id=0)
    check_encodable(narrow, ["bet"])
    with pytest.raises(ValueError, match="'check'"):
        check_encodable(narrow, ["bet", "check"])
    with pytest.raises(ValueError, match="no tokens"):
        check_encodable(narrow, [""])


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        from_file(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(ValueError, match="cannot read tokenizer"):
        from_file(tmp_path)
