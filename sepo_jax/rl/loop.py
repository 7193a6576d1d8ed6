"""The training loop: SFT then SEPO steps, metrics (JSONL + TensorBoard), orbax checkpoints, resume.

A run lives in one workdir: `metrics.jsonl` (one line per logged SEPO step, the CLI contract),
`sft_metrics.jsonl` (the warm start), `tb/` (TensorBoard), `checkpoints/` (orbax, async, the last
few kept) and `config.json`. Rerunning on the same workdir restores the latest checkpoint, drops
metric lines written after it and continues the same trajectory (same config + seed = same metrics).

Faults: a process killed at any moment (even mid-save or mid-line) resumes exactly, because orbax
commits a checkpoint only when it is complete and a torn last metrics line is dropped. A checkpoint
that no longer restores is reported, moved to `damaged_checkpoints/`, and the run resumes from the
newest one that does. Resuming with a config that would change the trajectory stops before any
compute and names the keys that differ.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from .trainer import Trainer

CONTRACT_KEYS = ("step", "payoff", "exploit_pool_advantage", "collusion", "externality", "safety", "kl", "loss")
# keys a resumed run may change: they do not alter the trajectory (the mesh: same metrics on 1 or many devices)
RESUMABLE_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "mesh.data")


class MetricsLog:
    """Appends JSON lines; on resume keeps only lines up to the restored step."""

    def __init__(self, path: str, keep_up_to: int):
        self.path = path
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
                if record["step"] <= keep_up_to:
                    kept.append(line if line.endswith("\n") else line + "\n")
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


def check_resume_config(saved_json: str, c: ml_collections.ConfigDict, workdir: str) -> None:
    """Raise if `c` differs from the config a workdir's checkpoints were trained with in any key
    outside RESUMABLE_KEYS."""
    old, new = _flat(json.loads(saved_json)), _flat(json.loads(c.to_json()))
    missing = "<absent>"
    diff = [f"{k}: {old.get(k, missing)!r} in the run, {new.get(k, missing)!r} now" for k in sorted(old.keys() | new.keys())
            if k not in RESUMABLE_KEYS and old.get(k, missing) != new.get(k, missing)]
    if diff:
        raise ValueError(
            f"{workdir} holds checkpoints of a run with a different config, and resuming would mix two runs: "
            + "; ".join(diff) + ". Use a new --workdir, or pass the run's values. Only "
            + ", ".join(RESUMABLE_KEYS) + " may change when resuming.")


def restore_latest(manager: ocp.CheckpointManager, target: dict, workdir: str) -> dict:
    """The newest checkpoint that restores into `target` (or `target` when there is none). Newer ones
    that fail while an older one restores are damaged: they are reported and moved aside."""
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax and tensorstore raise many kinds; report which checkpoint and why
            failed.append((step, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            continue
        for bad, why in failed:
            aside = os.path.join(workdir, "damaged_checkpoints", str(bad))
            print(f"sepo_jax: checkpoint step {bad} in {workdir} cannot be restored ({why}); moved to {aside}, "
                  f"resuming from step {step}", file=sys.stderr, flush=True)
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.replace(os.path.join(manager.directory, str(bad)), aside)
        if failed:
            manager.reload()
        return state
    if failed:
        raise RuntimeError(f"no checkpoint in {workdir}/checkpoints restores into this config's model: "
                           + "; ".join(f"step {s}: {w}" for s, w in failed))
    return target


def _host(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _checkpointer(workdir: str, c) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=c.keep_checkpoints, enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def run(c: ml_collections.ConfigDict, workdir: str, *, progress: bool | None = None) -> dict:
    """Train to `c.sft.steps + c.steps` total steps in `workdir`; returns the last logged metrics."""
    os.makedirs(workdir, exist_ok=True)
    manager = _checkpointer(workdir, c)
    config_path = os.path.join(workdir, "config.json")
    if manager.all_steps() and os.path.exists(config_path):
        with open(config_path) as f:
            check_resume_config(f.read(), c, workdir)
    trainer = Trainer(c)
    _write_atomically(config_path, c.to_json(indent=2))
    state = restore_latest(manager, trainer.init_state(), workdir)
    step = int(state["step"])
    sft_steps, total = c.sft.steps, c.sft.steps + c.steps
    sft_log = MetricsLog(os.path.join(workdir, "sft_metrics.jsonl"), step)
    log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), step - sft_steps)
    from tensorboardX import SummaryWriter

    tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=step)
    bar = _progress(progress, total, step)
    last, t0, start = {}, time.time(), step
    while step < total:
        sepo = step >= sft_steps
        if step == sft_steps:
            state = trainer.start_sepo(state)
        state, metrics = (trainer.sepo_step if sepo else trainer.sft_step)(state)
        step += 1
        phase_step = step - sft_steps if sepo else step
        if phase_step % c.log_every == 0 or step in (sft_steps, total) or (sepo and phase_step == 1):
            last = {"step": phase_step, **_host(metrics), "time": time.time() - t0}
            (log if sepo else sft_log).write(last)
            for k, v in last.items():
                tb.add_scalar(f"{'sepo' if sepo else 'sft'}/{k}", v, step)
            bar(step, last, sepo, (time.time() - t0) / (step - start) * (total - step))
        if step % c.checkpoint_every == 0 or step == total or step == sft_steps:
            manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    tb.close()
    return last


def _progress(enabled, total, step):
    """A one-line progress display on a terminal, plain log lines otherwise."""
    tty = sys.stdout.isatty() if enabled is None else enabled

    def show(step, m, sepo, eta):
        keys = ("payoff", "exploit_pool_advantage", "nash_conv") if sepo else ("sft_loss", "nash_conv")
        parts = " ".join(f"{k}={m[k]:.4f}" for k in keys if k in m)
        line = f"[{'sepo' if sepo else 'sft '}] step {step}/{total} {parts} eta {eta:.0f}s"
        print(("\r" + line.ljust(100)) if tty else line, end="" if tty else "\n", flush=True)

    return show
