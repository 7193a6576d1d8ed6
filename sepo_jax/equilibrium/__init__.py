"""Exact game theory under jit, built from the games' own rules: game trees, best responses, NashConv,
CFR+, stage-game best responses and exposure, Kuhn's frequency report (`frequencies`).

Host-side, validated: `nash_conv(game, policy)` / `exploitability(game, policy)` with `policy` an
OpenSpiel policy dict or a table. Array forms (a game object or its name, then tables):
`nash_conv_table`, `best_responses`, ...; `exposure(game, table)` on the repeated stage games.
"""

from sepo_jax.equilibrium.best_response import (
    best_responses,
    check_table,
    counterfactual_values,
    exploitability_table,
    legal_mask,
    nash_conv_table,
    policy_values,
    rules_key,
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
from sepo_jax.equilibrium.stage import exposure
from sepo_jax.equilibrium.tree import get_tree

__all__ = [
    "best_responses", "cfr_plus", "check_table", "counterfactual_values",
    "equilibrium_table", "exploitability", "exploitability_table", "exposure", "get_tree", "info_state_strings",
    "info_state_to_row", "kuhn_equilibrium", "legal_mask", "nash_conv", "nash_conv_table", "policy_to_table",
    "policy_values", "rules_key", "table_to_policy", "uniform_table", "used_rows",
]
