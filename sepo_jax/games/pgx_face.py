"""Pgx's environment API for every game: `to_pgx(name)` -> a `pgx.Env`.

The environment wraps the game's own `init`/`step` (no second copy of the rules) and follows Pgx's
conventions, which `pgx.Env.step` itself applies: `rewards` are what each seat won on this step (a
hand's or a round's payoffs when it ends), an illegal action ends the episode with -1 for the mover
and +1 for the other seat, stepping a finished episode changes nothing and pays 0, and the legal mask
is all True once terminated. `observation` is the mover's information-set row `[1]` (int32, what the
game's tabular strategies read; the full prompt is `game.prompt(state.game_state, player)`); the
game's own state is `state.game_state`. Chance inside a step (the auction's tie coin) comes from the `key`
passed to `step`, or from a key carried in the state when none is given.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import pgx.core
from flax import struct

from .base import Game


@struct.dataclass
class PgxState(pgx.core.State):
    current_player: jax.Array
    observation: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    legal_action_mask: jax.Array
    _step_count: jax.Array
    game_state: Any
    _key: jax.Array
    _env_id: str = struct.field(pytree_node=False, default="")

    @property
    def env_id(self) -> str:
        return self._env_id


class PgxEnv(pgx.core.Env):
    """One of our games behind Pgx's `Env` interface (`init`, `step`, `observe`, `id`, `num_players`,
    `num_actions`, ...)."""

    def __init__(self, game: Game):
        super().__init__()
        self.game = game

    def _init(self, key: jax.Array) -> PgxState:
        init_key, key = jax.random.split(key)
        s = self.game.init(init_key)
        return PgxState(
            current_player=jnp.maximum(s.current_player, 0), observation=jnp.zeros(0, jnp.int32),
            rewards=jnp.zeros(2, jnp.float32), terminated=s.terminated, truncated=jnp.bool_(False),
            legal_action_mask=s.legal_action_mask, _step_count=jnp.int32(0), game_state=s, _key=key,
            _env_id=self.id,
        )

    def _step(self, state: PgxState, action: jax.Array, key: jax.Array | None) -> PgxState:
        carried, step_key = jax.random.split(state._key)
        s = self.game.step(state.game_state, action, step_key if key is None else key)
        return state.replace(
            current_player=jnp.maximum(s.current_player, 0), rewards=s.returns - state.game_state.returns,
            terminated=s.terminated, legal_action_mask=s.legal_action_mask, game_state=s, _key=carried,
        )

    def _observe(self, state: PgxState, player_id: jax.Array) -> jax.Array:
        return jnp.atleast_1d(self.game.infoset_index(state.game_state, player_id)).astype(jnp.int32)

    @property
    def id(self) -> str:
        return f"sepo_jax/{self.game.name}"

    @property
    def version(self) -> str:
        return "v0"

    @property
    def num_players(self) -> int:
        return 2

    @property
    def num_actions(self) -> int:
        return self.game.num_actions
