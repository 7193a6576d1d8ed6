"""The training loop: SFT then SEPO steps, metrics (JSONL + TensorBoard), orbax checkpoints, resume.

A run lives in one workdir: `metrics.jsonl` (one line per logged SEPO step, the CLI contract),
`sft_metrics.jsonl` (the warm start), `tb/` (TensorBoard), `checkpoints/` (orbax, async, the last
few kept) and `config.json`. Rerunning on the same workdir restores the latest checkpoint, drops
metric lines written after it and continues the same trajectory (same config + seed = same metrics).
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


class MetricsLog:
    """Appends JSON lines; on resume keeps only lines up to the restored step."""

    def __init__(self, path: str, keep_up_to: int):
        self.path = path
        if os.path.exists(path):
            with open(path) as f:
                lines = [l for l in f if l.strip() and json.loads(l)["step"] <= keep_up_to]
            with open(path + ".tmp", "w") as f:
                f.writelines(lines)
            os.replace(path + ".tmp", path)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _host(metrics: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}


def _checkpointer(workdir: str, c) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=c.keep_checkpoints, enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def run(c: ml_collections.ConfigDict, workdir: str, *, progress: bool | None = None) -> dict:
    """Train to `c.sft.steps + c.steps` total steps in `workdir`; returns the last logged metrics."""
    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(c)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(c.to_json(indent=2))
    manager = _checkpointer(workdir, c)
    state = trainer.init_state()
    if manager.latest_step() is not None:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
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
