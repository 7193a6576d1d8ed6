"""Compiled memory and FLOPs of the SEPO step for 4B models on pod meshes, with no pod and no weights.

AOT-lowers and compiles the real SEPO step (Kuhn, the step's own layout: groups of 8 against every
opponent of the three pools plus the exact best response, LoRA rank 16 on q/k/v/o, prompts padded to
512 tokens) for real 4B decoder shapes (Qwen3-4B, Qwen3.5-4B, Gemma-4-E4B; see `sepo_jax.scale.SHAPES` for where each
shape comes from) on fake 8- and 64-device CPU meshes. Weights and optimizer
state are `jax.ShapeDtypeStruct`s with their shardings: nothing is allocated. Reports per device:
`compiled.memory_analysis()` (arguments + outputs - aliased + temporaries) against a TPU v5e chip
(16 GiB HBM) and a v5p chip (95 GiB), and FLOPs per step, both XLA's `cost_analysis()` of the
partitioned program and an analytic count (2 x parameters x tokens per forward pass), from which it
estimates steps/s at 40% MFU on as many v5e and v5p chips as the mesh has devices (the 8-device
rows are v5e-8, the 64-device rows v5p-64). The estimate is labelled as one: XLA:CPU compiles these
programs, not XLA:TPU, whose fusion and memory scheduling differ. XLA's own count (in parentheses) is
of the partitioned per-device program and counts each loop body once (the layer scan, the rollout's
scan over decisions, the update's microbatches), so it is far below the analytic total; it is shown
only as a cross-check that the microbatched programs do 1/3 and 1/9 of the update per loop trip.

    python experiments/scale_check.py [--models qwen3-4b,qwen3.5-4b,gemma-4-e4b] [--hf-config config.json] [--layouts 8:1x8,8:2x4,64:8x8] [--microbatches 1,3,9]

Writes experiments/results/scale_check.md.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=64"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from sepo_jax import parallel, scale  # noqa: E402
from sepo_jax.config import default_config, settings, validate  # noqa: E402

GIB = 2**30
CHIPS = {"v5e": (16 * GIB, 197e12), "v5p": (95 * GIB, 459e12)}  # HBM per chip, peak bf16 FLOP/s per chip
MFU = 0.4


def config(args, devices: int, microbatches: int):
    c = default_config("kuhn")
    c.compact_prompt = False
    c.model.lora_rank, c.model.lora_alpha = args.lora_rank, 2.0 * args.lora_rank
    c.model.dtype, c.model.remat = args.dtype, args.remat
    c.rollout.group_size = args.group
    episodes_per_gpo = 7 * args.group  # 3 train + 3 exploit (incl. the exact best response) + 1 collusive opponent
    c.rollout.groups_per_opponent = int(np.lcm(episodes_per_gpo, devices) // episodes_per_gpo)
    c.sft.episodes = devices
    c.grpo.microbatches = microbatches
    validate(c)
    return c


def analytic_flops(setup, shape, frozen, prompt_tokens: int) -> float:
    """2 x (parameters in the matmuls) x tokens for each forward pass of the step: the strategy
    read-out, the rollout's prefill of every decision (decoding the 1-2 action tokens is negligible),
    the reference and policy passes of the update and its backward pass (activation gradients through
    the frozen base: one more forward's worth; LoRA's weight gradients are negligible), plus one more
    forward under full remat. Attention scores and the delta rule's state updates are left out."""
    n = scale.matmul_parameters(frozen, shape)
    decisions = setup.layout.opponent.shape[0] * setup.game.max_decisions
    readout = setup.readout[0].shape[0]
    passes = 1 + 1 + 2 + (1 if shape.remat == "full" else 0)  # rollout, reference, policy fwd + bwd, remat
    return 2.0 * n * prompt_tokens * (readout + decisions * passes)


def check(args, name: str, hf: dict, devices: int, data: int, fsdp: int, microbatches: int) -> dict:
    c = config(args, devices, microbatches)
    c.mesh.data, c.mesh.fsdp = data, fsdp
    shape = scale.model_config(hf, c)
    mesh = parallel.make_mesh(data, fsdp)
    t0 = time.time()
    setup, (state, frozen), lowered = scale.lower_sepo_step(settings(c), shape, mesh, prompt_tokens=args.prompt_tokens)
    t1 = time.time()
    compiled = lowered.compile()
    t2 = time.time()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    per_device = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(frozen))
    return dict(model=name, devices=devices, data=data, fsdp=fsdp, microbatches=microbatches,
                episodes=int(setup.layout.opponent.shape[0]),
                weights_gib=weights / GIB, per_device_gib=per_device / GIB, args_gib=mem.argument_size_in_bytes / GIB,
                temp_gib=mem.temp_size_in_bytes / GIB, xla_flops=float(cost.get("flops", float("nan"))),
                flops=analytic_flops(setup, shape, frozen, args.prompt_tokens), lower_s=t1 - t0, compile_s=t2 - t1,
                constants_mib=scale.constant_bytes(lowered) / 2**20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="qwen3-4b,qwen3.5-4b,gemma-4-e4b",
                    help=f"comma-separated keys of sepo_jax.scale.SHAPES {tuple(scale.SHAPES)}")
    ap.add_argument("--hf-config", action="append", default=[],
                    help="a config.json to compile instead of (or besides, with --models) the built-in shapes")
    ap.add_argument("--layouts", default="8:1x8,8:2x4,64:8x8,64:4x16", help="devices:data x fsdp, comma-separated")
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--remat", default="full")
    ap.add_argument("--microbatches", default="1,3,9", help="grpo.microbatches values (the update in slices)")
    ap.add_argument("--out", default="experiments/results/scale_check.md")
    args = ap.parse_args()
    load = [subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()]
    rows = []
    models = [(name, scale.SHAPES[name]) for name in filter(None, args.models.split(","))]
    models += [(os.path.basename(os.path.dirname(os.path.abspath(f))) or f, json.load(open(f))) for f in args.hf_config]
    for name, hf in models:
        for layout in args.layouts.split(","):
            devices, dims = layout.split(":")
            data, fsdp = (int(x) for x in dims.split("x"))
            for micro in args.microbatches.split(","):
                r = check(args, name, hf, int(devices), data, fsdp, int(micro))
                rows.append(r)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    load.append(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    lines = ["| model | devices (data x fsdp) | update slices | episodes/step | frozen weights GiB | per-device GiB (of it temporaries) | "
             "fits v5e 16 GiB | fits v5p 95 GiB | TFLOP/step analytic (XLA per device) | est. steps/s at 40% MFU on as many v5e / v5p chips | "
             "compile s | constants MiB |", "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        est = " / ".join(f"{MFU * peak * r['devices'] / r['flops']:.3f}" for _, peak in CHIPS.values())
        fits = [("yes" if r["per_device_gib"] * GIB <= hbm else "no") for hbm, _ in CHIPS.values()]
        lines.append(f"| {r['model']} | {r['devices']} ({r['data']} x {r['fsdp']}) | {r['microbatches']} | {r['episodes']} | {r['weights_gib']:.2f} | "
                     f"{r['per_device_gib']:.2f} ({r['temp_gib']:.2f}) | {fits[0]} | {fits[1]} | {r['flops'] / 1e12:.1f} "
                     f"({r['xla_flops'] / 1e12:.1f}) | {est} | {r['compile_s']:.0f} | {r['constants_mib']:.2f} |")
    table = "\n".join(lines)
    print("\n" + table)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    with open(args.out, "w") as f:
        f.write("# Scale check: the SEPO step of 4B models on pod meshes, compiled without weights\n\n"
                f"Command: `python {' '.join(sys.argv)}`\n\nDate: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                f"Machine: {cpu}, {os.cpu_count()} cores, jax {jax.__version__}, XLA:CPU with fake devices; "
                f"load before / after: `{load[0]}` / `{load[1]}`\n\n"
                + __doc__.split("\n\n")[1] + "\n\n" + f"Settings: LoRA rank {args.lora_rank}, group {args.group}, "
                f"{args.prompt_tokens}-token prompts, compute {args.dtype} (float32 adapters and Adam state, "
                f"{args.dtype} frozen base), remat {args.remat}.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
