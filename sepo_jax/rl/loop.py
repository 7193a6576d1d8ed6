"""The training loop: SFT then SEPO steps, metrics (JSONL + TensorBoard), orbax checkpoints, resume.

A run lives in one workdir: `metrics.jsonl` (one line per logged SEPO step, the CLI contract),
`sft_metrics.jsonl` (the warm start), `tb/` (TensorBoard), `checkpoints/` (orbax, async, the last
few kept) and `config.json`. One step counter numbers all of them and the console: steps
1..sft.steps are the warm start, sft.steps+1..sft.steps+steps are SEPO. Rerunning on the same workdir
restores the latest checkpoint, drops metric lines written after it and continues the same trajectory
(same config + seed = same metrics).

Faults: a process killed at any moment (even mid-save or mid-line) resumes exactly, because orbax
commits a checkpoint only when it is complete and a torn last metrics line is dropped. A checkpoint
that no longer restores is reported, moved to `damaged_checkpoints/`, and the run resumes from the
newest one that does; each checkpoint carries a record (its config and a checksum of every array,
committed with it), so flipped bytes or non-finite values count as damage too, and a resume is checked
against the run's config even when config.json is lost. Resuming with a config that would change the
trajectory stops before any compute and names the keys that differ. One run at a time holds a workdir
(`workdir.Lock`); nothing is written there before the config and the model are known good, and a
workdir holding metrics but no checkpoint of this config is never overwritten unless asked
(`overwrite`). In a multi-process run every process trains and saves its
part of each checkpoint, and process 0 alone writes the metrics, TensorBoard and config files; when a
process dies the others stop with an error within the coordination service's heartbeat timeout
(`parallel.initialize_distributed`), and rerunning every process resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from .. import workdir as workdir_lib
from ..errors import CheckpointError, MemoryBudgetError, WorkdirError
from ..progress import Progress, duration, fields
from ..settings import Settings
from . import trainer

# in every SEPO metrics line of a run on the three training pools (a pool's metrics only when it is trained on)
CONTRACT_KEYS = ("step", "payoff", "exploit_pool_advantage", "collusion", "externality", "safety", "kl", "loss")
# keys a resumed run may change: they do not alter the trajectory (the mesh: same metrics on 1 or many devices)
RESUMABLE_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "mesh.data", "mesh.fsdp")


class MetricsLog:
    """Appends JSON lines; on resume keeps only lines up to the restored step (`last`: the last kept one).
    A line numbered before `first` (the phase's first step) is refused."""

    def __init__(self, path: str, keep_up_to: int, first: int = 1):
        self.path, self.last = path, {}
        if os.path.exists(path):
            with open(path) as f:
                lines = [l for l in f if l.strip()]
            kept = []
            for i, line in enumerate(lines):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # torn by a kill mid-write
                        break
                    raise ValueError(f"{path}, line {i + 1}, is not JSON: {line[:80]!r}") from None
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError(f"{path}, line {i + 1}, is not a metrics record (a JSON object with an integer "
                                     f"'step'): {line[:80]!r}; fix or delete that line, or start over with --overwrite")
                if record["step"] < first:  # SEPO steps were numbered from 1 before the phases shared one counter
                    raise ValueError(f"{path}, line {i + 1}, is step {record['step']}, before this phase's first step "
                                     f"{first}: it was written when SEPO steps were numbered from 1; add {first - 1} "
                                     "to each step there, or start over with --overwrite")
                if record["step"] <= keep_up_to:
                    kept.append(line if line.endswith("\n") else line + "\n")
                    self.last = record
            _write_atomically(path, "".join(kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _write_atomically(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def resumable_keys(*flat_configs: dict) -> tuple[str, ...]:
    """RESUMABLE_KEYS, less `steps` where a config decays its learning rate over the steps (then the number
    of steps is part of the trajectory)."""
    cosine = any(f.get("grpo.lr_schedule") == "cosine" for f in flat_configs)
    return tuple(k for k in RESUMABLE_KEYS if not (cosine and k == "steps"))


def config_diff(saved_json: str, c: Settings) -> tuple[list[str], tuple[str, ...]]:
    """(`key: old in the run, new now` for every key where `c` differs from a saved config, except the keys
    that may change, and those keys)."""
    old, new = _flat(json.loads(saved_json)), _flat(json.loads(c.to_json()))
    missing, keep = "<absent>", resumable_keys(old, new)
    return [f"{k}: {old.get(k, missing)!r} in the run, {new.get(k, missing)!r} now" for k in sorted(old.keys() | new.keys())
            if k not in keep and old.get(k, missing) != new.get(k, missing)], keep


def check_resume_config(saved_json: str, c: Settings, workdir: str) -> None:
    """Raise if `c` differs from the config a workdir's checkpoints were trained with in any key that may
    not change on resume (`resumable_keys`)."""
    diff, keep = config_diff(saved_json, c)
    if diff:
        raise ValueError(
            f"{workdir} holds checkpoints of a run with a different config, and resuming would mix two runs: "
            + "; ".join(diff) + ". Use a new --workdir (or --fresh), or pass the run's values. Only "
            + ", ".join(keep) + " may change when resuming (steps not under grpo.lr_schedule=cosine: it decays over "
            "the steps).")


def restore_latest(manager: ocp.CheckpointManager, target: dict, workdir: str) -> dict:
    """The newest checkpoint that restores into `target` (or `target` when there is none) and passes its
    checks: the checksums saved with it (`save_checkpoint`) match what was read, and every floating
    value is finite. Newer ones that fail while an older one passes are damaged: they are reported and
    moved aside."""
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(target))
            why = workdir_lib.verify(state, manager.metadata(step).custom_metadata or {})
        except Exception as e:  # orbax and tensorstore raise many kinds; report which checkpoint and why
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if why is not None:
            failed.append((step, why))
            continue
        for bad, why in failed:
            aside = os.path.join(workdir, "damaged_checkpoints", str(bad))
            print(f"sepo_jax: checkpoint step {bad} in {workdir} is damaged ({why}); moved to {aside}, "
                  f"resuming from step {step}", file=sys.stderr, flush=True)
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.replace(os.path.join(manager.directory, str(bad)), aside)
        if failed:
            manager.reload()
        return state
    if failed:
        raise CheckpointError(f"no checkpoint in {workdir}/checkpoints restores into this config's model: "
                           + "; ".join(f"step {s}: {w}" for s, w in failed))
    return target


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state, c: Settings) -> None:
    """Save `state` as checkpoint `step` (asynchronously) with its record, which orbax commits together
    with the arrays: the config that defines the trajectory (so a resume is checked even when
    config.json is lost) and a checksum of every array (so flipped bytes are caught on restore)."""
    checksums, _ = workdir_lib.checksums(state)
    record = {"config": json.loads(c.to_json()), "checksums": checksums}
    manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=record)


def check_existing_run(c: Settings, workdir: str, *, announce: bool = True) -> None:
    """Raise, before anything is written, when `workdir` holds a run that `c` would not continue: its
    checkpoints were trained with a config that differs in a trajectory key (read from the newest
    checkpoint's record, else config.json), or it holds metrics but no checkpoint and no config.json
    saying they came from this same config (then training would erase them)."""
    if not os.path.isdir(workdir):
        return
    saved, _ = workdir_lib.saved_config(workdir)
    if workdir_lib.committed_steps(workdir):
        if saved is not None:
            check_resume_config(saved, c, workdir)
        return
    written = workdir_lib.metrics_written(workdir)
    if not written:
        return
    diff = config_diff(saved, c)[0] if saved is not None else None
    if diff is None or diff:
        why = ("no config.json says which run wrote them" if diff is None
               else "they were written with another config (" + "; ".join(diff) + ")")
        raise WorkdirError(
            f"{workdir} holds metrics ({', '.join(written)}) but no checkpoint to resume from, and {why}; training "
            "here would erase them. Pass --overwrite to delete the run's files there and start over, or use a new --workdir")
    if announce:
        print(f"sepo_jax: {workdir} holds metrics ({', '.join(written)}) of this config but no checkpoint; "
              "starting again from step 0 (the same trajectory rewrites them)", file=sys.stderr, flush=True)


def _prepare_workdir(c: Settings, workdir: str, lock: workdir_lib.Lock, overwrite: bool) -> None:
    """Checks that read only, before the model is built: the path can hold a run, no other run holds
    an existing workdir (refused at once), and the run there is one `c` continues."""
    workdir_lib.check_usable(workdir)
    if jax.process_index() == 0 and os.path.isdir(workdir):
        lock.acquire()
    if not overwrite:
        check_existing_run(c, workdir, announce=False)


def _open_workdir(c: Settings, workdir: str, lock: workdir_lib.Lock, overwrite: bool) -> None:
    """Once the config and the model are known good: create and lock the workdir (process 0, which alone
    writes the shared files), clear the run's files (`overwrite`) or check again under the lock."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        lock.acquire()
        if overwrite:
            removed = workdir_lib.clear(workdir)
            if removed:
                print(f"sepo_jax: --overwrite: removed {', '.join(removed)} from {workdir}", file=sys.stderr, flush=True)
        else:
            check_existing_run(c, workdir)
    if jax.process_count() > 1:  # the others wait until process 0 has cleared or checked the workdir
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("sepo_jax: workdir ready")


def device_memory() -> tuple[int | None, str]:
    """Bytes one local device may use, and what they are: the accelerator's own limit, or on a CPU the
    host's available memory shared by its devices."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"that one {device.device_kind} holds"
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:
        return None, ""
    n = len(jax.local_devices())
    return available // n, "of available host memory" + (f" per device ({n} share it)" if n > 1 else "")


def check_memory(steps: list[tuple[str, object, str]], state, frozen, report=None) -> None:
    """Compile each step and stop before the first step when its compiled program needs more memory per
    device than a device has (XLA's estimate: arguments + outputs - donated + temporaries + code), naming
    the keys that shrink it. `steps` holds (name, jitted step, keys); the compile is the one the first
    call would do anyway (jit reuses it). `report(name, seconds)` is called before each compile (seconds
    None) and after it."""
    limit, what = device_memory()
    for name, step, keys in steps:
        if report is not None:
            report(name, None)
        t = time.perf_counter()
        compiled = step.lower(state, frozen).compile()
        if report is not None:
            report(name, time.perf_counter() - t)
        stats = compiled.memory_analysis() if limit is not None else None
        if stats is None:
            continue
        need = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
                + stats.temp_size_in_bytes + stats.generated_code_size_in_bytes)
        if need > limit:
            size = lambda b: f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"  # noqa: E731
            raise MemoryBudgetError(
                f"the {name} step needs about {size(need)} per device, more than the {size(limit)} {what}: lower {keys}, "
                "or spread the batch and the parameters over more devices (config.mesh.data, config.mesh.fsdp) or "
                "rematerialise (config.model.remat)")


def _host(metrics: dict) -> dict:
    """Scalar metrics as floats, read from this process's own copy (a multi-process array's global
    value is not fetchable, and every process holds the whole scalar)."""
    return {k: float(np.asarray(v.addressable_data(0) if isinstance(v, jax.Array) else v)) for k, v in metrics.items()}


def _checkpointer(workdir: str, c: Settings) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=c.keep_checkpoints, enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def run(c: Settings, workdir: str, *, progress: bool | None = None, overwrite: bool = False,
        on_ready=None) -> dict:
    """Train to step `c.sft.steps + c.steps` in `workdir`; returns the last logged metrics (on a run
    found complete, the last line of its metrics.jsonl).

    Holds the workdir's lock for the run's life (`workdir.Lock`). Nothing is written to `workdir` until
    the config is valid and the model is built; `overwrite` deletes an earlier run's files there first.
    `on_ready()` is called once the config, the model, the workdir, the checkpoint and the metrics files
    are checked and restored, before the steps are compiled (the CLI reports a ValueError raised before it
    as one line). `progress`: a progress bar (True), plain lines (False) or a bar when stdout is a terminal
    (None)."""
    lock = workdir_lib.Lock(workdir)
    try:
        _prepare_workdir(c, workdir, lock, overwrite)
        return _run(c, workdir, lock, progress, overwrite, on_ready)
    finally:
        lock.release()


def plan(sft_steps: int, total: int) -> str:
    """How a run's steps are numbered, e.g. `steps 1-300 are the SFT warm start, 301-400 SEPO`."""
    parts = ([f"1-{sft_steps} are the SFT warm start"] if sft_steps else []) + (
        [f"{sft_steps + 1}-{total} SEPO"] if total > sft_steps else [])
    return "steps " + ", ".join(parts) if parts else "no steps"


def _announce(workdir: str, step: int, sft_steps: int, total: int) -> str:
    if step >= total:
        return f"sepo_jax: the run in {workdir} is complete (step {step} of {total}); nothing to train"
    if step == 0:
        return f"sepo_jax: starting the run in {workdir} at step 0 of {total} ({plan(sft_steps, total)})"
    return (f"sepo_jax: resuming the run in {workdir} from its checkpoint at step {step} of {total} "
            f"({plan(sft_steps, total)})")


def _run(c: Settings, workdir: str, lock: workdir_lib.Lock, progress: bool | None, overwrite: bool,
         on_ready) -> dict:
    setup, params, frozen = trainer.build(c)
    frozen = trainer.place_frozen(setup, frozen)
    sft_step, sepo_step = trainer.make_sft_step(setup), trainer.make_sepo_step(setup)
    primary = jax.process_index() == 0  # in a multi-process run one process writes the shared files and the console
    _open_workdir(c, workdir, lock, overwrite)
    manager = _checkpointer(workdir, c)
    config_path = os.path.join(workdir, "config.json")
    if primary:
        _write_atomically(config_path, c.to_json(indent=2))
    state = restore_latest(manager, trainer.init_state(setup, params), workdir)
    step = int(state.step)
    sft_steps, total = c.sft.steps, c.sft.steps + c.steps
    last = {}
    if primary:
        from tensorboardX import SummaryWriter

        sft_log = MetricsLog(os.path.join(workdir, "sft_metrics.jsonl"), step)
        log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), step, first=sft_steps + 1)
        last = log.last or sft_log.last
        tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=step)
    show = Progress(progress)
    say = show.say if primary else (lambda line: None)
    say(_announce(workdir, step, sft_steps, total))
    if on_ready is not None:
        on_ready()

    def report(name, seconds):
        say(f"compiling the {name} step..." if seconds is None else f"compiled the {name} step in {seconds:.1f}s")

    check_memory([("SFT", sft_step, "config.sft.episodes")] * (step < sft_steps)
                 + [("SEPO", sepo_step, "config.rollout.group_size or config.rollout.groups_per_opponent, or raise config.grpo.microbatches")] * (step < total),
                 state, frozen, report)
    t0, start, phase = time.time(), step, None
    while step < total:
        sepo = step >= sft_steps
        if step == sft_steps:
            state = trainer.start_sepo(state)
        if primary and phase != sepo:
            phase = sepo
            show.start("sepo" if sepo else "sft", step, total if sepo else sft_steps)
        state, metrics = (sepo_step if sepo else sft_step)(state, frozen)
        step += 1
        logged = step % c.log_every == 0 or step in (sft_steps, total) or step == sft_steps + 1
        if logged:
            last = {"step": step, **_host(metrics), "time": time.time() - t0}
            if primary:
                (log if sepo else sft_log).write(last)
                for k, v in last.items():
                    if k != "step":
                        tb.add_scalar(f"{'sepo' if sepo else 'sft'}/{k}", v, step)
        else:
            jax.block_until_ready(metrics)  # the display counts finished steps, not dispatched ones
        if primary:
            keys = ("payoff", "exploit_pool_advantage", "nash_conv") if sepo else ("sft_loss", "nash_conv")
            show.advance(step, fields(last, keys) if logged else "")
        if step % c.checkpoint_every == 0 or step == total or step == sft_steps:
            save_checkpoint(manager, step, state, c)
    manager.wait_until_finished()
    show.end()
    if step > start:
        say(f"sepo_jax: trained steps {start + 1}-{step} in {duration(time.time() - t0)}")
    if primary:
        tb.close()
    return last
