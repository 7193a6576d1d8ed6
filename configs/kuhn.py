"""SEPO on repeated Kuhn poker with the embedded model: SFT on the CFR+ equilibrium, then SEPO `exact`.

The README's main command. The defaults (sepo_jax/config.py) give the embedded model the compact
prompt (it learns the game by playing, and every prompt token costs CPU time); lambdas, beta and
temperature are the paper's.
"""

from sepo_jax.config import default_config


def get_config():
    return default_config("kuhn")
