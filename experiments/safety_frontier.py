"""Safety frontier on Kuhn (issue 14 item 2): does SEPO reach the Nash mixed strategy?

Each setting trains the embedded model on Kuhn (configs/kuhn.py's prompt settings) from a warm start on the
paper's demonstrators (`sft.expert = "demonstrators"`, never the equilibrium) or from no warm start
(`sft.steps = 0`), with SEPO at a given lambda_e, credit mode (`credited`, or `exact`: the exact best response
to the current policy added to the exploit pool) and training pools (the paper's three, or the exploit pool
alone), and records every step's exact NashConv (of the hand-1 strategy table read from the model) and the
learner's strategy table every few steps. The warm start and the final policy are evaluated on
`--eval-episodes` sampled episodes per opponent of the paper's three pools plus shift (train-pool payoff,
exploit-pool advantage, ...), whatever pools the setting trained on.

    python experiments/safety_frontier.py --warm demo none --credit credited exact --pools all exploit \
        --lambda-e 0 1.5 5 15 50 --lr 1e-3 --steps 60
    python experiments/safety_frontier.py --report-only

Every setting writes `experiments/results/safety_frontier/NAME.json` and is skipped when that file exists
(delete it to rerun). The warm start is cached in `--cache` (it depends only on the seed and `sft.*`). The
report `experiments/results/safety_frontier_kuhn.md` (+ `.png`, NashConv against train-pool payoff) is rebuilt
from every JSON in the directory after each setting; `--notes FILE` appends a findings section to it.
"""

from __future__ import annotations

import argparse
import ast
import glob
import itertools
import json
import os
import pickle
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ablation_credit  # noqa: E402

from sepo_jax import parallel  # noqa: E402
from sepo_jax.config import default_config, settings
from sepo_jax.equilibrium import best_response
from sepo_jax.games import kuhn as kuhn_lib
from sepo_jax.rl import trainer

RESULTS = "experiments/results"
POOLS = {"all": ("train", "exploit", "collusive"), "exploit": ("exploit",), "train_exploit": ("train", "exploit"),
         "br": ("exploit",)}  # br: the exploit pool without its fixed opponents, i.e. the exact best response alone
WARM = {"demo": 150, "none": 0}  # SFT steps on the demonstrators (the credit ablation's 150)
HIST_NAMES = ("open", "checked_to", "facing_bet", "check_bet")  # rows hist*3 + card of kuhn.HISTORIES


def setting_name(warm, credit, pools, lam_e, lr, extra) -> str:
    name = f"{warm}_{credit}_{pools}_le{lam_e:g}_lr{lr:g}"
    for k, v in sorted(extra.items()):
        name += f"_{k.split('.')[-1]}{v}"
    return name.replace(" ", "").replace("'", "").replace("(", "").replace(")", "").replace(",", "-")


def make_config(warm, credit, pools, lam_e, lr, steps, seed, extra: dict):
    c = default_config("kuhn")
    c.seed = seed
    c.sft.expert = "demonstrators"
    c.sft.steps = WARM[warm]
    c.steps = steps
    c.grpo.learning_rate = lr
    c.rollout.common_chance, c.rollout.groups_per_opponent = True, 2  # as the credit ablation
    c.sepo.credit = credit
    c.sepo.lambda_e = lam_e
    c.sepo.pools = POOLS[pools]
    if pools == "br":  # the exploit pool's training episodes play the exact best response alone
        c.sepo.exploit_opponents = "best_response"
    for key, value in extra.items():
        ablation_credit.set_key(c, key, value)
    return settings(c)


def _warm_start(c, mesh, cache: str):
    """(state after the warm start, frozen weights, seconds) with the state cached on disk."""
    key = f"seed{c.seed}_sft{c.sft.steps}_{c.sft.expert}_ep{c.sft.episodes}_lr{c.sft.learning_rate:g}"
    path = os.path.join(cache, key + ".pkl")
    setup, params, frozen = trainer.build(c, mesh=mesh)
    state = trainer.init_state(setup, params)
    if os.path.exists(path):
        with open(path, "rb") as f:
            saved = pickle.load(f)
        state = state.replace(params=jax.device_put(saved["params"], setup.shardings.params),
                              key=jnp.asarray(saved["key"]), step=jnp.int32(saved["step"]))
        return state, frozen, saved["seconds"], True
    t0 = time.time()
    sft_step = trainer.make_sft_step(setup)
    for _ in range(c.sft.steps):
        state, _ = sft_step(state, frozen)
    jax.block_until_ready(state)
    seconds = time.time() - t0
    os.makedirs(cache, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"params": jax.device_get(state.params), "key": np.asarray(jax.device_get(state.key)),
                     "step": int(state.step), "seconds": seconds}, f)
    return state, frozen, seconds, False


def p_bet(table) -> list[float]:
    return [float(x) for x in np.asarray(table)[:, 1]]


def nash_conv_gradient(p) -> list[float]:
    """d NashConv / d P(BET | row), central finite differences on the 12 rows (the best response held
    where it is locally constant): the direction exploitability descent moves each row is minus this."""
    p = np.asarray(p, np.float64)
    out = []
    for i in range(len(p)):
        h = 1e-3
        lo, hi = p.copy(), p.copy()
        lo[i], hi[i] = max(p[i] - h, 0.0), min(p[i] + h, 1.0)
        f = lambda q: float(best_response.nash_conv_table("kuhn", jnp.asarray(kuhn_lib.strategy_table(q), jnp.float32)))  # noqa: E731
        out.append((f(hi) - f(lo)) / max(hi[i] - lo[i], 1e-9))
    return out


def nearest_nash(p) -> dict:
    """The equilibrium-family member nearest to P(BET) table `p` (L1 over the 12 rows, alpha on a grid),
    its alpha and each row's gap (ours - Nash)."""
    p = np.asarray(p)
    best = min(np.linspace(0, 1 / 3, 301), key=lambda a: np.abs(p - kuhn_lib.nash_table(a)[:, 1]).sum())
    nash = kuhn_lib.nash_table(best)[:, 1]
    return {"alpha": float(best), "l1": float(np.abs(p - nash).sum()), "gap": [float(x) for x in p - nash]}


def run_setting(name, c, args, mesh) -> dict:
    t_all = time.time()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    state, frozen, sft_seconds, cached = _warm_start(c, mesh, args.cache)
    setup, _, _ = trainer.build(c, mesh=mesh)
    eval_c = c.replace(**{"sepo.pools": POOLS["all"], "sepo.credit": "credited", "sepo.exploit_opponents": "pool"})
    eval_setup, _, _ = trainer.build(eval_c, mesh=mesh)
    evaluate_fn = trainer.make_evaluate(eval_setup, args.eval_episodes)
    table_fn = jax.jit(trainer._on_mesh(setup, trainer.strategy))

    def evaluate(params):
        m = evaluate_fn(params, frozen, jax.random.PRNGKey(10_000 + c.seed))[0]
        return {k: float(v) for k, v in jax.device_get(m).items()}

    start_eval = evaluate(state.params)
    state = trainer.start_sepo(state)
    state = state.replace(rl_opt=setup.rl_tx.init(state.params))
    state = jax.device_put(state, setup.shardings)
    start_table = p_bet(table_fn(state.params, frozen))
    sepo_step = trainer.make_sepo_step(setup)
    traj, tables = [], [{"step": 0, "p_bet": start_table}]
    t0 = time.time()
    for i in range(c.steps):
        state, m = sepo_step(state, frozen)
        traj.append({k: float(v) for k, v in jax.device_get(m).items()})
        if (i + 1) % args.table_every == 0 or i + 1 == c.steps:
            tables.append({"step": i + 1, "p_bet": p_bet(table_fn(state.params, frozen))})
        if (i + 1) % 10 == 0:
            print(f"  [{name}] step {i + 1}: nash_conv {traj[-1].get('nash_conv', float('nan')):.3f}", flush=True)
    sepo_seconds = time.time() - t0
    final_nc = best_response.nash_conv_table("kuhn", jnp.asarray(kuhn_lib.strategy_table(tables[-1]["p_bet"]), jnp.float32))
    end_eval = evaluate(state.params)
    return {
        "name": name, "config": json.loads(c.to_json()), "seed": c.seed,
        "commit": _commit(), "uptime_before": uptime_before, "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "sft_seconds": sft_seconds, "sft_cached": cached, "sepo_seconds": sepo_seconds, "wall_seconds": time.time() - t_all,
        "start_eval": start_eval, "end_eval": end_eval, "trajectory": traj, "tables": tables,
        "final_nash_conv": float(final_nc),
        "start_nearest_nash": nearest_nash(start_table), "end_nearest_nash": nearest_nash(tables[-1]["p_bet"]),
        "start_nash_conv_gradient": nash_conv_gradient(start_table),
        "end_nash_conv_gradient": nash_conv_gradient(tables[-1]["p_bet"]),
    }


# ---- a tabular learner with the same rewards and advantages (mechanism check) ----------------------


class _RowRenderer:
    """The 'prompt' of a tabular learner: its information-set row (so identical rows group like prompts)."""

    def render(self, game, state, player):
        return game.infoset_index(state, player)[None].astype(jnp.int32), jnp.ones(1, bool)


def tabular_run(c, steps, lr, br_only, seed, init_logits=None, log_every=10) -> dict:
    """SEPO's per-round rewards, group advantages and pool weights (sepo.rewards, grpo.advantages) on a
    softmax table of logits [12, 2] (one table for both seats, like the model's read-out), updated by the
    policy gradient of the clipped surrogate at ratio 1 (ppo_epochs 1) with Adam; no KL term. Isolates
    the reward signal from the language model (which adds a shared representation, the running-score
    prompt and the KL anchor)."""
    import optax

    from sepo_jax import games as games_lib
    from sepo_jax.rl import metrics, rollout, sepo

    game = games_lib.make("kuhn")
    best_response.rules_key(game)  # build the solver's tree outside jit
    if br_only:
        c = c.replace(**{"sepo.exploit_opponents": "best_response"})
    lay = trainer.make_layout(game, c)
    lam = metrics.Lambdas.of(c.sepo.lambda_e, c.sepo.lambda_c, c.sepo.lambda_x, game.max_payoff)
    opponent, seat, pool = (jnp.asarray(x) for x in (lay.opponent, lay.seat, lay.pool))
    tx = optax.adam(lr)

    def learner_of(logits):
        def act(ids, mask, legal, states, key, group_size=1):
            logp_all = jax.nn.log_softmax(logits)[ids[:, 0]]
            logp_all = jnp.repeat(logp_all, group_size, axis=0)
            action = jax.random.categorical(key, logp_all).astype(jnp.int32)
            none = jnp.zeros((action.shape[0], 0), jnp.int32)
            return action, jnp.take_along_axis(logp_all, action[:, None], 1)[:, 0], jnp.exp(logp_all), (none, none.astype(bool))
        return act

    @jax.jit
    def step(logits, opt, key):
        table = jax.nn.softmax(logits)
        nc = best_response.nash_conv_table("kuhn", table)
        _, br = best_response.best_responses("kuhn", table)
        traj = rollout.rollout(game, _RowRenderer(), learner_of(logits), opponent, seat, key, br,
                               group_size=lay.group_size, common_chance=c.rollout.common_chance)
        adv, _, _ = sepo.advantages(traj, pool, lam, lay.group_size, c.sepo, c.grpo)  # the step's own chain
        dec_adv = jnp.take_along_axis(adv, traj.round, axis=1)
        rows = traj.prompt_ids[..., 0]
        w = traj.valid.astype(jnp.float32)

        def loss(lg):
            logp = jnp.take_along_axis(jax.nn.log_softmax(lg)[rows], traj.action[..., None], -1)[..., 0]
            return -(jnp.where(traj.valid, logp, 0.0) * dec_adv * w).sum() / jnp.maximum(w.sum(), 1)

        g = jax.grad(loss)(logits)
        upd, opt = tx.update(g, opt, logits)
        mine, _ = metrics.seat_payoffs(traj)
        payoff = jnp.where(pool == 0, mine.mean(-1), 0).sum() / jnp.maximum((pool == 0).sum(), 1)
        return optax.apply_updates(logits, upd), opt, nc, payoff, g

    logits = jnp.zeros((12, 2)) if init_logits is None else jnp.asarray(init_logits, jnp.float32)
    opt = tx.init(logits)
    key = jax.random.PRNGKey(seed)
    nc_traj, tables = [], []
    t0 = time.time()
    for i in range(steps):
        key, k = jax.random.split(key)
        logits, opt, nc, payoff, g = step(logits, opt, k)
        nc_traj.append(float(nc))
        if (i + 1) % log_every == 0 or i == 0:
            tables.append({"step": i + 1, "p_bet": p_bet(jax.nn.softmax(logits))})
    return {"nash_conv": nc_traj, "tables": tables, "seconds": time.time() - t0,
            "final_table": p_bet(jax.nn.softmax(logits))}


def demonstrator_logits():
    """Logits of the demonstrator mixture's average P(BET) table (clipped to [0.02, 0.98])."""
    t = sum(w * kuhn_lib.TABLES[n][:, 1] for n, w in kuhn_lib.Kuhn.demonstrators.items())
    t = np.clip(t, 0.02, 0.98)
    return np.stack([np.zeros(12), np.log(t / (1 - t))], -1)


def run_tabular(args, path):
    results = json.load(open(path)) if os.path.exists(path) else {}
    for signal, pools, lam_e, lr, init in itertools.product(args.signal, args.pools, args.lambda_e, args.lr,
                                                             args.tabular_init):
        if pools == "br" and args.credit != ["exact"]:
            continue
        name = f"{init}_{signal}_{pools}_le{lam_e:g}_lr{lr:g}_gpo{args.tabular_groups}_steps{args.tabular_steps}"
        name += "" if args.scale_std else "_nostd"
        if name in results:
            continue
        c = default_config("kuhn")
        c.sepo.credit, c.sepo.lambda_e, c.sepo.exploit_signal = "exact", lam_e, signal
        c.rollout.common_chance, c.rollout.groups_per_opponent = True, args.tabular_groups
        c.grpo.scale_std = args.scale_std
        c.sepo.pools = POOLS[pools]
        c = settings(c)
        r = tabular_run(c, args.tabular_steps, lr, pools == "br", args.seed,
                        demonstrator_logits() if init == "demo" else None)
        r["start_nash_conv"] = r["nash_conv"][0]
        r["final_nash_conv"] = float(np.mean(r["nash_conv"][-50:]))
        r["end_nearest_nash"] = nearest_nash(r["final_table"])
        results[name] = r
        print(f"tabular {name}: NashConv {r['start_nash_conv']:.3f} -> {r['final_nash_conv']:.3f} (min "
              f"{min(r['nash_conv']):.3f}) in {r['seconds']:.0f}s; P(BET) "
              + " ".join(f"{x:.2f}" for x in r["final_table"]), flush=True)
        with open(path, "w") as f:
            json.dump(results, f)


def tabular_md(path) -> str:
    if not os.path.exists(path):
        return ""
    results = json.load(open(path))
    cards = ("J", "Q", "K")
    lines = ["| tabular setting | steps | start NashConv | final NashConv (last 50) | min | alpha* | "
             + " | ".join(f"{h}:{c}" for h in HIST_NAMES for c in cards) + " |", "|---|" * 1 + "---|" * 17]
    for name, r in results.items():
        lines.append(f"| {name} | {len(r['nash_conv'])} | {r['start_nash_conv']:.3f} | {r['final_nash_conv']:.3f} | "
                     f"{min(r['nash_conv']):.3f} | {r['end_nearest_nash']['alpha']:.2f} | "
                     + " | ".join(f"{x:.2f}" for x in r["final_table"]) + " |")
    return "\n".join(lines)


# ---- report ---------------------------------------------------------------------------------------


def _tail(r, window):
    nc = [t["nash_conv"] for t in r["trajectory"] if "nash_conv" in t]
    return float(np.mean(nc[-window:])) if nc else r["final_nash_conv"]


def _first_below(r, level=0.03):
    for i, t in enumerate(r["trajectory"]):
        if t.get("nash_conv", 1.0) <= level:
            return i + 1
    return None


def _pools(r):
    pools = "+".join(r["config"]["sepo"]["pools"])
    br = "_br_" in r["name"] or r["config"]["sepo"].get("exploit_opponents") == "best_response"
    return pools.replace("exploit", "exploit (BR only)") if br else pools


def load(directory):
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def table_md(results, window) -> str:
    lines = ["| setting | family (plot colour) | warm | credit | exploit signal | pools | lambda_e | lr | beta | groups/opp | steps | start NashConv | "
             f"final NashConv (last {window}) | min NashConv (step) | first step <= 0.03 | train payoff start -> end | "
             "exploit-pool adv. start -> end | collusion end | SEPO s/step | wall s |",
             "|---|" + "---|" * 19]
    for r in results:
        c = r["config"]
        nc = [t["nash_conv"] for t in r["trajectory"]]
        i_min = int(np.argmin(nc))
        s0, s1 = r["start_eval"], r["end_eval"]
        first = _first_below(r)
        lines.append(
            f"| {r['name']} | {category(r)} | {'demo' if c['sft']['steps'] else 'none'} | {c['sepo']['credit']} | "
            f"{c['sepo'].get('exploit_signal', 'episode')} | {_pools(r)} | {c['sepo']['lambda_e']:g} | "
            f"{c['grpo']['learning_rate']:g} | {c['grpo']['beta']:g} | {c['rollout']['groups_per_opponent']} | {c['steps']} | "
            f"{s0['nash_conv']:.3f} | {_tail(r, window):.3f} | {nc[i_min]:.3f} ({i_min + 1}) | {first or '-'} | "
            f"{s0['payoff']:+.3f} -> {s1['payoff']:+.3f} | {s0['exploit_pool_advantage']:.3f} -> "
            f"{s1['exploit_pool_advantage']:.3f} | {s1['collusion']:.2f} | {r['sepo_seconds'] / max(c['steps'], 1):.2f} | "
            f"{r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def strategy_md(results) -> str:
    """P(BET) per infoset at the end of each run, with the nearest equilibrium and NashConv's gradient."""
    cards = ("J", "Q", "K")
    head = [f"{h}:{c}" for h in HIST_NAMES for c in cards]
    lines = ["| setting | alpha* | L1 to family | " + " | ".join(head) + " |", "|---|---|---|" + "---|" * 12]
    for r in results:
        nn, p = r["end_nearest_nash"], r["tables"][-1]["p_bet"]
        g = r["end_nash_conv_gradient"]
        cells = []
        for i in range(12):
            flag = ""
            if abs(nn["gap"][i]) > 0.1:  # far from the nearest equilibrium: say which way NashConv wants it
                flag = " (down)" if g[i] > 0 else " (up)"
            cells.append(f"{p[i]:.2f}{flag}")
        lines.append(f"| {r['name']} | {nn['alpha']:.2f} | {nn['l1']:.2f} | " + " | ".join(cells) + " |")
    nash = kuhn_lib.nash_table(1 / 3)[:, 1]
    nash0 = kuhn_lib.nash_table(0.0)[:, 1]
    lines.append("| Nash alpha=1/3 | 0.33 | 0 | " + " | ".join(f"{x:.2f}" for x in nash) + " |")
    lines.append("| Nash alpha=0 | 0.00 | 0 | " + " | ".join(f"{x:.2f}" for x in nash0) + " |")
    return "\n".join(lines)


def direction_md(results) -> str:
    """Rows whose P(BET) moved (start -> end, by more than 0.05) against the direction that lowers NashConv
    at the start (minus its gradient), and the rows that moved with it."""
    cards = ("J", "Q", "K")
    label = [f"{h}:{c}" for h in HIST_NAMES for c in cards]
    lines = ["| setting | NashConv start -> end | moved the wrong way (change) | moved the right way (change) |", "|---|---|---|---|"]
    for r in results:
        p0, p1, g = r["tables"][0]["p_bet"], r["tables"][-1]["p_bet"], r["start_nash_conv_gradient"]
        wrong, right = [], []
        for i in range(12):
            d = p1[i] - p0[i]
            if abs(d) > 0.05 and abs(g[i]) > 1e-3:
                (wrong if d * g[i] > 0 else right).append(f"{label[i]} ({d:+.2f})")
        lines.append(f"| {r['name']} | {r['start_eval']['nash_conv']:.3f} -> {r['final_nash_conv']:.3f} | "
                     f"{', '.join(wrong) or '-'} | {', '.join(right) or '-'} |")
    return "\n".join(lines)


CATEGORIES = {  # colour of each family of settings in the plot
    "paper's pools and rewards (episode signal, std, KL 0.2)": "tab:red",
    "paper's pools (or train + BR), partly fixed": "tab:orange",
    "exploit pool (NashApprox, AlwaysBet, BR)": "tab:purple",
    "BR only, partly fixed": "tab:gray",
    "BR only + round signal + no std + beta 0": "tab:green",
}


def category(r) -> str:
    c = r["config"]
    br = "_br_" in r["name"] or c["sepo"].get("exploit_opponents") == "best_response"
    fixed = c["sepo"].get("exploit_signal", "episode") == "round" and not c["grpo"]["scale_std"] and c["grpo"]["beta"] == 0
    names = list(CATEGORIES)
    if br and "train" not in c["sepo"]["pools"]:
        return names[4] if fixed else names[3]
    if tuple(c["sepo"]["pools"]) == ("exploit",):
        return names[2]
    paper = c["sepo"].get("exploit_signal", "episode") == "episode" and c["grpo"]["scale_std"] and c["grpo"]["beta"] > 0
    return names[0] if paper and not br else names[1]


def plot(results, path, window):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    ax = axes[0]
    for r in results:
        c = r["config"]
        color = CATEGORIES[category(r)]
        marker = "o" if c["sft"]["steps"] else "^"
        x0, y0 = r["start_eval"]["payoff"], r["start_eval"]["nash_conv"]
        x1, y1 = r["end_eval"]["payoff"], _tail(r, window)
        ax.plot([x0, x1], [y0, y1], "-", color=color, alpha=0.25)
        ax.plot([x1], [y1], marker, color=color, ms=7, mec="k", mew=0.4)
    ax.plot([], [], "x", color="gray")
    ax.axhline(0.03, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("train-pool payoff per hand (evaluation, 256 episodes per opponent)")
    ax.set_ylabel(f"exact NashConv (mean of the last {window} steps)")
    ax.set_title("Kuhn, each setting: its start -> its end (o: demonstrator warm start, ^: none)")
    handles = [Line2D([], [], color=col, marker="s", ls="", label=name) for name, col in CATEGORIES.items()]
    handles += [Line2D([], [], color="k", marker="o", ls="", label="from the demonstrator warm start"),
                Line2D([], [], color="k", marker="^", ls="", label="from no warm start"),
                Line2D([], [], color="k", ls=":", label="NashConv 0.03")]
    ax.legend(handles=handles, fontsize=7, loc="lower left")
    ax = axes[1]
    for r in results:
        lw = 1.6 if category(r) == list(CATEGORIES)[4] else 0.7
        ax.plot([t["nash_conv"] for t in r["trajectory"]], lw=lw, color=CATEGORIES[category(r)], alpha=0.8)
    ax.axhline(0.03, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("SEPO step")
    ax.set_ylabel("exact NashConv")
    ax.set_title("NashConv per step (colours as left)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _commit() -> str:
    """HEAD's short hash, marked when the working tree has uncommitted changes."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    return commit + (" + uncommitted changes" if dirty else "")


def write_report(directory, out, window, notes=None, command=None):
    results = load(directory)
    if not results:
        return ""
    # the settings' JSONs made before they recorded a commit were made at 3be2df0 plus the study's change
    commits = ", ".join(sorted({r.get("commit", "3be2df0 + uncommitted changes (see findings)") for r in results}))
    meta_path = os.path.join(directory, "..", os.path.basename(out) + "_commands.txt")
    commands = open(meta_path).read().strip().splitlines() if os.path.exists(meta_path) else []
    text = ("# Safety frontier on Kuhn: does SEPO reach the equilibrium?\n\n"
            "Commands (run with `taskset -c 1`, one at a time):\n\n" + "\n".join(f"    {c}" for c in commands) + "\n\n"
            f"Commit {commits}. Machine: {machine()}.\n\n"
            f"Per-setting JSON (per-step metrics incl. exact NashConv, strategy tables): `{directory}/`. "
            f"Plot: `{os.path.basename(out)}.png`.\n\n"
            "Runs (uptime before -> after):\n\n"
            + "\n".join(f"- {r['name']}: warm start {r['sft_seconds']:.0f}s{' (cached)' if r['sft_cached'] else ''}, "
                        f"SEPO {r['sepo_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s; `{r['uptime_before'].split('load')[-1]}` "
                        f"-> `{r['uptime_after'].split('load')[-1]}`" for r in results)
            + "\n\n## Results\n\nStart = the warm start (or the untrained model), evaluated like the end. NashConv of "
            "the strategy read from the model at hand 1 (exact, no sampling noise); payoff and exploit-pool advantage "
            "from sampled evaluation episodes against the paper's pools (train; exploit = NashApprox, AlwaysBet), "
            "whatever the setting trained on.\n\n" + table_md(results, window)
            + "\n\n## Final strategies\n\nP(BET) per information set (open = first to act, checked_to = second after "
            "a check, facing_bet = second after a bet (BET = call), check_bet = first after check-bet (BET = call)); "
            "alpha* = the nearest member of the equilibrium family (L1); (up)/(down) marks rows more than 0.1 from "
            "it, with the direction that lowers NashConv (minus its finite-difference gradient).\n\n"
            + strategy_md(results) + "\n\n## Which information sets moved the wrong way\n\nP(BET) change from the start "
            "to the end of SEPO per row, against (wrong) or along (right) minus the gradient of NashConv at the start "
            "table (finite differences; the best response held fixed). A row can rightly overshoot, so 'right' is local."
            "\n\n" + direction_md(results) + "\n")
    tab = tabular_md(out + "_tabular.json")
    if tab:
        text += ("\n## The same rewards on a softmax table (no language model)\n\n`--tabular`: SEPO's rewards, group "
                 "advantages and pool weights on a [12, 2] table of logits (both seats), plain policy gradient with Adam, "
                 "no KL; init uniform or the demonstrator mixture's average table.\n\n" + tab + "\n")
    if notes and os.path.exists(notes):
        text += "\n" + open(notes).read()
    with open(out + ".md", "w") as f:
        f.write(text)
    plot(results, out + ".png", window)
    return text


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores (shared with other jobs; runs pinned to one), Python {platform.python_version()}, jax {jax.__version__}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--warm", nargs="+", default=["demo"], choices=list(WARM))
    p.add_argument("--credit", nargs="+", default=["credited", "exact"], choices=("credited", "exact"))
    p.add_argument("--pools", nargs="+", default=["all"], choices=list(POOLS))
    p.add_argument("--lambda-e", nargs="+", type=float, default=[1.5])
    p.add_argument("--lr", nargs="+", type=float, default=[1e-3])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every setting (repeatable); named in the setting")
    p.add_argument("--eval-episodes", type=int, default=256, help="per opponent")
    p.add_argument("--table-every", type=int, default=5)
    p.add_argument("--window", type=int, default=10, help="last steps averaged for the final NashConv")
    p.add_argument("--dir", default=f"{RESULTS}/safety_frontier")
    p.add_argument("--out", default=f"{RESULTS}/safety_frontier_kuhn")
    p.add_argument("--cache", default="/tmp/safety_frontier_cache")
    p.add_argument("--notes", default=f"{RESULTS}/safety_frontier_findings.md", help="appended to the report")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--tabular", action="store_true", help="the softmax-table learner instead of the model")
    p.add_argument("--signal", nargs="+", default=["episode", "round"], help="--tabular: sepo.exploit_signal values")
    p.add_argument("--tabular-init", nargs="+", default=["uniform", "demo"], choices=("uniform", "demo"))
    p.add_argument("--tabular-steps", type=int, default=1000)
    p.add_argument("--no-scale-std", dest="scale_std", action="store_false", help="--tabular: grpo.scale_std=False")
    p.add_argument("--tabular-groups", type=int, default=2, help="--tabular: rollout.groups_per_opponent")
    args = p.parse_args()
    if args.tabular:
        run_tabular(args, args.out + "_tabular.json")
        write_report(args.dir, args.out, args.window, args.notes)
        return
    if not args.report_only:
        extra = {}
        for item in args.set:
            key, _, value = item.partition("=")
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
            extra[key] = value
        os.makedirs(args.dir, exist_ok=True)
        with open(os.path.join(args.dir, "..", os.path.basename(args.out) + "_commands.txt"), "a") as f:
            f.write("python " + " ".join(sys.argv) + "\n")
        mesh = parallel.make_mesh(1)
        for warm, credit, pools, lam_e, lr in itertools.product(args.warm, args.credit, args.pools, args.lambda_e, args.lr):
            name = setting_name(warm, credit, pools, lam_e, lr, {**extra, "steps": args.steps, "seed": args.seed})
            path = os.path.join(args.dir, name + ".json")
            if os.path.exists(path):
                print(f"skip {name} (exists)", flush=True)
                continue
            if pools == "br" and credit != "exact":
                continue
            c = make_config(warm, credit, pools, lam_e, lr, args.steps, args.seed, extra)
            print(f"run {name}", flush=True)
            r = run_setting(name, c, args, mesh)
            with open(path, "w") as f:
                json.dump(r, f)
            print(f"done {name}: NashConv {r['start_eval']['nash_conv']:.3f} -> {_tail(r, args.window):.3f}, "
                  f"payoff {r['start_eval']['payoff']:+.3f} -> {r['end_eval']['payoff']:+.3f}, "
                  f"{r['wall_seconds']:.0f}s", flush=True)
            write_report(args.dir, args.out, args.window, args.notes)
    write_report(args.dir, args.out, args.window, args.notes)


if __name__ == "__main__":
    main()
