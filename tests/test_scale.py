"""Weights are arguments of the steps, never constants compiled into them: the SEPO step of a
SmolLM2-135M-shaped model with LoRA, lowered from abstract weights, embeds less than 1 MiB."""

import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax import parallel, scale
from sepo_jax.config import default_config, settings, validate


def test_constant_bytes_counts_a_closed_over_array():
    big = jnp.asarray(np.random.default_rng(0).standard_normal((512, 1024)), jnp.float32)  # 2 MiB
    closed = jax.jit(lambda x: x @ big).lower(jnp.ones((2, 512)))
    passed = jax.jit(lambda x, w: x @ w).lower(jnp.ones((2, 512)), big)
    assert scale.constant_bytes(closed) >= big.nbytes
    assert scale.constant_bytes(passed) < 1024


def test_sepo_step_of_a_135m_lora_model_embeds_no_weights():
    c = default_config("kuhn")
    c.compact_prompt = False
    c.num_hands = 2
    c.model.lora_rank = 4
    c.rollout.group_size, c.rollout.groups_per_opponent = 2, 1
    validate(c)
    shape = scale.model_config("smollm2-135m", c)
    _, (_, frozen), lowered = scale.lower_sepo_step(settings(c), shape, parallel.make_mesh(1))
    frozen_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(frozen))
    assert frozen_bytes > 100 * 2**20  # the base weights are there, as arguments
    assert scale.constant_bytes(lowered) < 2**20
