import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.config import default_config, settings
from sepo_jax.rl import rollout
from sepo_jax.rl.trainer import make_layout


class _Null:
    def render(self, game, state, player):
        return jnp.zeros(1, jnp.int32), jnp.ones(1, bool)


def test_layout_groups_every_pool_opponent_and_the_best_response():
    game = games.make("kuhn")
    c = default_config("kuhn")
    c.rollout.group_size, c.rollout.groups_per_opponent, c.rollout.learner_seat = 3, 2, -1
    lay = make_layout(game, settings(c))
    per_group = lay.opponent.reshape(-1, 3)
    assert (per_group == per_group[:, :1]).all()  # one opponent per group
    names = [game.opponent_names[i] if i < game.tabular_id else "BR" for i in per_group[:, 0]]
    assert names == ["NashApprox"] * 2 + ["TightPassive"] * 2 + ["LooseAggressive"] * 2 + ["NashApprox"] * 2 + [
        "AlwaysBet"] * 2 + ["BR"] * 2 + ["LooseAggressive"] * 2
    assert lay.pool.reshape(-1, 3)[:, 0].tolist() == [0] * 6 + [1] * 6 + [2] * 2
    assert lay.seat.reshape(-1, 3)[:, 0].tolist() == [0, 1] * 7


def test_rollout_records_every_learner_decision():
    game = games.make("kuhn")
    num = 64
    seat = jnp.arange(num, dtype=jnp.int32) % 2
    opponent = jnp.full(num, game.opponent_id("NashApprox"), jnp.int32)
    learner = rollout.opponent_learner(game, jnp.full(num, game.opponent_id("RandomLegal"), jnp.int32))
    traj = jax.jit(lambda k: rollout.rollout(game, _Null(), learner, opponent, seat, k))(jax.random.key(0))
    assert bool(traj.finished.all())
    acts = np.asarray(traj.action)
    valid = np.asarray(traj.valid)
    for e in range(num):
        assert (np.asarray(traj.payoffs[e]) != 0).all()  # every Kuhn hand was played to its end
        # the learner moves at least once per hand and at most twice
        per_hand = np.bincount(np.asarray(traj.round[e])[valid[e]], minlength=6)
        assert (per_hand >= 1).all() and (per_hand <= 2).all()
    assert np.allclose(np.exp(traj.logp)[valid], 0.5)  # RandomLegal's probability of what it did
    assert set(np.unique(acts[valid])) <= {0, 1}


@pytest.mark.parametrize("name,kwargs", [("kuhn", {"num_hands": h}) for h in (1, 2, 3, 6)]
                         + [("leduc", {"num_hands": h}) for h in (1, 2, 3)]
                         + [(n, {}) for n in ("ipd", "auction", "negotiation_v1", "negotiation_v2")])
def test_every_episode_fits_the_decision_budget_from_either_seat(name, kwargs):
    """The scan runs `max_decisions` times: enough for the longest episode a seat can face."""
    game = games.make(name, **kwargs)
    num = 256
    seat = jnp.arange(num, dtype=jnp.int32) % 2
    ids = [game.opponent_id(n) for n in game.opponent_names]
    opponent = jnp.asarray(np.resize(ids, num), jnp.int32)
    aggressive = jnp.asarray(np.resize(ids[::-1], num), jnp.int32)
    learner = rollout.opponent_learner(game, aggressive)
    traj = jax.jit(lambda k: rollout.rollout(game, _Null(), learner, opponent, seat, k))(jax.random.key(1))
    assert bool(traj.finished.all())


def test_shared_prefill_equals_every_copy():
    """With common chance a group's first prompts coincide and are prefilled once per group; the
    episodes equal those where every copy is scored on its own (same keys, same rows)."""
    from test_trainer import tiny

    from sepo_jax.rl import trainer

    c = tiny()
    c.rollout.group_size = 4
    t, params, frozen = trainer.build(settings(c))
    lay = t.layout
    learner = t.policy.learner(params, frozen)
    grouped = []

    def shared(*args, group_size=1):
        grouped.append(group_size)
        return learner(*args, group_size=group_size)

    def every_copy(ids, mask, legal, states, key, group_size=1):
        rep = lambda x: jnp.repeat(x, group_size, axis=0)  # noqa: E731
        return learner(rep(ids), rep(mask), rep(legal), states, key)

    def run(fn):
        return jax.jit(lambda k: rollout.rollout(t.game, t.renderer, fn, jnp.asarray(lay.opponent), jnp.asarray(lay.seat),
                                                 k, group_size=4, common_chance=True))(jax.random.key(3))

    a, b = run(shared), run(every_copy)
    assert 4 in grouped
    first = np.asarray(a.prompt_ids[:, 0]).reshape(-1, 4, a.prompt_ids.shape[-1])
    assert (first == first[:, :1]).all()
    np.testing.assert_array_equal(a.action, b.action)
    np.testing.assert_allclose(a.logp, b.logp, atol=1e-5)
