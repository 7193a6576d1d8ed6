"""sepo_jax: Safe Equilibrium Policy Optimization for LLM agents in strategic games, in JAX."""

__version__ = "0.1.0"
