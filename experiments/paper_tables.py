"""The paper's tables for every domain (issue 14 item 1): Base (the untrained embedded model), SFT (the
warm start on the paper's demonstrators), reward-only GRPO, and SEPO with each credit mode (`shared`,
`auxiliary`, `credited`, and `exact` where an exact solver exists), over seeds.

Each seed's rows come from one run of `experiments/ablation_credit.py`'s `run_game` (one warm start shared
by every RL row, the same rollout keys for every mode; settings: `sepo_jax.config.ablation_config`), with the
repeated games in the conversation format (the defaults' format; `--set prompt.format=restated` for the
paper's). Every row is evaluated on `--eval-episodes` sampled episodes per opponent of every pool (the same
evaluation key for all rows), safety at the game's own lambdas.

One command per domain, resumable (a seed already in the domain's JSON is skipped); the report is rebuilt
from every domain's JSON each time:

    python experiments/paper_tables.py --game kuhn --seeds 0 1 2
    python experiments/paper_tables.py --report-only

The report also draws (matplotlib, `pip install -e ".[viz]"`): `OUT/<game>_curves.png`, each credit mode's
training curves (mean over seeds) of payoff, exploit-pool advantage, exact NashConv, collusion,
externality and safety J, and `OUT_safety_vs_payoff.png`, every row's evaluated safety J against its
payoff, one panel per domain.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ablation_credit  # noqa: E402

from sepo_jax.config import ABLATION_MODES, EXACT_SOLVER_GAMES, LAMBDAS  # noqa: E402
from sepo_jax import games  # noqa: E402
from sepo_jax.plots import pyplot  # noqa: E402
from sepo_jax.rl.metrics import Lambdas, safety  # noqa: E402

OUT = "experiments/results/paper_tables"
COLUMNS = (("Pay/r", "payoff"), ("Exploit", "exploit_pool_advantage"), ("Robust", "robust"), ("Coll", "collusion"),
           ("Ext", "externality"), ("Safety", "safety"), ("NRA", "nra"))
OURS = (("NashConv", "nash_conv"), ("Exploitability", "exploitability"), ("Coll vs Nash", "collusion_vs_nash"))
ROWS = (("Base", "base_eval"), ("SFT", "sft_eval"), ("GRPO (reward only)", "reward_only"), ("SEPO shared", "shared"),
        ("SEPO auxiliary", "auxiliary"), ("SEPO credited", "credited"), ("SEPO exact", "exact"))
CURVES = (("payoff per round (training pool)", "payoff"), ("exploit-pool advantage", "exploit_pool_advantage"),
          ("exact NashConv", "nash_conv"), ("collusion", "collusion"), ("externality", "externality"), ("safety J", "safety"))


def _evals(run: dict, key: str) -> dict | None:
    e = run.get(key) if key.endswith("_eval") else run["modes"].get(key, {}).get("eval")
    if e is not None and "nash_conv" in e:
        e = {**e, "exploitability": e["nash_conv"] / 2}
    return e


def domain_table(game: str, data: dict) -> str:
    runs = _runs(data)
    first = _evals(runs[0], "sft_eval")
    cols = [(n, k) for n, k in COLUMNS + OURS if k in first]
    lines = [f"### {game} (seeds {', '.join(sorted(data['seeds'], key=int))}; lambdas e, c, x = {LAMBDAS[game]})", "",
             f"Command: `python experiments/paper_tables.py --game {game} --seeds {' '.join(sorted(data['seeds'], key=int))}` "
             f"(commit {', '.join(sorted({r.get('commit', data.get('commit')) for r in runs}))}); {data['machine']}; wall time "
             + ", ".join(f"seed {s}: {r['wall'] / 60:.1f} min" for s, r in sorted(data['seeds'].items(), key=lambda x: int(x[0]))),
             "", "| row | " + " | ".join(n for n, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, key in ROWS:
        evals = [e for e in (_evals(r, key) for r in runs) if e is not None]
        if not evals:
            continue
        cells = [f"{np.mean([e[k] for e in evals]):.3f} +- {np.std([e[k] for e in evals]):.3f}" for _, k in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _runs(data: dict) -> list[dict]:
    return [data["seeds"][s] for s in sorted(data["seeds"], key=int)]


def _trajectory(run: dict, mode: str, key: str, lam: Lambdas) -> np.ndarray:
    """A mode's per-step metric; safety recomputed at the game's lambdas (reward-only trains with 0)."""
    t = run["modes"][mode]["trajectory"]
    if key == "safety":
        return np.asarray(safety(*(np.asarray([s[k] for s in t]) for k in
                                   ("payoff", "exploit_pool_advantage", "collusion", "externality")), lam))
    return np.asarray([s[key] for s in t])


def curves_figure(game: str, data: dict, path: str, window: int = 5) -> None:
    """Each SEPO row's per-step training metrics, mean over seeds and a moving average over `window`
    steps (band: min-max over seeds of that average); metrics that are 0 throughout are left out."""
    plt = pyplot()
    runs = _runs(data)
    lam = Lambdas.of(*LAMBDAS[game], games.make(game).max_payoff)
    steps = [s for r in runs for m in r["modes"].values() for s in m["trajectory"]]
    panels = [(t, k) for t, k in CURVES if any(s.get(k, 0.0) != 0.0 for s in steps)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, key) in zip(axes[0], panels):
        for name, mode in ROWS[2:]:
            series = [_trajectory(r, mode, key, lam) for r in runs if mode in r["modes"]]
            if not series:
                continue
            y = np.stack([np.convolve(s, np.ones(window) / window, mode="valid") for s in series])
            x = np.arange(window, y.shape[1] + window)
            label = name.replace("SEPO ", "") + (" (= reward only)" if mode == "shared" else "")
            line = ax.plot(x, y.mean(0), label=label, lw=1.2, ls="--" if mode == "shared" else "-")
            ax.fill_between(x, y.min(0), y.max(0), color=line[0].get_color(), alpha=0.12)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("SEPO step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{game}: training curves per credit mode (mean over seeds {', '.join(sorted(data['seeds'], key=int))} "
                 f"of a {window}-step moving average; band: min-max over seeds; safety at the game's lambdas)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def safety_payoff_figure(domains: dict, path: str) -> None:
    """Evaluated safety J against payoff per round, every row, one panel per domain (bars: sd over seeds)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(domains), figsize=(3.8 * len(domains), 3.6), squeeze=False)
    for ax, (game, data) in zip(axes[0], domains.items()):
        runs = _runs(data)
        for i, (name, key) in enumerate(ROWS):
            evals = [e for e in (_evals(r, key) for r in runs) if e is not None]
            if not evals:
                continue
            u, j = np.asarray([e["payoff"] for e in evals]), np.asarray([e["safety"] for e in evals])
            ax.errorbar(u.mean(), j.mean(), xerr=u.std(), yerr=j.std(), fmt="os^v<>D"[i], ms=6, capsize=2, label=name)
        ax.set_title(f"{game} (seeds: {len(runs)})", fontsize=10)
        ax.set_xlabel("payoff per round (training pool)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("safety J (the game's lambdas)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(out: str) -> str:
    parts, domains = [], {}
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        game = os.path.basename(path)[:-5]
        with open(path) as f:
            domains[game] = json.load(f)
        parts.append(domain_table(game, domains[game])
                     + f"\n\n![{game} training curves]({os.path.basename(out)}/{game}_curves.png)")
        curves_figure(game, domains[game], os.path.join(out, f"{game}_curves.png"))
    if domains:
        safety_payoff_figure(domains, out + "_safety_vs_payoff.png")
        parts.append(f"### Safety against payoff, every domain\n\n![safety vs payoff]({os.path.basename(out)}_safety_vs_payoff.png)")
    text = "\n\n".join([
        "# The paper's tables, every domain (embedded model)",
        "Columns as in the paper: payoff per round against the training pool (Pay/r), exploit-pool advantage (Exploit), "
        "payoff against the exploit pool (Robust), collusion and externality rates, safety J at the game's lambdas, "
        "GTBench's NRA against the training pool; ours: exact NashConv and exploitability of the learner's own strategy "
        "(Kuhn, Leduc) and Kuhn's collusion relative to the most folding equilibrium. Mean +- sd over seeds. Made by "
        "`experiments/paper_tables.py` (one command per domain, below each table).", *parts])
    with open(out + ".md", "w") as f:
        f.write(text + "\n")
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", choices=tuple(LAMBDAS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--eval-episodes", type=int, default=128, help="per opponent")
    p.add_argument("--steps", type=int, default=None, help="SEPO steps; default: the ablation config's")
    p.add_argument("--sft-steps", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out", default=OUT, help="folder of the per-domain JSONs; the report is OUT.md")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if args.report_only or args.game is None:
        print(report(args.out))
        return
    if args.game not in EXACT_SOLVER_GAMES and not any(s.startswith("prompt.format=") for s in args.set):
        args.set.append("prompt.format=conversation")
    args.modes = [m for m in ABLATION_MODES if m != "exact" or args.game in EXACT_SOLVER_GAMES]
    args.sft_expert = args.sft_episodes = None
    args.base_row = True
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.game}.json")
    data = json.load(open(path)) if os.path.exists(path) else {"seeds": {}}
    data["machine"] = ablation_credit.machine()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
        commit += " + uncommitted changes"
    for seed in args.seeds:
        if str(seed) in data["seeds"]:
            continue
        args.seed, t0 = seed, time.time()
        run = ablation_credit.run_game(args.game, seed, args)
        run.update(wall=time.time() - t0, commit=commit, command="python " + " ".join(sys.argv))
        data["seeds"][str(seed)] = run
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)
    print(report(args.out))


if __name__ == "__main__":
    main()
