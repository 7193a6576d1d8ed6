"""Compile time of the decoder at 2 and 24 layers: the stacked, scanned layers (with and without remat)
against the former unrolled Python loop over layers (transformer.py as of commit OLD_COMMIT, read with git).
SmolLM2-135M's width (hidden 576, 9 query / 3 key-value heads of 64, SwiGLU 1536) with a 1,024-token
vocabulary; a batch of 4 x 64 tokens. "train" is jit lower + compile of the loss's value and gradient
(mean next-token NLL), "prefill" of a prefill into a KV cache with 16 free slots (last position's logits);
HLO kB is the size of the lowered StableHLO text. One warm-up compile comes first; each time is the minimum
over --repeats fresh compiles (other processes share these cores).

    PYTHONPATH=. python experiments/bench_compile.py [--layers 2,24] [--forms scan,scan+remat,unrolled] [--repeats 3]

Prints a table and writes experiments/results/bench_compile.md.
"""

import argparse
import datetime
import platform
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.bench_envs import machine
from sepo_jax.model import transformer

OLD_COMMIT = "ed8cd5af8c964120b866953505c08cfa523f067e"  # the last unrolled transformer.py
WIDTH = dict(vocab_size=1024, hidden_size=576, intermediate_size=1536, num_heads=9, num_kv_heads=3, head_dim=64)
B, T = 4, 64


def unrolled_module():
    """The former transformer.py (a Python loop over an nnx.List of layers), or None outside a git checkout."""
    try:
        source = subprocess.run(["git", "show", f"{OLD_COMMIT}:sepo_jax/model/transformer.py"], check=True,
                                                        capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("transformer_unrolled")
    sys.modules[module.__name__] = module
    exec(compile(source, "transformer_unrolled.py", "exec"), module.__dict__)
    return module


def timed(fn, *args):
    """(lower seconds, compile seconds, StableHLO kB) of jax.jit(fn) at args."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    lowered.compile()
    return t1 - t0, time.perf_counter() - t1, len(lowered.as_text()) / 1e3


def measure(lib, layers, remat):
    extra = {"remat": "full"} if remat else {}
    model = nnx.eval_shape(lambda: lib.Decoder(lib.ModelConfig(num_layers=layers, **WIDTH, **extra),
                                                                                          rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    ids = jax.ShapeDtypeStruct((B, T), jnp.int32)
    mask = jax.ShapeDtypeStruct((B, T), jnp.bool_)

    def loss(s, ids, mask):
        logp = jax.nn.log_softmax(nnx.merge(graphdef, s)(ids, mask)[:, :-1])
        nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        return jnp.where(mask[:, 1:], nll, 0.0).sum() / mask[:, 1:].sum()

    def prefill(s, ids, mask):
        m = nnx.merge(graphdef, s)
        return m(ids, mask, cache=m.init_cache(B, T + 16), last_only=True)

    return timed(jax.value_and_grad(loss), state, ids, mask), timed(prefill, state, ids, mask)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="2,24", help="comma list of depths")
    ap.add_argument("--forms", default="scan,scan+remat,unrolled")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/bench_compile.md")
    args = ap.parse_args()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    forms = {"scan": (transformer, False), "scan+remat": (transformer, True)}
    old = unrolled_module() if "unrolled" in args.forms else None
    if old is not None:
        forms["unrolled"] = (old, False)
    measure(transformer, 1, False)  # warm-up: the first compile in a process also pays one-time setup
    lines = ["| form | layers | train lower s | train compile s | train HLO kB | prefill lower s | "
                      "prefill compile s | prefill HLO kB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in [f for f in args.forms.split(",") if f in forms]:
        lib, remat = forms[name]
        for layers in [int(n) for n in args.layers.split(",")]:
            runs = [measure(lib, layers, remat) for _ in range(args.repeats)]
            train, fill = (tuple(min(r[i][j] for r in runs) for j in range(3)) for i in range(2))
            lines.append(f"| {name} | {layers} | {train[0]:.2f} | {train[1]:.2f} | {train[2]:.0f} | {fill[0]:.2f} | "
                                      f"{fill[1]:.2f} | {fill[2]:.0f} |")
            print(lines[-1], flush=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    table = "\n".join(lines)
    print("\n" + table)
    skipped = "" if old is not None or "unrolled" not in args.forms else \
            f"\n(unrolled form skipped: commit {OLD_COMMIT} is not in this checkout)\n"
    with open(args.out, "w") as out:
        out.write("# Compile time: scanned vs unrolled decoder layers\n\n"
                            f"Command: `PYTHONPATH=. python {' '.join(sys.argv)}`\n\n"
                            f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                            f"Machine: `uname -m` {platform.machine()}; {machine()}\n\n"
                            f"uptime before: `{uptime_before}`\n\nuptime after: `{uptime_after}`\n\n"
                            + __doc__.split("\n\n")[0].replace("OLD_COMMIT", OLD_COMMIT[:10]) + "\n\n" + table + "\n" + skipped)


if __name__ == "__main__":
    main()
