"""Tokenizers: any Hugging Face `tokenizer.json`, chat templates, and the embedded default.

`Tokenizer` wraps a `tokenizers.Tokenizer` with the few ids the sampler needs (bos, eos, pad, unk) and the
model's chat template. `embedded_tokenizer(texts)` builds the default tokenizer from the games' own text,
deterministically and without files: byte-level pre-tokenisation, a vocabulary of the 256 byte symbols,
every byte-level word of `texts` and four special tokens, and a BPE model with `ignore_merges=True` and no
merges, so a known word is one token and anything else falls back to single bytes: every string encodes
without <unk> and decodes back to exactly itself. The result is an ordinary `tokenizer.json` that
transformers' `PreTrainedTokenizerFast` loads.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers

EMBEDDED_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_SENTINEL = "\x00SEPO_USER_MESSAGE\x00"


class Tokenizer:
    """A `tokenizers.Tokenizer` plus special ids and an optional jinja chat template."""

    def __init__(self, hf: tokenizers.Tokenizer, *, bos_id: int | None, eos_id: int | None,
                 pad_id: int | None = None, unk_id: int | None = None, chat_template: str | None = None):
        if eos_id is None:
            raise ValueError("tokenizer has no end-of-sequence token (eos_id is None)")
        self.hf = hf
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.unk_id = unk_id
        self.chat_template = chat_template

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added (special-token text in `text` maps to its id)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token(self, i: int) -> str | None:
        return self.hf.id_to_token(int(i))

    def chat_wrap(self) -> tuple[str, str]:
        """(prefix, suffix): prefix + message + suffix renders one user turn plus the generation prompt."""
        if not self.chat_template:
            return "", ""
        text = render_chat(self.chat_template, [{"role": "user", "content": _SENTINEL}],
                           bos_token=self.token(self.bos_id) if self.bos_id is not None else "",
                           eos_token=self.token(self.eos_id))
        if text.count(_SENTINEL) != 1:
            raise ValueError("chat template does not render the user message exactly once")
        prefix, suffix = text.split(_SENTINEL)
        return prefix, suffix

    def chat_turns(self) -> tuple[str, str, str]:
        """(prefix, suffix, between): a conversation renders as prefix + user_1 + suffix + answer_1 +
        between + user_2 + suffix + answer_2 + ... (without a chat template: a newline between)."""
        if not self.chat_template:
            return "", "", "\n"
        turns = [{"role": "user", "content": f"{_SENTINEL}u1"}, {"role": "assistant", "content": f"{_SENTINEL}a1"},
                 {"role": "user", "content": f"{_SENTINEL}u2"}]
        text = render_chat(self.chat_template, turns, bos_token=self.token(self.bos_id) if self.bos_id is not None else "",
                           eos_token=self.token(self.eos_id))
        pieces = text.split(_SENTINEL)
        if len(pieces) != 4 or [p[:2] for p in pieces[1:]] != ["u1", "a1", "u2"]:
            raise ValueError("chat template does not render a user, assistant, user conversation with each message once")
        prefix, suffix, between, last = pieces[0], pieces[1][2:], pieces[2][2:], pieces[3][2:]
        if last != suffix:
            raise ValueError(f"chat template ends the second user turn with {last!r}, the first with {suffix!r}")
        return prefix, suffix, between

    def save(self, path: str | os.PathLike) -> None:
        """Write `tokenizer.json` and a `tokenizer_config.json` (special tokens, chat template) into `path`."""
        os.makedirs(path, exist_ok=True)
        self.hf.save(os.path.join(path, "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        for name, i in (("bos_token", self.bos_id), ("eos_token", self.eos_id), ("pad_token", self.pad_id),
                        ("unk_token", self.unk_id)):
            if i is not None:
                config[name] = self.token(i)
        if self.chat_template:
            config["chat_template"] = self.chat_template
        with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool = True, **extra) -> str:
    """Render a Hugging Face jinja chat template the way transformers does (sandboxed, trimmed blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # only chat models need it; keep imports light

    def raise_exception(message):
        raise ValueError(f"chat template error: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "" if fmt is None else time.strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, indent=indent, ensure_ascii=False)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **extra)


def from_file(path: str | os.PathLike) -> Tokenizer:
    """Load a Hugging Face tokenizer from a folder (tokenizer.json [+ tokenizer_config.json, config.json])."""
    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    folder = os.path.dirname(file)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no tokenizer.json at {file}")
    try:
        hf = tokenizers.Tokenizer.from_file(file)
    except Exception as e:
        raise ValueError(f"cannot read tokenizer file {file}: {e}") from e
    config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    model_config = _read_json(os.path.join(folder, "config.json"))
    template = config.get("chat_template")
    jinja_file = os.path.join(folder, "chat_template.jinja")  # transformers >= 4.47 writes it separately
    if template is None and os.path.isfile(jinja_file):
        with open(jinja_file) as f:
            template = f.read()
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        template = {t["name"]: t["template"] for t in template}.get("default")

    def special(name):
        tok = config.get(name)
        if isinstance(tok, dict):
            tok = tok.get("content")
        if tok is not None and hf.token_to_id(tok) is not None:
            return hf.token_to_id(tok)
        i = model_config.get(f"{name}_id")
        return i[0] if isinstance(i, list) else i

    unk = getattr(hf.model, "unk_token", None)
    return Tokenizer(hf, bos_id=special("bos_token"), eos_id=special("eos_token"), pad_id=special("pad_token"),
                     unk_id=hf.token_to_id(unk) if unk else None, chat_template=template)


def embedded_tokenizer(texts: Sequence[str]) -> Tokenizer:
    """The default tokenizer built from `texts` (see the module docstring); same texts, same tokenizer."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    alphabet = [_BYTE_TO_UNICODE[b] for b in range(256)]
    words = sorted({w for t in texts for w, _ in byte_level.pre_tokenize_str(t)} - set(alphabet))
    vocab = {tok: i for i, tok in enumerate([*EMBEDDED_SPECIALS, *alphabet, *words])}
    hf = tokenizers.Tokenizer(models.BPE(vocab, [], unk_token="<unk>", ignore_merges=True))
    hf.pre_tokenizer = byte_level
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in EMBEDDED_SPECIALS])
    ids = {t: vocab[t] for t in EMBEDDED_SPECIALS}
    return Tokenizer(hf, bos_id=ids["<bos>"], eos_id=ids["<eos>"], pad_id=ids["<pad>"], unk_id=ids["<unk>"])


def check_encodable(tokenizer: Tokenizer, texts: Iterable[str]) -> None:
    """Raise naming the first text (e.g. a game action) that encodes to nothing or with an unknown token."""
    for text in texts:
        ids = tokenizer.encode(text)
        if not ids:
            raise ValueError(f"text {text!r} encodes to no tokens")
        if tokenizer.unk_id is not None and tokenizer.unk_id in ids:
            raise ValueError(f"text {text!r} cannot be encoded without the unknown token "
                             f"{tokenizer.token(tokenizer.unk_id)!r}: {ids}")


def _read_json(file: str) -> dict:
    if not os.path.isfile(file):
        return {}
    try:
        with open(file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupted {file}: {e}") from e


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of byte-level BPE)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_TO_UNICODE = _bytes_to_unicode()
