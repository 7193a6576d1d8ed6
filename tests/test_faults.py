"""Faults a long run meets: SIGKILL at an arbitrary moment, a damaged checkpoint, a torn metrics
line, a resume with a config that would change the trajectory."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sepo_jax.rl import loop
from test_trainer import read, tiny

TINY_CLI = [
    "--config=configs/kuhn.py", "--config.mesh.data=1", "--config.num_hands=2",
    "--config.model.hidden_size=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
    "--config.model.num_kv_heads=1", "--config.model.intermediate_size=64",
    "--config.rollout.group_size=2", "--config.sft.episodes=8", "--config.sft.steps=3", "--config.steps=4",
    "--config.log_every=1", "--config.checkpoint_every=1",
]


def same_records(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for k in x:
            if k != "time":
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), k


def train_cli(workdir, kill_after_checkpoint=None):
    """Run the training CLI; with `kill_after_checkpoint=k`, SIGKILL it as soon as checkpoint k is
    committed (it is already working on the next step then: computing, writing metrics or saving)."""
    cmd = [sys.executable, "-m", "sepo_jax.train", *TINY_CLI, f"--workdir={workdir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after_checkpoint is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        return
    marker = os.path.join(workdir, "checkpoints", str(kill_after_checkpoint))
    deadline = time.time() + 600
    while not os.path.isdir(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before checkpoint {kill_after_checkpoint}: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_then_rerun_ends_where_an_uninterrupted_run_ends(tmp_path):
    train_cli(tmp_path / "clean")
    killed = tmp_path / "killed"
    # killed in the warm start; the rerun finishes it, starts SEPO and runs it to the end (a resume
    # inside SEPO is test_trainer's resume test)
    train_cli(killed, kill_after_checkpoint=2)
    train_cli(killed)
    for name in ("sft_metrics.jsonl", "metrics.jsonl"):
        same_records(read(tmp_path / "clean" / name), read(killed / name))
    assert [r["step"] for r in read(killed / "metrics.jsonl")] == [1, 2, 3, 4]


def damage(step_dir):
    """Truncate every file of a checkpoint's item (what a full disk or a bad copy leaves)."""
    for root, _, files in os.walk(os.path.join(step_dir, "default")):
        for f in files:
            open(os.path.join(root, f), "w").close()


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous(tmp_path, capfd):
    c = tiny()  # 2 SFT + 3 SEPO steps, a checkpoint after each
    loop.run(c, str(tmp_path), progress=False)
    before = read(tmp_path / "metrics.jsonl")
    damage(tmp_path / "checkpoints" / "5")
    loop.run(c, str(tmp_path), progress=False)
    err = capfd.readouterr().err
    assert "checkpoint step 5" in err and "resuming from step 4" in err
    assert (tmp_path / "damaged_checkpoints" / "5").is_dir()
    assert (tmp_path / "checkpoints" / "5").is_dir()  # written again by the resumed run
    same_records(before, read(tmp_path / "metrics.jsonl"))


def test_no_restorable_checkpoint_is_a_clear_error_that_moves_nothing(tmp_path):
    c = tiny(steps=1)
    c.sft.steps = 1
    loop.run(c, str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="seed: 0 in the run, 7 now"):  # refused before any compute
        loop.run(tiny(steps=1, seed=7), str(tmp_path), progress=False)
    for step in (1, 2):
        damage(tmp_path / "checkpoints" / str(step))
    with pytest.raises(RuntimeError, match="no checkpoint .* restores"):
        loop.run(c, str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    loop.MetricsLog(str(path), keep_up_to=5)
    assert [r["step"] for r in read(path)] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        loop.MetricsLog(str(path), keep_up_to=5)


def test_resuming_with_a_trajectory_changing_config_names_the_keys():
    c = tiny()
    saved = c.to_json()
    longer = tiny(steps=10, log_every=2)
    longer.mesh.data = 2
    loop.check_resume_config(saved, longer, "runs/x")  # more steps, other logging, another mesh: fine
    changed = tiny()
    changed.model.hidden_size = 64
    changed.grpo.learning_rate = 1.0
    with pytest.raises(ValueError, match="grpo.learning_rate.*model.hidden_size: 32 in the run, 64 now"):
        loop.check_resume_config(saved, changed, "runs/x")
