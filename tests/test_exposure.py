"""The stage games' exposure in the evaluation: one history per row shared by the solver and the read-out
(`stage.histories`), the model's table read from those prompts in both formats (`readout.prompts`,
`trainer.stage_table`), and `evaluate --exposure`."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app

from sepo_jax import evaluate, games
from sepo_jax.config import settings
from sepo_jax.equilibrium import stage
from sepo_jax.games import ChatRenderer, PromptRenderer
from sepo_jax.games import ipd as ipd_lib
from sepo_jax.games.negotiation import COMPOSITIONS
from sepo_jax.model import tokenizer as tokenizer_lib
from sepo_jax.rl import loop, readout, rollout, trainer

from test_trainer import tiny

STAGE_GAMES = ("ipd", "auction", "negotiation_v1", "negotiation_v2")


def solver_rows(name):
    """The rows the solvers model, in their cell order, from the games' documented row layouts."""
    game = games.make(name)
    T = game.num_rounds
    if name in ("ipd", "negotiation_v2"):
        return np.arange(game.num_infosets)
    if name == "auction":  # (round * 2 + value) * 4 + the opponent's last bid + 1 (0 in round 0)
        later = [(t * 2 + v) * 4 + b + 1 for t in range(1, T) for b in range(3) for v in range(2)]
        return np.array([0, 4] + later)
    return np.array([0] + [(t * 10 + opp + 1) * 10 + own + 1 for t in range(1, T) for opp in range(9) for own in range(9)])


@pytest.mark.parametrize("name", STAGE_GAMES)
def test_every_row_the_solver_models_is_reached_by_its_history(name):
    game = games.make(name)
    states, mover, rows = readout.infoset_states(game)
    np.testing.assert_array_equal(rows, solver_rows(name))
    np.testing.assert_array_equal(jax.vmap(game.infoset_index)(states, mover), rows)
    assert (np.asarray(mover) == 0).all() and not np.asarray(states.terminated).any()
    np.testing.assert_array_equal(states.round, np.asarray(stage.histories(game).path >= 0).sum(1) // 2)
    # rows no history reaches are uniform in a table scattered from the read-out
    table = np.asarray(readout.strategy_table(game, jnp.zeros((len(rows), game.num_actions)), rows))
    unused = np.setdiff1d(np.arange(game.num_infosets), rows)
    np.testing.assert_allclose(table[unused], 1 / game.num_actions)
    assert (table[rows] == 0).all()


def _row_state(game, row):
    states, _, rows = readout.infoset_states(game)
    return jax.tree.map(lambda x: x[int(np.flatnonzero(np.asarray(rows) == row)[0])], states)


def test_the_restated_prompt_shows_the_rows_facts():
    ipd = games.make("ipd")  # round 3 after (D, C), (C, D): code 0b1001
    text = games.render_text(ipd, _row_state(ipd, ipd_lib.infoset_row(2, 0b1001)), 0)
    assert "Round 3 of 8." in text
    assert "Round 1: you DEFECT, opponent COOPERATE" in text and "Round 2: you COOPERATE, opponent DEFECT" in text
    auction = games.make("auction")  # round 4, value 4, the opponent bid HIGH last
    text = games.render_text(auction, _row_state(auction, (3 * 2 + 1) * 4 + 3), 0)
    assert "Round 4 of 6." in text and "Your value this round: 4." in text
    assert "Round 3: your value 4, you MEDIUM, opponent HIGH" in text
    v1 = games.make("negotiation_v1")  # round 2, the opponent demanded 8, the learner 3
    text = games.render_text(v1, _row_state(v1, (1 * 10 + 8) * 10 + 3), 0)
    assert "Round 2 of 4." in text and "Round 1: you 3, opponent 8, breakdown" in text
    v2 = games.make("negotiation_v2")  # round 3, pool (2, 4, 1), values composition 7
    pool_index = (2 - 1) * 16 + (4 - 1) * 4 + (1 - 1)
    text = games.render_text(v2, _row_state(v2, (2 * 64 + pool_index) * 36 + 7), 0)
    books, hats, balls = COMPOSITIONS[7]
    assert "Round 3 of 4." in text and "Pool: 2 books, 4 hats, 1 balls." in text
    assert f"Your value per item: books {books}, hats {hats}, balls {balls}." in text
    assert "Round 2: you 1 2 0, opponent 1 2 0, deal" in text  # half the pool, rounded down


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_lib.embedded_tokenizer(games.template_texts())


@pytest.mark.parametrize("name", [n if n in ("auction", "negotiation_v1") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in STAGE_GAMES])  # IPD's 21,845 and v2's conversations: the slow suite
def test_both_formats_read_every_row_and_the_conversation_shows_its_facts(name, tokenizer):
    game = games.make(name)
    ids, mask, legal, rows = readout.prompts(game, PromptRenderer(game, tokenizer))
    np.testing.assert_array_equal(rows, solver_rows(name))
    assert mask.any(1).all() and legal.any(-1).all()
    chat = ChatRenderer(game, tokenizer, ("", "", "\n"))
    ids, mask, legal, rows, decision = readout.prompts(game, chat)
    np.testing.assert_array_equal(rows, solver_rows(name))
    states, _, _ = readout.infoset_states(game)
    np.testing.assert_array_equal(decision, states.round)  # the learner moves once a round
    np.testing.assert_array_equal(legal[np.arange(len(rows)), decision], states.legal_action_mask)
    n = len(rows) - 1  # a row of the last round: the longest conversation
    end = chat.ends[int(decision[n])]
    said = tokenizer.decode(np.asarray(ids[n, : end + 1])[np.asarray(mask[n, : end + 1])])
    now = f"Round {game.num_rounds} of {game.num_rounds}."
    tail = said[said.rindex(now):]  # the decision's turn
    for line in games.render_text(game, jax.tree.map(lambda x: x[n], states), 0).splitlines():
        if line.startswith("You are") or (line.startswith("Round ") and line != now):
            assert said.count(line) == 1, line  # the rules and every finished round said once
        else:
            assert line in tail, line  # the state part said at the decision


def _setup(name, fmt):
    c = tiny(name)
    c.prompt.format = fmt
    return trainer.build(settings(c))


@pytest.mark.parametrize("fmt", ["restated", pytest.param("conversation", marks=pytest.mark.slow)])
def test_the_evaluation_exposure_is_that_of_the_models_table(fmt):
    """Auction: the table from `stage_table` holds the policy's distributions at each row's own prompt
    (scored one at a time), whatever the passes; the evaluation's exposure is `stage.exposure` of it."""
    s, params, frozen = _setup("auction", fmt)
    prompts = readout.prompts(s.game, s.renderer)
    read = jax.jit(lambda p, f, x, per: trainer.stage_table(s, p, f, x, per), static_argnums=3)
    table = np.asarray(read(params, frozen, prompts, 256))
    np.testing.assert_allclose(np.asarray(read(params, frozen, prompts, 5)), table, atol=1e-6)
    ids, mask, legal, rows, *decision = prompts
    for n in (0, 7, len(rows) - 1):
        logp = s.policy.log_probs(params, frozen, ids[n:n + 1], mask[n:n + 1], legal[n:n + 1])[0]
        logp = logp[int(decision[0][n])] if decision else logp
        np.testing.assert_allclose(table[int(rows[n])], np.exp(np.asarray(logp)), atol=1e-6)
    assert not np.allclose(table[int(rows[0])], table[int(rows[-1])])  # the rows' prompts differ
    metrics, _ = trainer.make_evaluate(s, 2)(params, frozen, jax.random.key(0), prompts)
    want = stage.exposure(s.game, table)
    assert float(metrics["exposure_br"]) == pytest.approx(float(want["br_value"]), abs=1e-5)
    assert float(metrics["exposure_kept"]) == pytest.approx(float(want["learner_value"]), abs=1e-5)
    assert "exposure_br" not in trainer.make_evaluate(s, 2)(params, frozen, jax.random.key(0))[0]


@pytest.mark.slow  # scores IPD's 21,845 conversations: about 10 minutes on a shared 2-core CPU
def test_the_ipd_read_out_is_the_policy_the_conversation_rollout_plays():
    """IPD's rows are full histories: every decision of conversation rollouts, in either seat, has the
    read-out conversation of its row, and the rollout's distribution there is that row of the table."""
    s, params, frozen = _setup("ipd", "conversation")
    prompts = readout.prompts(s.game, s.renderer)
    ids, mask, _, rows, decision = (np.asarray(x) for x in prompts)
    ends = s.renderer.ends
    tokens = lambda i, m, end: i[: end + 1][m[: end + 1]].tobytes()  # noqa: E731
    rows_of = {tokens(ids[n], mask[n], ends[decision[n]]): rows[n] for n in range(len(rows))}
    table = np.asarray(jax.jit(lambda p, f, x: trainer.stage_table(s, p, f, x, 4096))(params, frozen, prompts))
    num = 8
    opponent = jnp.full(num, s.game.opponent_id("Random"), jnp.int32)
    seat = jnp.arange(num, dtype=jnp.int32) % 2
    traj = jax.jit(lambda p, f, k: rollout.rollout(s.game, s.renderer, s.policy.learner(p, f), opponent, seat, k))(
        params, frozen, jax.random.key(1))
    chat_ids, chat_mask = np.asarray(traj.chat_ids), np.asarray(traj.chat_mask)
    for e in range(num):
        for d in range(s.game.max_decisions):
            row = rows_of[tokens(chat_ids[e], chat_mask[e], ends[d])]
            np.testing.assert_allclose(np.asarray(traj.probs[e, d]), table[row], atol=2e-6)


@pytest.mark.slow  # a tiny auction run, then the CLI (36 s on one core): the default suite's 10-minute budget
def test_evaluate_exposure_end_to_end(tmp_path):
    c = tiny("auction")  # the repeated games' default: conversations
    c.sft.steps, c.steps = 1, 1
    loop.run(settings(c), str(tmp_path), progress=False)
    out = subprocess.run([sys.executable, "-m", "sepo_jax.evaluate", f"--workdir={tmp_path}", "--episodes=2",
                          "--exposure"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "built the 32 read-out prompts" in out.stdout
    assert "exposure_br | exposure_kept |" in out.stdout
    m = json.loads((tmp_path / "eval.json").read_text())["steps"]["2"]["metrics"]
    assert 0 <= m["exposure_kept"] and m["exposure_br"] <= 3.0
    with pytest.raises(app.UsageError, match="--exposure: kuhn has no stage-game solver"):
        evaluate.run(str(tmp_path), tiny(), "latest", episodes=2, seed=0, exposure=True)
