"""The credit ablation (docs/method.md §3), one mode per run: `--config=configs/ablation.py:MODE` on Kuhn or
`--config=configs/ablation.py:GAME,MODE`, MODE one of reward_only, shared, auxiliary, credited, exact
(exact: Kuhn and Leduc). experiments/ablation_credit.py runs every mode side by side over seeds from
one shared warm start; its results are in experiments/results/ablation_credit_*.md.
"""

from sepo_jax.config import ablation_config


def get_config(arg: str = "kuhn,exact"):
    game, _, mode = arg.rpartition(",")
    return ablation_config(game or "kuhn", mode)
