"""Exact game theory under jit: game trees, best responses, NashConv, CFR+, stage-game BRs, metrics.

Host-side, validated: `nash_conv(game, policy)` / `exploitability(game, policy)` with `policy` an
OpenSpiel policy dict or a table. Jitted array forms: `nash_conv_table`, `best_responses`, ...
"""

from sepo_jax.equilibrium.best_response import (
    best_responses,
    check_table,
    counterfactual_values,
    exploitability_table,
    legal_mask,
    nash_conv_table,
    policy_values,
    uniform_table,
    used_rows,
)
from sepo_jax.equilibrium.cfr import cfr_plus, equilibrium_table, kuhn_equilibrium
from sepo_jax.equilibrium.openspiel import (
    exploitability,
    info_state_strings,
    info_state_to_row,
    nash_conv,
    policy_to_table,
    table_to_policy,
)
from sepo_jax.equilibrium.tree import NUM_ACTIONS, NUM_INFOSETS, get_tree

__all__ = [
    "NUM_ACTIONS", "NUM_INFOSETS", "best_responses", "cfr_plus", "check_table", "counterfactual_values",
    "equilibrium_table", "exploitability", "exploitability_table", "get_tree", "info_state_strings",
    "info_state_to_row", "kuhn_equilibrium", "legal_mask", "nash_conv", "nash_conv_table", "policy_to_table",
    "policy_values", "table_to_policy", "uniform_table", "used_rows",
]
