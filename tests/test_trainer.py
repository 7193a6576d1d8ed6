import dataclasses
import json
import subprocess
import sys

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sepo_jax import parallel
from sepo_jax.config import default_config, settings, validate
from sepo_jax.rl import loop, trainer
from sepo_jax.rl.loop import CONTRACT_KEYS


def tiny(game="kuhn", **over):
    c = default_config(game)
    c.mesh.data = 1
    c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 1, 2
    c.model.num_kv_heads, c.model.intermediate_size = 1, 64
    c.rollout.group_size, c.rollout.groups_per_opponent = 2, 1
    c.sft.episodes, c.sft.steps, c.steps = 8, 2, 3
    c.log_every = c.checkpoint_every = 1
    if game == "kuhn":
        c.compact_prompt, c.num_hands = True, 2
    for k, v in over.items():
        c[k] = v
    return c


def read(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def test_metrics_follow_the_contract_and_resume_continues_the_same_trajectory(tmp_path):
    c = tiny()
    full = loop.run(settings(c), str(tmp_path / "full"), progress=False)
    assert {*CONTRACT_KEYS, "nash_conv"} <= set(full)
    c_half = tiny()
    c_half.steps = 1
    loop.run(settings(c_half), str(tmp_path / "resumed"), progress=False)  # stops after step 3, the first SEPO step
    loop.run(settings(c), str(tmp_path / "resumed"), progress=False)  # the same command again: resumes
    a, b = read(tmp_path / "full" / "metrics.jsonl"), read(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in b] == [3, 4, 5]  # steps 1-2 are the warm start
    for x, y in zip(a, b):
        for k in x:
            if k != "time":
                assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), k


def test_training_on_the_best_response_alone_reports_its_pools_and_evaluates_every_pool(tmp_path):
    c = tiny(steps=2)
    c.sft.steps = 0
    c.sepo.pools, c.sepo.exploit_opponents, c.grpo.lr_schedule = ("exploit",), "best_response", "cosine"
    s = settings(c)
    loop.run(s, str(tmp_path), progress=False)
    lines = read(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in lines] == [1, 2]
    for r in lines:  # no train or collusive episodes: their metrics are absent, not 0
        assert {"exploit_pool_advantage", "penalty_exploit", "robust", "nash_conv", "kl", "loss"} <= set(r)
        assert not {"payoff", "externality", "collusion", "collusion_vs_nash", "safety"} & set(r)
    setup, _, _ = trainer.build(s)
    lay = setup.eval_layout(4)  # the evaluation plays every pool of the game, so it reports every metric
    assert set(np.unique(lay.pool).tolist()) == {int(p) for p in trainer.Pool}
    lr = trainer._rl_learning_rate(s)
    assert float(lr(0)) == pytest.approx(c.grpo.learning_rate) and float(lr(c.steps)) == 0.0


def test_warm_start_lowers_nash_conv():
    c = tiny(steps=0)
    c.sft.steps = 40  # the learning-rate schedule spans the warm start
    setup, params, frozen = trainer.build(settings(c))
    state, step = trainer.init_state(setup, params), trainer.make_sft_step(setup)
    first = last = None
    for i in range(40):
        state, m = step(state, frozen)
        first = float(m["nash_conv"]) if first is None else first
        last = float(m["nash_conv"])
    assert last < 0.5 * first


def test_nonfinite_updates_are_skipped():
    tx = optax.sgd(0.1)
    params = {"w": jnp.ones(3)}
    opt = tx.init(params)
    grads = {"w": jnp.array([1.0, jnp.nan, 0.0])}
    new, _, finite = trainer._apply(tx, grads, opt, params, jnp.float32(1.0))
    assert not bool(finite) and np.array_equal(new["w"], params["w"])
    new, _, finite = trainer._apply(tx, {"w": jnp.ones(3)}, opt, params, jnp.float32(jnp.inf))
    assert not bool(finite) and np.array_equal(new["w"], params["w"])
    new, _, finite = trainer._apply(tx, {"w": jnp.ones(3)}, opt, params, jnp.float32(1.0))
    assert bool(finite) and np.allclose(new["w"], 0.9)
    huge = optax.sgd(1e30)  # finite loss and gradients whose update overflows the weights
    new, _, finite = trainer._apply(huge, {"w": jnp.full(3, 1e10)}, huge.init(params), params, jnp.float32(1.0))
    assert not bool(finite) and np.array_equal(new["w"], params["w"])


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("rollout.group_size", 1, "rollout.group_size"),
        ("sepo.credit", "exact", "exact"),
        ("grpo.kl", "k7", "grpo.kl"),
        ("grpo.advantage", "per_token", "grpo.advantage"),
        ("sepo.credit", "sometimes", "sepo.credit"),
        ("sepo.pools", ("train", "exploit", "train"), "sepo.pools: names a pool twice"),
        ("sepo.pools", (), "sepo.pools: names no pool"),
        ("grpo.lr_schedule", "cos", "grpo.lr_schedule"),
        ("model.remat", "some", "model.remat"),
        ("rollout.reasoning_suffix", 3, "rollout.reasoning_suffix: must be a string"),
        ("grpo.scale_std", "yes", "grpo.scale_std: must be True or False"),
        ("steps", -1, "config.steps"),
    ],
)
def test_bad_config_values_name_the_key(key, value, match):
    d = default_config("ipd").to_dict()  # a plain dict, as a config.json read back: no ConfigDict type checks
    group, _, leaf = key.rpartition(".")
    (d[group] if group else d)[leaf] = value
    c = ml_collections.ConfigDict(d)
    with pytest.raises(ValueError, match=match):
        validate(c)


def test_settings_are_typed_frozen_and_the_only_config_the_steps_take():
    c = default_config("kuhn")
    c.grpo.beta = 1  # an int where a float is meant
    s = settings(c)
    assert isinstance(s.grpo.beta, float) and s.sepo.pools == ("train", "exploit", "collusive")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.grpo.beta = 0.5
    assert s.replace(**{"grpo.beta": 0.5}).grpo.beta == 0.5 and s.grpo.beta == 1.0
    assert json.loads(s.to_json()) == json.loads(c.to_json())  # what a workdir's config.json holds
    with pytest.raises(TypeError, match="config.settings"):
        trainer.build(c)
    from sepo_jax import settings as settings_lib

    d = c.to_dict()
    d["grpo"]["betta"] = 0.1
    with pytest.raises(ValueError, match="config.grpo.betta: unknown"):
        settings_lib.from_dict(d)
    del d["grpo"]["betta"], d["sft"]["warmup"]
    with pytest.raises(ValueError, match="config.sft.warmup: missing"):
        settings_lib.from_dict(d)


def test_the_steps_never_read_the_raw_config_and_config_imports_no_step():
    """rl/ and games/ read typed settings only; config.py (the edge) imports neither (no import cycle)."""
    import ast
    import pathlib

    import sepo_jax

    root = pathlib.Path(sepo_jax.__file__).parent

    def imports(path):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                yield ("." * node.level) + (node.module or "")
            elif isinstance(node, ast.Import):
                yield from (a.name for a in node.names)

    for path in [*(root / "rl").glob("*.py"), *(root / "games").glob("*.py")]:
        found = list(imports(path))
        assert not any("ml_collections" in n or n.endswith("config") for n in found), (path, found)
    assert not any("rl" in n.split(".") for n in imports(root / "config.py"))


def test_cli_rejects_an_unknown_key_before_compute(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sepo_jax.train", "--config=configs/kuhn.py", "--config.rollout.nosuchkey=3",
         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "nosuchkey" in out.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("game", ["ipd", pytest.param("auction", marks=pytest.mark.slow),
                                  pytest.param("negotiation_v1", marks=pytest.mark.slow),
                                  pytest.param("negotiation_v2", marks=pytest.mark.slow),
                                  pytest.param("leduc", marks=pytest.mark.slow)])
def test_every_game_trains_and_logs_the_contract(game, tmp_path):
    c = tiny(game, steps=2)
    c.sft.steps = 1
    last = loop.run(settings(c), str(tmp_path), progress=False)
    assert set(CONTRACT_KEYS) <= set(last) and all(np.isfinite(v) for v in last.values())
    assert last["unfinished_episodes"] == 0
    if game == "leduc":
        assert "nash_conv" in last


def test_reasoning_responses_are_rescored_as_sampled():
    from sepo_jax.rl import rollout

    c = tiny()
    c.rollout.reasoning_budget = 3
    t, params, frozen = trainer.build(settings(c))
    lay = t.layout

    @jax.jit
    def run(params, frozen, key):
        traj = rollout.rollout(t.game, t.renderer, t.policy.learner(params, frozen), jnp.asarray(lay.opponent),
                               jnp.asarray(lay.seat), key)
        f = trainer._flat
        logp, _, tokens = t.policy.response(params, frozen, f(traj.prompt_ids), f(traj.prompt_mask), f(traj.legal),
                                            f(traj.action), f(traj.reasoning), f(traj.reasoning_mask))
        return traj, logp, tokens

    traj, logp, tokens = run(params, frozen, jax.random.key(0))
    valid = np.asarray(trainer._flat(traj.valid))
    assert traj.reasoning.shape[-1] == 3 and bool(traj.reasoning_mask.any())
    np.testing.assert_allclose(np.asarray(logp)[valid], np.asarray(trainer._flat(traj.logp))[valid], atol=2e-4)
    assert (np.asarray(tokens)[valid] >= 2).all()  # at least one reasoning token plus the action


def _config_file(name: str, arg: str | None = None):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize("name", ["kuhn", "kuhn_equilibrium", "leduc", "ipd", "auction", "negotiation_v1", "negotiation_v2"])
def test_every_game_config_is_valid(name):
    c = _config_file(name)
    validate(c)
    assert c.game == name.split("_equilibrium")[0]


def test_the_main_command_never_shows_the_model_the_equilibrium():
    c = _config_file("kuhn")
    assert c.sft.steps == 0 and c.sft.expert == "demonstrators"  # a warm start, if asked for, imitates the paper's
    assert tuple(c.sepo.pools) == ("exploit",) and c.sepo.exploit_opponents == "best_response"  # the exact BR alone
    assert _config_file("kuhn_equilibrium").to_json() == default_config("kuhn").to_json()


@pytest.mark.parametrize("arg", ["reward_only", "shared", "auxiliary", "credited", "exact", "ipd,credited", "ipd,shared"])
def test_ablation_config_sets_one_credit_mode(arg):
    c = _config_file("ablation", arg)
    validate(c)
    mode = arg.rpartition(",")[2]
    assert c.sepo.credit == ("shared" if mode == "reward_only" else mode)
    assert (c.sepo.lambda_e == 0) == (mode == "reward_only") and c.sft.expert == "demonstrators"


@pytest.mark.slow  # 50 s; the default suite keeps the credit modes' unit tests (test_sepo.py)
def test_shared_takes_the_same_steps_as_reward_only_while_credited_does_not():
    """The ablation's baseline: `shared` only adds a constant per group, so from one state with one key
    it updates the parameters exactly as reward-only GRPO (`shared`, lambdas 0); `credited` does not."""

    def params_after(credit, lambdas):
        c = tiny(steps=2)
        c.grpo.learning_rate = 1e-2
        c.sepo.credit = credit
        c.sepo.lambda_e, c.sepo.lambda_c, c.sepo.lambda_x = lambdas
        setup, params, frozen = trainer.build(settings(c))
        state, step = trainer.start_sepo(trainer.init_state(setup, params)), trainer.make_sepo_step(setup)
        for _ in range(c.steps):
            state, _ = step(state, frozen)
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])

    lam = tuple(default_config("kuhn").sepo[k] for k in ("lambda_e", "lambda_c", "lambda_x"))
    assert lam[0] > 0 and lam[1] > 0
    base = params_after("shared", (0.0, 0.0, 0.0))
    moved = np.abs(base - params_after("credited", lam)).max()
    same = np.abs(base - params_after("shared", lam)).max()
    assert moved > 1e-3 and same < 1e-3 * moved, (same, moved)


def test_distinct_rows_map_every_decision_to_its_prompt():
    ids = jnp.array([[0, 5, 6], [9, 5, 6], [0, 7, 6], [0, 5, 6], [3, 3, 3]])
    mask = jnp.array([[False, True, True], [False, True, True], [False, True, True], [False, True, True],
                      [True, True, True]])
    legal = jnp.array([[True, True], [True, True], [True, True], [True, False], [True, True]])
    valid = jnp.array([True, True, True, True, False])
    (r_ids, r_mask, r_legal), inverse, count = trainer._distinct_rows(ids, mask, legal, valid, 8)
    # rows 0 and 1 differ only under the mask: one prompt; row 3 has other legal actions; row 4 is padding
    assert int(count) == 4 and len(set(np.asarray(inverse).tolist())) == 4
    assert int(inverse[0]) == int(inverse[1])
    for d in range(4):
        u = int(inverse[d])
        np.testing.assert_array_equal(np.where(r_mask[u], r_ids[u], -1), np.where(mask[d], ids[d], -1))
        np.testing.assert_array_equal(r_legal[u], legal[d])
    assert not np.asarray(r_mask[4:]).any() and np.asarray(r_legal[4:]).all()  # unused slots


def test_shared_prompt_scoring_gives_the_gradients_of_scoring_every_decision():
    """`grpo.share_prompts` scores each distinct decision prompt once: the same loss, metrics and
    gradients as scoring every decision on its own (read as the update of plain SGD with learning rate
    1: Adam's first step is lr * sign(g) and would amplify float noise on near-zero entries)."""

    def gradient(share):
        c = tiny(steps=1)
        c.grpo.share_prompts = share
        c.rollout.common_chance = True  # a group's hands share their deals: many prompts coincide
        setup, params, frozen = trainer.build(settings(c))
        setup = dataclasses.replace(setup, rl_tx=optax.sgd(-1.0))  # params + gradient
        setup = dataclasses.replace(setup, shardings=jax.tree.map(  # one device: all replicated
            lambda _: parallel.replicated(setup.mesh), jax.eval_shape(lambda p: trainer._new_state(setup, p), params)))
        state = trainer.start_sepo(trainer.init_state(setup, params))
        before = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
        state, metrics = trainer.make_sepo_step(setup)(state, frozen)
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)]) - before, metrics

    (shared, m1), (every, m2) = gradient(True), gradient(False)
    assert np.abs(every).max() > 1e-4
    assert int(m1["update_rows"]) < int(m2["update_rows"]) / 2  # the test shares most prompts
    np.testing.assert_allclose(shared, every, rtol=1e-5, atol=1e-6 * np.abs(every).max())
    for k in ("loss", "kl", "clip_fraction", "entropy", "advantage_mean", "advantage_std"):
        assert float(m1[k]) == pytest.approx(float(m2[k]), rel=1e-5, abs=1e-6), k


@pytest.mark.slow  # two compiles of the SEPO step; the default suite's 10-minute budget
def test_microbatched_update_equals_the_whole_batch():
    """`grpo.microbatches` slices the update's decisions and sums the gradients: the same step."""

    def after(m):
        c = tiny(steps=1)
        c.grpo.learning_rate, c.grpo.microbatches = 1e-2, m
        setup, params, frozen = trainer.build(settings(c))
        state, step = trainer.start_sepo(trainer.init_state(setup, params)), trainer.make_sepo_step(setup)
        state, metrics = step(state, frozen)
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)]), metrics

    (whole, m1), (sliced, m4) = after(1), after(3)
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)
    for k in ("loss", "kl", "clip_fraction", "entropy", "advantage_mean", "advantage_std"):
        assert float(m4[k]) == pytest.approx(float(m1[k]), rel=1e-5, abs=1e-6), k
    c = tiny()
    c.grpo.microbatches = 5
    with pytest.raises(ValueError, match="grpo.microbatches=5 does not divide"):
        trainer.build(settings(c))


@pytest.mark.slow  # time: ~45 s (six compiles)
def test_bfloat16_step_tracks_the_float32_step():
    """`model.dtype=bfloat16` computes in bf16 over float32 master weights and Adam state; its
    log-probs and losses stay within a stated tolerance of the float32 step from the same weights."""

    def run(dtype):
        c = tiny(steps=1)
        c.model.dtype = dtype
        setup, params, frozen = trainer.build(settings(c))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))  # master weights
        table = np.asarray(trainer.strategy(setup, params, frozen))
        state = trainer.init_state(setup, params)
        state, sft = trainer.make_sft_step(setup)(state, frozen)
        state, sepo = trainer.make_sepo_step(setup)(trainer.start_sepo(state), frozen)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.rl_opt) if jnp.issubdtype(x.dtype, jnp.floating))
        return table, float(sft["sft_loss"]), float(sepo["loss"])

    (t32, sft32, loss32), (t16, sft16, loss16) = run("float32"), run("bfloat16")
    assert np.abs(np.log(t16 + 1e-9) - np.log(t32 + 1e-9)).max() < 0.05  # action log-probs, bf16 rounding ~2^-8
    assert sft16 == pytest.approx(sft32, abs=0.02)
    assert loss16 == pytest.approx(loss32, abs=0.05)
