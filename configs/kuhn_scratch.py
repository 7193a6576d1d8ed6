"""SEPO finds Kuhn poker's equilibrium by itself: no warm start, no equilibrium anywhere in training.

The setting the safety-frontier study found (experiments/results/safety_frontier_findings.md): SEPO
`exact` whose only training episodes play the exact best response to the current policy
(`sepo.pools=("exploit",)`, `sepo.exploit_opponents="best_response"`), each round charged its own signed
exploit advantage (`sepo.exploit_signal="round"`), group advantages not divided by their standard
deviation (`grpo.scale_std=False`: it makes equilibrium indifference a non-fixed point), no KL anchor to
the untrained model (`grpo.beta=0`). The paper's three pools and rewards move a policy away from the
equilibrium instead (README, "Does SEPO reach the equilibrium?").
"""

from sepo_jax.config import default_config


def get_config():
    c = default_config("kuhn")
    c.sft.steps = 0
    c.steps = 1000
    c.log_every = 10
    c.checkpoint_every = 200
    c.rollout.common_chance, c.rollout.groups_per_opponent = True, 4
    c.sepo.pools = ("exploit",)
    c.sepo.exploit_opponents = "best_response"
    c.sepo.exploit_signal = "round"
    c.grpo.scale_std = False
    c.grpo.beta = 0.0
    c.grpo.learning_rate = 3e-4
    c.grpo.lr_schedule = "cosine"
    return c
