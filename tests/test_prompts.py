import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sepo_jax import games


class ByteTokenizer:
    """UTF-8 bytes as ids (pad 256): an independent, trivially exact tokenizer."""

    pad_id = 256

    def encode(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(int(i) for i in ids if i < 256).decode()


def random_states(game, n, seed):
    """States after a random number of random legal moves (some finished)."""
    pid = game.opponent_id(game.pools["train"][0])
    policy = games.opponents_policy(game, jnp.array([pid, pid]))

    def one(key):
        k1, k2, k3 = jax.random.split(key, 3)
        state = game.init(k1)
        stop = jax.random.randint(k2, (), 0, game.max_steps)

        def move(i, s):
            a_key, e_key = jax.random.split(jax.random.fold_in(k3, i))
            probs = policy(s, jnp.maximum(s.current_player, 0))
            new = game.step(s, games.play_lib.sample(probs, jax.random.uniform(a_key)), e_key)
            return jax.tree.map(lambda a, b: jnp.where(i < stop, a, b), new, s)

        return jax.lax.fori_loop(0, game.max_steps, move, state)

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), n))


@pytest.mark.parametrize("name", games.GAMES)
def test_ids_decode_to_render_text(name):
    game = games.make(name)
    tok = ByteTokenizer()
    renderer = games.PromptRenderer(game, tok, wrap=("<user>", "</user>"))
    states = random_states(game, 24, seed=1)
    players = jnp.maximum(states.current_player, 0)
    ids, mask = jax.jit(jax.vmap(lambda s, p: renderer.render(game, s, p)))(states, players)
    assert ids.shape == (24, renderer.length)
    for i in range(24):
        s = jax.tree.map(lambda x: x[i], states)
        text = games.render_text(game, s, int(players[i]))
        row, m = np.asarray(ids[i]), np.asarray(mask[i])
        assert m[-1] and (not m.any() or m[np.argmax(m):].all())  # left padded
        assert tok.decode(row[m]) == "<user>" + text + "</user>"


def test_actions_encode_and_decode():
    game = games.make("kuhn")
    r = games.PromptRenderer(game, ByteTokenizer())
    assert [ByteTokenizer().decode(r.action_ids[a][: r.action_len[a]]) for a in range(2)] == [" PASS", " BET"]


def test_tokenizer_that_cannot_encode_an_action_is_rejected():
    class Lossy(ByteTokenizer):
        def decode(self, ids):
            return super().decode(ids).upper().replace("BET", "B")

    with pytest.raises(ValueError, match="cannot encode action 'BET'"):
        games.PromptRenderer(games.make("kuhn"), Lossy())


def test_player_one_cannot_see_a_pending_simultaneous_move():
    for name in ("ipd", "auction", "negotiation_v1"):
        game = games.make(name)
        s = game.init(jax.random.key(0))
        a = game.step(s, 0, jax.random.key(1))
        b = game.step(s, game.num_actions - 1, jax.random.key(1))
        assert games.render_text(game, a, 1) == games.render_text(game, b, 1)
        assert int(game.infoset_index(a, 1)) == int(game.infoset_index(b, 1))


def test_embedded_tokenizer_round_trips_every_game():
    from sepo_jax.model.tokenizer import embedded_tokenizer

    tok = embedded_tokenizer(games.template_texts())
    for name in games.GAMES:
        game = games.make(name)
        renderer = games.PromptRenderer(game, tok)
        state = random_states(game, 1, seed=2)
        s = jax.tree.map(lambda x: x[0], state)
        player = max(int(s.current_player), 0)
        ids, mask = renderer.render(game, s, player)
        assert tok.decode(np.asarray(ids)[np.asarray(mask)].tolist()) == games.render_text(game, s, player)
        assert tok.unk_id is None or tok.unk_id not in np.asarray(ids)[np.asarray(mask)]
