"""SEPO-GRPO on repeated Kuhn poker the way the paper's authors ran it: transformers + torch for the
model, a Python game loop, text prompts tokenized on the host, a hand-written GRPO update. Written to
be a strong baseline rather than a straw man: all live episodes of a step are advanced in lockstep and
their prompts scored in one padded batch per decision round, and the update is one batched forward.

One step does what `sepo_jax`'s `credited` step does for the same layout (one episode per slot, each
slot an opponent, a seat and a pool; groups of `group_size` consecutive slots): play every episode
with constrained sampling over the action tokens at the rollout temperature, reward each round with
the credited per-pool reward (train: s*payoff; exploit: -lambda_e*s*e of the episode; collusive:
-lambda_c*fold rate), normalise per round within each group, weight by pool, then one clipped-surrogate
+ one-sided-KL update with AdamW and gradient clipping.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from .pykuhn import Episode, opponent_action

POOL_WEIGHT_KEYS = {"train": None, "exploit": "lambda_e", "collusive": "lambda_c"}


class TorchKuhnGRPO:
    def __init__(self, model_dir: str, slots: list[tuple[str, str, int]], group_size: int, *, num_hands: int,
                 temperature: float, learning_rate: float, beta: float, clip_eps: float, lambdas: dict,
                 scale: float, seed: int = 0):
        """`slots`: (pool, opponent name, learner seat) per episode."""
        torch.manual_seed(seed)
        self.rng = random.Random(seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.action_tok = []
        for name in (" PASS", " BET"):
            ids = self.tok.encode(name, add_special_tokens=False).ids
            if len(ids) != 1:
                raise ValueError(f"this baseline scores single-token actions; {name!r} is {ids}")
            self.action_tok.append(ids[0])
        self.pad = self.model.config.pad_token_id or 0
        self.slots, self.group_size, self.num_hands = slots, group_size, num_hands
        self.temperature, self.beta, self.clip_eps = temperature, beta, clip_eps
        self.lambdas, self.scale = lambdas, scale
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, weight_decay=0.0)

    def _batch(self, prompts: list[str]):
        rows = [e.ids for e in self.tok.encode_batch(prompts, add_special_tokens=False)]
        width = max(map(len, rows))
        ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def action_logp(self, model, prompts: list[str]) -> torch.Tensor:
        """[N, 2] log-probs of PASS/BET after each prompt at the rollout temperature."""
        return self.action_logp_ids(model, *self._batch(prompts))

    def action_logp_ids(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, self.action_tok]
        return torch.log_softmax(logits / self.temperature, -1)

    def rollout(self):
        episodes = [Episode(self.rng, self.num_hands) for _ in self.slots]
        decisions = []  # (episode, hand, prompt, action, old logp)
        while True:
            for ep, (_, opp, seat) in zip(episodes, self.slots):
                while not ep.done and ep.player != seat:
                    ep.step(opponent_action(opp, ep, self.rng))
            live = [i for i, ep in enumerate(episodes) if not ep.done]
            if not live:
                return episodes, decisions
            prompts = [episodes[i].prompt(self.slots[i][2]) for i in live]
            with torch.no_grad():
                logp = self.action_logp(self.model, prompts)
            actions = torch.multinomial(logp.exp(), 1)[:, 0]
            for i, prompt, a, lp in zip(live, prompts, actions.tolist(), logp.gather(1, actions[:, None])[:, 0].tolist()):
                decisions.append((i, episodes[i].hand, prompt, a, lp))
                episodes[i].step(a)

    def advantages(self, episodes) -> np.ndarray:
        """[E, H] credited per-round rewards, normalised per round within each group, pool-weighted."""
        rew = np.zeros((len(episodes), self.num_hands))
        weight = np.zeros(len(episodes))
        for i, (ep, (pool, _, seat)) in enumerate(zip(episodes, self.slots)):
            mine = np.array([p[seat] for p in ep.payoffs], float)
            theirs = np.array([p[1 - seat] for p in ep.payoffs], float)
            if pool == "train":
                rew[i] = self.scale * mine
            elif pool == "exploit":
                rew[i] = -self.lambdas["lambda_e"] * self.scale * max(0.0, theirs.mean() - mine.mean())
            else:
                rew[i] = -self.lambdas["lambda_c"] * ep.fold_rate(seat)
            key = POOL_WEIGHT_KEYS[pool]
            weight[i] = 1.0 if key is None else self.lambdas[key]
        g = rew.reshape(-1, self.group_size, self.num_hands)
        std = g.std(1, keepdims=True)
        adv = np.where(std > 1e-6, (g - g.mean(1, keepdims=True)) / (std + 1e-8), 0.0).reshape(rew.shape)
        return adv * weight[:, None]

    def step(self) -> dict:
        t0 = time.perf_counter()
        episodes, decisions = self.rollout()
        rollout_s = time.perf_counter() - t0
        adv = self.advantages(episodes)
        prompts = [d[2] for d in decisions]
        action = torch.tensor([d[3] for d in decisions])
        old = torch.tensor([d[4] for d in decisions])
        a = torch.tensor([adv[d[0], d[1]] for d in decisions], dtype=torch.float32)
        with torch.no_grad():
            ref = self.action_logp(self.ref, prompts).gather(1, action[:, None])[:, 0]
        logp = self.action_logp(self.model, prompts).gather(1, action[:, None])[:, 0]
        ratio = torch.exp(logp - old)
        surrogate = torch.minimum(ratio * a, ratio.clamp(1 - self.clip_eps, 1 + self.clip_eps) * a)
        loss = (-surrogate + self.beta * torch.clamp(logp - ref, min=0.0)).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return {"loss": loss.item(), "decisions": len(decisions), "rollout_s": rollout_s}

    def time_steps(self, steps: int) -> dict:
        """Medians after one warm-up step: seconds per step and of its rollout; learner decisions per step."""
        self.step()
        times, rollouts, decisions = [], [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = self.step()
            times.append(time.perf_counter() - t0)
            rollouts.append(out["rollout_s"])
            decisions.append(out["decisions"])
        return {"seconds_per_step": float(np.median(times)), "rollout_s": float(np.median(rollouts)),
                "decisions_per_step": float(np.mean(decisions))}
