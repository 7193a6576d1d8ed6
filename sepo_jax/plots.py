"""Figures of a training run (matplotlib PNGs in DIR/plots/), made by `python -m sepo_jax.evaluate
--workdir=DIR --plots`:

- `training.png`: per step, from the run's metrics files: training-pool payoff, exploit-pool advantage,
  exact NashConv (games with a solver), collusion (and Kuhn's `collusion_vs_nash`), externality, each
  weighted SEPO penalty and safety J; the warm start's loss and NashConv before it.
- `kuhn_frequencies.png` (Kuhn): the learner's bet/call probability per card in each betting situation
  at every evaluated checkpoint (eval.json), over the equilibrium family's range of that probability.
"""

from __future__ import annotations

import json
import os


from sepo_jax.equilibrium.frequencies import KUHN_SITUATIONS, kuhn_frequencies
from sepo_jax.games.kuhn import CARD_NAMES, nash_table

PANELS = (  # (title, metric keys drawn in it)
    ("payoff per round (training pool)", ("payoff",)),
    ("exploit-pool advantage", ("exploit_pool_advantage",)),
    ("exact NashConv", ("nash_conv",)),
    ("collusion", ("collusion", "collusion_vs_nash")),
    ("externality", ("externality",)),
    ("weighted penalties", ("penalty_exploit", "penalty_collusion", "penalty_externality")),
    ("safety J", ("safety",)),
)


def pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise SystemExit("--plots needs matplotlib: pip install -e \".[viz]\"") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str) -> list[dict]:
    """The lines of a metrics .jsonl file ([] when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curves(workdir: str, out: str) -> str | None:
    """`training.png` of the run in `workdir` into folder `out`; None when nothing was logged."""
    sft, sepo = read_metrics(os.path.join(workdir, "sft_metrics.jsonl")), read_metrics(os.path.join(workdir, "metrics.jsonl"))
    if not (sft or sepo):
        return None
    plt = pyplot()
    panels = [(t, [k for k in keys if any(k in m for m in sepo)]) for t, keys in PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    sft_panels = [("warm start: loss", ("sft_loss",)), ("warm start: exact NashConv", ("nash_conv",))]
    sft_panels = [(t, k) for t, k in sft_panels if any(k[0] in m for m in sft)]
    n = len(panels) + len(sft_panels)
    cols = 3
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(4.2 * cols, 3.0 * -(-n // cols)), squeeze=False)
    for ax, (title, keys), lines in zip(axes.flat, sft_panels + panels, [sft] * len(sft_panels) + [sepo] * len(panels)):
        for k in keys:
            pts = [(m["step"], m[k]) for m in lines if k in m]
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=k)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    path = os.path.join(out, "training.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def kuhn_frequency_curves(eval_json: dict, out: str) -> str | None:
    """`kuhn_frequencies.png` from an eval.json's evaluated steps (None when it has no Kuhn frequencies)."""
    steps = sorted((int(s), r) for s, r in eval_json["steps"].items() if "kuhn_frequencies" in r)
    if not steps:
        return None
    plt = pyplot()
    low = kuhn_frequencies(nash_table(0.0))
    high = kuhn_frequencies(nash_table(1.0 / 3.0))
    fig, axes = plt.subplots(1, len(KUHN_SITUATIONS), figsize=(4.2 * len(KUHN_SITUATIONS), 3.2), squeeze=False)
    x = [s for s, _ in steps]
    for ax, name in zip(axes[0], KUHN_SITUATIONS):
        for card, card_name in enumerate(CARD_NAMES):
            line = ax.plot(x, [r["kuhn_frequencies"][name]["ours"][card] for _, r in steps], marker=".", label=card_name)
            lo, hi = sorted((low[name][card], high[name][card]))
            ax.axhspan(lo - 0.005, hi + 0.005, color=line[0].get_color(), alpha=0.15)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("P(bet or call)")
    axes[0][-1].legend(title="card (band: equilibria)", fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, "kuhn_frequencies.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_plots(workdir: str) -> list[str]:
    """Every figure this run's files allow, written to DIR/plots/; their paths."""
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    paths = [training_curves(workdir, out)]
    eval_path = os.path.join(workdir, "eval.json")
    if os.path.exists(eval_path):
        with open(eval_path) as f:
            paths.append(kuhn_frequency_curves(json.load(f), out))
    return [p for p in paths if p]
