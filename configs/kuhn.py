"""SEPO on repeated Kuhn poker with the embedded model: SFT on the CFR+ equilibrium, then SEPO `exact`.

The README's main command. The embedded model reads the compact prompt (it learns the game by
playing, and every prompt token costs CPU time); lambdas, beta and temperature are the paper's.
"""

from sepo_jax.config import default_config


def get_config():
    c = default_config("kuhn")
    c.compact_prompt = True
    c.rollout.groups_per_opponent = 1
    c.sft.steps = 200
    c.grpo.learning_rate = 1e-5  # 1e-4 let noisy group advantages walk the policy off equilibrium
    c.sft.episodes = 32
    c.steps = 100
    return c
