"""The conversation prompt format (`prompt.format = "conversation"`): the same facts as the restated
prompt at every decision, turns that fit their static widths, and every decision's log-probs from one
forward pass equal to scoring each decision's prefix on its own (and to what the rollout's KV cache gave)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sepo_jax.config import settings
from sepo_jax import games
from sepo_jax.games import ChatRenderer
from sepo_jax.games.base import INTRO, STATE
from sepo_jax.model import sampler
from sepo_jax.model.transformer import Decoder, ModelConfig

from test_prompts import ByteTokenizer


def _texts(prompt, keep=None):
    """{slot: text} of the slots a prompt shows (restricted to `keep` slots)."""
    values = np.asarray(prompt.values)
    return {k: prompt.groups[k][int(v)] for k, v in enumerate(values) if v >= 0 and (keep is None or keep[k])}


@pytest.mark.parametrize("name", [n if n in ("kuhn", "ipd", "negotiation_v2") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in games.GAMES])
def test_a_conversation_holds_the_same_facts_as_the_restated_prompt(name):
    """At every decision of random episodes (both seats): the intro said once, each history row said once
    with the text the restated prompt shows now, and the current turn's state part equal to the restated
    one; every turn fits its width and its tokens decode to exactly the texts it shows."""
    game = games.make(name)
    tok = ByteTokenizer()
    chat = ChatRenderer(game, tok, ("<u>", "</u><a>", "</a>"))
    prompt_of = jax.jit(game.prompt)
    step = jax.jit(game.step)
    turn = {first: jax.jit(functools.partial(chat.turn_values, first=first)) for first in (True, False)}
    ids_of = {first: jax.jit(functools.partial(chat.turn, first=first)) for first in (True, False)}
    rng = np.random.default_rng(0)
    decisions = 0
    for episode in range(4):
        seat = episode % 2
        state = game.init(jax.random.key(episode))
        said, last, first, heard = chat.start(), -1, True, {}
        while not bool(state.terminated):
            player = int(state.current_player)
            if player == seat:
                prompt = prompt_of(state, jnp.int32(seat))
                values, said_after = turn[first](state, jnp.int32(seat), said, jnp.int32(last))
                shown = np.asarray(values[2:-1])
                for k, v in enumerate(shown):
                    if v >= 0:
                        heard[k] = prompt.groups[k][int(v)]
                restated = _texts(prompt)
                parts = np.asarray(prompt.parts)
                now = {k: t for k, t in heard.items() if parts[k] != STATE or shown[k] >= 0}
                assert now == restated, (name, decisions)
                assert (np.asarray(values[2:-1])[parts == INTRO] >= 0).any() == (first and (parts == INTRO).any() and any(
                    v >= 0 for k, v in enumerate(np.asarray(prompt.values)) if parts[k] == INTRO))
                width = chat.first_width if first else chat.turn_width
                assert int(chat.turn_length(values)) <= width
                ids, mask, _ = ids_of[first](state, jnp.int32(seat), said, jnp.int32(last))
                text = tok.decode(np.asarray(ids)[np.asarray(mask)])
                answer = "" if first else " " + game.action_names[last]
                assert text == (answer + ("<u>" if first else "</a>") + "".join(
                    t for k, t in sorted(_texts(prompt, shown >= 0).items())) + "</u><a>")
                said, first = said_after, False
                decisions += 1
            action = int(rng.choice(np.flatnonzero(np.asarray(state.legal_action_mask))))
            if player == seat:
                last = action
            state = step(state, jnp.int32(action), jax.random.key(int(rng.integers(1 << 30))))
    assert decisions >= 4


V = 40
CFG = ModelConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8)


@pytest.fixture(scope="module")
def model():
    m = Decoder(CFG, rngs=nnx.Rngs(3))
    for _, mod in nnx.iter_modules(m):
        if hasattr(mod, "kernel"):
            mod.kernel[...] = mod.kernel[...] * 8
    m.embed_tokens.weight[...] = m.embed_tokens.weight[...] * 30
    return m


def _conversations(rows=3, turns=4, width=5, seed=0):
    """Random left-padded turns concatenated: ids/mask [rows, turns * width] and each turn's last index."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (rows, turns * width))
    lens = rng.integers(1, width + 1, (rows, turns))
    mask = (np.arange(width)[None, None, :] >= width - lens[..., None]).reshape(rows, -1)
    ends = width - 1 + np.arange(turns) * width
    return jnp.asarray(np.where(mask, ids, 0), jnp.int32), jnp.asarray(mask), ends


@pytest.mark.parametrize("blocked", [True, False], ids=["block_causal", "dense"])
@pytest.mark.parametrize("actions", [((3,), (5,), (9,)), ((3,), (5, 7), (5, 8, 9))], ids=["one_token", "up_to_three"])
def test_one_pass_scoring_equals_scoring_each_decision_prefix(model, actions, blocked, monkeypatch):
    """Both attention paths: block-causal (the transformer family) and dense (models without `query_blocks`)."""
    monkeypatch.setattr(Decoder, "query_blocks", blocked)
    width = max(len(a) for a in actions)
    action_ids = jnp.asarray([list(a) + [0] * (width - len(a)) for a in actions], jnp.int32)
    action_len = jnp.asarray([len(a) for a in actions], jnp.int32)
    ids, mask, ends = _conversations()
    legal = jnp.asarray(np.random.default_rng(1).random((3, len(ends), 3)) < 0.7).at[..., 1].set(True)
    one_pass = nnx.jit(functools.partial(sampler.conversation_action_log_probs, ends=ends, temperature=0.7))(
        model, ids, mask, action_ids=action_ids, action_len=action_len, legal_mask=legal)
    for d, end in enumerate(ends):
        prefix = nnx.jit(functools.partial(sampler.action_log_probs, temperature=0.7))(
            model, ids[:, : end + 1], mask[:, : end + 1], action_ids, action_len, legal[:, d])
        np.testing.assert_allclose(np.asarray(one_pass[:, d]), np.asarray(prefix), atol=2e-5)
    assert np.isfinite(np.asarray(one_pass)[np.asarray(legal)]).all()
    assert np.isneginf(np.asarray(one_pass)[~np.asarray(legal)]).all()


def test_turn_by_turn_cache_scoring_equals_one_pass(model):
    """What the rollout computes (each turn prefilled into a KV cache, actions scored from it) equals the
    update's one-pass scoring of the whole conversation."""
    action_ids = jnp.asarray([[3, 0, 0], [5, 7, 0], [5, 8, 9]], jnp.int32)
    action_len = jnp.asarray([1, 2, 3], jnp.int32)
    ids, mask, ends = _conversations(turns=3, width=6, seed=4)
    legal = jnp.ones((3, 3, 3), bool).at[0, 1, 2].set(False)

    @nnx.jit
    def by_turns(m, ids, mask):
        cache = m.init_cache(ids.shape[0], ids.shape[1] + sampler.branch_slots(action_ids, action_len))
        out = []
        for d in range(len(ends)):
            lo = 0 if d == 0 else ends[d - 1] + 1
            logits, cache = m(ids[:, lo: ends[d] + 1], mask[:, lo: ends[d] + 1], cache=cache, last_only=True)
            out.append(sampler.cached_action_log_probs(m, cache, logits[:, -1], action_ids, action_len, legal[:, d]))
        return jnp.stack(out, 1)

    one_pass = nnx.jit(functools.partial(sampler.conversation_action_log_probs, ends=ends))(
        model, ids, mask, action_ids=action_ids, action_len=action_len, legal_mask=legal)
    np.testing.assert_allclose(np.asarray(by_turns(model, ids, mask)), np.asarray(one_pass), atol=2e-5)


def _tiny_chat(game):
    from test_trainer import tiny

    c = tiny(game)
    c.prompt.format = "conversation"
    return c


def test_rollout_log_probs_are_what_the_update_recomputes():
    """The rollout's KV-cache choice and the update's one-pass scoring agree on a real game with 3-token
    actions (negotiation v2: 125 actions, so every decision runs 250 branch tokens)."""
    from sepo_jax.rl import rollout, trainer

    t, params, frozen = trainer.build(settings(_tiny_chat("negotiation_v2")))
    lay = t.layout

    @jax.jit
    def run(params, frozen, key):
        traj = rollout.rollout(t.game, t.renderer, t.policy.learner(params, frozen), jnp.asarray(lay.opponent),
                               jnp.asarray(lay.seat), key)
        return traj, t.policy.log_probs(params, frozen, traj.chat_ids, traj.chat_mask, traj.legal)

    traj, logp_all = run(params, frozen, jax.random.key(0))
    assert t.renderer.action_width == 3
    valid = np.asarray(traj.valid)
    assert valid.sum() >= lay.opponent.shape[0]
    picked = np.take_along_axis(np.asarray(logp_all), np.asarray(traj.action)[..., None], -1)[..., 0]
    np.testing.assert_allclose(picked[valid], np.asarray(traj.logp)[valid], atol=2e-5)
    np.testing.assert_allclose(np.exp(np.asarray(logp_all))[valid], np.asarray(traj.probs)[valid], atol=2e-6)


def test_the_strategy_read_out_is_the_policy_the_rollout_plays():
    """Kuhn with its rules and history (not compact): every first-hand decision of conversation rollouts has
    a read-out conversation with the same tokens, and the rollout's action distribution there is that
    row of the strategy table."""
    from sepo_jax.rl import rollout, trainer

    c = _tiny_chat("kuhn")
    c.compact_prompt = False
    t, params, frozen = trainer.build(settings(c))
    ids, mask, legal, rows, decision = t.readout
    tokens = lambda i, m, end: tuple(np.asarray(i)[: end + 1][np.asarray(m)[: end + 1]])  # noqa: E731
    ends = t.renderer.ends
    rows_of = {tokens(ids[n], mask[n], ends[int(decision[n])]): int(rows[n]) for n in range(ids.shape[0])}
    assert len(rows_of) == ids.shape[0] == 12  # Kuhn's 12 information sets, each its own conversation
    table = np.asarray(jax.jit(lambda p, f: trainer.strategy(t, p, f))(params, frozen))
    num = 32
    opponent = jnp.full(num, t.game.opponent_id("RandomLegal"), jnp.int32)
    seat = jnp.arange(num, dtype=jnp.int32) % 2
    traj = jax.jit(lambda p, f, k: rollout.rollout(t.game, t.renderer, t.policy.learner(p, f), opponent, seat, k))(
        params, frozen, jax.random.key(2))
    seen = set()
    for e in range(num):
        for d in range(t.game.max_decisions):
            if bool(traj.valid[e, d]) and int(traj.round[e, d]) == 0:
                row = rows_of[tokens(traj.chat_ids[e], traj.chat_mask[e], ends[d])]
                np.testing.assert_allclose(np.asarray(traj.probs[e, d]), table[row], atol=2e-6)
                seen.add(row)
    assert len(seen) >= 10


@pytest.mark.slow
def test_microbatched_conversation_update_gives_the_same_loss_and_gradients():
    from sepo_jax.rl import rollout, trainer

    c = _tiny_chat("ipd")
    t, params, frozen = trainer.build(settings(c))
    lay = t.layout
    traj = jax.jit(lambda p, f, k: rollout.rollout(t.game, t.renderer, t.policy.learner(p, f), jnp.asarray(lay.opponent),
                                                   jnp.asarray(lay.seat), k))(params, frozen, jax.random.key(0))
    e, d = traj.valid.shape
    adv = jax.random.normal(jax.random.key(1), (e * d,))
    weight = traj.valid.astype(jnp.float32)
    out = []
    for m in (1, 2):
        c.grpo.microbatches = m
        s = dataclasses.replace(t, c=c)
        update = trainer._chat_update(s, frozen, traj.chat_ids, traj.chat_mask, traj.legal, traj.action, weight)
        out.append(jax.jit(lambda p: update(p, traj.logp.reshape(-1), adv)[0](p))(params))
    (loss1, _, g1), (loss2, _, g2) = out
    np.testing.assert_allclose(float(loss1), float(loss2), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(np.abs(np.asarray(a)).max()) + 1e-9)
    assert any(float(np.abs(np.asarray(a)).max()) > 0 for a in jax.tree.leaves(g1))


@pytest.mark.slow  # the default suite trains IPD's default (conversation) config in test_trainer.py
@pytest.mark.parametrize("game", ["ipd", "kuhn"])
def test_a_conversation_run_trains_checkpoints_and_evaluates(game, tmp_path):
    from sepo_jax.rl import loop, trainer
    from sepo_jax.rl.loop import CONTRACT_KEYS

    c = _tiny_chat(game)
    c.sft.steps, c.steps = 2, 2
    last = loop.run(settings(c), str(tmp_path), progress=False)
    assert set(CONTRACT_KEYS) <= set(last) and all(np.isfinite(v) for v in last.values())
    episodes = trainer.make_layout(games.make(game), settings(c)).opponent.shape[0]
    assert last["unfinished_episodes"] == 0 and last["update_rows"] == episodes  # one conversation per episode
