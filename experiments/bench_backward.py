"""Forward and forward+backward time of the same small decoder stack in JAX (XLA:CPU) and PyTorch:
the shapes of the embedded model's GRPO update on Kuhn (1,728 prompts x 50 tokens at 192 episodes;
hidden 64, 2 layers, 4 query / 2 key-value heads of 16, SwiGLU 192, vocabulary 666), written once per
framework with identical weights, so the difference is the compiler's, not the model code's.

    PYTHONPATH=. python experiments/bench_backward.py [--batch 216] [--repeats 10]

Prints a table and writes experiments/results/bench_backward.md.
"""

import argparse
import datetime
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from experiments.bench_envs import machine

T, H, F, NH, KV, D, V, LAYERS = 50, 64, 192, 4, 2, 16, 666, 2


def weights(rng):
    shapes = dict(emb=(V, H), q=(H, NH * D), k=(H, KV * D), v=(H, KV * D), o=(NH * D, H), g=(H, F), u=(H, F), d=(F, H))
    return {k: (rng.normal(size=s) * 0.05).astype(np.float32) for k, s in shapes.items()}


def forward(xp, p, ids, mask, B):
    """The decoder stack with numpy-like ops `xp` (jnp or torch); returns the summed last-position logits."""
    softmax = jax.nn.softmax if xp is jnp else torch.softmax
    silu = jax.nn.silu if xp is jnp else torch.nn.functional.silu
    x = p["emb"][ids]
    seen = xp.tril(xp.ones((T, T), dtype=bool))[None, None, None] & mask[:, None, None, None, :]
    for _ in range(LAYERS):
        q = (x @ p["q"]).reshape(B, T, KV, NH // KV, D)
        k, v = (x @ p["k"]).reshape(B, T, KV, D), (x @ p["v"]).reshape(B, T, KV, D)
        s = xp.where(seen, xp.einsum("btkgd,bskd->bkgts", q, k) / D**0.5, -1e9)
        x = x + xp.einsum("bkgts,bskd->btkgd", softmax(s, -1), v).reshape(B, T, NH * D) @ p["o"]
        x = x + (silu(x @ p["g"]) * (x @ p["u"])) @ p["d"]
    return (x[:, -1] @ p["emb"].T).sum()


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="216,1728", help="comma list of prompt counts")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="experiments/results/bench_backward.md")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    p = weights(rng)
    lines = ["| prompts x tokens | JAX fwd ms | JAX fwd+bwd ms | torch fwd ms | torch fwd+bwd ms | JAX / torch, fwd+bwd |",
             "|---|---:|---:|---:|---:|---:|"]
    for B in [int(b) for b in args.batch.split(",")]:
        ids = rng.integers(0, V, (B, T))
        mask = np.ones((B, T), bool)
        mask[:, :8] = False  # left padding, as in our prompts
        jp, jids, jmask = {k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(ids), jnp.asarray(mask)
        f = jax.jit(lambda w: forward(jnp, w, jids, jmask, B))
        g = jax.jit(jax.grad(lambda w: forward(jnp, w, jids, jmask, B)))
        jf = median_ms(lambda: f(jp).block_until_ready(), args.repeats)
        jg = median_ms(lambda: jax.block_until_ready(g(jp)), args.repeats)
        tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
        tids, tmask = torch.tensor(ids), torch.tensor(mask)

        def t_fwd():
            with torch.no_grad():
                forward(torch, tp, tids, tmask, B)

        def t_grad():
            for w in tp.values():
                w.grad = None
            forward(torch, tp, tids, tmask, B).backward()

        tf, tg = median_ms(t_fwd, args.repeats), median_ms(t_grad, args.repeats)
        lines.append(f"| {B} x {T} | {jf:.1f} | {jg:.1f} | {tf:.1f} | {tg:.1f} | {jg / tg:.2f}x |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    with open(args.out, "w") as out:
        out.write("# Forward and backward of one decoder stack: JAX (XLA:CPU) vs PyTorch\n\n"
                  f"Command: `PYTHONPATH=. python {' '.join(sys.argv)}`\n\n"
                  f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                  f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n\n"
                  + __doc__.split("\n\n")[0] + " Medians after a warm-up call (JAX: after compilation).\n\n"
                  + table + "\n")


if __name__ == "__main__":
    main()
