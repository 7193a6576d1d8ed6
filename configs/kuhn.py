"""The README's main command: SEPO finds Kuhn poker's equilibrium by itself, from the untrained embedded
model, with no warm start and no equilibrium anywhere in training (exact NashConv ~0.93-1.05 -> 0.005-0.013
in 1,000 steps, about 2.5 minutes on one CPU core; README, "Does SEPO reach the equilibrium?").

The setting the safety-frontier study found (experiments/results/safety_frontier_findings.md): SEPO
`exact` whose only training episodes play the exact best response to the current policy
(`sepo.pools=("exploit",)`, `sepo.exploit_opponents="best_response"`), each round charged its own signed
exploit advantage (`sepo.exploit_signal="round"`), group advantages not divided by their standard
deviation (`grpo.scale_std=False`: it makes equilibrium indifference a non-fixed point), no KL anchor to
the untrained model (`grpo.beta=0`), and a learning rate decayed to 0 over the run so the last policy
settles (`grpo.lr_schedule="cosine"`). The paper's three pools and rewards move a policy away from the
equilibrium instead. The equilibrium warm start of the paper's setting: `configs/kuhn_equilibrium.py`.
"""

from sepo_jax.config import default_config


def get_config():
    c = default_config("kuhn")
    c.sft.steps = 0  # with a warm start (--config.sft.steps=N), the paper's demonstrators, not the equilibrium
    c.sft.expert = "demonstrators"
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
