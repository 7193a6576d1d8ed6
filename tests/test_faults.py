"""Faults a long run meets: SIGKILL at an arbitrary moment, a damaged checkpoint (truncated, flipped
bytes, non-finite values), a torn metrics line, a resume with a config that would change the
trajectory (config.json lost too), a lost process in a multi-process run, two runs on one workdir,
settings that cannot work, a workdir that cannot hold a run, and the one-line errors that name them."""

import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sepo_jax import cli, workdir as workdir_lib
from sepo_jax.config import default_config, settings
from sepo_jax.rl import loop
from test_parallel import _free_port
from test_trainer import read, tiny

TINY_CLI = [
    f"--config={Path(__file__).parent.parent / 'configs' / 'kuhn.py'}", "--config.mesh.data=1", "--config.num_hands=2",
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


def committed(workdir, step):
    return os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def train_cli(cwd, kill_after_checkpoint=None):
    """Run the training CLI in folder `cwd` without --workdir (so in its default workdir under cwd/runs/)
    and return its stdout; with `kill_after_checkpoint=k`, SIGKILL it as soon as checkpoint k is
    committed (it is already working on the next step then: computing, writing metrics or saving)."""
    os.makedirs(cwd, exist_ok=True)
    cmd = [sys.executable, "-m", "sepo_jax.train", *TINY_CLI]
    # the runs share the suite's persistent compilation cache: a rerun after a kill compiles nothing anew
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.abspath(jax.config.jax_compilation_cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    with open(os.path.join(cwd, "stdout.log"), "w+") as out:  # a file: an unread pipe would block the run
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        if kill_after_checkpoint is None:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
        else:
            deadline = time.time() + 600
            while (not glob.glob(os.path.join(cwd, "runs", "*", "checkpoints", str(kill_after_checkpoint)))
                   and proc.poll() is None and time.time() < deadline):
                time.sleep(0.05)
            assert proc.poll() is None, f"finished before checkpoint {kill_after_checkpoint}: {proc.stderr.read()}"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        out.seek(0)
        return out.read()


def run_folder(cwd):
    """The one run folder the CLI made under cwd/runs/."""
    [folder] = Path(cwd, "runs").iterdir()
    return folder


def test_sigkill_then_rerun_of_the_same_command_ends_where_an_uninterrupted_run_ends(tmp_path):
    train_cli(tmp_path / "clean")
    killed = tmp_path / "killed"
    # killed in the warm start; the rerun finishes it, starts SEPO and runs it to the end (a resume
    # inside SEPO is test_trainer's resume test)
    train_cli(killed, kill_after_checkpoint=2)
    out = train_cli(killed)  # the same command, without --workdir: it resumes the same default workdir
    folder = run_folder(killed)
    assert folder.name == run_folder(tmp_path / "clean").name and folder.name.startswith("kuhn-")
    assert f"resuming the run in runs/{folder.name} from its checkpoint at step 2 of 7 (steps 1-3 are the SFT warm " \
           "start, 4-7 SEPO)" in out
    assert "[sft] step 3/3" in out and "[sepo] step 7/7" in out
    for name in ("sft_metrics.jsonl", "metrics.jsonl"):
        same_records(read(tmp_path / "clean" / "runs" / folder.name / name), read(folder / name))
    assert [r["step"] for r in read(folder / "metrics.jsonl")] == [4, 5, 6, 7]
    last = read(folder / "metrics.jsonl")[-1]
    assert f"final metrics (step 7, the last line of {folder / 'metrics.jsonl'}):" in out
    # the main command trains against the exploit pool alone: its headline metrics are these two
    assert f"exploit_pool_advantage={last['exploit_pool_advantage']:.4f} nash_conv={last['nash_conv']:.4f}" in out
    assert f"--workdir=runs/{folder.name}" in out
    # a third run of the command finds the run complete: test_evaluate.py's rerun test (in-process: ~2 s, not ~20)


def damage(step_dir):
    """Truncate every file of a checkpoint's item (what a full disk or a bad copy leaves)."""
    for root, _, files in os.walk(os.path.join(step_dir, "default")):
        for f in files:
            open(os.path.join(root, f), "w").close()


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_previous(tmp_path, capfd):
    c = tiny()  # 2 SFT + 3 SEPO steps, a checkpoint after each
    loop.run(settings(c), str(tmp_path), progress=False)
    before = read(tmp_path / "metrics.jsonl")
    damage(tmp_path / "checkpoints" / "5")
    loop.run(settings(c), str(tmp_path), progress=False)
    err = capfd.readouterr().err
    assert "checkpoint step 5" in err and "resuming from step 4" in err
    assert (tmp_path / "damaged_checkpoints" / "5").is_dir()
    assert (tmp_path / "checkpoints" / "5").is_dir()  # written again by the resumed run
    same_records(before, read(tmp_path / "metrics.jsonl"))


def test_no_restorable_checkpoint_is_a_clear_error_that_moves_nothing(tmp_path):
    c = tiny(steps=1)
    c.sft.steps = 1
    loop.run(settings(c), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="seed: 0 in the run, 7 now"):  # refused before any compute
        loop.run(settings(tiny(steps=1, seed=7)), str(tmp_path), progress=False)
    for step in (1, 2):
        damage(tmp_path / "checkpoints" / str(step))
    with pytest.raises(RuntimeError, match="no checkpoint .* restores"):
        loop.run(settings(c), str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
    # --overwrite clears the run's files (any config may start there then), and nothing else
    (tmp_path / "notes.txt").write_text("mine")
    other = tiny(steps=1, seed=7)
    other.sft.steps = 1
    loop.run(settings(other), str(tmp_path), progress=False, overwrite=True)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"] and (tmp_path / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 7
    assert [r["step"] for r in read(tmp_path / "metrics.jsonl")] == [2]


def test_a_torn_last_metrics_line_is_dropped_and_a_bad_middle_line_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    loop.MetricsLog(str(path), keep_up_to=5)
    assert [r["step"] for r in read(path)] == [1, 2]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        loop.MetricsLog(str(path), keep_up_to=5)
    path.write_text('{"step": 1}\n{"loss": 0.3}\n{"step": 3}\n')  # was a bare KeyError: 'step'
    with pytest.raises(ValueError, match=f"{path}, line 2, is not a metrics record"):
        loop.MetricsLog(str(path), keep_up_to=5)
    path.write_text('{"step": 1}\n{"step": 2}\n')  # SEPO steps as numbered before the phases shared one counter
    with pytest.raises(ValueError, match=f"{path}, line 1, is step 1, before this phase's first step 301.*add 300"):
        loop.MetricsLog(str(path), keep_up_to=310, first=301)


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


def launch_two_processes(workdir):
    """The training CLI as 2 `jax.distributed` processes of 1 CPU device each, sharing `workdir`."""
    port, procs = _free_port(), []
    for i in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}
        cmd = [sys.executable, "-m", "sepo_jax.train", *TINY_CLI, "--config.mesh.data=-1", f"--workdir={workdir}"]
        path = f"{workdir}.process{i}.log"  # a file, not a pipe: an unread pipe blocks its writer
        with open(path, "a") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        procs[-1].log_path = path
    return procs


def finish(procs):
    for p in procs:
        p.wait(timeout=600)
    for p in procs:
        with open(p.log_path) as log:
            assert p.returncode == 0, log.read()[-3000:]


@pytest.mark.slow
def test_a_lost_process_stops_the_other_and_a_rerun_resumes(tmp_path):
    finish(launch_two_processes(tmp_path / "clean"))
    lost = tmp_path / "lost"
    procs = launch_two_processes(lost)
    deadline = time.time() + 600
    while not committed(lost, 2) and time.time() < deadline:
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=400)  # fails (peer gone, then the heartbeat timeout) instead of hanging
    assert procs[0].returncode != 0
    procs[1].wait()
    finish(launch_two_processes(lost))
    for name in ("sft_metrics.jsonl", "metrics.jsonl"):  # process 0 alone writes them: each step once
        same_records(read(tmp_path / "clean" / name), read(lost / name))
    assert [r["step"] for r in read(lost / "metrics.jsonl")] == [4, 5, 6, 7]


# ---- one run per workdir -------------------------------------------------------------------------------
def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_holder(tmp_path):
    holder = workdir_lib.Lock(str(tmp_path))
    holder.acquire()  # another run's lock (flock conflicts between open files, even in one process)
    try:
        with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another training run \\(pid {os.getpid()} on "):
            loop.run(settings(tiny()), str(tmp_path), progress=False)
        assert os.listdir(tmp_path) == ["run.lock"]  # refused before anything was written
    finally:
        holder.release()
    workdir_lib.Lock(str(tmp_path)).acquire()  # released: free again


def test_the_cli_refuses_a_busy_workdir_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    hold = ("import sys, time; from sepo_jax.workdir import Lock; Lock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = subprocess.run([sys.executable, "-m", "sepo_jax.train", *TINY_CLI, f"--workdir={tmp_path}"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"in use by another training run (pid {holder.pid} on " in out.stderr.strip().splitlines()[-1]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = workdir_lib.Lock(str(tmp_path))
    lock.acquire()  # the OS dropped the killed holder's lock
    assert f"pid {os.getpid()} " in (tmp_path / "run.lock").read_text()
    lock.release()


# ---- settings that cannot work -----------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [
    ("keep_checkpoints", 0), ("keep_checkpoints", -1), ("sepo.lambda_e", float("inf")),
    ("rollout.temperature", float("inf")), ("grpo.learning_rate", float("inf")), ("sft.learning_rate", float("nan")),
    ("grpo.beta", float("nan")), ("grpo.clip_eps", 0.0), ("grpo.grad_clip", -1.0), ("sft.warmup", 1.5),
    ("model.hidden_size", 0), ("model.num_heads", 0), ("model.num_kv_heads", 0), ("mesh.data", 0),
])
def test_settings_that_cannot_work_are_refused_naming_the_key_before_anything_is_written(tmp_path, key, value):
    c = tiny()
    group, _, leaf = key.rpartition(".")
    (c[group] if group else c)[leaf] = value
    with pytest.raises(ValueError, match=f"^config\\.{key}: must be"):
        loop.run(settings(c), str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key,value", [("mesh.data", 64), ("model.source", "/no/such/model")])
def test_mesh_and_model_source_errors_leave_no_workdir_behind(tmp_path, key, value):
    c = tiny()
    group, _, leaf = key.rpartition(".")
    c[group][leaf] = value
    with pytest.raises((ValueError, OSError)):
        loop.run(settings(c), str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


# ---- checkpoints that restore but must not be used --------------------------------------------------------
def small_checkpoints(directory, states, c):
    manager = ocp.CheckpointManager(str(directory), options=ocp.CheckpointManagerOptions(max_to_keep=5))
    for step, state in enumerate(states, 1):
        loop.save_checkpoint(manager, step, state, c)
    manager.wait_until_finished()
    return manager


def flip_bytes(step_dir):
    """Invert 8 bytes in the middle of the checkpoint's largest data file (what bit rot or a bad copy does)."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs if os.sep + "d" + os.sep in os.path.join(r, f)]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_flipped_bytes_in_a_checkpoint_fail_its_checksum_and_the_previous_one_is_used(tmp_path, capfd):
    states = [{"w": jnp.arange(4096, dtype=jnp.float32) * s, "step": jnp.int32(s)} for s in (1, 2)]
    small_checkpoints(tmp_path / "checkpoints", states, tiny())
    flip_bytes(tmp_path / "checkpoints" / "2")
    manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
    silent = manager.restore(2, args=ocp.args.StandardRestore(states[0]))  # orbax itself reads it without a word
    assert not np.array_equal(silent["w"], states[1]["w"])
    restored = loop.restore_latest(manager, states[0], str(tmp_path))
    assert int(restored["step"]) == 1 and np.array_equal(restored["w"], states[0]["w"])
    err = capfd.readouterr().err
    assert "checkpoint step 2" in err and "checksum mismatch in w" in err and "resuming from step 1" in err
    assert (tmp_path / "damaged_checkpoints" / "2").is_dir() and manager.all_steps() == [1]


def test_a_checkpoint_holding_non_finite_values_counts_as_damaged(tmp_path, capfd):
    w = jnp.arange(8, dtype=jnp.float32)
    states = [{"w": w}, {"w": w.at[3].set(jnp.nan)}]  # saved faithfully, checksums match: still unusable
    manager = small_checkpoints(tmp_path / "checkpoints", states, tiny())
    restored = loop.restore_latest(manager, states[0], str(tmp_path))
    assert np.array_equal(restored["w"], w)
    assert "checkpoint step 2" in capfd.readouterr().err and (tmp_path / "damaged_checkpoints" / "2").is_dir()
    assert workdir_lib.verify({"w": w * np.inf}, {}) == "non-finite values in w"


def test_checksums_are_the_same_for_equal_arrays_and_differ_for_one_changed_word():
    a = {"p": jnp.arange(1000, dtype=jnp.float32), "b": jnp.ones((3, 5), jnp.bfloat16), "k": jnp.uint32(7)}
    same, _ = workdir_lib.checksums(jax_copy(a))
    assert same == workdir_lib.checksums(a)[0]
    for key, changed in [("p", a["p"].at[999].add(1e-3)), ("b", a["b"].at[2, 4].set(2)), ("k", jnp.uint32(8))]:
        other = workdir_lib.checksums({**a, key: changed})[0]
        assert [k for k in same if same[k] != other[k]] == [key]


def jax_copy(tree):
    return {k: jnp.array(np.asarray(v)) for k, v in tree.items()}


# ---- the run a workdir holds --------------------------------------------------------------------------------
def test_the_resume_guard_reads_the_config_saved_with_the_checkpoints_when_config_json_is_lost(tmp_path):
    small_checkpoints(tmp_path / "checkpoints", [{"w": jnp.ones(4)}], tiny())  # a run's checkpoint, no config.json
    with pytest.raises(ValueError, match="different config.*game: 'kuhn' in the run, 'leduc' now"):
        loop.run(settings(tiny("leduc")), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="seed: 0 in the run, 7 now"):
        loop.run(settings(tiny(seed=7)), str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "run.lock"]  # config.json not rewritten
    loop.check_existing_run(tiny(steps=9), str(tmp_path))  # a resumable change passes


def test_metrics_without_a_checkpoint_are_never_overwritten_silently(tmp_path, capfd):
    metrics = '{"step": 1, "loss": 0.5}\n'
    (tmp_path / "metrics.jsonl").write_text(metrics)
    (tmp_path / "config.json").write_text(tiny("leduc").to_json())  # checkpoints deleted, then another game
    with pytest.raises(workdir_lib.WorkdirError, match="no checkpoint to resume from.*game: 'leduc' in the run, "
                                                       "'kuhn' now.*--overwrite"):
        loop.run(settings(tiny()), str(tmp_path), progress=False)
    (tmp_path / "config.json").unlink()
    with pytest.raises(workdir_lib.WorkdirError, match="no config.json says which run wrote them.*--overwrite"):
        loop.run(settings(tiny()), str(tmp_path), progress=False)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    # the same config's metrics, killed before its first checkpoint: restarting from step 0 is a resume, said aloud
    (tmp_path / "config.json").write_text(tiny().to_json())
    loop.check_existing_run(tiny(), str(tmp_path))
    assert "starting again from step 0" in capfd.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_workdir_is_refused_before_anything_runs(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(workdir_lib.WorkdirError, match="not writable"):
            loop.run(settings(tiny()), str(tmp_path), progress=False)
    finally:
        tmp_path.chmod(0o700)


# ---- one-line errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,line", [
    (["--config.sepo.foo=1"], "unknown config key config.sepo.foo (in --config.sepo.foo); did you mean config."),
    (["--config.sepo.lambda"], "unknown config key config.sepo.lambda (in --config.sepo.lambda); did you mean "
                               "config.sepo.lambda_c or config.sepo.lambda_e or config.sepo.lambda_x?"),
    (["--config.model.hidden_size=0"], "config.model.hidden_size: must be an integer >= 1, got 0"),
    (["--workdir=FILE"], "is a file, not a folder; pass a folder"),
])
def test_cli_user_errors_are_one_line_naming_the_culprit_with_exit_code_2(tmp_path, args, line):
    (tmp_path / "file").write_text("")
    args = [a.replace("FILE", str(tmp_path / "file")) for a in args]
    workdir = [] if any(a.startswith("--workdir") for a in args) else [f"--workdir={tmp_path / 'run'}"]
    out = subprocess.run([sys.executable, "-m", "sepo_jax.train", "--config=configs/kuhn.py", *args, *workdir],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"sepo_jax: error: {out.stderr.split('error: ', 1)[1].strip()}"]
    assert line in out.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_override_keys_are_named_in_full_with_the_nearest_key():
    c = default_config("kuhn")
    assert cli.explain_override(["--config.grpo.learnin_rate=3"], c) == (
        "unknown config key config.grpo.learnin_rate (in --config.grpo.learnin_rate); did you mean config.grpo.learning_rate?")
    assert "did you mean config.sepo.lambda_e?" in cli.explain_override(["--config.sepp.lambda_e=1"], c)
    assert cli.explain_override(["--config.sepo.lambda_e=1", "--workdir=x"], c) is None


def test_os_errors_and_a_full_disk_are_one_line_naming_the_path_and_what_to_do(tmp_path, monkeypatch, capsys):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    assert cli.os_error_line(full, str(tmp_path)) == (
        f"{tmp_path / 'metrics.jsonl'}: No space left on device; the disk is full: free space there, or pass a "
        "--workdir on another disk")
    read_only = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "config.json"))
    assert "pass a --workdir you can write to" in cli.os_error_line(read_only, str(tmp_path))

    def raise_(e):
        def run(*args, on_ready, **kwargs):
            on_ready()  # mid-training: an OSError is still one line
            raise e
        return run

    monkeypatch.setattr(loop, "run", raise_(full))
    with pytest.raises(SystemExit) as exit_:
        cli.run_training(settings(tiny()), str(tmp_path))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"sepo_jax: error: {cli.os_error_line(full, str(tmp_path))}\n"
    monkeypatch.setattr(loop, "run", raise_(ValueError("a bug mid-training")))
    with pytest.raises(ValueError, match="a bug mid-training"):  # not a user error: the traceback stays
        cli.run_training(settings(tiny()), str(tmp_path))

    def bug_before_start(*args, **kwargs):
        raise RuntimeError("Fetching value for `jax.Array` that spans non-addressable devices")

    monkeypatch.setattr(loop, "run", bug_before_start)
    with pytest.raises(RuntimeError, match="non-addressable"):  # a bug in setup keeps its traceback too
        cli.run_training(settings(tiny()), str(tmp_path))


def test_a_step_that_needs_more_memory_than_the_device_has_stops_naming_the_keys(monkeypatch):
    step = jax.jit(lambda state, frozen: (state * 2 + frozen, {"loss": state.sum()}), donate_argnums=0)
    state, frozen = jnp.ones((1024, 1024)), jnp.ones((1024, 1024))  # 4 MiB each
    monkeypatch.setattr(loop, "device_memory", lambda: (64 * 2**20, "that one test device holds"))
    loop.check_memory([("SFT", step, "config.sft.episodes")], state, frozen)  # fits in 64 MiB
    monkeypatch.setattr(loop, "device_memory", lambda: (2**20, "that one test device holds"))
    with pytest.raises(ValueError, match=r"the SFT step needs about \d+\.\d MiB per device, more than the 1\.0 MiB "
                                         "that one test device holds: lower config.sft.episodes"):
        loop.check_memory([("SFT", step, "config.sft.episodes")], state, frozen)
