import contextlib
import io
import json
import struct
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from absl import app
from tensorboardX.proto import event_pb2

from sepo_jax.config import settings
from sepo_jax import evaluate
from sepo_jax.rl import loop, rollout

from test_trainer import read, tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny Kuhn run (2 SFT + 3 SEPO steps, a checkpoint every step, the last 3 kept), its
    console output in `console.log`, and what a second run of it printed and returned in `rerun.json`."""
    workdir = tmp_path_factory.mktemp("run")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        loop.run(settings(tiny()), str(workdir), progress=False)
    (workdir / "console.log").write_text(console.getvalue())
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        last = loop.run(settings(tiny()), str(workdir), progress=False)
    (workdir / "rerun.json").write_text(json.dumps({"stdout": console.getvalue(), "last": last}))
    return workdir


def tensorboard_steps(folder):
    """{tag: [steps]} of the scalars in a TensorBoard event folder (TFRecord: length, its CRC, data, CRC)."""
    out = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        while data:
            (n,) = struct.unpack("<Q", data[:8])
            event = event_pb2.Event.FromString(data[12:12 + n])
            for v in event.summary.value:
                out.setdefault(v.tag, []).append(event.step)
            data = data[12 + n + 4:]
    return out


def test_one_step_counter_numbers_the_console_metrics_checkpoints_tensorboard_and_evaluate(run_dir):
    assert [r["step"] for r in read(run_dir / "sft_metrics.jsonl")] == [1, 2]
    assert [r["step"] for r in read(run_dir / "metrics.jsonl")] == [3, 4, 5]
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [3, 4, 5]
    tb = tensorboard_steps(run_dir / "tb")
    assert tb["sft/sft_loss"] == [1, 2] and tb["sepo/payoff"] == [3, 4, 5]
    console = (run_dir / "console.log").read_text()
    assert f"starting the run in {run_dir} at step 0 of 5 (steps 1-2 are the SFT warm start, 3-5 SEPO)" in console
    assert [line.split(" ", 3)[:3] for line in console.splitlines() if line.startswith("[")] == [
        ["[sft]", "step", "1/2"], ["[sft]", "step", "2/2"], ["[sepo]", "step", "3/5"], ["[sepo]", "step", "4/5"],
        ["[sepo]", "step", "5/5"]]
    # evaluate --steps takes these numbers: test_group_rows_agree_with_the_summary_metrics and
    # test_bad_requests_name_the_culprit


def test_rerunning_a_complete_run_says_so_and_returns_its_final_metrics(run_dir):
    rerun = json.loads((run_dir / "rerun.json").read_text())
    assert rerun["stdout"] == f"sepo_jax: the run in {run_dir} is complete (step 5 of 5); nothing to train\n"
    assert rerun["last"] == read(run_dir / "metrics.jsonl")[-1]


def test_cli_evaluates_the_latest_checkpoint_and_writes_eval_json(run_dir):
    out = subprocess.run([sys.executable, "-m", "sepo_jax.evaluate", f"--workdir={run_dir}", "--episodes=16", "--plots"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| pool | opponent |" in out.stdout and "nash_conv" in out.stdout
    assert "compiling the evaluation..." in out.stdout
    assert "[evaluate] checkpoint 1/1 step 5 (SEPO): payoff=" in out.stdout
    data = json.loads((run_dir / "eval.json").read_text())
    assert list(data["steps"]) == ["5"]  # steps 1-2 the warm start, 3-5 SEPO
    r = data["steps"]["5"]
    assert {"payoff", "exploit_pool_advantage", "robust", "collusion", "externality", "safety", "nra", "shift",
            "nash_conv", "exploitability"} <= set(r["metrics"])
    assert [(g["pool"], g["opponent"]) for g in r["groups"]] == [
        ("train", "NashApprox"), ("train", "TightPassive"), ("train", "LooseAggressive"),
        ("exploit", "NashApprox"), ("exploit", "AlwaysBet"), ("collusive", "LooseAggressive"),
        ("shift", "MaxExploiter"), ("shift", "AlwaysPass")]
    assert set(r["kuhn_frequencies"]) == {"first_bet", "first_call_after_check_bet", "second_bet_after_check",
                                          "second_call_facing_bet"}
    for figure in ("training.png", "kuhn_frequencies.png"):
        assert f"wrote {run_dir / 'plots' / figure}" in out.stdout
        assert (run_dir / "plots" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_rows_agree_with_the_summary_metrics(run_dir):
    results = evaluate.run(str(run_dir), None, "all", episodes=32, seed=1)
    assert sorted(results) == [3, 4, 5]
    for r in results.values():
        m, groups = r["metrics"], r["groups"]
        by_pool = lambda pool, key: [g[key] for g in groups if g["pool"] == pool]  # noqa: E731
        # equal episodes per group: pool means are means of the group rows
        assert m["payoff"] == pytest.approx(np.mean(by_pool("train", "payoff")), abs=1e-5)
        assert m["robust"] == pytest.approx(np.mean(by_pool("exploit", "payoff")), abs=1e-5)
        assert m["shift"] == pytest.approx(np.mean(by_pool("shift", "payoff")), abs=1e-5)
        assert m["collusion"] == pytest.approx(np.mean(by_pool("collusive", "collusion")), abs=1e-5)
        gaps = [max(0.0, g["opponent_payoff"] - g["payoff"]) for g in groups if g["pool"] == "exploit"]
        assert m["exploit_pool_advantage"] == pytest.approx(np.mean(gaps), abs=1e-5)
        for g in groups:  # Kuhn is zero-sum, so NRA is the sign of the learner's total
            assert g["opponent_payoff"] == pytest.approx(-g["payoff"], abs=1e-6)
            assert g["nra"] == np.sign(g["payoff"])
        assert m["exploitability"] == pytest.approx(m["nash_conv"] / 2)


def test_eval_json_keeps_earlier_steps(run_dir, tmp_path):
    path = str(tmp_path / "eval.json")
    evaluate.write_json(path, evaluate.run(str(run_dir), None, "3", episodes=8, seed=0), "first")
    evaluate.write_json(path, evaluate.run(str(run_dir), None, "5", episodes=8, seed=0), "second")
    data = json.loads(open(path).read())
    assert sorted(data["steps"]) == ["3", "5"] and data["command"] == "second"


def test_bad_requests_name_the_culprit(run_dir, tmp_path):
    with pytest.raises(app.UsageError, match=r"no checkpoint at step\(s\) \[1\].*saved: \[3, 4, 5\]"):
        evaluate.run(str(run_dir), None, "1", episodes=8, seed=0)
    with pytest.raises(app.UsageError, match="latest, all or a comma-separated"):
        evaluate.run(str(run_dir), None, "last", episodes=8, seed=0)
    with pytest.raises(app.UsageError, match="does not exist"):
        evaluate.run(str(tmp_path / "nowhere"), None, "latest", episodes=8, seed=0)
    with pytest.raises(app.UsageError, match="no config.json"):
        evaluate.run(str(tmp_path), None, "latest", episodes=8, seed=0)
    with pytest.raises(app.UsageError, match="no checkpoints under"):
        evaluate.run(str(tmp_path), tiny(), "latest", episodes=8, seed=0)
    with pytest.raises(app.UsageError, match="--episodes must be >= 1"):
        evaluate.run(str(run_dir), None, "latest", episodes=0, seed=0)
    wider = tiny()
    wider.model.hidden_size = 48
    with pytest.raises(SystemExit, match="cannot restore checkpoint step 5 .* into the model of this config"):
        evaluate.run(str(run_dir), wider, "latest", episodes=8, seed=0)


class _TablePolicy:
    """A policy that plays a fixed strategy table (exact zeros included) through the evaluation's own code:
    the rollout's learner plays the table, the strategy read-out returns its rows."""

    chat = False

    def __init__(self, game, table, rows, episodes):
        self.game, self.table, self.rows, self.episodes = game, jnp.asarray(table, jnp.float32), rows, episodes

    def learner(self, params, frozen):
        return rollout.opponent_learner(self.game, jnp.full(self.episodes, self.game.tabular_id), self.table)

    def log_probs(self, params, frozen, ids, mask, legal):
        return jnp.log(self.table[self.rows])


def test_the_evaluation_of_degenerate_untrained_and_equilibrium_policies():
    """A model that never bets or always bets evaluates to finite metrics; exact NashConv of those, of the
    untrained model and of the equilibrium equals OpenSpiel's; an unknown opponent id is named."""
    import dataclasses

    import jax
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import exploitability
    import pyspiel

    from sepo_jax.equilibrium import openspiel as ios
    from sepo_jax.games.kuhn import TABLES, nash_table
    from sepo_jax.rl import trainer

    def oracle(table):
        g = pyspiel.load_game("kuhn_poker")
        pol = os_policy.TabularPolicy(g)
        for state, probs in ios.table_to_policy("kuhn", np.asarray(table, np.float64)).items():
            pol.policy_for_key(state)[:] = probs
        return exploitability.nash_conv(g, pol)

    c = tiny()
    c.rollout.group_size = 8
    setup, params, frozen = trainer.build(settings(c))
    frozen, key = trainer.place_frozen(setup, frozen), jax.random.key(0)
    rows = setup.readout[3]
    untrained = np.asarray(trainer.strategy(setup, params, frozen))
    metrics, _ = trainer.make_evaluate(setup, 8)(params, frozen, key)
    assert float(metrics["nash_conv"]) == pytest.approx(oracle(untrained), abs=1e-5)
    for name, table in [("never bets", TABLES["AlwaysPass"]), ("always bets", TABLES["AlwaysBet"]),
                        ("equilibrium", nash_table(1 / 3))]:
        s = dataclasses.replace(setup, policy=_TablePolicy(setup.game, table, rows, setup.eval_layout(8).opponent.size))
        metrics, groups = trainer.make_evaluate(s, 8)(params, frozen, key)
        metrics, groups = jax.device_get((metrics, groups))
        assert all(np.isfinite(v).all() for v in [*metrics.values(), *groups.values()]), name
        assert float(metrics["nash_conv"]) == pytest.approx(oracle(table), abs=1e-5), name
    assert float(metrics["nash_conv"]) == pytest.approx(0.0, abs=1e-6)  # the equilibrium
    with pytest.raises(ValueError, match="unknown opponent id 99"):
        rollout.rollout(setup.game, setup.renderer, setup.policy.learner(params, frozen), jnp.array([0, 99]),
                        jnp.array([0, 0]), key)
