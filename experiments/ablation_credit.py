"""Credit-mode ablation (issue 5, SEPO.md §3): shared / auxiliary / credited / exact side by side.

For each game and seed, one supervised warm start is shared by every mode (SFT does not depend on the
credit mode), then each mode trains the same number of SEPO steps from that same state with the same
rollout seed. `reward_only` (credited with all lambdas 0: plain GRPO on the training pool) is the
baseline `shared` should match. Every step's exploit_pool_advantage, payoff, nash_conv (Kuhn; exact,
no sampling noise), collusion and safety are kept; the table shows the mean of the first and of the
last `--window` steps (the per-step pool metrics come from a few episodes each, so they are noisy).
Safety is recomputed at the game's own lambdas for every mode (reward_only trains with lambdas 0).

    python experiments/ablation_credit.py --game kuhn --steps 40 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax import parallel
from sepo_jax.config import EXACT_SOLVER_GAMES, LAMBDAS, default_config, validate
from sepo_jax.rl.trainer import Trainer

KEYS = ("exploit_pool_advantage", "payoff", "nash_conv", "collusion", "safety")
MODES = ("reward_only", "shared", "auxiliary", "credited", "exact")


def make_config(game: str, mode: str, args) -> "ml_collections.ConfigDict":
    c = default_config(game)
    c.seed = args.seed
    c.steps, c.sft.steps = args.steps, args.sft_steps
    if game in EXACT_SOLVER_GAMES:  # as configs/kuhn.py
        c.compact_prompt = True
        c.rollout.groups_per_opponent = 1
        c.sft.episodes = 32
    else:
        c.rollout.groups_per_opponent = 1
        c.sft.episodes = args.ipd_sft_episodes
    if mode == "reward_only":
        c.sepo.credit = "credited"
        c.sepo.lambda_e = c.sepo.lambda_c = c.sepo.lambda_x = 0.0
    else:
        c.sepo.credit = mode
    validate(c)
    return c


def safety(game: str, m: dict) -> float:
    lam_e, lam_c, lam_x = LAMBDAS[game]
    s = 3.0 / {"kuhn": 2.0, "ipd": 3.0}[game]
    return s * m["payoff"] - lam_e * s * m["exploit_pool_advantage"] - lam_c * m["collusion"] - lam_x * m["externality"]


def run_game(game: str, seed: int, args) -> dict:
    modes = [m for m in args.modes if m != "exact" or game in EXACT_SOLVER_GAMES]
    mesh = parallel.make_mesh(1)
    t0 = time.time()
    base = Trainer(make_config(game, modes[0], args), mesh=mesh)
    state = parallel.replicate(mesh, base.init_state())
    sft_nc = None
    for i in range(args.sft_steps):
        state, m = base.sft_step(state)
        if i == 0:
            jax.block_until_ready(m)
            t_first = time.time()
    jax.block_until_ready(state)
    if args.sft_steps and "nash_conv" in m:
        sft_nc = float(m["nash_conv"])
    sft_time = time.time() - t0
    per = (time.time() - t_first) / max(args.sft_steps - 1, 1) if args.sft_steps else 0.0
    print(f"[{game} seed {seed}] SFT {args.sft_steps} steps in {sft_time:.0f}s ({per:.2f}s/step after the first), "
          f"NashConv {sft_nc}", flush=True)
    out = {"sft_time": sft_time, "sft_nash_conv": sft_nc, "modes": {}}
    for mode in modes:
        t0 = time.time()
        trainer = Trainer(make_config(game, mode, args), mesh=mesh)
        s = trainer.start_sepo(jax.tree.map(jnp.copy, state))
        traj = []
        for step in range(args.steps):
            s, m = trainer.sepo_step(s)
            m = {k: float(v) for k, v in jax.device_get(m).items()}  # also waits for the step
            m["safety"] = safety(game, m)
            traj.append({k: m[k] for k in KEYS + ("externality", "kl", "zero_variance_groups") if k in m})
            if step == 0:
                t_first = time.time()
        per = (time.time() - t_first) / max(args.steps - 1, 1)
        out["modes"][mode] = {"time": time.time() - t0, "trajectory": traj}
        print(f"[{game} seed {seed}] {mode}: {args.steps} steps in {time.time() - t0:.0f}s ({per:.2f}s/step after the first); "
              + " ".join(f"{k}={traj[-1][k]:.3f}" for k in KEYS if k in traj[-1]), flush=True)
    return out


def table(results: dict, window: int) -> str:
    lines = []
    for game, seeds in results.items():
        keys = [k for k in KEYS if k != "nash_conv" or game in EXACT_SOLVER_GAMES]
        lines += [f"\n### {game} (mean over seeds {', '.join(seeds)}; first / last {window} steps)\n",
                  "| mode | " + " | ".join(f"{k} start -> end" for k in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        modes = next(iter(seeds.values()))["modes"]
        for mode in modes:
            cells = []
            for k in keys:
                start = np.mean([np.mean([t[k] for t in r["modes"][mode]["trajectory"][:window]]) for r in seeds.values()])
                end = np.mean([np.mean([t[k] for t in r["modes"][mode]["trajectory"][-window:]]) for r in seeds.values()])
                cells.append(f"{start:.3f} -> {end:.3f}")
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs), Python {platform.python_version()}, jax {jax.__version__}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", nargs="+", default=["kuhn", "ipd"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--sft-steps", type=int, default=150)
    p.add_argument("--ipd-sft-episodes", type=int, default=32)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--out", default="experiments/results/ablation_credit")
    args = p.parse_args()
    results = {}
    for game in args.games:
        results[game] = {}
        for seed in args.seeds:
            args.seed = seed
            results[game][str(seed)] = run_game(game, seed, args)
            with open(args.out + ".json", "w") as f:
                json.dump(results, f)
    text = table(results, args.window)
    print(text)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with open(args.out + ".md", "w") as f:
        f.write(f"# Credit-mode ablation\n\nCommand: `python {' '.join(sys.argv)}` (commit {commit})\n\n"
                f"Machine: {machine()}\n\n"
                + "\n".join(f"- {g} seed {s}: SFT {r['sft_time']:.0f}s (NashConv after SFT {r['sft_nash_conv']}), "
                            + ", ".join(f"{m} {v['time']:.0f}s" for m, v in r["modes"].items())
                            for g, rs in results.items() for s, r in rs.items())
                + "\n" + text + "\n\nPer-step trajectories: `" + os.path.basename(args.out) + ".json`.\n")


if __name__ == "__main__":
    main()
