"""The README's main command on several seeds (issue 14 items 2 and 6): `python -m sepo_jax.train
--config=configs/kuhn.py --config.seed=S`, SEPO from the untrained embedded model against the exact best
response alone, never shown the equilibrium. Each seed runs through the training CLI in its own workdir
(rerunning resumes or skips a finished seed) and is then evaluated by `python -m sepo_jax.evaluate`.

Writes `experiments/results/main_command.md` (per seed: exact NashConv at the start and the end, when it
first reached 0.03 and from which step it stayed <= 0.02, SEPO and wall seconds, the evaluation's metrics
against every pool) and `main_command.png`: exact NashConv over the steps of every seed, beside the paper's
SEPO modes from the demonstrator warm start (`experiments/results/paper_tables/kuhn.json`, when present).
`--frequencies S` also trains seed S again keeping a checkpoint every 50 steps (the same trajectory), evaluates
every one and keeps its card-conditioned bet/call frequencies over training against the equilibrium family
(`main_command_frequencies.png`, `python -m sepo_jax.evaluate --plots`).

    python experiments/main_command.py --seeds 0 1 2 3 4 --frequencies 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

from sepo_jax.plots import pyplot, read_metrics

EVAL_KEYS = ("payoff", "exploit_pool_advantage", "robust", "collusion", "collusion_vs_nash", "safety", "shift", "nash_conv")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _commit() -> str:
    """HEAD's short hash, marked when a tracked file has uncommitted changes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return commit + (" + uncommitted changes" if dirty.strip() else "")


def train_and_evaluate(workdir: str, config: str, overrides: list[str], eval_args: list[str] = ()) -> dict:
    """Train with the CLI in `workdir` (resuming it), evaluate its last checkpoint with the evaluation CLI,
    and keep a record (command, wall seconds, load before and after, the evaluation's metrics) in
    `workdir/record.json`; a workdir with a record is not run again."""
    path = os.path.join(workdir, "record.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    train = [sys.executable, "-m", "sepo_jax.train", f"--config={config}", *overrides, f"--workdir={workdir}"]
    before, commit, t0 = _uptime(), _commit(), time.time()
    subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    subprocess.run([sys.executable, "-m", "sepo_jax.evaluate", f"--workdir={workdir}", *eval_args], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(workdir, "eval.json")) as f:
        evaluated = json.load(f)["steps"]
    record = dict(command=" ".join(["python"] + train[1:]), commit=commit, wall=wall, before=before, after=_uptime(),
                  eval=evaluated[max(evaluated, key=int)]["metrics"])
    with open(path, "w") as f:
        json.dump(record, f)
    return record


def report_header(title: str, command: str, machine_note: str, records: dict) -> list[str]:
    """The report's title, command, commits the runs were made at, machine and load lines."""
    commits = ", ".join(sorted({r.get("commit") or _commit() for r in records.values()}))
    return [f"# {title}", "", f"Command: `{command}` (runs made at commit {commits}).", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {machine_note} "
            "Load before / after each run:", "", *[f"- {name}: `{r['before']}` / `{r['after']}`" for name, r in records.items()], ""]


def summary(record: dict, lines: list[dict]) -> dict:
    nc = np.asarray([r["nash_conv"] for r in lines])
    steps = np.asarray([r["step"] for r in lines])
    above = np.nonzero(nc > 0.02)[0]
    if not len(above):
        stays = int(steps[0])
    else:
        stays = int(steps[above[-1] + 1]) if above[-1] + 1 < len(nc) else None  # None: not settled by the end
    first = int(steps[np.argmax(nc <= 0.03)]) if (nc <= 0.03).any() else None
    return dict(start=nc[0], end=nc[-1], first_003=first, stays_002=stays, sepo_seconds=lines[-1]["time"])


def figure(curves: dict, paper: dict | None, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(11 if paper else 7, 4.2), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1]} if paper else None)
    ax = axes[0][0]
    for seed, lines in curves.items():
        ax.plot([r["step"] for r in lines], [r["nash_conv"] for r in lines], lw=1.1, label=f"seed {seed}")
    ax.set_title("configs/kuhn.py: SEPO against the exact best response, no warm start", fontsize=9)
    if paper:
        right = axes[0][1]
        for name, mode in (("reward-only GRPO", "reward_only"), ("SEPO credited", "credited"), ("SEPO exact", "exact")):
            runs = [r["modes"][mode]["trajectory"] for r in paper["seeds"].values() if mode in r["modes"]]
            y = np.mean([[s["nash_conv"] for s in t] for t in runs], axis=0)
            right.plot(np.arange(1, len(y) + 1), y, lw=1.2, label=f"{name} (mean of {len(runs)} seeds)")
        right.set_title("the paper's SEPO, demonstrator warm start", fontsize=9)
        right.set_xlabel("SEPO step")
        right.axhline(0.02, color="grey", lw=0.8)
        right.grid(alpha=0.3, which="both")
        right.legend(fontsize=7)
    ax.axhline(0.02, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("SEPO step")
    ax.set_ylabel("exact NashConv of the model's strategy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--root", default="runs/main-command")
    p.add_argument("--out", default="experiments/results/main_command")
    p.add_argument("--frequencies", type=int, default=None, metavar="SEED", help="bet/call frequencies over training")
    args = p.parse_args()
    if args.frequencies is not None:
        workdir = os.path.join(args.root, f"seed{args.frequencies}-every50")
        train_and_evaluate(workdir, "configs/kuhn.py", [f"--config.seed={args.frequencies}", "--config.checkpoint_every=50",
                                                       "--config.keep_checkpoints=21"], ["--steps=all", "--plots"])
        shutil.copy(os.path.join(workdir, "plots", "kuhn_frequencies.png"), args.out + "_frequencies.png")
    records = {s: train_and_evaluate(os.path.join(args.root, f"seed{s}"), "configs/kuhn.py", [f"--config.seed={s}"])
               for s in args.seeds}
    curves = {s: read_metrics(os.path.join(args.root, f"seed{s}", "metrics.jsonl")) for s in args.seeds}
    rows = ["| seed | NashConv at step 1 | at the last step | first <= 0.03 | <= 0.02 from step | SEPO s | wall s | "
            + " | ".join(f"eval {k}" for k in EVAL_KEYS) + " | J bluff alpha |", "|---:|" + "---:|" * (7 + len(EVAL_KEYS))]
    for s, rec in records.items():
        m = summary(rec, curves[s])
        with open(os.path.join(args.root, f"seed{s}", "eval.json")) as f:
            evaluated = json.load(f)["steps"]
        alpha = evaluated[max(evaluated, key=int)]["kuhn_alpha"]
        rows.append(f"| {s} | {m['start']:.3f} | {m['end']:.4f} | {m['first_003']} | {m['stays_002']} | "
                    f"{m['sepo_seconds']:.0f} | {rec['wall']:.0f} | " + " | ".join(f"{rec['eval'][k]:.3f}" for k in EVAL_KEYS)
                    + f" | {alpha:.3f} |")
    paper_path = "experiments/results/paper_tables/kuhn.json"
    paper = json.load(open(paper_path)) if os.path.exists(paper_path) else None
    figure(curves, paper, args.out + ".png")
    text = "\n".join([
        *report_header("The main command on several seeds: SEPO finds Kuhn's equilibrium from scratch",
                       f"python experiments/main_command.py --seeds {' '.join(map(str, args.seeds))}",
                       "each seed on one core while other work ran on the other.",
                       {f"seed {s}": r for s, r in records.items()}),
        f"Each seed: `{records[args.seeds[0]]['command']}` with its seed, then `python -m sepo_jax.evaluate` (256 "
        "episodes per opponent of every pool, at the rollout temperature).", "",
        *rows, "",
        "NashConv is exact (the model's strategy read at all 12 information sets); 'SEPO s' is the SEPO phase's time "
        "without compiles, 'wall s' the whole command's. The evaluation's payoff, collusion and safety are against pools "
        "the run never trained on (train, collusive, shift). J bluff alpha: the learner's J opening-bet probability, "
        "which names the member of Kuhn's equilibrium family (every alpha in [0, 1/3]) the policy is nearest.", "",
        f"![NashConv over SEPO steps]({os.path.basename(args.out)}.png)"])
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
