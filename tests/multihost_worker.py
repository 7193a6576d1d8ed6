"""One process of the 2-process lockstep test in tests/test_parallel.py, and the tiny config the
parallel tests share. Run as `python tests/multihost_worker.py OUT.npz` with JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID set: it joins `jax.distributed`, trains a few steps on the
global mesh and writes its final parameters and every step's metrics to OUT.npz."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from sepo_jax import parallel
from sepo_jax.config import default_config, settings, validate

SFT_STEPS, SEPO_STEPS = 2, 2


def tiny_config(sft_steps: int = SFT_STEPS):
    """Kuhn, 2 hands, compact prompt, a 1-layer model: 28 groups of 2 = 56 slots per SEPO step (divisible by 8)."""
    c = default_config("kuhn")
    c.compact_prompt, c.num_hands = True, 2
    c.sft.steps, c.sft.episodes = sft_steps, 8
    c.steps = SEPO_STEPS
    c.rollout.group_size, c.rollout.groups_per_opponent = 2, 4
    c.model.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    validate(c)
    return c


def train(c, mesh, sft_steps: int = SFT_STEPS, sepo_steps: int = SEPO_STEPS):
    """(final state, metrics of every step as {'<step>/<name>': array}) of config `c` on `mesh`."""
    from sepo_jax.rl import trainer

    setup, params, frozen = trainer.build(settings(c), mesh)
    state, frozen = trainer.init_state(setup, params), trainer.place_frozen(setup, frozen)
    sft_step, sepo_step = trainer.make_sft_step(setup), trainer.make_sepo_step(setup)
    metrics = {}
    for i in range(sft_steps + sepo_steps):
        if i == sft_steps:
            state = trainer.start_sepo(state)
        state, m = (sepo_step if i >= sft_steps else sft_step)(state, frozen)
        metrics.update({f"{i}/{k}": v for k, v in m.items()})
    return state, metrics


def host_params(params) -> dict[str, np.ndarray]:
    """{path: array} of parameters, gathered whole (sharded ones too) and read on this process."""
    leaves = jax.tree_util.tree_leaves_with_path(parallel.gather(params))
    return {jax.tree_util.keystr(p): np.asarray(x.addressable_data(0)) for p, x in leaves}


def main(out: str) -> None:
    parallel.initialize_distributed()
    fsdp = int(os.environ.get("SEPO_TEST_FSDP", "1"))
    state, metrics = train(tiny_config(), parallel.make_mesh(-1, fsdp))
    np.savez(out, process=jax.process_index(), devices=jax.device_count(), **host_params(state.params),
             **{f"metric:{k}": np.asarray(v.addressable_data(0)) for k, v in metrics.items()})


if __name__ == "__main__":
    main(sys.argv[1])
