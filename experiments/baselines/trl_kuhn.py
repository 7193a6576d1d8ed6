"""Training throughput of Hugging Face TRL's `GRPOTrainer` on single Kuhn poker decisions.

What one timed step does (from the trainer's on_step_begin to on_step_end): sample `group_size`
completions for each of `prompts_per_step` decision prompts (free text, at most 2 new tokens, at
`temperature`), reward each by playing its hand out in Python, normalise the rewards per group, and take
one AdamW step on TRL's clipped GRPO loss (clip range 0.2, TRL's default and ours) with a KL penalty
(`beta`) to a frozen reference copy and gradient-norm clipping at 1.0. That is the per-decision work of
our Kuhn GRPO step: the same prompt text (`pykuhn.Episode.prompt`), group size, temperature, learning
rate (constant) and KL coefficient, and as many completions per step as our step has learner decisions
when `prompts_per_step * group_size` is set to that number.

How it maps, and where it differs:
- Prompts: each is the learner's (seat 0) turn at a uniformly chosen decision of a 6-hand episode
  against a training opponent (cycling NashApprox, TightPassive, LooseAggressive), the learner having
  played uniformly at random before it. All prompts are built before training, as a TRL user would
  build a dataset, so TRL's step does not play the episodes up to the decision; ours does.
- Completions: TRL generates free text and cannot constrain decoding to " PASS"/" BET" (single tokens
  in our vocabulary) as we do; anything else is an invalid answer with reward -3 and is still trained on.
- Reward: 1.5 (= 3 / max payoff, SEPO's scale) times the learner's payoff of that hand, the learner
  passing at any later decision of it. No credit over the rest of the episode, no exploit or collusion
  pools.
- Batch semantics (TRL 1.16): `per_device_train_batch_size` counts completions, so it is set to
  `prompts_per_step * group_size` with `gradient_accumulation_steps=1` and `steps_per_generation=1`:
  each optimizer step generates fresh completions for `prompts_per_step` prompts and trains on all of
  them in one micro-batch (`num_iterations=1`, so TRL takes the old log-probs as the detached current ones).
- Loss: TRL's defaults, i.e. token-level averaging over the batch ("dapo") and the two-sided k3 KL
  estimate; ours averages per decision and penalises only logp > ref logp. Same cost either way.
- Settings that TRL defaults differently from us and are turned off: gradient checkpointing, bf16,
  the linear learning-rate decay. The tokenizer is a `PreTrainedTokenizerFast` over tokenizer.json with
  pad, eos and bos set from the model config's token ids (TRL stops generation at eos and left-pads prompts).
"""

from __future__ import annotations

import pickle
import random
import statistics
import tempfile
import time

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerFast,
    PrinterCallback,
    TrainerCallback,
)

from .pykuhn import BET, PASS, Episode, opponent_action

OPPONENTS = ("NashApprox", "TightPassive", "LooseAggressive")
SCALE = 1.5  # SEPO's reward scale for Kuhn: 3 / max payoff
INVALID = -3.0


def decision(rng: random.Random, opponent: str) -> Episode:
    """An episode stopped at a uniformly chosen learner (seat 0) decision; the learner plays at random before it."""
    ep, turns = Episode(rng), []
    while not ep.done:
        if ep.player == 0:
            turns.append(pickle.dumps(ep))
            ep.step(rng.randrange(2))
        else:
            ep.step(opponent_action(opponent, ep, rng))
    return pickle.loads(rng.choice(turns))


def hand_reward(ep: Episode, opponent: str, action: int, rng: random.Random) -> float:
    """Play the current hand out from the learner's `action` (PASS at later learner decisions); scaled payoff."""
    hand = ep.hand
    ep.step(action)
    while ep.hand == hand:
        ep.step(PASS if ep.player == 0 else opponent_action(opponent, ep, rng))
    return SCALE * ep.payoffs[hand][0]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.t0)


def run(model_dir: str, steps: int, prompts_per_step: int, group_size: int, temperature: float = 0.8,
        learning_rate: float = 1e-5, beta: float = 0.2, seed: int = 0) -> dict:
    """Train `steps + 1` GRPO steps with TRL; time all but the first (warm-up)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    rows = {"prompt": [], "episode": [], "opponent": []}
    for i in range(prompts_per_step * (steps + 1)):
        opponent = OPPONENTS[i % len(OPPONENTS)]
        ep = decision(rng, opponent)
        rows["prompt"].append(ep.prompt(0))
        rows["episode"].append(pickle.dumps(ep))
        rows["opponent"].append(opponent)

    def reward(completions, episode, opponent, **_):
        out = []
        for text, ep, opp in zip(completions, episode, opponent):
            action = {"PASS": PASS, "BET": BET}.get(text.strip())
            out.append(INVALID if action is None else hand_reward(pickle.loads(ep), opp, action, rng))
        return out

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json", padding_side="left")
    ids = {f"{name}_token": getattr(model.config, f"{name}_token_id", None) for name in ("pad", "eos", "bos")}
    tok.add_special_tokens({key: tok.convert_ids_to_tokens(i) for key, i in ids.items() if i is not None})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = trl.GRPOConfig(
            output_dir=out, max_steps=steps + 1, seed=seed, use_cpu=True, bf16=False, fp16=False,
            per_device_train_batch_size=prompts_per_step * group_size, gradient_accumulation_steps=1,
            steps_per_generation=1, num_generations=group_size, max_completion_length=2, temperature=temperature,
            learning_rate=learning_rate, lr_scheduler_type="constant", beta=beta, optim="adamw_torch",
            weight_decay=0.0, max_grad_norm=1.0, activation_checkpointing=False, report_to="none",
            logging_strategy="no", save_strategy="no", disable_tqdm=True)
        trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config, processing_class=tok,
                                  train_dataset=Dataset.from_dict(rows), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # the end-of-training summary line
        trainer.train()
    timed = timer.times[1:]
    seconds = statistics.median(timed)
    return {"seconds_per_step": seconds, "decisions_per_second": prompts_per_step * group_size / seconds,
            "steps_timed": len(timed), "trl_version": trl.__version__}
