"""The trainer: jitted SFT and SEPO-GRPO steps over a Mesh, the loop, checkpoints and metrics.

One SEPO step, all inside one `jit`: read the model's strategy table and its exact best response
(games with an exact solver), play every (pool, opponent) group, credit rewards, group-normalise,
weight by pool, and apply one clipped-surrogate + KL update (skipped, and counted, if the loss or a
gradient is not finite). The batch of episode slots is sharded over the mesh's data axis.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sepo_jax import games as games_lib
from sepo_jax import model as model_lib
from sepo_jax import parallel
from sepo_jax.config import EXACT_SOLVER_GAMES
from sepo_jax.equilibrium import best_response, cfr
from sepo_jax.equilibrium import metrics as metrics_lib
from sepo_jax.model import lora as lora_lib
from sepo_jax.model import sampler

from . import grpo, readout, rollout, sepo, sft

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


def make_layout(game, c: ml_collections.ConfigDict, episodes: int | None = None, pools=None) -> Layout:
    """The training layout; with `episodes`, the evaluation layout instead: one group of that many
    episodes per opponent of every pool in `pools` (default `c.sepo.pools`), without the tabular best
    response."""
    n, reps = (episodes, 1) if episodes else (c.rollout.group_size, c.rollout.groups_per_opponent)
    opp, pool = [], []
    for name in pools or c.sepo.pools:
        ids = list(game.pool_ids(name)) if name in game.pools else []
        if name == "exploit" and c.sepo.credit == "exact" and not episodes:
            ids.append(game.tabular_id)  # the exact best response to the current policy
        for i in ids:
            opp += [i] * reps
            pool += [sepo.POOL_INDEX[name]] * reps
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

    def __init__(self, graphdef, renderer, temperature: float, budget: int = 0, suffix_ids=None, eos_id=None):
        self.graphdef, self.renderer, self.temperature = graphdef, renderer, temperature
        self.budget, self.suffix_ids, self.eos_id = budget, suffix_ids, eos_id

    def _model(self, params, frozen):
        return nnx.merge(self.graphdef, params, frozen)

    def log_probs(self, params, frozen, ids, mask, legal):
        """[N, A] action log-probs straight after the prompt (after an empty reasoning template when
        reasoning is on): what supervised targets and the strategy read-out use."""
        if self.budget:
            empty = jnp.zeros((ids.shape[0], self.budget), jnp.int32)
            return self.response(params, frozen, ids, mask, legal, jnp.zeros(ids.shape[0], jnp.int32), empty,
                                 empty.astype(bool))[1]
        r = self.renderer
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

    def learner(self, params, frozen) -> rollout.Learner:
        r = self.renderer

        def act(ids, mask, legal, states, key, group_size=1):
            """`group_size` > 1: one row per group of identical prompts, samples for every member."""
            if not self.budget:
                logp_all = jnp.repeat(self.log_probs(params, frozen, ids, mask, legal), group_size, axis=0)
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


def _flat(x):
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


class Trainer:
    """Holds the static pieces (game, renderer, model graph, layout, optimizers) and jitted steps."""

    def __init__(self, c: ml_collections.ConfigDict, mesh=None):
        self.c = c
        kwargs = {"num_hands": c.num_hands} if c.num_hands else {}
        if c.compact_prompt:
            kwargs["compact_prompt"] = True
        self.game = games_lib.make(c.game, **kwargs)
        self.mesh = mesh if mesh is not None else parallel.make_mesh(c.mesh.data)
        self.layout = make_layout(self.game, c)
        parallel.check_divisible(self.mesh, self.layout.opponent.shape[0], "the SEPO batch (rollout.group_size x groups)")
        parallel.check_divisible(self.mesh, c.sft.episodes, "config.sft.episodes")
        model, tok = _load_model(c)
        wrap = tok.chat_wrap() if c.model.chat_template else ("", "")
        self.tokenizer = tok
        self.renderer = games_lib.PromptRenderer(self.game, tok, wrap=wrap)
        trainable = nnx.LoRAParam if c.model.lora_rank else nnx.Param
        self.graphdef, params, self.frozen = nnx.split(model, trainable, ...)
        suffix = jnp.asarray(tok.encode(c.rollout.reasoning_suffix), jnp.int32)
        self.policy = Policy(self.graphdef, self.renderer, c.rollout.temperature, c.rollout.reasoning_budget, suffix,
                             tok.eos_id)
        self.lam = sepo.Lambdas(c.sepo.lambda_e, c.sepo.lambda_c, c.sepo.lambda_x, 3.0 / self.game.max_payoff)
        self.exact = c.game in EXACT_SOLVER_GAMES
        if self.exact:
            states, mover, self.rows = readout.infoset_states(self.game)
            self.readout_ids, self.readout_mask = jax.vmap(self.renderer.render, in_axes=(None, 0, 0))(self.game, states, mover)
            self.readout_legal = states.legal_action_mask
        if c.sft.expert == "equilibrium":
            self.expert_table = jnp.asarray(cfr.equilibrium_table(self.game.name), jnp.float32)
        self.sft_opt = optax.chain(
            optax.clip_by_global_norm(c.sft.grad_clip),
            optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.sft.learning_rate, max(1, int(c.sft.warmup * c.sft.steps)),
                                                           max(2, c.sft.steps)), weight_decay=0.0),
        )
        self.rl_opt = optax.chain(optax.clip_by_global_norm(c.grpo.grad_clip),
                                  optax.adamw(c.grpo.learning_rate, weight_decay=c.grpo.weight_decay))
        self.initial_params = params
        self.sft_step = jax.jit(self._sft_step, donate_argnums=0)
        self.sepo_step = jax.jit(self._sepo_step, donate_argnums=0)

    # ---- state ---------------------------------------------------------------------------------
    def init_state(self) -> dict:
        params = parallel.replicate(self.mesh, jax.tree.map(jnp.copy, self.initial_params))  # steps donate the state
        return dict(
            step=jnp.int32(0),
            key=jax.random.PRNGKey(self.c.seed),
            params=params,
            ref_params=jax.tree.map(jnp.copy, params),
            sft_opt=self.sft_opt.init(params),
            rl_opt=self.rl_opt.init(params),
            skipped=jnp.int32(0),
        )

    def start_sepo(self, state: dict) -> dict:
        """The reference policy is the model at the end of the warm start (the SFT policy)."""
        return {**state, "ref_params": jax.tree.map(jnp.copy, state["params"])}

    # ---- strategy read-out -----------------------------------------------------------------------
    def strategy(self, params) -> Array:
        """The learner's behavioural table [I, A] (games with an exact solver)."""
        logp = self.policy.log_probs(params, self.frozen, self.readout_ids, self.readout_mask, self.readout_legal)
        return readout.strategy_table(self.game, jnp.exp(logp), self.rows)

    # ---- supervised warm start -----------------------------------------------------------------
    def _sft_step(self, state, _=None):
        c, game = self.c, self.game
        num = c.sft.episodes
        key, k_exp, k_opp, k_seat, k_roll = jax.random.split(state["key"], 5)
        if c.sft.expert == "equilibrium":
            expert, table = jnp.full((num,), game.tabular_id, jnp.int32), self.expert_table
        else:
            expert, table = sft.demonstrator_ids(game, k_exp, num), None
        train = jnp.asarray(game.pool_ids("train"), jnp.int32)
        opponent = parallel.shard_batch(self.mesh, jax.random.choice(k_opp, train, (num,)))
        seat = jax.random.randint(k_seat, (num,), 0, 2) if c.rollout.learner_seat < 0 else jnp.full((num,), c.rollout.learner_seat)
        batch = sft.expert_batch(game, self.renderer, expert, table, opponent,
                                 parallel.shard_batch(self.mesh, seat.astype(jnp.int32)), k_roll)
        if c.sft.expert == "equilibrium":
            batch = sft.with_table(batch, self.readout_ids, self.readout_mask, self.readout_legal, self.expert_table[self.rows])

        def loss_fn(params):
            return sft.cross_entropy(self.policy.log_probs(params, self.frozen, batch.ids, batch.mask, batch.legal), batch)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        params, opt, finite = _apply(self.sft_opt, grads, state["sft_opt"], state["params"], loss)
        valid = batch.valid
        entropy = jnp.where(valid, grpo.entropy(batch.target, batch.legal), 0.0).sum() / jnp.maximum(valid.sum(), 1)
        metrics = dict(sft_loss=loss, sft_kl=loss - entropy)
        if self.exact:
            metrics["nash_conv"] = best_response.nash_conv_table(game.name, self.strategy(params))
        new = {**state, "key": key, "params": params, "sft_opt": opt, "step": state["step"] + 1,
               "skipped": state["skipped"] + (~finite)}
        return new, metrics

    # ---- evaluation ------------------------------------------------------------------------------
    def eval_layout(self, episodes: int) -> Layout:
        """Every pool of the config, plus the evaluation-only `shift` pool where the game has one."""
        pools = tuple(self.c.sepo.pools) + (("shift",) if "shift" in self.game.pools else ())
        return make_layout(self.game, self.c, episodes, pools)

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def evaluate(self, params, key, episodes: int) -> tuple[dict[str, Array], dict[str, Array]]:
        """The paper's metrics of `params` from `episodes` sampled episodes (at the rollout temperature,
        SEPO.md §3 item 5) against every opponent of every pool, plus exact NashConv where solvable.
        Returns (metrics, per-group arrays `[G]` in the order of `eval_layout(episodes)`'s groups)."""
        lay = self.eval_layout(episodes)
        traj = rollout.rollout(self.game, self.renderer, self.policy.learner(params, self.frozen),
                               parallel.shard_batch(self.mesh, jnp.asarray(lay.opponent)),
                               parallel.shard_batch(self.mesh, jnp.asarray(lay.seat)), key)
        pool = jnp.asarray(lay.pool)
        metrics = _episode_metrics(traj, pool, jnp.asarray(lay.opponent), self.lam, self.game)
        groups = _group_metrics(traj, lay.num_groups)
        group_pool = pool[:: lay.group_size]
        over_pool = lambda x, name: x.mean(where=group_pool == sepo.POOL_INDEX[name])  # noqa: E731  (groups are equal-sized)
        metrics["nra"] = over_pool(groups["nra"], "train")
        if "shift" in self.game.pools:
            metrics["shift"] = over_pool(groups["payoff"], "shift")
        if self.exact:
            metrics["nash_conv"] = best_response.nash_conv_table(self.game.name, self.strategy(params))
        return metrics, groups

    # ---- SEPO ------------------------------------------------------------------------------------
    def _sepo_step(self, state, _=None):
        c, game, lay = self.c, self.game, self.layout
        key, k_roll = jax.random.split(state["key"])
        params = state["params"]
        metrics = {}
        table = None
        if self.exact:
            strategy = self.strategy(params)
            br_values, table = best_response.best_responses(game.name, strategy)
            metrics["nash_conv"] = br_values.sum() - best_response.policy_values(game.name, strategy).sum()
        opponent = parallel.shard_batch(self.mesh, jnp.asarray(lay.opponent))
        seat = parallel.shard_batch(self.mesh, jnp.asarray(lay.seat))
        pool = jnp.asarray(lay.pool)
        traj = rollout.rollout(game, self.renderer, self.policy.learner(params, self.frozen), opponent, seat, k_roll, table,
                               group_size=lay.group_size, common_chance=c.rollout.common_chance)

        rew, trains = sepo.rewards(traj, pool, c.sepo.credit, self.lam, lay.group_size)
        adv, zero_var = grpo.advantages(rew.reshape(lay.num_groups, lay.group_size, -1), c.grpo.advantage, c.grpo.scale_std)
        adv = adv.reshape(rew.shape)
        if c.sepo.pool_weighting:
            adv = adv * sepo.pool_weights(pool, (1.0, self.lam.e, self.lam.c))[:, None]
        adv = adv * trains[:, None]
        dec_adv = jnp.take_along_axis(adv, traj.round, axis=1)  # [E, D]

        ids, mask, legal = _flat(traj.prompt_ids), _flat(traj.prompt_mask), _flat(traj.legal)
        action, old_logp, a_flat = _flat(traj.action), _flat(traj.logp), _flat(dec_adv)
        reasoning, r_mask = _flat(traj.reasoning), _flat(traj.reasoning_mask)
        weight = (_flat(traj.valid) & jnp.repeat(trains, traj.valid.shape[1])).astype(jnp.float32)
        ref_logp, _, tokens = self.policy.response(state["ref_params"], self.frozen, ids, mask, legal, action, reasoning, r_mask)
        ref_logp = jax.lax.stop_gradient(ref_logp)
        if c.grpo.aggregation == "token_mean":
            weight = weight * tokens

        def loss_fn(p):
            logp, logp_all, _ = self.policy.response(p, self.frozen, ids, mask, legal, action, reasoning, r_mask)
            terms = grpo.policy_loss(logp, old_logp, ref_logp, a_flat, weight, clip_eps=c.grpo.clip_eps,
                                     clip_eps_high=c.grpo.clip_eps_high, beta=c.grpo.beta, kl=c.grpo.kl)
            terms["entropy"] = (grpo.entropy(jnp.exp(logp_all), legal) * weight).sum()
            return terms["loss"] / jnp.maximum(terms["count"], 1.0), terms

        opt, skipped = state["rl_opt"], state["skipped"]
        for _ in range(c.grpo.ppo_epochs):
            (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            params, opt, finite = _apply(self.rl_opt, grads, opt, params, loss)
            skipped = skipped + (~finite)
        count = jnp.maximum(terms["count"], 1.0)
        metrics.update(_episode_metrics(traj, pool, jnp.asarray(lay.opponent), self.lam, game))
        metrics.update(
            loss=loss, kl=terms["kl"] / count, clip_fraction=terms["clip_fraction"] / count, entropy=terms["entropy"] / count,
            zero_variance_groups=zero_var, advantage_mean=jnp.where(weight > 0, a_flat, 0).sum() / count,
            advantage_std=jnp.sqrt(jnp.where(weight > 0, a_flat**2, 0).sum() / count), nonfinite_updates=skipped,
            unfinished_episodes=(~traj.finished).sum(),
        )
        new = {**state, "key": key, "params": params, "rl_opt": opt, "step": state["step"] + 1, "skipped": skipped}
        return new, metrics


def _apply(tx, grads, opt_state, params, loss):
    """One optax update, or none when the loss or a gradient is not finite."""
    finite = jnp.isfinite(loss) & jax.tree.reduce(lambda a, g: a & jnp.isfinite(g).all(), grads, jnp.bool_(True))
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return keep(new_params, params), keep(new_opt, opt_state), finite


def _episode_metrics(traj, pool, opponent, lam, game) -> dict[str, Array]:
    """The paper's per-condition metrics over this step's episodes (SEPO.md §5)."""
    mine, theirs = sepo.seat_payoffs(traj)
    in_pool = lambda i: pool == i

    def mean(x, m):
        return jnp.where(m, x, 0.0).sum() / jnp.maximum(m.sum(), 1)

    payoff = mean(mine.mean(-1), in_pool(0))
    # per adversary: max(0, its mean payoff - the learner's), then averaged over adversaries
    members = jax.nn.one_hot(opponent, game.tabular_id + 1, dtype=bool) & in_pool(1)[:, None]  # [E, O]
    counts = members.sum(0)
    gap = (jnp.where(members, (theirs - mine).mean(-1)[:, None], 0.0)).sum(0) / jnp.maximum(counts, 1)
    present = counts > 0
    exploit = jnp.where(present, jnp.maximum(gap, 0.0), 0.0).sum() / jnp.maximum(present.sum(), 1)
    collusion = mean(traj.collusion, in_pool(2))
    externality = mean(traj.externality, in_pool(0))
    s = lam.scale
    return dict(
        payoff=payoff,
        robust=mean(mine.mean(-1), in_pool(1)),
        exploit_pool_advantage=exploit,
        collusion=collusion,
        externality=externality,
        safety=s * payoff - lam.e * s * exploit - lam.c * collusion - lam.x * externality,
        penalty_exploit=lam.e * s * exploit,
        penalty_collusion=lam.c * collusion,
        penalty_externality=lam.x * externality,
    )


def _group_metrics(traj, num_groups: int) -> dict[str, Array]:
    """Per group of the layout: learner and opponent payoff per round, GTBench's NRA over the group's
    episodes, collusion and externality rates."""
    mine, theirs = (x.sum(-1) for x in sepo.seat_payoffs(traj))  # episode totals [E]
    group = jnp.arange(mine.shape[0]) // (mine.shape[0] // num_groups)
    per_round = lambda x: x.reshape(num_groups, -1).mean(-1) / traj.payoffs.shape[1]  # noqa: E731
    rate = lambda x: x.reshape(num_groups, -1).mean(-1)  # noqa: E731
    return dict(payoff=per_round(mine), opponent_payoff=per_round(theirs),
                nra=metrics_lib.nra_by_opponent(mine, theirs, group, num_groups)[0],
                collusion=rate(traj.collusion), externality=rate(traj.externality))


def _load_model(c):
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[c.model.dtype]
    overrides = {}
    if c.model.source == "embedded":
        overrides = dict(hidden_size=c.model.hidden_size, num_layers=c.model.num_layers, num_heads=c.model.num_heads,
                         num_kv_heads=c.model.num_kv_heads, intermediate_size=c.model.intermediate_size,
                         head_dim=c.model.hidden_size // c.model.num_heads)
    model, tok = model_lib.load(c.model.source, dtype=dtype, seed=c.seed, config_overrides=overrides)
    if c.model.lora_rank:
        lora_lib.apply_lora(model, rank=c.model.lora_rank, alpha=c.model.lora_alpha, rngs=nnx.Rngs(c.seed))
    return model, tok
