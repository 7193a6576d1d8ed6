"""Credit-mode ablation on Kuhn (SEPO.md §3): configs/kuhn.py with `sepo.credit = "auxiliary"`.

Run the four ablation configs with the same seed and steps to compare the credit modes side by side;
experiments/ablation_credit.py does this over seeds, on Kuhn and IPD.
"""

from sepo_jax.config import default_config


def get_config():
    c = default_config("kuhn")
    c.sepo.credit = "auxiliary"
    return c
