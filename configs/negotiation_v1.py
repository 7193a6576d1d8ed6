"""SEPO on negotiation_v1 (docs/method.md §1-4 defaults; see sepo_jax/config.py)."""

from sepo_jax.config import default_config


def get_config():
    return default_config("negotiation_v1")
