"""Leduc's safety frontier (issue 14 item 2): exact NashConv against training-pool payoff for SEPO settings on
Leduc hold'em from the untrained embedded model (nothing imitated) and, for one setting, from the paper's
demonstrator warm start, through the training CLI.

Settings (`SETTINGS`): the paper's three pools and rewards at lambda_e 0 / 1.5 / 15 with `credited` and
`exact` credit, and the variant that finds Kuhn's equilibrium (`configs/kuhn.py`: exact credit against the
exact best response alone, per-round signed exploit charges, no std division, no KL anchor, a cosine-decayed
learning rate), the latter also after the paper tables' warm start on the demonstrators (`br_warm`). Each
runs `python -m sepo_jax.train --config=configs/leduc.py ...` in its own workdir (a rerun
resumes it, or skips it when its record exists), then `python -m sepo_jax.evaluate` against every pool.

Writes `experiments/results/leduc_frontier.md` (per setting: NashConv at the start, the end and its minimum,
the evaluation's payoff, exploit-pool advantage, collusion, safety, wall time) and `leduc_frontier.png`
(NashConv over the steps; final NashConv against the evaluated training-pool payoff).

    python experiments/leduc_frontier.py --settings br paper_exact_1.5 paper_credited_1.5 --steps 600
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from main_command import report_header, train_and_evaluate  # noqa: E402

from sepo_jax.plots import pyplot, read_metrics  # noqa: E402

BR = ["--config.sepo.pools=('exploit',)", "--config.sepo.exploit_opponents=best_response",
      "--config.sepo.exploit_signal=round", "--config.grpo.scale_std=False", "--config.grpo.beta=0.0",
      "--config.grpo.learning_rate=3e-4", "--config.grpo.lr_schedule=cosine", "--config.rollout.groups_per_opponent=4"]
SCRATCH = ["--config.sft.steps=0"]
WARM = ["--config.sft.steps=100", "--config.sft.episodes=32", "--config.sft.expert=demonstrators"]  # paper_tables'
SETTINGS = {"br": SCRATCH + BR, "br_warm": WARM + BR}
for credit in ("credited", "exact"):
    for lam_e in ("0", "1.5", "15"):
        SETTINGS[f"paper_{credit}_{lam_e}"] = SCRATCH + [f"--config.sepo.credit={credit}",
                                                         f"--config.sepo.lambda_e={lam_e}", "--config.grpo.learning_rate=3e-4"]
COMMON = ["--config.rollout.common_chance=True", "--config.rollout.learner_seat=-1", "--config.log_every=10",
          "--config.checkpoint_every=100"]
EVAL_KEYS = ("payoff", "exploit_pool_advantage", "robust", "collusion", "safety", "nra", "nash_conv")


def run(name: str, steps: int, root: str, episodes: int) -> dict:
    return train_and_evaluate(os.path.join(root, name), "configs/leduc.py",
                              [*COMMON, *SETTINGS[name], f"--config.steps={steps}"], [f"--episodes={episodes}"])


def figure(records: dict, curves: dict, path: str) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, lines in curves.items():
        a.plot([r["step"] - lines[0]["step"] + 1 for r in lines], [r["nash_conv"] for r in lines], lw=1.1, label=name)
        e = records[name]["eval"]
        b.scatter(e["payoff"], e["nash_conv"], s=30)
        b.annotate(name, (e["payoff"], e["nash_conv"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    a.set_xlabel("SEPO step")
    a.set_ylabel("exact NashConv")
    a.set_yscale("log")
    a.legend(fontsize=7)
    a.grid(alpha=0.3, which="both")
    b.set_xlabel("payoff per hand against the training pool (evaluation)")
    b.set_ylabel("exact NashConv at the end")
    b.grid(alpha=0.3)
    fig.suptitle("Leduc hold'em: SEPO settings from the untrained model (br_warm: from the demonstrators)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--episodes", type=int, default=128, help="evaluation episodes per opponent")
    p.add_argument("--root", default="runs/leduc-frontier")
    p.add_argument("--out", default="experiments/results/leduc_frontier")
    args = p.parse_args()
    for name in args.settings:
        run(name, args.steps, args.root, args.episodes)
    done = sorted(n for n in SETTINGS if os.path.exists(os.path.join(args.root, n, "record.json")))
    records = {n: run(n, args.steps, args.root, args.episodes) for n in done}
    curves = {n: read_metrics(os.path.join(args.root, n, "metrics.jsonl")) for n in done}
    figure(records, curves, args.out + ".png")
    rows = ["| setting | SEPO steps | NashConv at the first SEPO step | at the end | lowest | "
            + " | ".join(f"eval {k}" for k in EVAL_KEYS)
            + " | SEPO min |", "|---|" + "---:|" * (5 + len(EVAL_KEYS))]
    for n in done:
        nc = [r["nash_conv"] for r in curves[n]]
        e = records[n]["eval"]
        rows.append(f"| {n} | {curves[n][-1]['step'] - curves[n][0]['step'] + 1} | {nc[0]:.3f} | {nc[-1]:.3f} | {min(nc):.3f} | "
                    + " | ".join(f"{e[k]:.3f}" for k in EVAL_KEYS) + f" | {curves[n][-1]['time'] / 60:.1f} |")
    text = "\n".join([
        *report_header("Leduc hold'em: SEPO settings from the untrained model and from the demonstrators",
                       "python experiments/leduc_frontier.py --settings NAME ... --steps N (each setting's steps in "
                       "its row; the latest invocation: --settings "
                       f"{' '.join(args.settings)} --steps {args.steps})",
                       "one core per run while other work ran on the other.", records),
        "Each setting's training command: `" + "`; `".join(f"{n}: {records[n]['command']}" for n in done) + "`.", "",
        "Settings: `br` = configs/kuhn.py's variant (exact credit against the exact best response alone, per-round "
        "signed exploit charges, no std division, no KL anchor, cosine-decayed learning rate 3e-4, 4 groups of 4); "
        "`paper_CREDIT_LAMBDA` = the paper's three pools and rewards with that credit mode and lambda_e, learning rate "
        "3e-4; `br_warm` = `br` after the paper tables' warm start (100 supervised steps of 32 episodes on the "
        "paper's demonstrators). All others: no warm start. All: common chance within a group, learner seats "
        "alternating between groups. NashConv is exact over Leduc's 936 information sets (each seat's best-response "
        "value summed); the evaluation's "
        "metrics are per hand against every pool; 'SEPO min' is the SEPO phase's time without compiles.", "", *rows, "",
        f"![Leduc frontier]({os.path.basename(args.out)}.png)"])
    with open(args.out + ".md", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
