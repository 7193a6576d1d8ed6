import jax.numpy as jnp
import numpy as np

from sepo_jax.rl import grpo


def test_per_round_advantages_by_hand():
    rew = jnp.array([[[1.0, 0.0], [3.0, 0.0]], [[2.0, 5.0], [2.0, 1.0]]])  # [G=2, n=2, R=2]
    adv, zero = grpo.advantages(rew, "per_round", scale_std=True)
    # group 0, round 0: rewards 1, 3 -> mean 2, std 1 -> -1, +1; round 1: both 0 -> zero variance -> 0
    np.testing.assert_allclose(adv[0, :, 0], [-1.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(adv[0, :, 1], [0.0, 0.0])
    # group 1, round 0 flat -> 0; round 1: 5, 1 -> mean 3, std 2 -> +1, -1
    np.testing.assert_array_equal(adv[1, :, 0], [0.0, 0.0])
    np.testing.assert_allclose(adv[1, :, 1], [1.0, -1.0], atol=1e-6)
    assert float(zero) == 0.5


def test_per_episode_and_unscaled():
    rew = jnp.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]]])  # sums 3, 7, 5
    adv, _ = grpo.advantages(rew, "per_episode", scale_std=False)
    np.testing.assert_allclose(adv[0, :, 0], [-2.0, 2.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(adv[0, :, 0], adv[0, :, 1])


def test_policy_loss_by_hand():
    logp = jnp.log(jnp.array([0.5, 0.9, 0.2]))
    old = jnp.log(jnp.array([0.25, 1.0, 0.2]))
    ref = jnp.log(jnp.array([0.5, 0.5, 0.4]))
    adv = jnp.array([1.0, -2.0, 3.0])
    w = jnp.array([1.0, 1.0, 0.0])  # third sample is padding
    out = grpo.policy_loss(logp, old, ref, adv, w, clip_eps=0.2, clip_eps_high=0.3, beta=0.1, kl="one_sided")
    # sample 0: ratio 2 -> clipped 1.3, min(2*1, 1.3*1) = 1.3; kl max(0, log .5 - log .5) = 0
    # sample 1: ratio .9 -> inside, surrogate -1.8; kl max(0, log .9 - log .5) = log 1.8
    expected = -1.3 + 1.8 + 0.1 * np.log(1.8)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-6)
    assert float(out["count"]) == 2.0 and float(out["clip_fraction"]) == 1.0
    np.testing.assert_allclose(out["kl"], np.log(1.8), rtol=1e-6)


def test_kl_variants():
    lp, ref = jnp.log(jnp.array([0.2, 0.6])), jnp.log(jnp.array([0.4, 0.3]))
    d = np.log([0.5, 2.0])
    np.testing.assert_allclose(grpo.kl_term(lp, ref, "k1"), d, rtol=1e-6)
    np.testing.assert_allclose(grpo.kl_term(lp, ref, "k3"), np.exp(-d) + d - 1, rtol=1e-6)
    np.testing.assert_allclose(grpo.kl_term(lp, ref, "one_sided"), np.maximum(d, 0), rtol=1e-6)
    np.testing.assert_array_equal(grpo.kl_term(lp, ref, "none"), [0.0, 0.0])
