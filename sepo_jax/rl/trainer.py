"""The training steps as pure functions: `build(c)` gives the static `Setup` (game, prompts, policy,
layout, optimizers, mesh) with the trainable parameters and the frozen weights; `make_sft_step`,
`make_sepo_step` and `make_evaluate` return jitted functions of explicit arguments,
`step(state, frozen) -> (state, metrics)` with `state` a `TrainState`. Weights are always arguments,
never closed over (a closed-over array is compiled into the program as a constant).

One SEPO step, all inside one `jit`: read the model's strategy table and its exact best response
(games with an exact solver), play every (pool, opponent) group, credit rewards, group-normalise,
weight by pool, and apply one clipped-surrogate + KL update (skipped, and counted, if the loss or a
gradient is not finite). The batch of episode slots is sharded over the mesh's `data` x `fsdp` axes,
parameters and optimizer state by their logical axes (`parallel.logical_shardings`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sepo_jax import games as games_lib
from sepo_jax import model as model_lib
from sepo_jax import parallel
from sepo_jax.equilibrium import best_response, cfr, stage
from sepo_jax.model import lora as lora_lib
from sepo_jax.model import sampler
from sepo_jax.settings import TRAINING_POOLS, Settings

from . import grpo, readout, rollout, sepo, sft
from . import metrics as metrics_lib
from .sepo import Pool

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Layout:
    """The step's episode slots, laid out as groups of n: opponent id, pool index and learner seat."""

    opponent: np.ndarray
    pool: np.ndarray
    seat: np.ndarray
    group_size: int

    @property
    def num_groups(self) -> int:
        return self.opponent.shape[0] // self.group_size


def make_layout(game, c: Settings, episodes: int | None = None, pools=None) -> Layout:
    """The training layout; with `episodes`, the evaluation layout instead: one group of that many
    episodes per opponent of every pool in `pools` (default `c.sepo.pools`), without the tabular best
    response."""
    n, reps = (episodes, 1) if episodes else (c.rollout.group_size, c.rollout.groups_per_opponent)
    opp, pool = [], []
    for name in pools or c.sepo.pools:
        ids = list(game.pool_ids(name)) if name in game.pools else []
        if name == "exploit" and sepo.CREDIT[c.sepo.credit].best_response and not episodes:
            alone = c.sepo.exploit_opponents == "best_response"  # (evaluation layouts keep the game's pool)
            ids = ([] if alone else ids) + [game.tabular_id]  # the exact best response to the current policy
        for i in ids:
            opp += [i] * reps
            pool += [Pool.named(name)] * reps
    groups = len(opp)
    rep = lambda a: np.repeat(np.asarray(a, np.int32), n)  # noqa: E731
    if c.rollout.learner_seat >= 0:
        seat = rep(np.full(groups, c.rollout.learner_seat))
    else:  # alternate between groups (training) or within each group (evaluation)
        seat = np.tile(np.arange(n) % 2, groups).astype(np.int32) if episodes else rep(np.arange(groups) % 2)
    return Layout(rep(opp), rep(pool), seat, n)


class Policy:
    """The model as a policy over a game's actions: constrained choice at a fixed temperature,
    optionally after `budget` free reasoning tokens and a forced `suffix_ids` (then a response is the
    reasoning plus the action, and its log-prob is the sum of both)."""

    def __init__(self, graphdef, renderer, temperature: float, budget: int = 0, suffix_ids=None, eos_id=None,
                 share: Sharing | None = None):
        self.graphdef, self.renderer, self.temperature = graphdef, renderer, temperature
        self.budget, self.suffix_ids, self.eos_id, self.share = budget, suffix_ids, eos_id, share

    def _model(self, params, frozen):
        return nnx.merge(self.graphdef, params, frozen)

    @property
    def chat(self) -> bool:
        return isinstance(self.renderer, games_lib.ChatRenderer)

    def log_probs(self, params, frozen, ids, mask, legal):
        """[N, A] action log-probs straight after the prompt (after an empty reasoning template when
        reasoning is on): what supervised targets and the strategy read-out use. In a conversation,
        ids [N, L] are whole conversations and legal [N, D, A]: [N, D, A] at every decision, one pass."""
        r = self.renderer
        if self.chat:
            return sampler.conversation_action_log_probs(self._model(params, frozen), ids, mask, r.ends, r.action_ids,
                                                         r.action_len, legal, temperature=self.temperature)
        if self.budget:
            empty = jnp.zeros((ids.shape[0], self.budget), jnp.int32)
            return self.response(params, frozen, ids, mask, legal, jnp.zeros(ids.shape[0], jnp.int32), empty,
                                 empty.astype(bool))[1]
        return sampler.action_log_probs(self._model(params, frozen), ids, mask, r.action_ids, r.action_len, legal,
                                        temperature=self.temperature)

    def response(self, params, frozen, ids, mask, legal, action, reasoning, reasoning_mask):
        """(log-prob of the whole response [N], action log-probs [N, A], response tokens [N])."""
        r = self.renderer
        if not self.budget:
            logp_all = self.log_probs(params, frozen, ids, mask, legal)
            logp = jnp.take_along_axis(logp_all, action[:, None], 1)[:, 0]
            return logp, logp_all, r.action_len[action]
        r_logp, a_logp, logp_all = sampler.score_reasoning(
            self._model(params, frozen), ids, mask, reasoning, reasoning_mask, self.suffix_ids, r.action_ids,
            r.action_len, legal, action, temperature=self.temperature)
        return a_logp + r_logp.sum(-1), logp_all, r.action_len[action] + reasoning_mask.sum(-1)

    def learner(self, params, frozen) -> rollout.Learner | rollout.ChatLearner:
        r = self.renderer
        if self.chat:
            return self._chat_learner(params, frozen)

        def act(ids, mask, legal, states, key, group_size=1):
            """`group_size` > 1: one row per group of identical prompts, samples for every member."""
            if not self.budget:
                score = functools.partial(self.log_probs, params, frozen)
                logp_all = score(ids, mask, legal) if self.share is None else self.share.log_probs(score, ids, mask, legal)
                logp_all = jnp.repeat(logp_all, group_size, axis=0)
                action = jax.random.categorical(key, logp_all).astype(jnp.int32)
                logp = jnp.take_along_axis(logp_all, action[:, None], 1)[:, 0]
                none = jnp.zeros((action.shape[0], 0), jnp.int32)
                return action, logp, jnp.exp(logp_all), (none, none.astype(bool))
            out = sampler.sample_with_reasoning(
                self._model(params, frozen), ids, mask, r.action_ids, r.action_len, legal, self.suffix_ids, key,
                budget=self.budget, temperature=self.temperature, eos_id=self.eos_id, group_size=group_size)
            g = out.reasoning
            return out.action, out.logp + g.logp.sum(-1), jnp.exp(out.logprobs_all), (g.tokens, g.mask)

        return act

    def _chat_learner(self, params, frozen) -> rollout.ChatLearner:
        """Each turn prefilled into the conversation's KV cache, the action chosen from it."""
        model, r = self._model(params, frozen), self.renderer

        def start(num, length):
            return model.init_cache(num, length + sampler.branch_slots(r.action_ids, r.action_len))

        def act(cache, ids, mask, legal, states, key):
            logits, cache = model(ids, mask, cache=cache, last_only=True)
            logp_all = sampler.cached_action_log_probs(model, cache, logits[:, -1], r.action_ids, r.action_len, legal,
                                                       temperature=self.temperature)
            action = jax.random.categorical(key, logp_all).astype(jnp.int32)
            return action, jnp.take_along_axis(logp_all, action[:, None], 1)[:, 0], jnp.exp(logp_all), cache

        return rollout.ChatLearner(start, act)


def _flat(x):
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: the trained parameters, the reference (SFT) parameters, both
    optimizers' states, the step counter, the PRNG key and the count of skipped non-finite updates."""

    step: Array
    key: Array
    params: Any
    ref_params: Any
    sft_opt: Any
    rl_opt: Any
    skipped: Array


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static pieces of a run, shared by its step functions: the game, prompts, policy, layout,
    penalty weights, optimizers and the mesh. It holds no weights: steps take them as arguments."""

    c: Settings
    game: Any
    mesh: Any
    layout: Layout
    tokenizer: Any
    renderer: Any
    graphdef: Any
    policy: Policy
    lam: metrics_lib.Lambdas
    sft_tx: optax.GradientTransformation
    rl_tx: optax.GradientTransformation
    readout: tuple | None  # (ids, mask, legal, rows[, decision]) of every information set (games with an exact
    # solver); in a conversation ids are the mover's conversations and `decision` the turn to read
    expert_table: Array | None  # the CFR+ equilibrium (sft.expert = "equilibrium")
    shardings: TrainState  # of NamedShardings: parameters and their optimizer moments by logical axes
    frozen_shardings: Any

    @property
    def exact(self) -> bool:
        return self.readout is not None

    def eval_layout(self, episodes: int) -> Layout:
        """Every pool of the game, whatever the run trained on (the evaluation-only `shift` where there is one)."""
        pools = tuple(p for p in (*TRAINING_POOLS, "shift") if p in self.game.pools)
        return make_layout(self.game, self.c, episodes, pools)


def build(c: Settings, mesh=None, model=None, tokenizer=None) -> tuple[Setup, Any, Any]:
    """(setup, trainable parameters, frozen weights) for settings `c` (`config.settings(config)`). The model comes from
    `c.model.source` unless `model` and `tokenizer` are given (an abstract `nnx.eval_shape` model
    works: the step functions can then be lowered without allocating weights)."""
    if not isinstance(c, Settings):
        raise TypeError(f"trainer.build takes Settings, got {type(c).__name__}: config.settings(c) validates a "
                        "ConfigDict and converts it")
    kwargs = {"num_hands": c.num_hands} if c.num_hands else {}
    if c.compact_prompt:
        kwargs["compact_prompt"] = True
    game = games_lib.make(c.game, **kwargs)
    mesh = mesh if mesh is not None else parallel.make_mesh(c.mesh.data, c.mesh.fsdp)
    layout = make_layout(game, c)
    parallel.check_divisible(mesh, layout.opponent.shape[0], "the SEPO batch (rollout.group_size x groups)")
    parallel.check_divisible(mesh, c.sft.episodes, "config.sft.episodes")
    per_device = layout.opponent.shape[0] * game.max_decisions // parallel.batch_devices(mesh)
    if c.prompt.format == "conversation":
        per_device = layout.opponent.shape[0] // parallel.batch_devices(mesh)
        if per_device % c.grpo.microbatches:
            raise ValueError(f"config.grpo.microbatches={c.grpo.microbatches} does not divide the {per_device} episodes "
                             f"per device of an update (prompt.format='conversation' slices episodes)")
    elif not _shares_prompts(c) and per_device % c.grpo.microbatches:
        raise ValueError(f"config.grpo.microbatches={c.grpo.microbatches} does not divide the {per_device} decision "
                         f"slots per device of an update ({layout.opponent.shape[0]} episodes x {game.max_decisions} "
                         f"over {parallel.batch_devices(mesh)} devices)")
    if model is None:
        model, tokenizer = _load_model(c)
    chat = c.prompt.format == "conversation"
    if chat:
        renderer = games_lib.ChatRenderer(game, tokenizer, tokenizer.chat_turns() if c.model.chat_template else ("", "", "\n"))
    else:
        renderer = games_lib.PromptRenderer(game, tokenizer, wrap=tokenizer.chat_wrap() if c.model.chat_template else ("", ""))
    trainable = nnx.LoRAParam if c.model.lora_rank else nnx.Param
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    suffix = jnp.asarray(tokenizer.encode(c.rollout.reasoning_suffix), jnp.int32)
    share = Sharing(c.grpo.microbatches * c.grpo.share_passes, mesh) if _shares_prompts(c) and not chat else None
    policy = Policy(graphdef, renderer, c.rollout.temperature, c.rollout.reasoning_budget, suffix, tokenizer.eos_id,
                    share)
    readout_arrays = readout.prompts(game, renderer) if games_lib.has_exact_solver(c.game) else None
    expert = jnp.asarray(cfr.equilibrium_table(game.name), jnp.float32) if c.sft.expert == "equilibrium" else None
    sft_tx = optax.chain(
        optax.clip_by_global_norm(c.sft.grad_clip),
        optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.sft.learning_rate, max(1, int(c.sft.warmup * c.sft.steps)),
                                                       max(2, c.sft.steps)), weight_decay=0.0),
    )
    rl_tx = optax.chain(optax.clip_by_global_norm(c.grpo.grad_clip),
                        optax.adamw(_rl_learning_rate(c), weight_decay=c.grpo.weight_decay))
    lam = metrics_lib.Lambdas.of(c.sepo.lambda_e, c.sepo.lambda_c, c.sepo.lambda_x, game.max_payoff)
    setup = Setup(c, game, mesh, layout, tokenizer, renderer, graphdef, policy, lam, sft_tx, rl_tx, readout_arrays, expert,
                  shardings=None, frozen_shardings=parallel.logical_shardings(mesh, frozen))
    shardings = parallel.logical_shardings(mesh, jax.eval_shape(functools.partial(_new_state, setup), params))
    return dataclasses.replace(setup, shardings=shardings), params, frozen


def init_state(s: Setup, params) -> TrainState:
    """The state before the first step, placed on the mesh (parameters sharded by their logical axes)."""
    return jax.device_put(_new_state(s, jax.tree.map(jnp.copy, params)), s.shardings)  # steps donate the state


def abstract_state(s: Setup, params) -> TrainState:
    """The state's shapes, dtypes and shardings, allocating nothing (for AOT lowering)."""
    return parallel.abstract(jax.eval_shape(functools.partial(_new_state, s), params), s.shardings)


def _new_state(s: Setup, params) -> TrainState:
    return TrainState(step=jnp.int32(0), key=jax.random.PRNGKey(s.c.seed), params=params,
                      ref_params=jax.tree.map(jnp.copy, params), sft_opt=s.sft_tx.init(params),
                      rl_opt=s.rl_tx.init(params), skipped=jnp.int32(0))


def place_frozen(s: Setup, frozen):
    """The frozen weights on the mesh, sharded by their logical axes."""
    return jax.device_put(frozen, s.frozen_shardings)


def start_sepo(state: TrainState) -> TrainState:
    """The reference policy is the model at the end of the warm start (the SFT policy)."""
    return state.replace(ref_params=jax.tree.map(jnp.copy, state.params))


def strategy(s: Setup, params, frozen) -> Array:
    """The learner's behavioural table [I, A] (games with an exact solver)."""
    ids, mask, legal, rows, *decision = s.readout
    logp = s.policy.log_probs(params, frozen, ids, mask, legal)
    if decision:
        logp = logp[jnp.arange(logp.shape[0]), decision[0]]
    return readout.strategy_table(s.game, jnp.exp(logp), rows)


def stage_table(s: Setup, params, frozen, prompts, rows_per_pass: int = 256) -> Array:
    """The learner's behavioural table [I, A] of a repeated stage game, read from `prompts` =
    `readout.prompts(s.game, s.renderer)` (an argument, not a constant: IPD has 21,845 rows) in
    passes of at most `rows_per_pass` prompts, each spread over the mesh's batch devices."""
    ids, mask, legal, rows, *decision = prompts
    n = rows.shape[0]
    passes = -(-n // rows_per_pass)
    size = passes * -(-n // (passes * parallel.batch_devices(s.mesh))) * parallel.batch_devices(s.mesh)
    pad = lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (size - n, *x.shape[1:]))])  # noqa: E731
    inputs = _microbatches(s, passes)(jax.tree.map(pad, (ids, mask, legal, *decision)))

    def score(x):
        logp = s.policy.log_probs(params, frozen, *x[:3])
        return logp[jnp.arange(logp.shape[0]), x[3]] if decision else logp

    logp = jnp.swapaxes(jax.lax.map(score, inputs), 0, 1).reshape(size, -1)[:n]
    return readout.strategy_table(s.game, jnp.exp(logp), rows)


def _on_mesh(s: Setup, fn):
    """`fn(s, *args)` traced under the mesh, so the model gathers FSDP-sharded weights where it uses them."""
    def traced(*args):
        with jax.sharding.use_abstract_mesh(s.mesh.abstract_mesh):
            return fn(s, *args)

    return traced


def _jit_step(s: Setup, fn):
    """`fn(state, frozen)` jitted with the state donated and kept in its shardings (a step's output
    feeds the next without a copy or a recompile); metrics replicated."""
    return jax.jit(_on_mesh(s, fn), donate_argnums=0, in_shardings=(s.shardings, s.frozen_shardings),
                   out_shardings=(s.shardings, parallel.replicated(s.mesh)))


def make_sft_step(s: Setup):
    """`step(state, frozen) -> (state, metrics)`: one supervised warm-start step."""
    return _jit_step(s, _sft_step)


def make_sepo_step(s: Setup):
    """`step(state, frozen) -> (state, metrics)`: one SEPO-GRPO step."""
    return _jit_step(s, _sepo_step)


def make_evaluate(s: Setup, episodes: int):
    """`evaluate(params, frozen, key) -> (metrics, per-group arrays [G])`: the paper's metrics of
    `params` from `episodes` sampled episodes (at the rollout temperature, docs/method.md §3 item 5) against
    every opponent of every pool, in the order of `s.eval_layout(episodes)`'s groups, plus exact
    NashConv where solvable. `evaluate(params, frozen, key, prompts)` on a stage game, `prompts` =
    `readout.prompts(s.game, s.renderer)`, adds the exposure of the model's table (`stage_table`):
    what the opponent's exact best response earns per round (`exposure_br`) and what the learner keeps
    (`exposure_kept`)."""
    return jax.jit(_on_mesh(s, functools.partial(_evaluate, episodes=episodes)), out_shardings=parallel.replicated(s.mesh))


def _sft_step(s: Setup, state: TrainState, frozen):
    c, game = s.c, s.game
    num = c.sft.episodes
    key, k_exp, k_opp, k_seat, k_roll = jax.random.split(state.key, 5)
    if c.sft.expert == "equilibrium":
        expert, table = jnp.full((num,), game.tabular_id, jnp.int32), s.expert_table
    else:
        expert, table = sft.demonstrator_ids(game, k_exp, num), None
    train = jnp.asarray(game.pool_ids("train"), jnp.int32)
    opponent = parallel.shard_batch(s.mesh, jax.random.choice(k_opp, train, (num,)))
    seat = jax.random.randint(k_seat, (num,), 0, 2) if c.rollout.learner_seat < 0 else jnp.full((num,), c.rollout.learner_seat)
    batch = sft.expert_batch(game, s.renderer, expert, table, opponent,
                             parallel.shard_batch(s.mesh, seat.astype(jnp.int32)), k_roll)
    if c.sft.expert == "equilibrium":
        ids, mask, legal, rows, *decision = s.readout
        target = s.expert_table[rows]
        if decision:  # the table's distribution at the row's own turn of its conversation
            at = jax.nn.one_hot(decision[0], game.max_decisions, dtype=bool)
            batch = sft.with_table(batch, ids, mask, legal, jnp.where(at[..., None], target[:, None], 0.0), at)
        else:
            batch = sft.with_table(batch, ids, mask, legal, target)

    def loss_fn(params):
        return sft.cross_entropy(s.policy.log_probs(params, frozen, batch.ids, batch.mask, batch.legal), batch)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    params, opt, finite = _apply(s.sft_tx, grads, state.sft_opt, state.params, loss)
    valid = batch.valid
    entropy = jnp.where(valid, grpo.entropy(batch.target, batch.legal), 0.0).sum() / jnp.maximum(valid.sum(), 1)
    metrics = dict(sft_loss=loss, sft_kl=loss - entropy)
    if s.exact:
        metrics["nash_conv"] = best_response.nash_conv_table(game.name, strategy(s, params, frozen))
    new = state.replace(key=key, params=params, sft_opt=opt, step=state.step + 1, skipped=state.skipped + (~finite))
    return new, metrics


def _evaluate(s: Setup, params, frozen, key, prompts=None, *, episodes: int):
    lay = s.eval_layout(episodes)
    traj = rollout.rollout(s.game, s.renderer, s.policy.learner(params, frozen),
                           parallel.shard_batch(s.mesh, jnp.asarray(lay.opponent)),
                           parallel.shard_batch(s.mesh, jnp.asarray(lay.seat)), key)
    metrics = _episode_metrics(s, traj, lay)
    groups = metrics_lib.group_metrics(traj, lay.num_groups)
    group_pool = jnp.asarray(lay.pool[:: lay.group_size])
    over_pool = lambda x, name: x.mean(where=group_pool == Pool.named(name))  # noqa: E731  (groups are equal-sized)
    metrics["nra"] = over_pool(groups["nra"], "train")
    if "shift" in s.game.pools:
        metrics["shift"] = over_pool(groups["payoff"], "shift")
    if s.exact:
        metrics["nash_conv"] = best_response.nash_conv_table(s.game.name, strategy(s, params, frozen))
    if prompts is not None:
        exposed = stage.exposure(s.game, stage_table(s, params, frozen, prompts))
        metrics["exposure_br"], metrics["exposure_kept"] = exposed["br_value"], exposed["learner_value"]
    return metrics, groups


def _sepo_step(s: Setup, state: TrainState, frozen):
    c, game, lay, policy = s.c, s.game, s.layout, s.policy
    key, k_roll = jax.random.split(state.key)
    params = state.params
    metrics = {}
    table = None
    if s.exact:
        table_now = strategy(s, params, frozen)
        br_values, table = best_response.best_responses(game.name, table_now)
        metrics["nash_conv"] = br_values.sum() - best_response.policy_values(game.name, table_now).sum()
    opponent = parallel.shard_batch(s.mesh, jnp.asarray(lay.opponent))
    seat = parallel.shard_batch(s.mesh, jnp.asarray(lay.seat))
    pool = jnp.asarray(lay.pool)
    traj = rollout.rollout(game, s.renderer, policy.learner(params, frozen), opponent, seat, k_roll, table,
                           group_size=lay.group_size, common_chance=c.rollout.common_chance)

    adv, trains, zero_var = sepo.advantages(traj, pool, s.lam, lay.group_size, c.sepo, c.grpo)
    dec_adv = jnp.take_along_axis(adv, traj.round, axis=1)  # [E, D]

    ids, mask, legal = _flat(traj.prompt_ids), _flat(traj.prompt_mask), _flat(traj.legal)
    action, old_logp, a_flat = _flat(traj.action), _flat(traj.logp), _flat(dec_adv)
    weight = (_flat(traj.valid) & jnp.repeat(trains, traj.valid.shape[1])).astype(jnp.float32)
    if policy.chat:
        update = _chat_update(s, frozen, traj.chat_ids, traj.chat_mask, traj.legal, traj.action,
                              weight.reshape(traj.valid.shape))
    elif _shares_prompts(c):
        update = _shared_update(s, frozen, ids, mask, legal, action, weight)
    else:
        update = _member_update(s, frozen, ids, mask, legal, action, _flat(traj.reasoning), _flat(traj.reasoning_mask),
                                weight)
    value_and_grad, weight, count, scored = update(state.ref_params, old_logp, a_flat)
    opt, skipped = state.rl_opt, state.skipped
    for _ in range(c.grpo.ppo_epochs):
        loss, terms, grads = value_and_grad(params)
        params, opt, finite = _apply(s.rl_tx, grads, opt, params, loss)
        skipped = skipped + (~finite)
    metrics.update(_episode_metrics(s, traj, lay))
    metrics.update(
        loss=loss, kl=terms["kl"] / count, clip_fraction=terms["clip_fraction"] / count, entropy=terms["entropy"] / count,
        zero_variance_groups=zero_var, advantage_mean=jnp.where(weight > 0, a_flat, 0).sum() / count,
        advantage_std=jnp.sqrt(jnp.where(weight > 0, a_flat**2, 0).sum() / count), nonfinite_updates=skipped,
        unfinished_episodes=(~traj.finished).sum(), update_rows=scored,
    )
    new = state.replace(key=key, params=params, rl_opt=opt, step=state.step + 1, skipped=skipped)
    return new, metrics


def _shares_prompts(c) -> bool:
    return bool(c.grpo.share_prompts) and not c.rollout.reasoning_budget


def _loss_terms(c, logp, logp_all, legal, old, ref, adv, w, count):
    terms = grpo.policy_loss(logp, old, ref, adv, w, clip_eps=c.grpo.clip_eps, clip_eps_high=c.grpo.clip_eps_high,
                             beta=c.grpo.beta, kl=c.grpo.kl)
    terms["entropy"] = (grpo.entropy(jnp.exp(logp_all), legal) * w).sum()
    return terms["loss"] / count, terms


def _summed_value_and_grad(loss_fn, xs):
    """`p -> (loss, terms, grads)` summed over the leading axis of `xs` by one `lax.scan` (memory of one slice)."""
    def value_and_grad(p):
        def accumulate(carry, x):
            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x)
            return jax.tree.map(jnp.add, carry, (loss, terms, grads)), None

        shapes = jax.eval_shape(lambda: (*loss_fn(p, jax.tree.map(lambda x: x[0], xs)), p))
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return jax.lax.scan(accumulate, zeros, xs)[0]

    return value_and_grad


def _member_update(s: Setup, frozen, ids, mask, legal, action, reasoning, r_mask, weight):
    """The update scoring every decision slot's response (prompt, reasoning, action) on its own, over
    `grpo.microbatches` strided slices of the decisions (each spread over every device).
    `update(ref_params, old_logp, adv) -> (value_and_grad, weight [N], count, rows scored)`."""
    c, policy = s.c, s.policy
    micro = _microbatches(s, c.grpo.microbatches)
    inputs = micro((ids, mask, legal, action, reasoning, r_mask))

    def update(ref_params, old_logp, adv):
        ref_logp, _, tokens = jax.lax.map(lambda x: policy.response(ref_params, frozen, *x), inputs)
        w = micro(weight) * (tokens if c.grpo.aggregation == "token_mean" else 1.0)
        count = jnp.maximum(w.sum(), 1.0)

        def loss_fn(p, x):
            inp, old, ref, a, wx = x
            logp, logp_all, _ = policy.response(p, frozen, *inp)
            return _loss_terms(c, logp, logp_all, inp[2], old, jax.lax.stop_gradient(ref), a, wx, count)

        xs = (inputs, micro(old_logp), ref_logp, micro(adv), w)
        return _summed_value_and_grad(loss_fn, xs), jnp.swapaxes(w, 0, 1).reshape(-1), count, ids.shape[0]

    return update


def _chat_update(s: Setup, frozen, ids, mask, legal, action, weight):
    """The update of the conversation format: every decision of an episode scored from one forward pass
    over its conversation, in `grpo.microbatches` strided slices of the episodes.
    `update(ref_params, old_logp, adv) -> (value_and_grad, weight [E*D], count, rows scored)`."""
    c, policy = s.c, s.policy
    micro = _microbatches(s, c.grpo.microbatches)
    inputs = micro((ids, mask, legal, action))
    w = weight * (policy.renderer.action_len[action] if c.grpo.aggregation == "token_mean" else 1.0)
    count = jnp.maximum(w.sum(), 1.0)
    pick = lambda logp_all, a: jnp.take_along_axis(logp_all, a[..., None], -1)[..., 0]  # noqa: E731

    def update(ref_params, old_logp, adv):
        ref_logp = jax.lax.map(lambda x: pick(policy.log_probs(ref_params, frozen, *x[:3]), x[3]), inputs)

        def loss_fn(p, x):
            (ids, mask, legal, action), old, ref, a, wx = x
            logp_all = policy.log_probs(p, frozen, ids, mask, legal)
            return _loss_terms(c, _flat(pick(logp_all, action)), _flat(logp_all), _flat(legal), _flat(old),
                               _flat(jax.lax.stop_gradient(ref)), _flat(a), _flat(wx), count)

        xs = (inputs, micro(old_logp.reshape(w.shape)), ref_logp, micro(adv.reshape(w.shape)), micro(w))
        return _summed_value_and_grad(loss_fn, xs), w.reshape(-1), count, ids.shape[0]

    return update


def _distinct_rows(ids, mask, legal, valid, capacity: int):
    """The distinct (prompt, legal actions) rows of N decisions, sorted, in `capacity` >= N slots (unused
    slots fully masked): (ids, mask, legal) [capacity, ...], each decision's row [N] and the row count.
    Padding decision slots (not `valid`) all map to one row."""
    n = ids.shape[0]
    key = jnp.concatenate([jnp.where(mask, ids, -1), legal.astype(jnp.int32)], axis=1)
    key = jnp.where(valid[:, None], key, -2)
    order = jnp.lexsort(key.T[::-1])
    sorted_key = key[order]
    new = jnp.concatenate([jnp.ones(1, bool), (sorted_key[1:] != sorted_key[:-1]).any(1)])
    row = jnp.cumsum(new) - 1
    inverse = jnp.zeros(n, jnp.int32).at[order].set(row)
    first = jnp.full(capacity, n - 1, jnp.int32).at[row].min(order)  # one member per row (all are equal)
    used = jnp.arange(capacity) <= row[-1]
    return (ids[first], mask[first] & used[:, None], jnp.where(used[:, None], legal[first], True)), inverse, row[-1] + 1


@dataclasses.dataclass(frozen=True)
class Sharing:
    """Scoring each distinct decision prompt once: the distinct rows of a batch come first, in `passes`
    passes of rows spread over the mesh's batch devices; passes holding no distinct row are skipped at
    run time (`lax.cond`), so the cost follows the number of distinct prompts, not of decisions."""

    passes: int
    mesh: Any

    def rows(self, ids, mask, legal, valid):
        """(rows (ids, mask, legal) [passes, R, ...], each decision's row [N], R, first row of each pass,
        which passes hold a distinct row)."""
        devices = parallel.batch_devices(self.mesh)
        per_pass = -(-ids.shape[0] // (self.passes * devices)) * devices
        rows, inverse, count = _distinct_rows(ids, mask, legal, valid, self.passes * per_pass)
        spec = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, parallel.BATCH))
        rows = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
            x.reshape(self.passes, per_pass, *x.shape[1:]), spec), rows)
        start = jnp.arange(self.passes) * per_pass
        return rows, inverse, per_pass, start, start < count

    def log_probs(self, score, ids, mask, legal, valid=None):
        """`score(ids, mask, legal) -> [n, A]` of every one of N decisions, each distinct row scored once."""
        valid = jnp.ones(ids.shape[0], bool) if valid is None else valid
        rows, inverse, _, _, live = self.rows(ids, mask, legal, valid)
        return self.score_rows(score, rows, inverse, live)

    @staticmethod
    def score_rows(score, rows, inverse, live):
        """`score` of each live pass of `rows` (from `rows()`), read out per decision [N, A]."""
        skip = lambda r: jnp.zeros(r[2].shape, jnp.float32)  # noqa: E731
        out = jax.lax.map(lambda x: jax.lax.cond(x[1], lambda r: score(*r), skip, x[0]), (rows, live))
        return out.reshape(-1, out.shape[-1])[inverse]


def _shared_update(s: Setup, frozen, ids, mask, legal, action, weight):
    """The update with each distinct decision prompt scored once (`Sharing`): decisions with the same
    prompt and legal actions share one row's action log-probs, their gradients adding up through the
    gather. `update(ref_params, old_logp, adv) -> (value_and_grad, weight [N], count, rows scored)`."""
    c, policy, share = s.c, s.policy, s.policy.share
    rows, inverse, per_pass, start, live = share.rows(ids, mask, legal, weight > 0)
    tokens = policy.renderer.action_len[action]
    w = weight * (tokens if c.grpo.aggregation == "token_mean" else 1.0)
    count = jnp.maximum(w.sum(), 1.0)

    def update(ref_params, old_logp, adv):
        ref_all = share.score_rows(functools.partial(policy.log_probs, ref_params, frozen), rows, inverse, live)
        ref_logp = jax.lax.stop_gradient(jnp.take_along_axis(ref_all, action[:, None], 1)[:, 0])

        def loss_fn(p, x):
            rows_x, first, on = x
            local = inverse - first
            mine = (local >= 0) & (local < per_pass)

            def terms(p):
                logp_all = policy.log_probs(p, frozen, *rows_x)[jnp.clip(local, 0, per_pass - 1)]
                logp = jnp.take_along_axis(logp_all, action[:, None], 1)[:, 0]
                return _loss_terms(c, logp, logp_all, legal, old_logp, ref_logp, adv, w * mine, count)

            zero = jax.eval_shape(terms, p)
            return jax.lax.cond(on, terms, lambda p: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zero), p)

        return _summed_value_and_grad(loss_fn, (rows, start, live)), w, count, inverse.max() + 1

    return update


def _microbatches(s: Setup, m: int):
    """Splits the leading (decision) axis of every array into `m` strided slices `[m, N/m, ...]`,
    each slice still split over the mesh's batch axes."""
    def split(x):
        x = jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)
        return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(None, parallel.BATCH)))

    return lambda tree: jax.tree.map(split, tree)


def _all_finite(tree) -> Array:
    return jax.tree.reduce(lambda a, x: a & jnp.isfinite(x).all(), tree, jnp.bool_(True))


def _apply(tx, grads, opt_state, params, loss):
    """One optax update, or none when the loss, a gradient, an updated weight or the updated optimizer
    state is not finite (a finite gradient can still overflow a weight)."""
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params) & _all_finite(new_opt)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return keep(new_params, params), keep(new_opt, opt_state), finite


def _rl_learning_rate(c: Settings):
    """The SEPO phase's learning rate: a float, or an optax schedule over its steps (the RL optimizer's
    count starts at 0 when the phase starts)."""
    if c.grpo.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(c.grpo.learning_rate, max(1, c.steps))
    return c.grpo.learning_rate


def _episode_metrics(s: Setup, traj, lay: Layout) -> dict[str, Array]:
    """The paper's metrics of a step's (or an evaluation's) episodes, pools by name."""
    pool = jnp.asarray(lay.pool)
    present = tuple(Pool(p).name.lower() for p in np.unique(lay.pool))
    return metrics_lib.episode_metrics(traj, lambda name: pool == Pool.named(name), jnp.asarray(lay.opponent),
                                       s.game.tabular_id + 1, s.lam, present)


def _load_model(c):
    """The model of `c.model`: computing in `model.dtype` over float32 master weights (under LoRA the
    frozen base is stored in the compute dtype; only the adapters train)."""
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[c.model.dtype]
    overrides = {}
    if c.model.source == "embedded":
        overrides = dict(hidden_size=c.model.hidden_size, num_layers=c.model.num_layers, num_heads=c.model.num_heads,
                         num_kv_heads=c.model.num_kv_heads, intermediate_size=c.model.intermediate_size,
                         head_dim=c.model.hidden_size // c.model.num_heads)
    model, tok = model_lib.load(c.model.source, dtype=dtype, param_dtype=dtype if c.model.lora_rank else jnp.float32,
                                remat=c.model.remat, seed=c.seed, config_overrides=overrides)
    if c.model.lora_rank:
        lora_lib.apply_lora(model, rank=c.model.lora_rank, alpha=c.model.lora_alpha, param_dtype=jnp.float32,
                            rngs=nnx.Rngs(c.seed))
    return model, tok
