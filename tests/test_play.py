import jax
import jax.numpy as jnp
import numpy as np

from sepo_jax.games.play import sample

U_MAX = 1.0 - 2.0**-23  # the largest float32 jax.random.uniform returns


def test_sample_draws_in_proportion_to_the_weights():
    weights = jnp.array([[0.2, 0.0, 0.5, 0.3], [2.0, 0.0, 0.0, 6.0]])  # the second row is unnormalised
    n = 200_000
    u = jax.random.uniform(jax.random.key(0), (n, 2))
    draws = np.asarray(sample(jnp.broadcast_to(weights, (n, 2, 4)), u))
    for row, want in enumerate(np.asarray(weights / weights.sum(-1, keepdims=True))):
        freq = np.bincount(draws[:, row], minlength=4) / n
        np.testing.assert_allclose(freq, want, atol=4 * np.sqrt(0.25 / n))


def test_sample_never_draws_a_zero_weight_action():
    rng = np.random.default_rng(0)
    weights = rng.random((4096, 5)).astype(np.float32) * (rng.random((4096, 5)) < 0.5)
    weights[:, rng.integers(0, 5)] += 1e-7  # no all-zero row
    for u in (0.0, U_MAX, 0.5):
        draws = np.asarray(sample(jnp.asarray(weights), jnp.full(4096, u, jnp.float32)))
        assert (weights[np.arange(4096), draws] > 0).all(), u
    last_zero = jnp.array([1 / 3, 1 / 3, 1 / 3, 0.0])  # the total may round below 1
    assert int(sample(last_zero, jnp.float32(U_MAX))) == 2
    assert float(jax.random.uniform(jax.random.key(1), (1 << 20,)).max()) <= U_MAX
