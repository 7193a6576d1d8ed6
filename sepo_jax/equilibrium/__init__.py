"""Exact game theory under jit: game trees, best responses, NashConv, CFR+, stage-game BRs, metrics."""
