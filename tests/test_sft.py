import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games
from sepo_jax.config import default_config, settings, validate
from sepo_jax.equilibrium import best_response
from sepo_jax.rl import readout, sft, trainer

from test_trainer import tiny


def test_cross_entropy_by_hand():
    legal = jnp.array([[True, True, False], [True, True, True], [True, False, True]])
    target = jnp.array([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    logp = jnp.log(jnp.array([[0.5, 0.5, 1.0], [0.2, 0.3, 0.5], [0.9, 1.0, 0.1]]))
    batch = sft.Batch(None, None, legal, target, jnp.array([True, True, False]))
    want = (-(0.25 * np.log(0.5) + 0.75 * np.log(0.5)) - np.log(0.2)) / 2  # the third row is not valid
    np.testing.assert_allclose(float(sft.cross_entropy(logp, batch)), want, rtol=1e-6)


def test_demonstrators_are_drawn_in_the_papers_proportions():
    game = games.make("ipd")
    ids = np.asarray(sft.demonstrator_ids(game, jax.random.key(0), 40_000))
    for name, weight in game.demonstrators.items():
        share = (ids == game.opponent_id(name)).mean()
        assert abs(share - weight / sum(game.demonstrators.values())) < 0.01, name


def test_expert_targets_are_distributions_on_the_legal_actions():
    game = games.make("ipd")
    t, _, _ = trainer.build(settings(tiny("ipd")))
    num = 16
    expert = sft.demonstrator_ids(game, jax.random.key(1), num)
    opponent = jnp.full(num, game.opponent_id("TitForTat"), jnp.int32)
    batch = jax.jit(lambda k: sft.expert_batch(game, t.renderer, expert, None, opponent, jnp.zeros(num, jnp.int32), k))(
        jax.random.key(2))
    valid = np.asarray(batch.valid)
    target, legal = np.asarray(batch.target)[valid], np.asarray(batch.legal)[valid]
    assert valid.sum() == num * 8  # every round of every IPD episode is a decision
    np.testing.assert_allclose(target.sum(-1), 1.0, atol=1e-6)
    assert (target[~legal] == 0).all()


def _mixture_marginal(game, names, weights):
    """The supervised optimum at the first mover's information sets of one Kuhn hand: each
    demonstrator's action distribution weighted by its prior times its own reach of the set."""
    states, mover, rows = readout.infoset_states(game)
    _, _, paths = readout._histories(game.name)
    out = {}
    for i in np.flatnonzero(np.asarray(mover) == 0):
        num = np.zeros(game.num_actions)
        for name, w in zip(names, weights):
            d = game.opponent_id(name)
            reach = 1.0
            start = jax.tree.map(lambda x: x[i], states)
            replay = game.init(jax.random.key(0))  # the deal of row i, before any action
            replay = game.with_cards(replay, start.data["cards"])
            for a in paths[i][paths[i] >= 0]:
                if int(replay.current_player) == 0:
                    reach *= float(game.opponent_probs(d, replay, 0)[a])
                replay = game.step(replay, jnp.int32(a), jax.random.key(0))
            num += w * reach * np.asarray(game.opponent_probs(d, start, 0))
        out[int(rows[i])] = num / num.sum()
    return out


@pytest.mark.slow
def test_demonstrator_warm_start_learns_the_mixtures_marginal():
    c = tiny(num_hands=1, steps=0)
    c.model.hidden_size, c.model.num_layers, c.model.num_heads, c.model.intermediate_size = 64, 2, 4, 192
    c.rollout.learner_seat = 0
    c.sft.expert, c.sft.steps, c.sft.episodes = "demonstrators", 400, 64
    t, params, frozen = trainer.build(settings(c))
    want = _mixture_marginal(t.game, list(t.game.demonstrators), list(t.game.demonstrators.values()))
    state, step = trainer.init_state(t, params), trainer.make_sft_step(t)
    for _ in range(c.sft.steps):
        state, _ = step(state, frozen)
    gap = lambda table: max(abs(np.asarray(table)[r, 1] - p[1]) for r, p in want.items())  # noqa: E731
    err, untrained = gap(trainer.strategy(t, state.params, frozen)), gap(trainer.strategy(t, params, frozen))
    assert err < 0.1 and err < 0.25 * untrained, (err, untrained)


@pytest.mark.parametrize("game,expert,match", [("ipd", "equilibrium", "exact solver"), ("kuhn", "teacher", "sft.expert")])
def test_bad_expert_names_the_key(game, expert, match):
    c = default_config(game)
    c.sft.expert = expert
    with pytest.raises(ValueError, match=match):
        validate(c)


def test_evaluation_payoff_matches_the_exact_value_of_the_read_out_strategy():
    """One Kuhn hand per episode, learner first: the sampled mean payoff against each training
    opponent equals the exact value of the model's read-out table against that opponent's table."""
    c = tiny(num_hands=1)
    c.rollout.learner_seat = 0
    t, params, frozen = trainer.build(settings(c))
    game = t.game
    learner = np.asarray(trainer.strategy(t, params, frozen))
    states, mover, rows = readout.infoset_states(game)
    episodes = 4096
    m, _ = trainer.make_evaluate(t, episodes)(params, frozen, jax.random.key(3))
    exact = []
    for name in game.pools["train"]:
        probs = jax.vmap(lambda s, p: game.opponent_probs(game.opponent_id(name), s, p))(states, mover)
        table = learner.copy()
        second = np.asarray(mover) == 1
        table[np.asarray(rows)[second]] = np.asarray(probs)[second]
        exact.append(float(best_response.policy_values("kuhn", jnp.asarray(table))[0]))
    # a Kuhn hand pays at most 2 in absolute value: the standard error is below 2 / sqrt(3 * 4096)
    assert abs(float(m["payoff"]) - np.mean(exact)) < 4 * 2 / np.sqrt(3 * episodes)
