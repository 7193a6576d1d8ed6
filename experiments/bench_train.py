"""Training throughput: one SEPO-GRPO step on repeated Kuhn poker, ours (one jitted step: rollout,
rewards, advantages, update) side by side with the same step as a PyTorch + transformers loop over a
Python game (`baselines/torch_kuhn.py`, the paper's way) and, when TRL is installed, with TRL's
`GRPOTrainer` on the same decision prompts (`baselines/trl_kuhn.py`).

    PYTHONPATH=. python experiments/bench_train.py [--steps 10] [--trl-steps 5]

Same work on every side: the config's slot layout (pools x opponents x group size, the learner's seat),
6-hand episodes with the compact prompt, the same initial weights (our model after a short supervised
warm start, exported with `save_hf` and loaded by transformers), temperature, learning rate, beta and clipping, `credited` rewards. Before
timing, the script checks that both sides see the same prompt texts and payoffs (Python game vs ours)
and that the two models give the same action probabilities on the same token ids. The torch loop
tokenizes each prompt as one text, which gives slightly fewer tokens than our piece-wise template
(e.g. 39 vs 43): a little less work on its side. TRL cannot play multi-decision episodes: it gets single decision
prompts, generates up to 2 free tokens and is rewarded with the hand's payoff; its row counts learner
decisions. Ours is timed first for every batch size, before torch runs in the process. Ours also computes the exact NashConv of the policy each step (a metric the others lack).
Medians of timed steps after a warm-up step (ours: after compilation, reported apart). Ours runs twice:
scoring each distinct decision prompt once in the update (the default, `grpo.share_prompts`) and scoring
every decision slot on its own, so the table shows where the saving comes from.
Writes experiments/results/bench_train.md.
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from experiments.bench_envs import machine
from experiments.baselines import pykuhn
from experiments.baselines.torch_kuhn import TorchKuhnGRPO
from sepo_jax.config import default_config
from sepo_jax.model.weights import save_hf
from sepo_jax.rl import rollout, sepo
from sepo_jax.rl import trainer

POOL_NAMES = {v: k for k, v in sepo.POOL_INDEX.items()}


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _median_seconds(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ours(s: trainer.Setup, state: trainer.TrainState, frozen, steps: int) -> dict:
    """Seconds per step (after compiling it, timed apart) and of its rollout alone (`state` is donated)."""
    lay = s.layout
    play = jax.jit(lambda params, frozen, key: rollout.rollout(
        s.game, s.renderer, s.policy.learner(params, frozen), jnp.asarray(lay.opponent),
        jnp.asarray(lay.seat), key, group_size=lay.group_size))
    jax.block_until_ready(play(state.params, frozen, jax.random.key(0)))
    rollout_s = _median_seconds(lambda: play(state.params, frozen, jax.random.key(1)), steps)
    sepo_step = trainer.make_sepo_step(s)
    t0 = time.perf_counter()
    box = list(sepo_step(state, frozen))
    jax.block_until_ready(box[1])
    compile_s = time.perf_counter() - t0

    def step():
        box[:] = sepo_step(box[0], frozen)
        return box[1]

    return {"seconds_per_step": _median_seconds(step, steps), "rollout_s": rollout_s, "compile_s": compile_s,
            "update_rows": int(box[1]["update_rows"])}


def check_same_policy(s: trainer.Setup, params, frozen, torch_side: TorchKuhnGRPO, episodes: int = 8) -> float:
    """Max |p_ours - p_torch| over every decision of random playouts, both models fed our token ids."""
    game = s.game
    worst = 0.0
    for e in range(episodes):
        state = game.init(jax.random.key(e))
        rng = np.random.default_rng(e)
        while not bool(state.terminated):
            player = int(state.current_player)
            ids, mask = s.renderer.render(game, state, jnp.int32(player))
            mine = jnp.exp(s.policy.log_probs(params, frozen, ids[None], mask[None], state.legal_action_mask[None]))
            ids, mask = (torch.tensor(np.asarray(x)[None].astype(np.int64)) for x in (ids, mask))
            theirs = torch_side.action_logp_ids(torch_side.model, ids, mask).exp().detach().numpy()
            worst = max(worst, float(np.abs(np.asarray(mine) - theirs).max()))
            state = game.step(state, int(rng.integers(2)), None)
    return worst


def config(groups_per_opponent: int, share_prompts: bool = True):
    c = default_config("kuhn")
    c.sepo.credit, c.mesh.data = "credited", 1
    c.rollout.groups_per_opponent = groups_per_opponent
    c.grpo.share_prompts = share_prompts
    return c


def setup(groups_per_opponent: int, sft_steps: int):
    """Our trainer warm-started with `sft_steps` supervised steps, its weights exported for torch."""
    c = config(groups_per_opponent)
    s, params, frozen = trainer.build(c)
    state, sft_step = trainer.init_state(s, params), trainer.make_sft_step(s)
    for _ in range(sft_steps):
        state, _ = sft_step(state, frozen)
    folder = tempfile.mkdtemp(prefix="bench_train_")
    save_hf(nnx.merge(s.graphdef, state.params, frozen), s.tokenizer, folder)
    return c, s, frozen, trainer.start_sepo(state), folder, jax.device_get(state.params)


def ours_every_decision(r, steps: int) -> dict:
    """Ours with `grpo.share_prompts=False` (every decision slot scored on its own), from the same weights."""
    s, params, frozen = trainer.build(config(r["gpo"], share_prompts=False))
    state = trainer.start_sepo(trainer.init_state(s, r["params"]))
    return ours(s, state, frozen, steps)


def torch_baseline(c, s: trainer.Setup, folder: str) -> TorchKuhnGRPO:
    lay = s.layout
    slots = [(POOL_NAMES[int(p)], s.game.opponent_names[int(o)], int(seat)) for p, o, seat in zip(lay.pool, lay.opponent, lay.seat)]
    return TorchKuhnGRPO(folder, slots, lay.group_size, num_hands=s.game.num_rounds,
                         temperature=c.rollout.temperature, learning_rate=c.grpo.learning_rate, beta=c.grpo.beta,
                         clip_eps=c.grpo.clip_eps, lambdas={"lambda_e": c.sepo.lambda_e, "lambda_c": c.sepo.lambda_c},
                         scale=3.0 / s.game.max_payoff, seed=c.seed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps of ours and of the torch loop")
    ap.add_argument("--trl-steps", type=int, default=5, help="timed TRL steps (0 skips TRL)")
    ap.add_argument("--groups-per-opponent", default="1,8", help="batch sizes to run, as GRPO groups per opponent")
    ap.add_argument("--sft-steps", type=int, default=60, help="warm start first, so the model answers PASS/BET")
    ap.add_argument("--out", default="experiments/results/bench_train.md")
    args = ap.parse_args()

    load = [_uptime()]
    pykuhn.check_against_sepo_jax(20)
    runs = [dict(gpo=int(g)) for g in args.groups_per_opponent.split(",")]
    for r in runs:  # ours first, before torch has started any thread pool in this process
        r["c"], r["setup"], r["frozen"], state, r["folder"], r["params"] = setup(r["gpo"], args.sft_steps)
        r["ours"] = ours(r["setup"], state, r["frozen"], args.steps)  # donates `state`
        r["every"] = ours_every_decision(r, args.steps)
        print(f"  groups/opponent {r['gpo']}, ours: {r['ours']['seconds_per_step']:.3f} s/step "
              f"({r['every']['seconds_per_step']:.3f} scoring every decision)", flush=True)
    for r in runs:
        torch_side = torch_baseline(r["c"], r["setup"], r["folder"])
        r["gap"] = check_same_policy(r["setup"], r["params"], r["frozen"], torch_side)
        if r["gap"] > 1e-4:
            raise SystemExit(f"the torch model does not reproduce our policy (max |dp| = {r['gap']:.1e}): "
                             "the comparison would not be the same work")
        r["torch"] = torch_side.time_steps(args.steps)
        r["episodes"] = len(torch_side.slots)
        print(f"  groups/opponent {r['gpo']}, torch loop: {r['torch']['seconds_per_step']:.3f} s/step", flush=True)
    notes = []
    trl_kuhn = None
    if args.trl_steps:
        try:
            from experiments.baselines import trl_kuhn
        except ImportError as e:
            notes.append(f"TRL rows skipped: {e} (pip install -e '.[baselines]')")
    lines = ["| episodes/step | implementation | s/step | of it rollout s | episodes/s | learner decisions/s | "
             "prompts scored in the update | ours / this, decisions/s | note |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        c, group, episodes = r["c"], r["setup"].layout.group_size, r["episodes"]
        decisions = r["torch"]["decisions_per_step"]  # the same layout and game: ours plays as many on average
        rows = [("sepo_jax (one jitted step)", r["ours"]["seconds_per_step"], r["ours"]["rollout_s"], decisions,
                 r["ours"]["update_rows"], f"compile {r['ours']['compile_s']:.1f} s; rollout timed as its own jitted call; "
                 "each distinct prompt scored once"),
                ("sepo_jax, every decision slot scored", r["every"]["seconds_per_step"], r["every"]["rollout_s"], decisions,
                 r["every"]["update_rows"], "`grpo.share_prompts=False`"),
                ("PyTorch + transformers, Python game loop", r["torch"]["seconds_per_step"], r["torch"]["rollout_s"],
                 decisions, f"{decisions:.0f}", "")]
        if trl_kuhn is not None:
            prompts = int(round(decisions / group))
            tr = trl_kuhn.run(r["folder"], steps=args.trl_steps, prompts_per_step=prompts, group_size=group,
                              temperature=c.rollout.temperature, learning_rate=c.grpo.learning_rate,
                              beta=c.grpo.beta, seed=c.seed)
            rows.append((f"TRL {tr['trl_version']} GRPOTrainer, single decisions", tr["seconds_per_step"], None,
                         prompts * group, prompts * group, "free text, up to 2 tokens"))
            print(f"  groups/opponent {r['gpo']}, TRL: {tr['seconds_per_step']:.3f} s/step", flush=True)
        ours_rate = decisions / r["ours"]["seconds_per_step"]
        for name, sec, roll, d, scored, note in rows:
            eps = "-" if "TRL" in name else f"{episodes / sec:,.1f}"
            roll = "-" if roll is None else f"{roll:.3f}"
            lines.append(f"| {episodes} | {name} | {sec:.3f} | {roll} | {eps} | {d / sec:,.1f} | {scored} | "
                         f"{ours_rate / (d / sec):.2f}x | {note} |")
        notes.append(f"{episodes} episodes ({episodes // group} groups of {group}) of {r['setup'].game.num_rounds}-hand "
                     f"Kuhn per step, ~{decisions:.0f} learner decisions; max |p_ours - p_torch| = {r['gap']:.1e}.")
    load.append(_uptime())
    notes.append(f"Load before / after: `{load[0]}` / `{load[1]}`.")
    table, summary = "\n".join(lines), "\n".join(f"- {n}" for n in notes)
    print("\n" + table + "\n\n" + summary)
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if "PYTHONPATH" in os.environ else ""
    with open(args.out, "w") as f:
        f.write("# Training throughput: one SEPO-GRPO step on Kuhn, ours vs a PyTorch loop vs TRL\n\n"
                f"Command: `{env}python {' '.join(sys.argv)}`\n\nDate: {datetime.datetime.now().isoformat(timespec='seconds')}\n\n"
                f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads\n\n"
                + __doc__.split("\n\n", 2)[2].split("Writes")[0].strip() + "\n\n" + table + "\n\n" + summary + "\n")


if __name__ == "__main__":
    main()
