"""XLA:CPU settings for the training step: compile time and seconds per SEPO step under each `XLA_FLAGS`
variant, each in its own process (XLA reads the flags once per process), with the step's loss as a check
that the variant computes the same step.

    PYTHONPATH=. python experiments/bench_cpu_flags.py [--steps 5] [--groups-per-opponent 8]

The step is `configs/kuhn.py`'s with `credited` rewards (the layout of `bench_train.py`'s case (a)),
freshly initialised weights, no warm start. The default runs first and last: the gap between the two is
the noise of the run. Writes experiments/results/bench_cpu_flags.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys

VARIANTS = {
    "default": "",
    "LLVM -O0 (the test suite's)": "--xla_backend_optimization_level=0",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "oneDNN custom calls": "--xla_cpu_experimental_onednn_custom_call=true",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "no multi-thread Eigen": "--xla_cpu_multi_thread_eigen=false",
    "no thunk runtime": "--xla_cpu_use_thunk_runtime=false",
    "default, again": "",  # the spread between the two defaults is the run's noise
}


def child(args) -> None:
    import statistics
    import time

    import jax

    from sepo_jax.config import default_config, settings
    from sepo_jax.rl import trainer

    c = default_config("kuhn")
    c.sepo.credit, c.mesh.data = "credited", 1
    c.rollout.groups_per_opponent = args.groups_per_opponent
    s, params, frozen = trainer.build(settings(c))
    state = trainer.start_sepo(trainer.init_state(s, params))
    step = trainer.make_sepo_step(s)
    t0 = time.perf_counter()
    state, metrics = step(state, frozen)
    loss = float(metrics["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = step(state, frozen)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    print(json.dumps(dict(compile_s=compile_s, step_s=statistics.median(times), loss=loss)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--groups-per-opponent", type=int, default=8)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="experiments/results/bench_cpu_flags.md")
    args = ap.parse_args()
    if args.child:
        return child(args)
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    load = [uptime()]
    rows = {}
    for name, flags in VARIANTS.items():
        env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
        run = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--groups-per-opponent",
                              str(args.groups_per_opponent)], env=env, capture_output=True, text=True)
        if run.returncode:
            rows[name] = dict(error=(run.stderr.strip().splitlines() or ["?"])[-1][:120])
        else:
            rows[name] = json.loads(run.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    load.append(uptime())
    base = rows["default"]
    lines = ["| variant | XLA_FLAGS | compile s | s/step | vs default | first loss - default's |", "|---|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | `{VARIANTS[name]}` | - | - | - | failed: {r['error']} |")
            continue
        lines.append(f"| {name} | `{VARIANTS[name] or '(none)'}` | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
                     f"{base['step_s'] / r['step_s']:.2f}x | {r['loss'] - base['loss']:.1e} |")
    table = "\n".join(lines)
    print("\n" + table)
    from experiments.bench_envs import machine

    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if "PYTHONPATH" in os.environ else ""
    with open(args.out, "w") as f:
        f.write("# XLA:CPU flags for the training step\n\n"
                f"Command: `{env}python {' '.join(sys.argv)}`\n\nDate: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                f"Machine: {machine()}; load before / after: `{load[0]}` / `{load[1]}`\n\n"
                + __doc__.split("\n\n")[2].split("Writes")[0].strip() + f" {args.groups_per_opponent} groups per opponent, "
                f"median of {args.steps} steps after the compiling one.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
