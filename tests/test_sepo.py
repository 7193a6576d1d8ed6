"""Credit modes: the penalty's policy-gradient contribution, from REINFORCE on a tabular Kuhn learner.

With unscaled advantages (linear in rewards), the penalty's contribution is adv(rewards) -
adv(rewards without penalties); its gradient is that advantage times the score function
onehot(action) - pi(row) of a softmax table."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.rl import grpo, metrics, rollout, sepo
from sepo_jax.rl.trainer import make_layout
from sepo_jax.config import default_config, settings

GAME = games.make("kuhn")
LAM = metrics.Lambdas(e=1.5, c=2.4, x=0.0, scale=1.5)
NO_PENALTY = metrics.Lambdas(e=0.0, c=0.0, x=0.0, scale=1.5)
N = 4


TABLE = jnp.asarray(np.random.default_rng(0).dirichlet([2, 2], size=12), jnp.float32)


@functools.cache
def _player(credit, groups_per_opponent):
    c = default_config("kuhn")
    c.sepo.credit, c.rollout.group_size, c.rollout.groups_per_opponent = credit, N, groups_per_opponent
    lay = make_layout(GAME, settings(c))
    learner = rollout.opponent_learner(GAME, jnp.full(lay.opponent.shape, GAME.tabular_id), TABLE)
    run = jax.jit(lambda k: rollout.rollout(GAME, _NullRenderer(), learner, jnp.asarray(lay.opponent),
                                            jnp.asarray(lay.seat), k, TABLE))
    return run, jnp.asarray(lay.pool)


def play(credit, groups_per_opponent, seed):
    run, pool = _player(credit, groups_per_opponent)
    return run(jax.random.key(seed)), pool, TABLE


class _NullRenderer:
    """Tabular learners need no prompt."""

    def render(self, game, state, player):
        return jnp.zeros(1, jnp.int32), jnp.ones(1, bool)


def penalty_gradient(traj, pool, table, credit):
    def adv(lam):
        rew, trains = sepo.rewards(traj, pool, credit, lam, N)
        a, _ = grpo.advantages(rew.reshape(-1, N, rew.shape[1]), "per_round", scale_std=False)
        return a.reshape(rew.shape) * trains[:, None]

    a_pen = adv(LAM) - adv(NO_PENALTY)  # [E, R]
    dec = jnp.take_along_axis(a_pen, traj.round, axis=1) * traj.valid
    score = jax.nn.one_hot(traj.action, 2) - traj.probs  # d log softmax / d logits of the acting row
    return a_pen, (dec[..., None] * score).sum((0, 1))


def test_shared_penalty_cancels_exactly():
    traj, pool, table = play("shared", 2, seed=0)
    rew, _ = sepo.rewards(traj, pool, "shared", LAM, N)
    assert float(jnp.abs(rew - sepo.rewards(traj, pool, "shared", NO_PENALTY, N)[0]).max()) > 0.1  # a real penalty
    a_pen, grad = penalty_gradient(traj, pool, table, "shared")
    assert float(jnp.abs(a_pen).max()) < 1e-5
    assert float(jnp.abs(grad).max()) < 1e-4


def test_auxiliary_penalty_has_zero_expected_gradient_while_credited_moves():
    aux, cred = [], []
    for seed in range(6):
        traj, pool, table = play("auxiliary", 24, seed)
        aux.append(penalty_gradient(traj, pool, table, "auxiliary")[1])
        traj, pool, table = play("credited", 24, seed)
        cred.append(penalty_gradient(traj, pool, table, "credited")[1])
    aux, cred = np.stack(aux), np.stack(cred)
    # per-seed noise is large for auxiliary, but its mean is small relative to its spread...
    aux_t = np.abs(aux.mean(0)) / (aux.std(0) / np.sqrt(len(aux)) + 1e-9)
    assert aux_t.max() < 4.0
    # ...while the credited penalty pushes consistently (some entry many standard errors from 0)
    cred_t = np.abs(cred.mean(0)) / (cred.std(0) / np.sqrt(len(cred)) + 1e-9)
    assert cred_t.max() > 5.0


def test_credited_rewards_by_pool():
    traj, pool, _ = play("credited", 1, seed=3)
    rew, trains = sepo.rewards(traj, pool, "credited", LAM, N)
    mine, _ = metrics.seat_payoffs(traj)
    train, exploit, coll = np.asarray(pool == 0), np.asarray(pool == 1), np.asarray(pool == 2)
    np.testing.assert_allclose(rew[train], 1.5 * mine[train], rtol=1e-6)
    e = np.asarray(metrics.episode_exploit(traj))
    np.testing.assert_allclose(rew[exploit], np.repeat(-1.5 * 1.5 * e[exploit][:, None], rew.shape[1], 1), rtol=1e-6)
    np.testing.assert_allclose(rew[coll][:, 0], -2.4 * np.asarray(traj.collusion)[coll], rtol=1e-6)
    assert bool(trains.all())


def test_round_exploit_signal_charges_each_round_its_own_signed_advantage():
    """`exploit_signal="round"`: exploit-pool rounds get -lambda_e*s*(opponent - learner payoff of that round),
    no floor; the train and collusive pools and the default ("episode", the paper's) are unchanged."""
    traj, pool, _ = play("exact", 1, seed=3)
    default, _ = sepo.rewards(traj, pool, "exact", LAM, N)
    episode, _ = sepo.rewards(traj, pool, "exact", LAM, N, exploit_signal="episode")
    rnd, trains = sepo.rewards(traj, pool, "exact", LAM, N, exploit_signal="round")
    np.testing.assert_array_equal(default, episode)
    mine, theirs = metrics.seat_payoffs(traj)
    exploit = np.asarray(pool == sepo.Pool.EXPLOIT)
    assert exploit.sum() == 3 * N  # NashApprox, AlwaysBet and the tabular best response
    np.testing.assert_allclose(rnd[exploit], -1.5 * 1.5 * np.asarray(theirs - mine)[exploit], rtol=1e-6)
    np.testing.assert_array_equal(rnd[~exploit], default[~exploit])
    # zero-sum: the charge is 2*lambda_e*s times the learner's own round payoff, won rounds included
    np.testing.assert_allclose(rnd[exploit], 2 * 1.5 * 1.5 * np.asarray(mine)[exploit], rtol=1e-6, atol=1e-6)
    assert float(np.asarray(rnd[exploit]).max()) > 0 and float(np.asarray(default[exploit]).max()) == 0.0
    assert bool(trains.all())


def test_the_config_validates_the_exploit_signal_and_opponents():
    import ml_collections

    from sepo_jax.config import validate

    c = default_config("kuhn")
    assert (c.sepo.exploit_signal, c.sepo.exploit_opponents) == ("episode", "pool")
    c.sepo.exploit_signal, c.sepo.exploit_opponents = "round", "best_response"
    validate(c)
    for key, value, credit, match in [("exploit_signal", "hand", "exact", "sepo.exploit_signal: must be one of"),
                                      ("exploit_signal", "round", "shared", "sepo.exploit_signal: 'round' is a per-episode"),
                                      ("exploit_opponents", "best_response", "credited", "sepo.exploit_opponents")]:
        d = default_config("kuhn").to_dict()
        d["sepo"][key], d["sepo"]["credit"] = value, credit
        with pytest.raises(ValueError, match=match):
            validate(ml_collections.ConfigDict(d))
    d = default_config("kuhn").to_dict()
    d["sepo"]["exploit_opponents"], d["sepo"]["pools"] = "best_response", ("train", "collusive")
    with pytest.raises(ValueError, match="sepo.exploit_opponents: 'best_response' plays in the exploit pool"):
        validate(ml_collections.ConfigDict(d))


def test_exploit_opponents_best_response_trains_against_the_exact_best_response_alone():
    c = default_config("kuhn")
    full = make_layout(GAME, settings(c))
    c.sepo.exploit_opponents = "best_response"
    alone = make_layout(GAME, settings(c))
    exploit = lambda lay: sorted(set(lay.opponent[lay.pool == sepo.Pool.EXPLOIT].tolist()))  # noqa: E731
    assert exploit(full) == sorted(GAME.pool_ids("exploit")) + [GAME.tabular_id]
    assert exploit(alone) == [GAME.tabular_id]
    others = lambda lay: lay.opponent[lay.pool != sepo.Pool.EXPLOIT].tolist()  # noqa: E731
    assert others(alone) == others(full)  # the other pools are untouched
    assert exploit(make_layout(GAME, settings(c), episodes=8)) == sorted(GAME.pool_ids("exploit"))  # evaluation: the pool
