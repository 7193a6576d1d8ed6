"""SEPO on repeated Kuhn poker with the embedded model: SFT on the CFR+ equilibrium, then the paper's SEPO
(three pools, its lambdas, beta and temperature) with `exact` credit.

The main command's default before the safety-frontier study (`configs/kuhn.py` now finds the equilibrium
without seeing it). Here the warm start imitates the equilibrium (NashConv ~0.004) and SEPO keeps it
there (~0.01 after 100 steps): it shows the paper's objective does not push an equilibrium policy away,
not that SEPO finds one. The defaults (sepo_jax/config.py) give the embedded model the compact prompt.
"""

from sepo_jax.config import default_config


def get_config():
    return default_config("kuhn")
