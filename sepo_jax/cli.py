"""What the command-line tools share: one-line errors for what a user must fix (`sepo_jax: error: ...`
on stderr, exit code 2, no traceback), the explanation of a bad `--config.KEY=VALUE` override, a run's
default workdir, and the config reference (`docs/config.md`, `python -m sepo_jax.train --helpconfig`).

Set SEPO_JAX_TRACEBACK=1 to get the full traceback of such an error instead.
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import importlib.util
import json
import os
import sys
import time
from typing import NoReturn

import ml_collections

from .errors import UserError
from .settings import Settings

USAGE_EXIT_CODE = 2
_WORKDIR_ADVICE = {
    errno.ENOSPC: "the disk is full: free space there, or pass a --workdir on another disk",
    errno.EDQUOT: "the disk quota is used up: free space there, or pass a --workdir on another disk",
    errno.EACCES: "it is not writable: pass a --workdir you can write to",
    errno.EPERM: "it is not writable: pass a --workdir you can write to",
    errno.EROFS: "it is on a read-only file system: pass a --workdir you can write to",
    errno.ENOTDIR: "a file stands where a folder is needed: pass another --workdir",
    errno.EEXIST: "a file stands where a folder is needed: pass another --workdir",
    errno.EISDIR: "a folder stands where a file is needed: pass another --workdir",
}


def fail(message: str) -> NoReturn:
    print(f"sepo_jax: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_EXIT_CODE)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def os_error_line(e: OSError, workdir: str, model_source: str | None = None) -> str:
    """`path: what happened; what to do` for an OSError met while training in `workdir`."""
    path = e.filename or workdir
    what = e.strerror or first_line(e)
    inside = os.path.abspath(str(path)).startswith(os.path.abspath(workdir))
    if inside or e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{path}: {what}; {_WORKDIR_ADVICE.get(e.errno, 'check that path, or pass another --workdir')}"
    if model_source and os.path.abspath(str(path)).startswith(os.path.abspath(model_source)):
        return f"{path}: {what}; check --config.model.source"
    return f"{path}: {what}"


def _disk_full(e: BaseException) -> bool:
    return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


def run_training(c: Settings, workdir: str, *, overwrite: bool = False, progress: bool | None = None):
    """`loop.run`, with the errors a user must fix reported as one line and exit code 2: a `UserError`
    (a busy or unusable workdir, no usable checkpoint, a step too large for the device) or an OSError
    (a full disk, a read-only or vanished folder) whenever raised, and a ValueError (a bad config value,
    model source or mesh, a resume that would change the trajectory) raised before the steps are
    compiled. Anything else keeps its traceback."""
    from sepo_jax.rl.loop import run

    started = []
    try:
        return run(c, workdir, overwrite=overwrite, progress=progress, on_ready=lambda: started.append(True))
    except Exception as e:
        if os.environ.get("SEPO_JAX_TRACEBACK"):
            raise
        if isinstance(e, OSError):
            fail(os_error_line(e, workdir, c.model.source))
        if _disk_full(e):
            fail(f"{workdir}: {first_line(e)}; {_WORKDIR_ADVICE[errno.ENOSPC]}")
        if isinstance(e, UserError) or (isinstance(e, ValueError) and not started):
            fail(first_line(e))
        raise


def run_summary(workdir: str, last: dict) -> str:
    """Where a finished run's results are and how to look at them, after its final metrics."""
    name = "sft_metrics.jsonl" if "sft_loss" in last else "metrics.jsonl"
    keys = ("sft_loss", "sft_kl", "payoff", "exploit_pool_advantage", "collusion", "externality", "safety", "nash_conv")
    lines = [f"final metrics (step {last['step']}, the last line of {os.path.abspath(os.path.join(workdir, name))}):",
             "  " + " ".join(f"{k}={last[k]:.4f}" for k in keys if k in last)] if last else ["no metrics logged"]
    return "\n".join(["", *lines,
                      f"checkpoints: {os.path.abspath(os.path.join(workdir, 'checkpoints'))}",
                      f"evaluate:    python -m sepo_jax.evaluate --workdir={workdir}",
                      f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tb')}  "
                      "(the viewer: pip install -e \".[viz]\")"])


# ---- --config.KEY=VALUE overrides -------------------------------------------------------------------
def _load_config_file(spec: str) -> ml_collections.ConfigDict:
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_sepo_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def config_keys(c) -> list[str]:
    """Every dotted key of a ConfigDict, nested dicts included."""
    out = []
    for k, v in c.items():
        out.append(k)
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out += [f"{k}.{sub}" for sub in config_keys(v)]
    return out


def _nearest(word: str, candidates: list[str], names: list[str]) -> list[str]:
    """The names whose candidate is most similar to `word` (ties kept, at most 3), if similar enough."""
    ratio = [difflib.SequenceMatcher(None, word, cand).ratio() for cand in candidates]
    best = max(ratio, default=0.0)
    return [n for n, r in zip(names, ratio) if r == best][:3] if best >= 0.6 else []


def explain_override(argv: list[str], config: ml_collections.ConfigDict | None = None) -> str | None:
    """For the first `--config.KEY...` argument naming no key of the config: a line naming the full
    key and the nearest known one. None when every override names a known key (or the config file
    itself cannot be loaded)."""
    if config is None:
        spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if spec is None and "--config" in argv[:-1]:
            spec = argv[argv.index("--config") + 1]
        if spec is None:
            return None
        try:
            config = _load_config_file(spec)
        except Exception:  # the config file's own error is absl's to report
            return None
    keys = config_keys(config)
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        if "[" in key or key in keys:
            continue
        near = _nearest(key, keys, keys) or _nearest(key.rpartition(".")[2], [k.rpartition(".")[2] for k in keys], keys)
        hint = f"; did you mean {' or '.join('config.' + k for k in near)}?" if near else ""
        return f"unknown config key config.{key} (in {arg.split('=', 1)[0]}){hint}"
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad `--config.KEY` override or any other flag error reported as one
    line (ml_collections raises a long traceback naming only the key's last part)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except Exception as e:
        if os.environ.get("SEPO_JAX_TRACEBACK"):
            raise
        fail(explain_override(argv) or first_line(e))


# ---- the default workdir -----------------------------------------------------------------------------------
def default_workdir(spec: str, c: ml_collections.ConfigDict, *, fresh: bool = False) -> str:
    """`runs/<config file stem>[-<its argument>]` for config file `spec` (`path[:arg]`), the same folder
    for the same config, so rerunning a command resumes its run. Overrides that change the trajectory
    (any key but `loop.resumable_keys`) add a digest of what they change, so another config never lands
    in a run it would not continue. `fresh`: a new folder, suffixed with the time."""
    from sepo_jax.rl.loop import config_diff

    path, _, arg = spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    if arg:
        name += "-" + "".join(ch if ch.isalnum() else "-" for ch in arg)
    changed = config_diff(_load_config_file(spec).to_json(), c)[0]
    if changed:
        name += "-" + hashlib.sha256(json.dumps(changed).encode()).hexdigest()[:8]
    if fresh:
        name += "-" + time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", name)


# ---- the config reference --------------------------------------------------------------------------------
def _leaves(c, prefix: str = "") -> dict:
    out = {}
    for k, v in c.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, (ml_collections.ConfigDict, dict)) else {prefix + k: v})
    return out


def config_reference() -> str:
    """Every config key of every game's default config: its meaning, default (per game where they differ)
    and allowed values, as Markdown, from `sepo_jax.config` (`default_config`, `key_help`)."""
    from sepo_jax.config import LAMBDAS, default_config, key_help
    from sepo_jax.rl.loop import RESUMABLE_KEYS

    defaults = {game: _leaves(default_config(game)) for game in LAMBDAS}
    keys = {k for d in defaults.values() for k in d}
    help_ = key_help()
    ordered = [k for k in help_ if k in keys] + sorted(keys - help_.keys())
    lines = ["# Config reference", "",
             "Generated from `sepo_jax/config.py` (`default_config` and `key_help`) by "
             "`python -m sepo_jax.train --helpconfig > docs/config.md`; `tests/test_cli.py` checks that the two "
             "agree.",
             "",
             "Set any key on the command line with `--config.KEY=VALUE`, e.g. `--config.sft.steps=20`. "
             "`configs/GAME.py` is `default_config(GAME)`; where a default differs between games, each game's is "
             "listed. `configs/ablation.py` starts from these and changes the warm start, learning rate and steps "
             "(see its docstring). Only `" + "`, `".join(RESUMABLE_KEYS) + "` may change when a run resumes (`steps` "
             "not under `grpo.lr_schedule=cosine`, which decays over the steps)."]
    group = None
    for key in ordered:
        head = key.rpartition(".")[0] or "top level"
        if head != group:
            group = head
            lines += ["", f"## {group}", ""]
        by_value = {}
        for game, d in defaults.items():
            if key in d:
                by_value.setdefault(repr(d[key]), []).append(game)
        if key == "game":
            default = "the config file's game"
        elif len(by_value) == 1 and len(next(iter(by_value.values()))) == len(defaults):
            default = f"`{next(iter(by_value))}`"
        else:
            default = "; ".join(f"`{v}` ({', '.join(games)})" for v, games in by_value.items())
        meaning, allowed = help_.get(key, ("not documented yet: add it to `sepo_jax.config.key_help`", "?"))
        lines.append(f"- `{key}` = {default}: {meaning}. Allowed: {allowed}.")
    return "\n".join(lines) + "\n"
