"""A run's settings as typed, frozen dataclasses, one per part of the config, and the allowed values of
every enumerated key.

Users write ml_collections configs (`configs/*.py`, `--config.x=` flags); `config.settings(c)` validates
one and turns it into a `Settings` right away. Everything past that edge (the trainer, the loop, the
objective) reads `Settings` only: attributes have the config's dotted names (`s.grpo.beta`), nothing can
be changed by accident, and a wrong key fails at conversion with its name. This module imports nothing
of the package, so every module can import it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Literal

PROMPT_FORMATS = ("restated", "conversation")
CREDIT_MODES = ("shared", "auxiliary", "credited", "exact")
EXPLOIT_SIGNALS = ("episode", "round")
EXPLOIT_OPPONENTS = ("pool", "best_response")
TRAINING_POOLS = ("train", "exploit", "collusive")  # the evaluation adds "shift"
ADVANTAGE_MODES = ("per_round", "per_episode")
KL_MODES = ("one_sided", "k1", "k3", "none")
AGGREGATIONS = ("seq_mean", "token_mean")
EXPERTS = ("equilibrium", "demonstrators")
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "full", "dots")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Prompt:
    format: Literal[PROMPT_FORMATS]


@dataclasses.dataclass(frozen=True)
class Model:
    source: str
    dtype: Literal[DTYPES]
    remat: Literal[REMATS]
    chat_template: bool
    lora_rank: int
    lora_alpha: float
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int


@dataclasses.dataclass(frozen=True)
class Rollout:
    group_size: int
    groups_per_opponent: int
    temperature: float
    learner_seat: int
    common_chance: bool
    reasoning_budget: int
    reasoning_suffix: str


@dataclasses.dataclass(frozen=True)
class Sepo:
    credit: Literal[CREDIT_MODES]
    lambda_e: float
    lambda_c: float
    lambda_x: float
    pool_weighting: bool
    pools: tuple[str, ...]
    exploit_signal: Literal[EXPLOIT_SIGNALS]
    exploit_opponents: Literal[EXPLOIT_OPPONENTS]


@dataclasses.dataclass(frozen=True)
class Grpo:
    advantage: Literal[ADVANTAGE_MODES]
    scale_std: bool
    clip_eps: float
    clip_eps_high: float
    kl: Literal[KL_MODES]
    beta: float
    aggregation: Literal[AGGREGATIONS]
    ppo_epochs: int
    microbatches: int
    share_prompts: bool
    share_passes: int
    learning_rate: float
    lr_schedule: Literal[LR_SCHEDULES]
    weight_decay: float
    grad_clip: float


@dataclasses.dataclass(frozen=True)
class Sft:
    steps: int
    expert: Literal[EXPERTS]
    episodes: int
    learning_rate: float
    warmup: float
    grad_clip: float


@dataclasses.dataclass(frozen=True)
class Mesh:
    data: int
    fsdp: int


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    steps: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    game: str
    num_hands: int
    compact_prompt: bool
    prompt: Prompt
    model: Model
    rollout: Rollout
    sepo: Sepo
    grpo: Grpo
    sft: Sft
    mesh: Mesh

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, **kwargs) -> str:
        """The JSON of the config these settings came from (what a workdir's config.json holds)."""
        return json.dumps(self.to_dict(), **kwargs)

    def replace(self, **dotted) -> Settings:
        """A copy with the given dotted keys changed, e.g. `replace(**{"grpo.beta": 0.0})` (unvalidated:
        for tests and experiments that know what they change)."""
        out = self
        for key, value in dotted.items():
            *parts, last = key.split(".")
            out = _replace_path(out, parts, last, value)
        return out


def _replace_path(obj, parts, last, value):
    if not parts:
        return dataclasses.replace(obj, **{last: value})
    return dataclasses.replace(obj, **{parts[0]: _replace_path(getattr(obj, parts[0]), parts[1:], last, value)})


def from_dict(d: dict, cls=Settings, prefix: str = "") -> Settings:
    """`cls` from a nested dict with exactly its fields (a missing or unknown key is named). Sequences
    become tuples and numbers the field's type (an integral float of an int field, an int of a float
    field); values are otherwise taken as they are (the config is validated before)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    missing, unknown = fields.keys() - d.keys(), d.keys() - fields.keys()
    if missing or unknown:
        names = [f"config.{prefix}{k}" for k in sorted(missing | unknown)]
        raise ValueError(f"{', '.join(names)}: {'missing' if missing else 'unknown'} key(s) for {cls.__name__} settings")
    out = {}
    for name in fields:
        hint, value = hints[name], d[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(dict(value), hint, f"{prefix}{name}.")
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        elif hint is int and isinstance(value, float):
            value = int(value)
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[name] = value
    return cls(**out)

