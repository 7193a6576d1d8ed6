"""`games.to_pgx`: Pgx's API for every game under jit(vmap), random legal play to termination; Kuhn
and Leduc are played side by side with Pgx's own kuhn_poker and leduc_holdem on the same deals and
actions, which must pay the same rewards."""

import jax
import jax.numpy as jnp
import numpy as np
import pgx
import pytest

from sepo_jax import games


@pytest.mark.parametrize("name", ["ipd", "auction", "negotiation_v1", "negotiation_v2"])  # Kuhn, Leduc: below
def test_random_legal_play_to_termination_under_jit_vmap(name):
    env = games.to_pgx(name)
    assert isinstance(env, pgx.Env) and env.num_players == 2 and env.num_actions == games.make(name).num_actions
    assert env.id == f"sepo_jax/{name}"

    def episode(key):
        init_key, key = jax.random.split(key)
        state = env.init(init_key)

        def move(carry, key):
            state, total = carry
            a_key, s_key = jax.random.split(key)
            action = jax.random.categorical(a_key, jnp.where(state.legal_action_mask, 0.0, -jnp.inf))
            state = env.step(state, action, s_key)
            return (state, total + state.rewards), None

        (state, total), _ = jax.lax.scan(move, (state, jnp.zeros(2)), jax.random.split(key, env.game.max_steps))
        return state, total

    state, total = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.key(0), 16))
    assert bool(state.terminated.all()) and not bool(state.truncated.any())
    assert state.legal_action_mask.all() and state.observation.shape[0] == 16 and state.observation.ndim == 2
    np.testing.assert_array_equal(total, state.game_state.returns)  # the rewards add up to the game's payoffs
    assert int(state.game_state.illegal.sum()) == 0


def test_illegal_action_follows_pgx():
    env = games.to_pgx("leduc")
    state = jax.jit(lambda k: env.step(env.init(k), 0))(jax.random.key(0))  # FOLD with nothing to call
    assert bool(state.terminated) and state.rewards.tolist() == [-1.0, 1.0]


# ours -> Pgx's action ids, and our card -> Pgx's
PGX = {
    "kuhn": ("kuhn_poker", np.array([1, 0]), lambda c: c),  # Pgx: 0 BET, 1 PASS
    "leduc": ("leduc_holdem", np.array([2, 0, 1]), lambda c: c // 2),  # Pgx: 0 CALL, 1 RAISE, 2 FOLD; ranks
}


@pytest.mark.parametrize("name", ["kuhn", "leduc"])
def test_same_rewards_as_pgx_on_the_same_deals_and_actions(name):
    pgx_name, action_map, card_map = PGX[name]
    ours, theirs = games.to_pgx(name, num_hands=1), pgx.make(pgx_name)
    action_map = jnp.asarray(action_map)

    def episode(deal, key):
        a = ours.init(key)
        a = a.replace(game_state=ours.game.with_cards(a.game_state, deal[None]))
        b = theirs.init(key).replace(current_player=jnp.int32(0), _cards=card_map(deal))
        if name == "leduc":
            b = b.replace(_first_player=jnp.int32(0))

        def move(carry, key):
            a, b = carry
            action = jax.random.categorical(key, jnp.where(a.legal_action_mask, 0.0, -jnp.inf))
            agree = (a.current_player == b.current_player) & (a.terminated == b.terminated)
            agree &= a.terminated | (a.legal_action_mask == b.legal_action_mask[action_map]).all()
            a, b = ours.step(a, action), theirs.step(b, action_map[action])
            return (a, b), (agree, a.rewards, b.rewards)

        (a, b), (agree, ra, rb) = jax.lax.scan(move, (a, b), jax.random.split(key, ours.game.max_steps))
        return agree.all() & a.terminated & b.terminated, ra.sum(0), rb.sum(0)

    deals = jnp.asarray(np.repeat(ours.game.deals(), 4, 0))  # every deal, 4 random action sequences each
    agree, ra, rb = jax.jit(jax.vmap(episode))(deals, jax.random.split(jax.random.key(0), len(deals)))
    assert ours.id == f"sepo_jax/{name}" and ours.num_actions == theirs.num_actions
    assert bool(agree.all())  # same movers, legal actions and ends at every step, and all ended
    np.testing.assert_array_equal(ra, rb)
    assert (np.abs(ra) > 1).any()  # bets were called: not only antes changed hands
