"""SEPO on auction (docs/method.md §1-4 defaults; see sepo_jax/config.py)."""

from sepo_jax.config import default_config


def get_config():
    return default_config("auction")
