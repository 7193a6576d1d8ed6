"""Command line: `python -m sepo_jax.evaluate --workdir=DIR [--config=FILE ...] [--steps=latest|all|N,M]
[--exposure]`.

Evaluates the checkpoints of a training run: the paper's metrics (docs/method.md §5: payoff per round vs the
training pool, exploit-pool advantage, robust payoff, collusion, externality, safety J, NRA; payoff vs
the `shift` pool where the game has one) from `--episodes` sampled episodes per opponent, every
(pool, opponent) group on its own, and on games with an exact solver the exact NashConv of the
learner's own strategy (and Kuhn's card-conditioned bet/call frequencies next to the equilibrium's).
With `--exposure` (the repeated stage games) also the exposure of the learner's table, read from one
prompt per row (`readout.prompts`): what the opponent's exact best response earns per round
(`exposure_br`) and what the learner keeps (`exposure_kept`), `sepo_jax.equilibrium.stage.exposure`.
Prints the tables and writes DIR/eval.json (one entry per evaluated step; earlier entries kept); with
`--plots` also the run's figures (training curves; Kuhn's frequencies over the evaluated steps) in DIR/plots/.
The run's own DIR/config.json is used unless `--config` is given. `--steps` takes the run's step numbers
(the checkpoints' names, as in its metrics files). Progress: a bar on a terminal, plain lines otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from sepo_jax import games, parallel
from sepo_jax.config import settings
from sepo_jax.equilibrium.frequencies import kuhn_alpha, kuhn_frequency_report
from sepo_jax.progress import Progress, duration, fields
from sepo_jax.rl import readout, trainer
from sepo_jax.rl.loop import plan
from sepo_jax.rl.sepo import Pool

config_flags.DEFINE_config_file("config", None, "a config file (default: the run's DIR/config.json)", lock_config=True)
flags.DEFINE_string("workdir", None, "the training run's folder (holds checkpoints/ and config.json)")
flags.DEFINE_string("steps", "latest", "which checkpoints: latest, all, or a comma-separated list of steps")
flags.DEFINE_integer("episodes", 256, "sampled episodes per opponent")
flags.DEFINE_integer("seed", 0, "seed of the evaluation episodes")
flags.DEFINE_bool("exposure", False, "also the exact best response to the learner's table read from one prompt per "
                  "row (IPD, auction, negotiations; IPD reads 21,845 prompts)")
flags.DEFINE_bool("plots", False, "also draw the run's figures into DIR/plots/ (sepo_jax/plots.py; needs matplotlib)")
FLAGS = flags.FLAGS

COLUMNS = ("payoff", "exploit_pool_advantage", "robust", "collusion", "collusion_vs_nash", "externality", "safety", "nra",
           "shift", "nash_conv", "exposure_br", "exposure_kept")


def load_config(workdir: str, config: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    if config is not None:
        return config
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise app.UsageError(f"--workdir={workdir} has no config.json (is it a training run's folder?); "
                             "pass --config to say how the run was configured")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def pick_steps(spec: str, saved: list[int], workdir: str) -> list[int]:
    if not saved:
        raise app.UsageError(f"no checkpoints under {os.path.join(workdir, 'checkpoints')}")
    if spec == "latest":
        return [max(saved)]
    if spec == "all":
        return sorted(saved)
    try:
        wanted = [int(s) for s in spec.split(",")]
    except ValueError:
        raise app.UsageError(f"--steps={spec!r}: expected latest, all or a comma-separated list of steps") from None
    missing = [s for s in wanted if s not in saved]
    if missing:
        raise app.UsageError(f"--steps: no checkpoint at step(s) {missing} in {workdir}; saved: {sorted(saved)}")
    return wanted


def evaluate_step(setup, evaluate, strategy, params, frozen, episodes: int, seed: int, prompts=None) -> dict:
    """Metrics, per-group rows and (Kuhn) frequencies of one set of parameters, on the host;
    `evaluate` is `trainer.make_evaluate(setup, episodes)`, `strategy` the jitted `trainer.strategy`,
    `prompts` (for the exposure) `readout.prompts` of a stage game."""
    extra = () if prompts is None else (prompts,)
    metrics, groups = jax.device_get(evaluate(params, frozen, jax.random.PRNGKey(seed), *extra))
    lay, game = setup.eval_layout(episodes), setup.game
    names = game.opponent_names
    rows = []
    for g in range(lay.num_groups):
        first = g * lay.group_size
        rows.append({"pool": Pool(int(lay.pool[first])).name.lower(), "opponent": names[int(lay.opponent[first])],
                     "episodes": episodes, **{k: float(v[g]) for k, v in groups.items()}})
    out = {"episodes": episodes, "seed": seed, "metrics": {k: float(v) for k, v in metrics.items()}, "groups": rows}
    if "nash_conv" in out["metrics"]:
        out["metrics"]["exploitability"] = out["metrics"]["nash_conv"] / 2
    if game.name == "kuhn":
        table = np.asarray(strategy(params, frozen))
        report = kuhn_frequency_report(table)
        out["kuhn_frequencies"] = {k: {w: [float(x) for x in v[w]] for w in v} for k, v in report.items()}
        out["kuhn_alpha"] = kuhn_alpha(table)
    return out


def format_tables(results: dict[int, dict]) -> str:
    steps = sorted(results)
    cols = [k for k in COLUMNS if k in results[steps[0]]["metrics"]]
    lines = ["| step | " + " | ".join(cols) + " |", "|---:|" + "---:|" * len(cols)]
    lines += [f"| {s} | " + " | ".join(f"{results[s]['metrics'][k]:.4f}" for k in cols) + " |" for s in steps]
    last = results[steps[-1]]
    lines += ["", f"Step {steps[-1]}, per opponent ({last['episodes']} episodes each; payoffs per round):", "",
              "| pool | opponent | payoff | opponent payoff | nra | collusion | externality |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['pool']} | {r['opponent']} | {r['payoff']:.4f} | {r['opponent_payoff']:.4f} | {r['nra']:.4f} | "
              f"{r['collusion']:.4f} | {r['externality']:.4f} |" for r in last["groups"]]
    if "kuhn_frequencies" in last:
        lines += ["", f"Step {steps[-1]}, Kuhn BET/call probability per card (J, Q, K): learner vs the equilibrium with "
                  f"alpha = {last['kuhn_alpha']:.3f} (the learner's J opening bet, clipped to [0, 1/3]):", "",
                  "| situation | learner | equilibrium |", "|---|---|---|"]
        lines += [f"| {k} | {', '.join(f'{x:.3f}' for x in v['ours'])} | {', '.join(f'{x:.3f}' for x in v['nash'])} |"
                  for k, v in last["kuhn_frequencies"].items()]
    return "\n".join(lines)


def write_json(path: str, results: dict[int, dict], command: str) -> None:
    """Merge into an existing eval.json (by step) and replace it atomically."""
    data = {"steps": {}}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data["command"] = command
    data["steps"].update({str(s): r for s, r in results.items()})
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def run(workdir: str, config: ml_collections.ConfigDict | None, steps: str, episodes: int, seed: int,
        progress: bool | None = None, exposure: bool = False) -> dict[int, dict]:
    """Evaluate the chosen checkpoints of the run in `workdir`; `progress`: a bar (True), plain lines
    (False), or a bar when stdout is a terminal (None); `exposure`: also the stage games' exposure."""
    import orbax.checkpoint as ocp

    if not os.path.isdir(workdir):
        raise app.UsageError(f"--workdir={workdir} does not exist")
    if episodes < 1:
        raise app.UsageError(f"--episodes must be >= 1, got {episodes}")
    c = settings(load_config(workdir, config))
    if exposure and games.STAGE not in games.make(c.game).solvers:
        raise app.UsageError(f"--exposure: {c.game} has no stage-game solver (the exposure is for ipd, auction, "
                             "negotiation_v1 and negotiation_v2)")
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
    chosen = pick_steps(steps, list(manager.all_steps()), workdir)
    show = Progress(progress)
    show.say(f"sepo_jax: evaluating {workdir} at step(s) {', '.join(map(str, chosen))} "
             f"({plan(c.sft.steps, c.sft.steps + c.steps)}), {episodes} episodes per opponent")
    setup, params, frozen = trainer.build(c)
    parallel.check_divisible(setup.mesh, setup.eval_layout(episodes).opponent.shape[0],
                             f"the evaluation batch (--episodes={episodes} x opponents)")
    frozen, evaluate = trainer.place_frozen(setup, frozen), trainer.make_evaluate(setup, episodes)
    strategy = jax.jit(functools.partial(trainer.strategy, setup))
    prompts = None
    if exposure:
        t = time.perf_counter()
        prompts = jax.device_put(readout.prompts(setup.game, setup.renderer), parallel.replicated(setup.mesh))
        show.say(f"built the {prompts[3].shape[0]} read-out prompts in {duration(time.perf_counter() - t)}")
    extra = () if prompts is None else (prompts,)
    target = trainer.init_state(setup, params)

    def restore(step):
        try:
            return manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many kinds; say which checkpoint and why
            raise SystemExit(f"cannot restore checkpoint step {step} of {workdir} into the model of this config: "
                             f"{type(e).__name__}: {e}") from e

    results = {}
    try:
        for i, step in enumerate(chosen, 1):
            state = restore(step)
            if i == 1:  # once the checkpoints are known to fit the model
                show.say("compiling the evaluation...")
                t = time.perf_counter()
                key = jax.random.PRNGKey(seed)
                evaluate.lower(state.params, frozen, key, *extra).compile()  # jit reuses this compile
                show.say(f"compiled the evaluation in {duration(time.perf_counter() - t)}")
                show.start("evaluate", 0, len(chosen), unit="checkpoint")
            results[step] = evaluate_step(setup, evaluate, strategy, state.params, frozen, episodes, seed, prompts)
            phase = "SFT" if step <= c.sft.steps else "SEPO"
            show.advance(i, f"step {step} ({phase}): {fields(results[step]['metrics'], COLUMNS)}", keep=True)
    finally:
        show.end()
        manager.close()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise app.UsageError("--workdir is required: the folder of a training run")
    logging.set_verbosity(logging.WARNING)
    parallel.initialize_distributed()
    results = run(FLAGS.workdir, FLAGS.config, FLAGS.steps, FLAGS.episodes, FLAGS.seed, exposure=FLAGS.exposure)
    print("\n" + format_tables(results))
    path = os.path.join(FLAGS.workdir, "eval.json")
    write_json(path, results, "python -m sepo_jax.evaluate " + " ".join(sys.argv[1:]))
    print(f"\nwrote {os.path.abspath(path)}")
    if FLAGS.plots:
        from sepo_jax import plots

        for figure in plots.run_plots(FLAGS.workdir):
            print(f"wrote {os.path.abspath(figure)}")


if __name__ == "__main__":
    app.run(main)
