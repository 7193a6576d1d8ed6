"""NashConv throughput: ours (jitted, vmapped) vs OpenSpiel's Python `exploitability.nash_conv` and
its C++ `pyspiel.nash_conv`, on random Kuhn and Leduc strategy tables.

    PYTHONPATH=. python experiments/bench_equilibrium.py [--kuhn-batch 1024] [--leduc-batch 64 1024]

Prints a table and writes experiments/results/bench_equilibrium.md. Times are medians of repeats,
after compilation; OpenSpiel's policy objects are built outside the timed region.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np
import pyspiel
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import exploitability

from sepo_jax.equilibrium import best_response as br
from sepo_jax.equilibrium import openspiel as ios


def random_tables(game, n, seed=0):
    rng = np.random.default_rng(seed)
    legal = br.legal_mask(game)
    t = rng.random((n, *legal.shape)) * legal
    t = t / np.maximum(t.sum(-1, keepdims=True), 1e-30)
    return np.where(br.used_rows(game)[:, None], t, 1.0 / legal.shape[1]).astype(np.float32)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ours(game, tables, repeats):
    x = jax.device_put(tables)
    jax.block_until_ready(br.nash_conv_table(game, x))  # compile
    return timed(lambda: jax.block_until_ready(br.nash_conv_table(game, x)), repeats)


def openspiel_python(game, tables):
    g = pyspiel.load_game(ios.OPENSPIEL_NAMES[game])
    pols = []
    for t in tables:
        pol = os_policy.TabularPolicy(g)
        for s, idx in pol.state_lookup.items():
            pol.action_probability_array[idx] = t[ios.info_state_to_row(game, s)]
        pols.append(pol)
    return float(np.median([timed(lambda: exploitability.nash_conv(g, pol), 1) for pol in pols]))


def openspiel_cpp(game, tables):
    g = pyspiel.load_game(ios.OPENSPIEL_NAMES[game])
    dicts = [{s: list(enumerate(map(float, v))) for s, v in ios.table_to_policy(game, t).items()} for t in tables]
    pyspiel.nash_conv(g, dicts[0])
    return float(np.median([timed(lambda: pyspiel.nash_conv(g, d), 1) for d in dicts]))


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    try:
        import importlib.metadata as md

        osv = md.version("open_spiel")
    except Exception:
        osv = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.default_backend()}), open_spiel {osv}, numpy {np.__version__}; "
        f"load average at the end {os.getloadavg()[0]:.2f} (the machine is shared)"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kuhn-batch", type=int, default=1024)
    ap.add_argument("--leduc-batch", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--openspiel-kuhn", type=int, default=200, help="tables timed with OpenSpiel (Kuhn)")
    ap.add_argument("--openspiel-leduc", type=int, default=5, help="tables timed with OpenSpiel (Leduc)")
    ap.add_argument("--out", default="experiments/results/bench_equilibrium.md")
    args = ap.parse_args()

    rows = []  # (game, method, batch, seconds per call, policies per second)

    def add(game, method, batch, sec):
        rows.append((game, method, batch, sec, batch / sec))

    kuhn = random_tables("kuhn", args.kuhn_batch)
    add("kuhn", "ours jit, batched", args.kuhn_batch, ours("kuhn", kuhn, 50))
    add("kuhn", "ours jit, single table", 1, ours("kuhn", kuhn[0], 200))
    add("kuhn", "OpenSpiel Python nash_conv", 1, openspiel_python("kuhn", kuhn[: args.openspiel_kuhn]))
    add("kuhn", "OpenSpiel C++ pyspiel.nash_conv", 1, openspiel_cpp("kuhn", kuhn[: args.openspiel_kuhn]))
    leduc = random_tables("leduc", max(args.leduc_batch), seed=1)
    for b in args.leduc_batch:
        add("leduc", "ours jit, batched", b, ours("leduc", leduc[:b], 20))
    add("leduc", "ours jit, single table", 1, ours("leduc", leduc[0], 50))
    add("leduc", "OpenSpiel Python nash_conv", 1, openspiel_python("leduc", leduc[: args.openspiel_leduc]))
    add("leduc", "OpenSpiel C++ pyspiel.nash_conv", 1, openspiel_cpp("leduc", leduc[: args.openspiel_leduc]))

    base = {g: next(r[4] for r in rows if r[0] == g and r[1].startswith("OpenSpiel Python")) for g in ("kuhn", "leduc")}
    lines = [
        "| game | method | tables per call | time per call | policies / s | vs OpenSpiel Python |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for game, method, batch, sec, pps in rows:
        lines.append(f"| {game} | {method} | {batch} | {sec * 1e3:.3f} ms | {pps:,.0f} | {pps / base[game]:,.0f}x |")
    table = "\n".join(lines)
    print(table)
    cmd = "PYTHONPATH=. python " + " ".join(sys.argv)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write(
            "# NashConv throughput: sepo_jax.equilibrium vs OpenSpiel\n\n"
            f"Command: `{cmd}` (commit {rev})\n\nMachine: {machine()}\n\n"
            "Random valid tables (uniform random rows over legal actions); float32 for ours. Medians: ours over\n"
            "repeated calls after compilation, OpenSpiel over per-table times (policy objects built outside\n"
            "the timed region; C++: the dict is converted inside the call). Medians resist the load spikes\n"
            "of this shared machine; the ratios compare medians taken in the same run.\n\n"
            f"{table}\n"
        )


if __name__ == "__main__":
    main()
