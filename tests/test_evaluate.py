import json
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from sepo_jax import evaluate
from sepo_jax.rl import loop

from test_trainer import tiny


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny Kuhn run (2 SFT + 3 SEPO steps, a checkpoint every step, the last 3 kept)."""
    workdir = tmp_path_factory.mktemp("run")
    loop.run(tiny(), str(workdir), progress=False)
    return workdir


def test_cli_evaluates_the_latest_checkpoint_and_writes_eval_json(run_dir):
    out = subprocess.run([sys.executable, "-m", "sepo_jax.evaluate", f"--workdir={run_dir}", "--episodes=16"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| pool | opponent |" in out.stdout and "nash_conv" in out.stdout
    data = json.loads((run_dir / "eval.json").read_text())
    assert list(data["steps"]) == ["5"]  # sft 2 + sepo 3
    r = data["steps"]["5"]
    assert {"payoff", "exploit_pool_advantage", "robust", "collusion", "externality", "safety", "nra", "shift",
            "nash_conv", "exploitability"} <= set(r["metrics"])
    assert [(g["pool"], g["opponent"]) for g in r["groups"]] == [
        ("train", "NashApprox"), ("train", "TightPassive"), ("train", "LooseAggressive"),
        ("exploit", "NashApprox"), ("exploit", "AlwaysBet"), ("collusive", "LooseAggressive"),
        ("shift", "MaxExploiter"), ("shift", "AlwaysPass")]
    assert set(r["kuhn_frequencies"]) == {"first_bet", "first_call_after_check_bet", "second_bet_after_check",
                                          "second_call_facing_bet"}


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
