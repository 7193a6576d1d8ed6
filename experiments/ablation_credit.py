"""Credit-mode ablation (issue 5, docs/method.md §3): shared / auxiliary / credited / exact side by side.

For each game and seed, one supervised warm start is shared by every mode (SFT does not depend on the
credit mode), then each mode trains the same number of SEPO steps from that same state with the same
rollout seed. `reward_only` (`shared` with all lambdas 0: plain GRPO on the training-pool episodes) is the
baseline `shared` should match (tests/test_sepo.py shows its penalty's gradient is exactly zero).
Every step's metrics are kept in the JSON; the table evaluates the warm start and each mode's final policy on
`--eval-episodes` sampled episodes per opponent (the same evaluation key for all), plus exact
NashConv on Kuhn. Safety is at the game's own lambdas for every mode (reward_only trains with 0).

Each mode's configuration is `sepo_jax.config.ablation_config(game, mode)` (also
`configs/ablation.py:GAME,MODE` for one run with the CLI): a warm start on the paper's demonstrator
mixture (exploitable, so there is exploitability to remove); the flags and `--set KEY=VALUE` override it.

    python experiments/ablation_credit.py --games kuhn --seeds 0 1 2
    python experiments/ablation_credit.py --games ipd --seeds 0 1 --eval-episodes 128
    python experiments/ablation_credit.py --games kuhn --seeds 0 1 2 --modes reward_only --merge  # redo one mode

`--merge` reruns the given modes into an existing OUT.json, keeping the other modes' results (and adds
seeds it lacks); it recomputes the (deterministic) warm start and records how far its evaluation is
from the stored one.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sepo_jax import parallel
from sepo_jax.config import ABLATION_MODES as MODES, settings
from sepo_jax.config import EXACT_SOLVER_GAMES, LAMBDAS, ablation_config, validate
from sepo_jax.rl import metrics, trainer

KEYS = ("exploit_pool_advantage", "payoff", "robust", "nash_conv", "collusion", "externality", "safety")


def make_config(game: str, mode: str, args) -> ml_collections.ConfigDict:
    c = ablation_config(game, mode)
    c.seed = args.seed
    for flag, key in (("steps", "steps"), ("sft_steps", "sft.steps"), ("sft_expert", "sft.expert"),
                      ("sft_episodes", "sft.episodes")):
        if getattr(args, flag) is not None:
            set_key(c, key, getattr(args, flag))
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a plain string
        set_key(c, key, value)
    validate(c)
    return c


def set_key(c, key: str, value):
    """`c[key] = value` for a dotted key that must exist."""
    *path, leaf = key.split(".")
    for part in path:
        c = c[part]
    if leaf not in c:
        raise KeyError(f"config has no key {key!r}")
    c[leaf] = value


def evaluate(game: str, setup: trainer.Setup, params, frozen, args) -> dict:
    evaluate_fn = trainer.make_evaluate(setup, args.eval_episodes)
    m = {k: float(v) for k, v in jax.device_get(evaluate_fn(params, frozen, jax.random.PRNGKey(10_000 + args.seed))[0]).items()}
    # every mode's safety at the game's own lambdas (reward_only trains with 0)
    lam = metrics.Lambdas.of(*LAMBDAS[game], max_payoff=setup.game.max_payoff)
    m["safety"] = float(metrics.safety(m["payoff"], m["exploit_pool_advantage"], m["collusion"], m["externality"], lam))
    return m


def run_game(game: str, seed: int, args) -> dict:
    modes = [m for m in args.modes if m != "exact" or game in EXACT_SOLVER_GAMES]
    mesh = parallel.make_mesh(1)
    t0 = time.time()
    base, params, frozen = trainer.build(settings(make_config(game, "reward_only", args)), mesh=mesh)
    untrained = evaluate(game, base, params, frozen, args) if getattr(args, "base_row", False) else None
    state, sft_step = trainer.init_state(base, params), trainer.make_sft_step(base)
    for _ in range(base.c.sft.steps):
        state, _ = sft_step(state, frozen)
    jax.block_until_ready(state)
    out = {"sft_time": time.time() - t0, "sft_eval": evaluate(game, base, state.params, frozen, args), "modes": {}}
    if untrained is not None:
        out["base_eval"] = untrained
    print(f"[{game} seed {seed}] SFT {base.c.sft.steps} steps in {out['sft_time']:.0f}s: "
          + " ".join(f"{k}={v:.3f}" for k, v in out["sft_eval"].items()), flush=True)
    for mode in modes:
        t0 = time.time()
        setup, _, _ = trainer.build(settings(make_config(game, mode, args)), mesh=mesh)  # same model and frozen weights as `base`
        s, sepo_step = trainer.start_sepo(jax.tree.map(jnp.copy, state)), trainer.make_sepo_step(setup)
        traj = []
        for _ in range(setup.c.steps):
            s, m = sepo_step(s, frozen)
            traj.append({k: float(v) for k, v in jax.device_get(m).items()})  # also waits for the step
        out["modes"][mode] = {"time": time.time() - t0, "trajectory": traj,
                              "eval": evaluate(game, setup, s.params, frozen, args)}
        print(f"[{game} seed {seed}] {mode}: {setup.c.steps} steps in {time.time() - t0:.0f}s: "
              + " ".join(f"{k}={v:.3f}" for k, v in out["modes"][mode]["eval"].items()), flush=True)
    return out


def table(results: dict, window: int) -> str:
    lines = []
    for game, seeds in results.items():
        runs = list(seeds.values())
        modes = list(runs[0]["modes"])
        keys = [k for k in KEYS if k in runs[0]["sft_eval"]]
        lines += [f"\n### {game}: evaluation of the final policy (mean +- sd over seeds {', '.join(seeds)})\n",
                  "| policy | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]

        def row(name, evals):
            cells = [f"{np.mean([e[k] for e in evals]):.3f} +- {np.std([e[k] for e in evals]):.3f}" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

        row("warm start (SFT)", [r["sft_eval"] for r in runs])
        for mode in modes:
            row(mode, [r["modes"][mode]["eval"] for r in runs])
        if "reward_only" not in modes:
            continue
        # exploitability per seed, paired with reward_only on the same seed (same warm start, same keys):
        # exact NashConv averaged over the last steps where solvable (it has no sampling noise), else
        # the final evaluation's exploit-pool advantage
        if "nash_conv" in runs[0]["sft_eval"]:
            what = f"exact NashConv, mean of the last {window} steps"
            value = lambda r, m: np.mean([t["nash_conv"] for t in r["modes"][m]["trajectory"][-window:]])  # noqa: E731
        else:
            what = "exploit-pool advantage of the final policy"
            value = lambda r, m: r["modes"][m]["eval"]["exploit_pool_advantage"]  # noqa: E731
        lines += [f"\n{game}: {what}, per seed; paired difference with reward_only\n",
                  "| mode | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs reward_only |",
                  "|---|" + "---|" * (len(seeds) + 2)]
        tail = {m: np.array([value(r, m) for r in runs]) for m in modes}
        for m in modes:
            diff = tail[m] - tail["reward_only"]
            lines.append(f"| {m} | " + " | ".join(f"{x:.3f}" for x in tail[m]) + f" | {tail[m].mean():.3f} | "
                         + ("" if m == "reward_only" else f"{diff.mean():+.3f} (lower on {(diff < 0).sum()} of {len(diff)} seeds)")
                         + " |")
    return "\n".join(lines)


def write_report(results: dict, out: str, window: int) -> str:
    meta = results.pop("meta")
    text = table(results, window)
    with open(out + ".md", "w") as f:
        f.write(f"# Credit-mode ablation\n\nCommand: `{meta['command']}` (commit {meta['commit']})\n\n"
                f"Machine: {meta['machine']}\n\n"
                + "".join(f"Rerun of {', '.join(m['modes'])}: `{m['command']}` (commit {m['commit']}); its warm start's "
                          f"evaluation differs from the stored one by at most {m['sft_eval_max_abs_diff']:.2g}\n\n"
                          for m in meta.get("merged", []))
                + (f"Note: {meta['note']}\n\n" if "note" in meta else "")
                + "\n".join(f"- {g} seed {s}: SFT {r['sft_time']:.0f}s, " + ", ".join(f"{m} {v['time']:.0f}s" for m, v in r["modes"].items())
                            for g, rs in results.items() for s, r in rs.items())
                + "\n" + text + "\n\nPer-step trajectories: `" + os.path.basename(out) + ".json`.\n")
    return text


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs), Python {platform.python_version()}, jax {jax.__version__}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", nargs="+", default=["kuhn", "ipd"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=None, help="SEPO steps; default: the ablation config's")
    p.add_argument("--sft-steps", type=int, default=None)
    p.add_argument("--sft-expert", choices=("equilibrium", "demonstrators"), default=None)
    p.add_argument("--sft-episodes", type=int, default=None, help="SFT episodes per step")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every mode, e.g. grpo.learning_rate=1e-4 (repeatable)")
    p.add_argument("--eval-episodes", type=int, default=256, help="per opponent")
    p.add_argument("--out", default="experiments/results/ablation_credit")
    p.add_argument("--window", type=int, default=20, help="last steps averaged for the NashConv table")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json (no training)")
    p.add_argument("--merge", action="store_true", help="rerun --modes into OUT.json, keeping its other modes")
    args = p.parse_args()
    if args.report_only:
        with open(args.out + ".json") as f:
            print(write_report(json.load(f), args.out, args.window))
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    run = {"command": "python " + " ".join(sys.argv), "commit": commit, "machine": machine()}
    if args.merge:
        with open(args.out + ".json") as f:
            results = json.load(f)
        run["modes"], run["sft_eval_max_abs_diff"] = args.modes, 0.0
        results["meta"].setdefault("merged", []).append(run)
    else:
        results = {"meta": run}
    for game in args.games:
        results.setdefault(game, {})
        for seed in args.seeds:
            args.seed = seed
            new, old = run_game(game, seed, args), results[game].get(str(seed))
            if args.merge and old is not None:
                diff = max(abs(new["sft_eval"][k] - v) for k, v in old["sft_eval"].items())
                run["sft_eval_max_abs_diff"] = max(run["sft_eval_max_abs_diff"], diff)
                old["modes"].update(new["modes"])
                new = old
            results[game][str(seed)] = new
            with open(args.out + ".json", "w") as f:
                json.dump(results, f)
    print(write_report(results, args.out, args.window))

if __name__ == "__main__":
    main()
