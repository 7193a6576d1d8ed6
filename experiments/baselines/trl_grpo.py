"""Training throughput of Hugging Face TRL's `GRPOTrainer` on single decisions of a baselines' Python game
(`pygames.PyGame`: Kuhn poker, IPD).

What one timed step does (from the trainer's on_step_begin to on_step_end): sample `group_size`
completions for each of `prompts_per_step` decision prompts (free text, at most the longest action's
tokens plus one, at `temperature`), reward each by playing its round out in Python, normalise the
rewards per group, and take one AdamW step on TRL's clipped GRPO loss (clip range 0.2, TRL's default
and ours) with a KL penalty (`beta`) to a frozen reference copy and gradient-norm clipping at 1.0. That
is the per-decision work of our GRPO step: the same prompt text (`Episode.prompt`, in the model's chat
template when it has one, as ours), group size, temperature, learning rate (constant) and KL
coefficient, and as many completions per step as our step has learner decisions when
`prompts_per_step * group_size` is set to that number.

How it maps, and where it differs:
- Prompts: each is the learner's (seat 0) turn at a uniformly chosen decision of an episode against a
  training opponent (cycling through the game's train pool), the learner having played uniformly at
  random before it. All prompts are built before training, as a TRL user would build a dataset, so
  TRL's step does not play the episodes up to the decision; ours does.
- Completions: TRL generates free text and cannot constrain decoding to the actions' token sequences as
  we do; anything but an action's name is an invalid answer with reward -3 and is still trained on.
- Reward: SEPO's scale (3 / max payoff) times the learner's payoff of that round (Kuhn: the hand, the
  learner passing at any later decision of it; IPD: the round, the opponent answering). No credit over
  the rest of the episode, no exploit or collusion pools.
- Batch semantics (TRL 1.16): `per_device_train_batch_size` counts completions; with `micro_rows` = 0
  it is `prompts_per_step * group_size` with `gradient_accumulation_steps=1`, else the largest divisor
  of that up to `micro_rows`, with as many accumulation steps (and `steps_per_generation`) as make up
  the same completions: each optimizer
  step generates fresh completions for `prompts_per_step` prompts and trains on all of them
  (`num_iterations=1`, so TRL takes the old log-probs as the detached current ones).
- Loss: TRL's defaults, i.e. token-level averaging over the batch ("dapo") and the two-sided k3 KL
  estimate; ours averages per decision and penalises only logp > ref logp. Same cost either way.
- Settings that TRL defaults differently from us and are turned off: gradient checkpointing, bf16,
  the linear learning-rate decay. The tokenizer is the exported folder's (`save_hf`), left-padding.
- TRL 1.16 scores log-probs through its own tiled LM head; where Triton is missing (a CPU) it applies
  the head at every position, prompt included, not only at the completion's: TRL's cost on a CPU, which
  grows with the vocabulary (49,152 rows for SmolLM2).
"""

from __future__ import annotations

import copy
import pickle
import random
import statistics
import tempfile
import time

import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, PrinterCallback, TrainerCallback

from .pygames import PyGame
from .torch_grpo import count_tokens

INVALID = -3.0


def decision(game: PyGame, rng: random.Random, opponent: str):
    """An episode stopped at a uniformly chosen learner (seat 0) decision; the learner plays at random before it."""
    ep, turns = game.new_episode(rng), []
    while not ep.done:
        if ep.player == 0:
            turns.append(copy.deepcopy(ep))
            ep.step(rng.randrange(len(game.action_names)))
        else:
            ep.step(game.opponent_action(opponent, ep, rng))
    return rng.choice(turns)


def round_reward(game: PyGame, ep, opponent: str, action: int, rng: random.Random) -> float:
    """Play the current round out from the learner's `action` (action 0 at its later decisions of the
    round); the learner's scaled payoff of the round."""
    r = ep.round
    ep.step(action)
    while not ep.done and ep.round == r:
        ep.step(0 if ep.player == 0 else game.opponent_action(opponent, ep, rng))
    return 3.0 / game.max_payoff * ep.payoffs[r][0]


class StepTimer(TrainerCallback):
    """Seconds and tokens fed to the models (`tokens[0]`, counted by hooks) of every optimizer step."""

    def __init__(self):
        self.times, self.counts, self.tokens, self.t0 = [], [], [0], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.tokens[0] = 0
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.t0)
        self.counts.append(self.tokens[0])


def run(model_dir: str, game: PyGame, steps: int, prompts_per_step: int, group_size: int, temperature: float = 0.8,
        learning_rate: float = 1e-5, beta: float = 0.2, seed: int = 0, chat_wrap: tuple[str, str] = ("", ""),
        micro_rows: int = 0) -> dict:
    """Train `steps + 1` GRPO steps with TRL; time all but the first (warm-up). `chat_wrap` is our text
    around a prompt, which TRL's chat-templated prompt must equal."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir, padding_side="left")
    chat = bool(tok.chat_template)
    rows = {"prompt": [], "episode": [], "opponent": []}
    for i in range(prompts_per_step * (steps + 1)):
        opponent = game.train_opponents[i % len(game.train_opponents)]
        ep = decision(game, rng, opponent)
        text = ep.prompt(0)
        rows["prompt"].append([{"role": "user", "content": text}] if chat else text)
        rows["episode"].append(pickle.dumps(ep))
        rows["opponent"].append(opponent)
    if chat:
        shown = tok.apply_chat_template(rows["prompt"][0], tokenize=False, add_generation_prompt=True)
        expected = chat_wrap[0] + rows["prompt"][0][0]["content"] + chat_wrap[1]
        if shown != expected:
            raise ValueError(f"TRL's chat-templated prompt differs from ours:\n{shown!r}\n{expected!r}")
    names = {name: a for a, name in enumerate(game.action_names)}

    def reward(completions, episode, opponent, **_):
        out = []
        for done, ep, opp in zip(completions, episode, opponent):
            action = names.get((done[0]["content"] if chat else done).strip())
            out.append(INVALID if action is None else round_reward(game, pickle.loads(ep), opp, action, rng))
        return out

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    longest = max(len(tok.encode(" " + name, add_special_tokens=False)) for name in game.action_names)
    total = prompts_per_step * group_size
    micro = max(d for d in range(1, (micro_rows or total) + 1) if total % d == 0)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = trl.GRPOConfig(
            output_dir=out, max_steps=steps + 1, seed=seed, use_cpu=not torch.cuda.is_available(), bf16=False,
            fp16=False, per_device_train_batch_size=micro, gradient_accumulation_steps=total // micro,
            steps_per_generation=total // micro, num_generations=group_size, max_completion_length=longest + 1,
            temperature=temperature, learning_rate=learning_rate, lr_scheduler_type="constant", beta=beta,
            optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0, activation_checkpointing=False,
            report_to="none", logging_strategy="no", save_strategy="no", disable_tqdm=True)
        trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config, processing_class=tok,
                                  train_dataset=Dataset.from_dict(rows), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)  # the end-of-training summary line
        for m in (trainer.model, trainer.ref_model):
            count_tokens(m, timer.tokens)
        trainer.train()
    timed = timer.times[1:]
    seconds = statistics.median(timed)
    return {"seconds_per_step": seconds, "decisions_per_second": total / seconds, "steps_timed": len(timed),
            "tokens_per_step": statistics.mean(timer.counts[1:]), "trl_version": trl.__version__}
