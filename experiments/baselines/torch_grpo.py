"""SEPO-GRPO the way the paper's authors ran it, for any of the baselines' Python games
(`pygames.PyGame`): transformers + torch for the model, a Python game loop, text prompts tokenized on
the host with the whole prompt re-encoded at every decision, a hand-written GRPO update. Written to be
a strong baseline rather than a straw man: all live episodes of a step advance in lockstep and their
prompts are scored in one padded batch per decision round (the LM head only at the last position; an
action of several tokens continues from the prompt's KV cache, one branch per action), and the update
scores the decisions in length-sorted micro-batches (`update_rows` at a time, gradients summed).

One step does what `sepo_jax`'s `credited` step does for the same layout (one episode per slot, each
slot an opponent, a seat and a pool; groups of `group_size` consecutive slots): play every episode
with constrained sampling over the actions' token sequences at the rollout temperature (an action's
score is the sum of its tokens' log-probs, renormalised over the actions), reward each round with the
credited per-pool reward (train: s*payoff - lambda_x*x; exploit: -lambda_e*s*e - lambda_x*x of the
episode; collusive: -lambda_c*c), normalise per round within each group, weight by pool, then one
clipped-surrogate + one-sided-KL update with AdamW and gradient clipping. Every action is legal at
every decision of the games served (Kuhn, IPD).

`tokens` counts what is fed to the models (policy and reference, padding included) in the step, by a
hook on the input embeddings.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from .pygames import PyGame

POOL_WEIGHT_KEYS = {"train": None, "exploit": "lambda_e", "collusive": "lambda_c"}


def count_tokens(model, counter: list[int]) -> None:
    """Add the number of input positions of every forward pass of `model` to `counter[0]`."""
    def add(module, args, out):
        counter[0] += args[0].numel()

    model.get_input_embeddings().register_forward_hook(add)


class TorchGRPO:
    def __init__(self, model_dir: str, game: PyGame, slots: list[tuple[str, str, int]], group_size: int, *,
                 temperature: float, learning_rate: float, beta: float, clip_eps: float, lambdas: dict,
                 chat_wrap: tuple[str, str] = ("", ""), update_rows: int = 0, device: str = "cpu", seed: int = 0):
        """`slots`: (pool, opponent name, learner seat) per episode; `lambdas`: lambda_e, lambda_c, lambda_x;
        `chat_wrap`: texts around every prompt (a chat template's user turn); `update_rows`: decisions per
        micro-batch of the update (0: all at once)."""
        torch.manual_seed(seed)
        self.rng = random.Random(seed)
        self.device = torch.device(device)
        load = lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(self.device)  # noqa: E731
        self.model, self.ref = load(), load().eval()
        self.tokens = [0]
        for m in (self.model, self.ref):
            count_tokens(m, self.tokens)
        self.tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        actions = [self.tok.encode(" " + name, add_special_tokens=False).ids for name in game.action_names]
        width = max(map(len, actions))
        self.action_ids = torch.tensor([a + [0] * (width - len(a)) for a in actions], device=self.device)
        self.action_steps = torch.tensor([[j < len(a) - 1 for j in range(width - 1)] for a in actions], device=self.device)
        self.pad = self.model.config.pad_token_id or 0
        self.game, self.slots, self.group_size, self.chat_wrap = game, slots, group_size, chat_wrap
        self.temperature, self.beta, self.clip_eps = temperature, beta, clip_eps
        self.lambdas, self.scale, self.update_rows = lambdas, 3.0 / game.max_payoff, update_rows
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, weight_decay=0.0)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        pre, post = self.chat_wrap
        return [e.ids for e in self.tok.encode_batch([pre + p + post for p in prompts], add_special_tokens=False)]

    def _batch(self, rows: list[list[int]]):
        width = max(map(len, rows))
        ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

    def action_logp(self, model, rows: list[list[int]]) -> torch.Tensor:
        """[N, A] log-probs of the actions after each prompt (token ids) at the rollout temperature."""
        return self.action_logp_ids(model, *self._batch(rows))

    def action_logp_ids(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same for left-padded ids [N, P] and mask [N, P]."""
        n, (num_actions, width) = ids.shape[0], self.action_ids.shape
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=width > 1, logits_to_keep=1)
        scores = torch.log_softmax(out.logits[:, -1] / self.temperature, -1)[:, self.action_ids[:, 0]]
        if width > 1:  # every action's later tokens as branches from the prompt's cache
            cache = out.past_key_values
            cache.batch_repeat_interleave(num_actions)
            branch = self.action_ids[:, :-1].repeat(n, 1)
            attn = torch.cat([mask.repeat_interleave(num_actions, 0), torch.ones_like(branch)], 1)
            pos = mask.sum(-1, keepdim=True).repeat_interleave(num_actions, 0) + torch.arange(width - 1, device=self.device)
            logits = model(input_ids=branch, attention_mask=attn, position_ids=pos, past_key_values=cache).logits
            lp = torch.log_softmax(logits / self.temperature, -1).gather(-1, self.action_ids[:, 1:].repeat(n, 1)[..., None])
            scores = scores + (lp[..., 0] * self.action_steps.repeat(n, 1)).sum(-1).view(n, num_actions)
        return torch.log_softmax(scores, -1)

    def rollout(self):
        episodes = [self.game.new_episode(self.rng) for _ in self.slots]
        decisions = []  # (episode, round, prompt ids, action, old logp)
        while True:
            for ep, (_, opp, seat) in zip(episodes, self.slots):
                while not ep.done and ep.player != seat:
                    ep.step(self.game.opponent_action(opp, ep, self.rng))
            live = [i for i, ep in enumerate(episodes) if not ep.done]
            if not live:
                return episodes, decisions
            rows = self.encode([episodes[i].prompt(self.slots[i][2]) for i in live])
            with torch.no_grad():
                logp = self.action_logp(self.model, rows)
            actions = torch.multinomial(logp.exp(), 1)[:, 0]
            for i, row, a, lp in zip(live, rows, actions.tolist(), logp.gather(1, actions[:, None])[:, 0].tolist()):
                decisions.append((i, episodes[i].round, row, a, lp))
                episodes[i].step(a)

    def advantages(self, episodes) -> np.ndarray:
        """[E, R] credited per-round rewards, normalised per round within each group, pool-weighted."""
        lam = self.lambdas
        rew = np.zeros((len(episodes), self.game.num_rounds))
        weight = np.zeros(len(episodes))
        for i, (ep, (pool, _, seat)) in enumerate(zip(episodes, self.slots)):
            mine = np.array([p[seat] for p in ep.payoffs], float)
            theirs = np.array([p[1 - seat] for p in ep.payoffs], float)
            x = lam["lambda_x"] * ep.externality()
            if pool == "train":
                rew[i] = self.scale * mine - x
            elif pool == "exploit":
                rew[i] = -lam["lambda_e"] * self.scale * max(0.0, theirs.mean() - mine.mean()) - x
            else:
                rew[i] = -lam["lambda_c"] * ep.collusion(seat)
            key = POOL_WEIGHT_KEYS[pool]
            weight[i] = 1.0 if key is None else lam[key]
        g = rew.reshape(-1, self.group_size, self.game.num_rounds)
        std = g.std(1, keepdims=True)
        adv = np.where(std > 1e-6, (g - g.mean(1, keepdims=True)) / (std + 1e-8), 0.0).reshape(rew.shape)
        return adv * weight[:, None]

    def update(self, decisions, adv: np.ndarray) -> float:
        """One clipped-surrogate + KL step over every decision, in micro-batches of similar prompt lengths."""
        order = sorted(range(len(decisions)), key=lambda k: len(decisions[k][2]))
        size = self.update_rows or len(order)
        self.opt.zero_grad()
        total = 0.0
        for start in range(0, len(order), size):
            part = [decisions[k] for k in order[start:start + size]]
            ids, mask = self._batch([d[2] for d in part])
            action = torch.tensor([d[3] for d in part], device=self.device)[:, None]
            old = torch.tensor([d[4] for d in part], device=self.device)
            a = torch.tensor([adv[d[0], d[1]] for d in part], dtype=torch.float32, device=self.device)
            with torch.no_grad():
                ref = self.action_logp_ids(self.ref, ids, mask).gather(1, action)[:, 0]
            logp = self.action_logp_ids(self.model, ids, mask).gather(1, action)[:, 0]
            ratio = torch.exp(logp - old)
            surrogate = torch.minimum(ratio * a, ratio.clamp(1 - self.clip_eps, 1 + self.clip_eps) * a)
            loss = (-surrogate + self.beta * torch.clamp(logp - ref, min=0.0)).sum() / len(decisions)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return total

    def step(self) -> dict:
        self.tokens[0] = 0
        t0 = time.perf_counter()
        episodes, decisions = self.rollout()
        t1 = time.perf_counter()
        loss = self.update(decisions, self.advantages(episodes))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return {"loss": loss, "decisions": len(decisions), "rollout_s": t1 - t0, "update_s": time.perf_counter() - t1,
                "tokens": self.tokens[0]}

    def time_steps(self, steps: int) -> dict:
        """Medians after one warm-up step: seconds per step, of its rollout and update; learner decisions
        and tokens fed to the models per step (means)."""
        self.step()
        runs = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = self.step()
            runs.append(dict(out, seconds=time.perf_counter() - t0))
        med = lambda k: float(np.median([r[k] for r in runs]))  # noqa: E731
        mean = lambda k: float(np.mean([r[k] for r in runs]))  # noqa: E731
        return {"seconds_per_step": med("seconds"), "rollout_s": med("rollout_s"), "update_s": med("update_s"),
                "decisions_per_step": mean("decisions"), "tokens_per_step": mean("tokens")}
