"""Training throughput: one SEPO-GRPO step on repeated Kuhn poker, ours (one jitted step: rollout,
rewards, advantages, update) side by side with the same step as a PyTorch + transformers loop over a
Python game (`baselines/torch_kuhn.py`, the paper's way) and, when TRL is installed, with TRL's
`GRPOTrainer` on the same decision prompts (`baselines/trl_kuhn.py`).

    PYTHONPATH=. python experiments/bench_train.py [--steps 10] [--trl-steps 5]

Same work on every side: the config's slot layout (pools x opponents x group size, the learner's seat),
6-hand episodes with the compact prompt, the same initial weights (ours exported with `save_hf` and
loaded by transformers), temperature, learning rate, beta and clipping, `credited` rewards. Before
timing, the script checks that both sides see the same prompt texts and payoffs (Python game vs ours)
and that the two models give the same action probabilities on the same token ids. The torch loop
tokenizes each prompt as one text, which gives slightly fewer tokens than our piece-wise template
(e.g. 39 vs 43): a little less work on its side. TRL cannot play multi-decision episodes: it gets single decision
prompts, generates up to 2 free tokens and is rewarded with the hand's payoff; its row counts learner
decisions. Ours also computes the exact NashConv of the policy each step (a metric the others lack).
Medians of timed steps after a warm-up step (ours: after compilation, reported apart).
Writes experiments/results/bench_train.md.
"""

import argparse
import datetime
import os
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
from sepo_jax import games
from sepo_jax.config import default_config
from sepo_jax.model.weights import save_hf
from sepo_jax.rl import sepo
from sepo_jax.rl.trainer import Trainer

POOL_NAMES = {v: k for k, v in sepo.POOL_INDEX.items()}


def ours(trainer: Trainer, steps: int) -> dict:
    state = trainer.start_sepo(trainer.init_state())
    t0 = time.perf_counter()
    state, m = trainer.sepo_step(state)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = trainer.sepo_step(state)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return {"seconds_per_step": float(np.median(times)), "compile_s": compile_s}


def check_same_policy(trainer: Trainer, torch_side: TorchKuhnGRPO, episodes: int = 8) -> float:
    """Max |p_ours - p_torch| over every decision of random playouts, both models fed our token ids."""
    game, params = trainer.game, trainer.init_state()["params"]
    worst = 0.0
    for e in range(episodes):
        state = game.init(jax.random.key(e))
        rng = np.random.default_rng(e)
        while not bool(state.terminated):
            player = int(state.current_player)
            ids, mask = trainer.renderer.render(game, state, jnp.int32(player))
            mine = jnp.exp(trainer.policy.log_probs(params, trainer.frozen, ids[None], mask[None], state.legal_action_mask[None]))
            ids, mask = (torch.tensor(np.asarray(x)[None].astype(np.int64)) for x in (ids, mask))
            theirs = torch_side.action_logp_ids(torch_side.model, ids, mask).exp().detach().numpy()
            worst = max(worst, float(np.abs(np.asarray(mine) - theirs).max()))
            state = game.step(state, int(rng.integers(2)), None)
    return worst


def setup(groups_per_opponent: int):
    c = default_config("kuhn")
    c.sepo.credit, c.sft.steps, c.mesh.data = "credited", 0, 1
    c.rollout.groups_per_opponent = groups_per_opponent
    trainer = Trainer(c)
    lay = trainer.layout
    slots = [(POOL_NAMES[int(p)], trainer.game.opponent_names[int(o)], int(s)) for p, o, s in zip(lay.pool, lay.opponent, lay.seat)]
    folder = tempfile.mkdtemp(prefix="bench_train_")
    save_hf(nnx.merge(trainer.graphdef, trainer.init_state()["params"], trainer.frozen), trainer.tokenizer, folder)
    torch_side = TorchKuhnGRPO(folder, slots, lay.group_size, num_hands=trainer.game.num_rounds,
                               temperature=c.rollout.temperature, learning_rate=c.grpo.learning_rate, beta=c.grpo.beta,
                               clip_eps=c.grpo.clip_eps, lambdas={"lambda_e": c.sepo.lambda_e, "lambda_c": c.sepo.lambda_c},
                               scale=3.0 / trainer.game.max_payoff, seed=c.seed)
    return c, trainer, torch_side, folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps of ours and of the torch loop")
    ap.add_argument("--trl-steps", type=int, default=5, help="timed TRL steps (0 skips TRL)")
    ap.add_argument("--groups-per-opponent", default="1,8", help="batch sizes to run, as GRPO groups per opponent")
    ap.add_argument("--out", default="experiments/results/bench_train.md")
    args = ap.parse_args()

    pykuhn.check_against_sepo_jax(20)
    lines = ["| episodes/step | implementation | s/step | episodes/s | learner decisions/s | ours is faster by | note |",
             "|---:|---|---:|---:|---:|---:|---|"]
    notes = []
    for gpo in [int(g) for g in args.groups_per_opponent.split(",")]:
        c, trainer, torch_side, folder = setup(gpo)
        gap = check_same_policy(trainer, torch_side)
        print(f"same prompts and payoffs as ours; max |p_ours - p_torch| on the initial policy: {gap:.2e}", flush=True)
        if gap > 1e-4:
            raise SystemExit("the torch model does not reproduce our policy: the comparison would not be the same work")
        episodes, group = len(torch_side.slots), trainer.layout.group_size
        r = ours(trainer, args.steps)
        print(f"  {episodes} episodes, ours: {r['seconds_per_step']:.3f} s/step", flush=True)
        t = torch_side.time_steps(args.steps)
        print(f"  {episodes} episodes, torch loop: {t['seconds_per_step']:.3f} s/step", flush=True)
        decisions = t["decisions_per_step"]  # the same layout and game: ours plays as many on average
        rows = [("sepo_jax (one jitted step)", r["seconds_per_step"], decisions, f"compile {r['compile_s']:.1f} s"),
                ("PyTorch + transformers, Python game loop", t["seconds_per_step"], decisions, "")]
        if args.trl_steps:
            try:
                from experiments.baselines import trl_kuhn
            except ImportError as e:
                notes.append(f"TRL rows skipped: {e}")
            else:
                prompts = int(round(decisions / group))
                tr = trl_kuhn.run(folder, steps=args.trl_steps, prompts_per_step=prompts, group_size=group,
                                  temperature=c.rollout.temperature, learning_rate=c.grpo.learning_rate,
                                  beta=c.grpo.beta, seed=c.seed)
                rows.append((f"TRL {tr['trl_version']} GRPOTrainer, single decisions", tr["seconds_per_step"],
                             prompts * group, "free text, up to 2 tokens"))
                print(f"  {episodes} episodes, TRL: {tr['seconds_per_step']:.3f} s/step", flush=True)
        ours_rate = decisions / r["seconds_per_step"]
        for name, sec, d, note in rows:
            eps = "-" if "TRL" in name else f"{episodes / sec:,.1f}"
            lines.append(f"| {episodes} | {name} | {sec:.3f} | {eps} | {d / sec:,.1f} | {ours_rate / (d / sec):.2f}x | {note} |")
        notes.append(f"{episodes} episodes ({episodes // group} groups of {group}) of {trainer.game.num_rounds}-hand Kuhn "
                     f"per step, ~{decisions:.0f} learner decisions; max |p_ours - p_torch| = {gap:.1e}.")
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
