"""Data and FSDP parallelism: on every mesh layout (data x fsdp) the sharded steps equal the
single-device steps, parameters and optimizer moments are sharded by their logical axes, a batch the
mesh does not divide fails before any compute, and two `jax.distributed` processes on localhost train
in lockstep to the single-process parameters. The tiny config and the loop live in multihost_worker.py."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from multihost_worker import SEPO_STEPS, SFT_STEPS, host_params, tiny_config, train
from sepo_jax.config import settings
from sepo_jax import parallel
from sepo_jax.rl import trainer

RTOL, ATOL = 1e-5, 1e-6
WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


@pytest.fixture(scope="module")
def single_device():
    """Params and per-step metrics of 2 SFT + 2 SEPO steps on a 1-device mesh (the reference)."""
    state, metrics = train(tiny_config(), parallel.make_mesh(1))
    return host_params(state.params), {k: np.asarray(v) for k, v in metrics.items()}


def _assert_same(params, metrics, ref_params, ref_metrics, adam_outliers: float = 0.0):
    """Metrics and parameters equal to RTOL/ATOL. With `adam_outliers` = f, up to a share f of a
    parameter's entries may differ by up to one SFT learning rate per step instead: where a gradient
    entry cancels to ~0, its relative error is large whatever the summation order, and Adam's
    normalisation turns it into an update of up to the learning rate."""
    assert metrics.keys() == ref_metrics.keys()
    for k in ref_metrics:
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=RTOL, atol=ATOL, err_msg=k)
    assert params.keys() == ref_params.keys()
    bound = tiny_config().sft.learning_rate * (SFT_STEPS + SEPO_STEPS)
    for k in ref_params:
        off = ~np.isclose(params[k], ref_params[k], rtol=RTOL, atol=ATOL)
        if off.mean() > adam_outliers or np.abs(params[k] - ref_params[k]).max() > bound:
            np.testing.assert_allclose(params[k], ref_params[k], rtol=RTOL, atol=ATOL, err_msg=k)


@pytest.mark.parametrize("data,fsdp", [pytest.param(8, 1, marks=pytest.mark.slow), (2, 4),
                                       pytest.param(1, 8, marks=pytest.mark.slow)])
def test_sharded_step_equals_single_device(single_device, data, fsdp):
    assert jax.device_count() == 8
    mesh = parallel.make_mesh(data, fsdp)
    state, metrics = train(tiny_config(), mesh)
    if fsdp > 1:  # every weight matrix (and its Adam moments) split over fsdp along its embed axis
        kernel = state.params["layers"]["mlp"]["up_proj"]["kernel"]
        assert kernel.sharding.spec[list(kernel.get_metadata("out_sharding")).index("embed")] == "fsdp"
        assert kernel.addressable_shards[0].data.shape[-2] == kernel.shape[-2] // fsdp
        mu = state.sft_opt[1][0].mu["layers"]["mlp"]["up_proj"]["kernel"]
        assert mu.sharding == kernel.sharding
    ref_params, ref_metrics = single_device
    assert np.isfinite(ref_metrics["3/loss"]) and ref_metrics["3/nonfinite_updates"] == 0
    # the sharded program sums in another order: as across processes, a rare near-zero gradient entry can
    # differ by one Adam step (seen once in 2,048 entries of one matrix after 6 steps)
    _assert_same(host_params(state.params), {k: np.asarray(v) for k, v in metrics.items()}, ref_params, ref_metrics,
                 adam_outliers=0.01)


def test_mesh_settings_name_the_key():
    for data, fsdp, match in [(3, 4, r"mesh.data=3 x config.mesh.fsdp=4 needs 12"), (-1, 3, "mesh.fsdp=3 does not divide"),
                              (0, 1, "mesh.data=0"), (-1, -1, "both be -1")]:
        with pytest.raises(ValueError, match=match):
            parallel.make_mesh(data, fsdp)


@pytest.mark.parametrize("key, value, culprit", [
    ("rollout.groups_per_opponent", 1, "SEPO batch"),  # 7 groups x 2 = 14 slots
    ("sft.episodes", 12, "sft.episodes"),
])
def test_indivisible_batch_raises_before_compute(key, value, culprit):
    c = tiny_config()
    with c.unlocked():
        section, name = key.split(".")
        c[section][name] = value
    with pytest.raises(ValueError, match=rf"{culprit}.*not divisible by the 8 devices"):
        trainer.build(settings(c), mesh=parallel.make_mesh(2, 4))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [1, 2])
def test_two_processes_train_in_lockstep(single_device, tmp_path, fsdp):
    """2 processes x 1 CPU device each, one global mesh of 2 (data or fsdp): both end with the
    single-device params."""
    port = _free_port()
    procs, outs = [], []
    for i in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
               "SEPO_TEST_FSDP": str(fsdp),
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}
        outs.append(tmp_path / f"process{i}.npz")
        procs.append(subprocess.Popen([sys.executable, WORKER, str(outs[-1])], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = [dict(np.load(o)) for o in outs]
    assert [int(r.pop("process")) for r in results] == [0, 1]
    assert [int(r.pop("devices")) for r in results] == [2, 2]
    for k in results[0]:  # lockstep: bit-identical on both processes
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)
    ref_params, ref_metrics = single_device
    metrics = {k.removeprefix("metric:"): v for k, v in results[0].items() if k.startswith("metric:")}
    params = {k: v for k, v in results[0].items() if not k.startswith("metric:")}
    # across processes the gradients are summed by another collective (and not in the same order from run to
    # run), so a few Adam-amplified entries differ: see _assert_same
    _assert_same(params, metrics, ref_params, ref_metrics, adam_outliers=0.01)


@pytest.mark.slow
def test_conversation_steps_on_a_mesh_equal_one_device():
    """The conversation format's rollout carries a KV cache per episode across decisions: sharded over 2 x 4
    devices a SEPO step from the same parameters plays the same episodes and takes the same gradient (read as
    plain SGD with learning rate 1: through Adam, lr * sign(g) of near-zero entries amplifies summation-order
    noise; 6 of 512 entries of one matrix differed by up to 1.8e-5 after 4 Adam steps)."""
    c = tiny_config()
    c.prompt.format = "conversation"

    def gradient(mesh):
        setup, params, frozen = trainer.build(settings(c), mesh)
        setup = dataclasses.replace(setup, rl_tx=optax.sgd(-1.0))  # params + gradient
        setup = dataclasses.replace(setup, shardings=parallel.logical_shardings(
            mesh, jax.eval_shape(lambda p: trainer._new_state(setup, p), params)))
        state, frozen = trainer.start_sepo(trainer.init_state(setup, params)), trainer.place_frozen(setup, frozen)
        before = host_params(state.params)
        state, metrics = trainer.make_sepo_step(setup)(state, frozen)
        after = host_params(state.params)
        return {k: after[k] - before[k] for k in before}, {k: np.asarray(v) for k, v in metrics.items()}

    (grads, metrics), (ref_grads, ref_metrics) = gradient(parallel.make_mesh(2, 4)), gradient(parallel.make_mesh(1))
    assert metrics.keys() == ref_metrics.keys()
    for k in ref_metrics:
        np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=RTOL, atol=ATOL, err_msg=k)
    largest = max(np.abs(g).max() for g in ref_grads.values())
    assert largest > 1e-4
    for k in ref_grads:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=RTOL, atol=1e-6 * largest, err_msg=k)
