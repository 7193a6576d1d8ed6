"""Sampler throughput: generated tokens/s, decisions/s, and the prefill saving of group prefix sharing.

    python experiments/bench_sampler.py [--quick] [--skip-smollm2] [--skip-families]

Models: the embedded default (fresh weights: speed does not depend on training), small random Qwen 3.5
(gated DeltaNet hybrid: 3 recurrent layers, 1 attention layer) and Gemma 4 (2 sliding + 1 global layers,
twice, the last 3 sharing the KV of the first 3, per-layer inputs) decoders of the embedded model's width, and, when
``sepo_jax.model.load("smollm2-135m")`` works, SmolLM2-135M-Instruct. Prompts are random token ids,
left-padded to P; no eos, so every row generates the full N tokens. Times are the median of ``--reps``
runs after a compile run, float32, jitted. Each section is a function ``(models, args) -> (title,
header, rows)`` listed in SECTIONS; a new comparison (e.g. transformers' torch ``generate``) is one
more such function. Writes experiments/results/bench_sampler.md.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sepo_jax.model import sampler
from sepo_jax.model.transformer import Decoder, embedded_config

RESULTS = os.path.join(os.path.dirname(__file__), "results", "bench_sampler.md")
GROUP = 8
# A Kuhn-like action vocabulary: 3 actions of 1-2 tokens.
ACTIONS = np.array([[5, 0], [6, 7], [6, 8]], np.int32)
ACTION_LEN = np.array([1, 2, 2], np.int32)
# One benchmarked model: batch sizes for the throughput tables, prompts for the prefix-sharing table.
Entry = collections.namedtuple("Entry", "name model sizes groups")


def timed(fn, *args, reps):
    """Median wall time of fn(*args) after a compile call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompts(batch, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    pads = rng.integers(0, length // 4, batch)
    mask = np.arange(length)[None, :] >= pads[:, None]
    ids = np.where(mask, rng.integers(10, vocab, (batch, length)), 0)
    return jnp.asarray(ids, jnp.int32), jnp.asarray(mask)


def jitted(fn, **static):
    return nnx.jit(functools.partial(fn, **static))


def generation(models, args):
    rows = []
    for name, model, sizes, _ in models:
        for batch in sizes:
            ids, mask = prompts(batch, args.prompt_len, model.config.vocab_size)
            fn = jitted(sampler.generate, max_new_tokens=args.new_tokens, temperature=1.0, top_p=0.95)
            t = timed(fn, model, ids, mask, jax.random.key(0), reps=args.reps)
            rows.append([name, batch, args.prompt_len, args.new_tokens, f"{t * 1e3:.1f}",
                         f"{batch * args.new_tokens / t:,.0f}"])
    return ("Generation (prefill + decode, temperature 1, top-p 0.95)",
            ["model", "batch", "P", "N", "ms / call", "generated tokens/s"], rows)


def decisions(models, args):
    rows = []
    a_ids, a_len = jnp.asarray(ACTIONS), jnp.asarray(ACTION_LEN)
    suffix = jnp.asarray([3, 4], jnp.int32)
    for name, model, sizes, _ in models:
        for batch in sizes:
            ids, mask = prompts(batch, args.prompt_len, model.config.vocab_size)
            legal = jnp.ones((batch, 3), bool)
            plain = jitted(sampler.sample_action)
            t = timed(plain, model, ids, mask, a_ids, a_len, legal, jax.random.key(0), reps=args.reps)
            reason = jitted(sampler.sample_with_reasoning, budget=args.budget)
            t_r = timed(reason, model, ids, mask, a_ids, a_len, legal, suffix, jax.random.key(0), reps=args.reps)
            rows.append([name, batch, f"{batch / t:,.0f}", f"{batch / t_r:,.0f}"])
    return (f"Constrained decisions (3 actions of 1-2 tokens, P={args.prompt_len})",
            ["model", "batch", "decisions/s", f"decisions/s with {args.budget} reasoning tokens"], rows)


def prefix_sharing(models, args):
    """One prefill of G prompts repeated to G*8 rows vs prefilling all G*8 copies."""
    rows = []
    a_ids, a_len = jnp.asarray(ACTIONS), jnp.asarray(ACTION_LEN)
    for name, model, _, groups in models:
        ids, mask = prompts(groups, args.prompt_len, model.config.vocab_size)
        rep_ids, rep_mask = jnp.repeat(ids, GROUP, 0), jnp.repeat(mask, GROUP, 0)
        legal, rep_legal = jnp.ones((groups, 3), bool), jnp.ones((groups * GROUP, 3), bool)
        key = jax.random.key(0)
        cases = [
            ("prefill", jitted(sampler.prefill, extra=args.new_tokens, group_size=GROUP), (model, ids, mask),
             jitted(sampler.prefill, extra=args.new_tokens), (model, rep_ids, rep_mask)),
            (f"generate N={args.new_tokens}", jitted(sampler.generate, max_new_tokens=args.new_tokens, group_size=GROUP),
             (model, ids, mask, key), jitted(sampler.generate, max_new_tokens=args.new_tokens),
             (model, rep_ids, rep_mask, key)),
            ("sample_action", jitted(sampler.sample_action, group_size=GROUP), (model, ids, mask, a_ids, a_len, legal, key),
             jitted(sampler.sample_action), (model, rep_ids, rep_mask, a_ids, a_len, rep_legal, key)),
        ]
        for what, shared, shared_args, copies, copies_args in cases:
            t_s = timed(shared, *shared_args, reps=args.reps)
            t_c = timed(copies, *copies_args, reps=args.reps)
            rows.append([name, what, f"{groups}x{GROUP}", f"{t_s * 1e3:.1f}", f"{t_c * 1e3:.1f}", f"{t_c / t_s:.1f}x"])
    return (f"Group prefix sharing (group size {GROUP}, P={args.prompt_len})",
            ["model", "what", "prompts x samples", "shared ms", "every copy ms", "saving"], rows)


def action_scoring(models, args):
    """Why action_log_probs prefills once: vs one full forward over [prompt; action] for B*A rows."""
    rows = []
    a_ids, a_len = jnp.asarray(ACTIONS), jnp.asarray(ACTION_LEN)
    num_actions, length = ACTIONS.shape

    def full_forward(model, ids, mask, legal):
        seq = jnp.concatenate([jnp.repeat(ids, num_actions, 0), jnp.tile(a_ids, (ids.shape[0], 1))], axis=1)
        amask = jnp.tile(jnp.arange(length)[None] < a_len[:, None], (ids.shape[0], 1))
        logits = model(seq, jnp.concatenate([jnp.repeat(mask, num_actions, 0), amask], axis=1))
        lp = jax.nn.log_softmax(logits[:, ids.shape[1] - 1:-1])
        lp = jnp.take_along_axis(lp, jnp.tile(a_ids, (ids.shape[0], 1))[..., None], axis=-1)[..., 0]
        scores = jnp.where(amask, lp, 0).sum(1).reshape(ids.shape[0], num_actions)
        return jax.nn.log_softmax(jnp.where(legal, scores, -1e30))

    for name, model, sizes, _ in models:
        batch = sizes[-1]
        ids, mask = prompts(batch, args.prompt_len, model.config.vocab_size)
        legal = jnp.ones((batch, num_actions), bool)
        t_c = timed(jitted(sampler.action_log_probs), model, ids, mask, a_ids, a_len, legal, reps=args.reps)
        t_f = timed(nnx.jit(full_forward), model, ids, mask, legal, reps=args.reps)
        rows.append([name, batch, f"{t_c * 1e3:.1f}", f"{t_f * 1e3:.1f}", f"{t_f / t_c:.1f}x"])
    return (f"Scoring {num_actions} actions per prompt (P={args.prompt_len})",
            ["model", "batch", "prefill + cached actions ms", "full forward of B*A rows ms", "ratio"], rows)


def torch_generate(models, args):
    """transformers' PyTorch ``generate`` (CPU, eager) on the same weights and prompts vs our jitted sampler."""
    try:
        import tempfile

        import torch
        import transformers
        from sepo_jax.model.weights import save_hf
    except ImportError as e:
        return "transformers generate (skipped)", ["reason"], [[f"{e}"]]
    rows = []
    for name, model, sizes, _ in models:
        with tempfile.TemporaryDirectory() as folder:
            save_hf(model, None, folder)
            theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        for batch in sizes:
            ids, mask = prompts(batch, args.prompt_len, model.config.vocab_size)
            ours = timed(jitted(sampler.generate, max_new_tokens=args.new_tokens, temperature=1.0, top_p=0.95),
                         model, ids, mask, jax.random.key(0), reps=args.reps)
            t_ids, t_mask = torch.tensor(np.asarray(ids)), torch.tensor(np.asarray(mask), dtype=torch.long)

            def run():
                with torch.no_grad():
                    return theirs.generate(t_ids, attention_mask=t_mask, do_sample=True, temperature=1.0, top_p=0.95,
                                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)
            t = timed(run, reps=args.reps)
            rows.append([name, batch, f"{ours * 1e3:.1f}", f"{t * 1e3:.1f}", f"{batch * args.new_tokens / t:,.0f}",
                         f"{t / ours:.1f}x"])
    return (f"vs transformers {transformers.__version__} PyTorch generate (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; P={args.prompt_len}, N={args.new_tokens}, temperature 1, top-p 0.95)",
            ["model", "batch", "ours ms", "transformers ms", "transformers tokens/s", "ours faster by"], rows)


SECTIONS = [generation, decisions, prefix_sharing, action_scoring, torch_generate]


def machine() -> str:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import flax
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())  # other work on the machine skews CPU timings
    return (f"{cpu}, {os.cpu_count()} cores, {jax.devices()[0].platform}, load average {load} at the end; "
            f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}")


def table(title, header, rows):
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# Small decoders of the paper's two families, as config.json dicts (the embedded model's width and vocabulary)
FAMILIES = {
    "qwen3.5-small": dict(model_type="qwen3_5_text", hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, linear_num_key_heads=4,
                          linear_num_value_heads=8, linear_key_head_dim=32, linear_value_head_dim=32,
                          tie_word_embeddings=True),
    "gemma4-small": dict(model_type="gemma4_text", hidden_size=256, intermediate_size=768, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, global_head_dim=128,
                         sliding_window=64, num_kv_shared_layers=3, hidden_size_per_layer_input=64,
                         layer_types=(["sliding_attention"] * 2 + ["full_attention"]) * 2, tie_word_embeddings=True),
}


def family_models(vocab_size, sizes):
    from sepo_jax.model.weights import config_from_hf

    for name, hf in FAMILIES.items():
        hf = dict(hf, vocab_size=vocab_size, vocab_size_per_layer_input=vocab_size)
        config = config_from_hf(hf)
        yield Entry(name, nnx.jit(lambda r: config.model_class(config, rngs=r))(nnx.Rngs(0)), sizes, 8)


def load_models(args):
    from sepo_jax.model import load

    try:
        embedded, _ = load("embedded")
    except Exception as e:  # the embedded tokenizer lives in other modules; fall back to its config
        print(f"load('embedded') failed ({e}); using embedded_config(512)", file=sys.stderr)
        embedded = Decoder(embedded_config(512), rngs=nnx.Rngs(0))
    sizes = (1, 8, 64) if not args.quick else (8,)
    models = [Entry("embedded", embedded, sizes, 8)]
    if not args.skip_families:
        models += family_models(embedded.config.vocab_size, sizes)
    if not args.skip_smollm2:
        try:
            smol, _ = load("smollm2-135m")
            models.append(Entry("smollm2-135m", smol, (1, 8) if not args.quick else (8,), 2))
        except Exception as e:
            print(f"SmolLM2 skipped: {e}", file=sys.stderr)
    return models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-families", action="store_true", help="leave out the small Qwen 3.5 and Gemma 4")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    models = load_models(args)
    for name, model, *_ in models:
        n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        print(f"{name}: {n / 1e6:.1f}M parameters, {model.config.num_layers} layers")
    parts = []
    for section in SECTIONS:
        part = table(*section(models, args))
        print(part + "\n", flush=True)
        parts.append(part)
    command = "python experiments/bench_sampler.py " + " ".join(sys.argv[1:])
    text = "\n\n".join([f"# Sampler benchmark\n\nCommand: `{command.strip()}`\n\nMachine: {machine()}", *parts])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
