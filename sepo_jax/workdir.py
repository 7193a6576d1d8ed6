"""A run's folder: the lock that keeps one run per workdir, the checks made before anything is written
there, starting over (`--overwrite`), and the per-checkpoint record (config + checksums) that lets a
resume verify what it restores.

Files a run owns in its workdir: RUN_FILES below, plus `run.lock` (kept: the lock lives on the open file,
not on the name, so the OS drops it when the holder exits or is killed, and a SIGKILL never leaves a
stale lock behind).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time

import numpy as np

from .errors import WorkdirError

LOCK_NAME = "run.lock"
RUN_FILES = ("checkpoints", "damaged_checkpoints", "tb", "metrics.jsonl", "sft_metrics.jsonl", "config.json", "eval.json")
METRICS_FILES = ("sft_metrics.jsonl", "metrics.jsonl")


# ---- the lock ----------------------------------------------------------------------------------------
class Lock:
    """An exclusive `flock` on `<workdir>/run.lock`, held until `release()` or the process ends. The file
    holds the holder's pid, host and start time, which a refused run names."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.fd = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirError(f"{os.path.dirname(self.path) or '.'} is in use by another training run ({holder}); "
                               "wait for it to finish or stop it, or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
                 .encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor of the open file drops the flock
            self.fd = None


# ---- checks before anything is written -------------------------------------------------------------
def check_usable(workdir: str) -> None:
    """Raise when `workdir` is a file, or is (or would be created in) a folder this process cannot write."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder; pass a folder (new or a run's) as --workdir")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise WorkdirError(f"--workdir {workdir} cannot be created: {probe} is a file; pass another --workdir")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise WorkdirError(f"--workdir {workdir} {what}; pass a folder you can write to as --workdir")


def committed_steps(workdir: str) -> list[int]:
    """Steps of the checkpoints orbax has committed under `workdir/checkpoints` (newest last); reads only."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(int(n) for n in os.listdir(root) if n.isdigit() and os.path.isdir(os.path.join(root, n)))


def checkpoint_record(workdir: str, step: int) -> dict:
    """The record saved with checkpoint `step` (orbax's custom metadata: config, checksums); {} for a
    checkpoint written before records existed. Raises when the record is unreadable."""
    with open(os.path.join(workdir, "checkpoints", str(step), "_CHECKPOINT_METADATA")) as f:
        return json.load(f).get("custom_metadata") or {}


def saved_config(workdir: str) -> tuple[str | None, str]:
    """The config JSON the workdir's run was trained with, and where it was read: the newest checkpoint
    whose record has it, else `config.json`; (None, "") when neither exists."""
    for step in reversed(committed_steps(workdir)):
        try:
            config = checkpoint_record(workdir, step).get("config")
        except (OSError, ValueError):
            continue  # a damaged record: restore_latest reports that checkpoint
        if config is not None:
            return json.dumps(config), f"checkpoint step {step}"
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            return f.read(), "config.json"
    return None, ""


def metrics_written(workdir: str) -> list[str]:
    """The metrics files in `workdir` that hold at least one record."""
    out = []
    for name in METRICS_FILES:
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            with open(path) as f:
                if f.read(4096).strip():
                    out.append(name)
    return out


def clear(workdir: str) -> list[str]:
    """Remove the run's files (RUN_FILES) from `workdir`, nothing else; returns what was removed."""
    removed = []
    for name in RUN_FILES:
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


# ---- checkpoint checksums ----------------------------------------------------------------------------
def _fmix(x):
    """murmur3's 32-bit finaliser (a bijection of uint32)."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(x):
    import jax
    import jax.numpy as jnp

    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = x.dtype.itemsize * 8
    if bits == 64:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(jnp.uint32).reshape(-1)


def _leaf_digest(x):
    """Two 32-bit sums over the leaf's words: sum(w_i * (2i+1)) and sum(fmix(w_i ^ fmix(i))). Integer sums
    mod 2^32 are exact in any order, so every mesh and process gets the same digest; any one changed word
    always changes the first (an odd multiplier is invertible), several together change both but with
    chance 2^-64."""
    import jax.numpy as jnp

    w = _words(x)
    i = jnp.arange(w.shape[0], dtype=jnp.uint32)
    return jnp.stack([jnp.sum(w * (2 * i + 1), dtype=jnp.uint32), jnp.sum(_fmix(w ^ _fmix(i + 1)), dtype=jnp.uint32)])


def _digests_and_finite(tree):
    import jax
    import jax.numpy as jnp

    digests = jax.tree.map(_leaf_digest, tree)
    finite = jax.tree.map(lambda x: jnp.isfinite(x).all() if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True), tree)
    return digests, finite


_jitted = None


def checksums(tree) -> tuple[dict[str, str], list[str]]:
    """Per leaf of `tree` (keyed by its path): a hex digest of its bytes, plus the paths of floating
    leaves holding NaN or inf. Computed on device (no gather to one host; sharded arrays give the same
    digest as unsharded ones)."""
    global _jitted
    import jax

    if _jitted is None:
        _jitted = jax.jit(_digests_and_finite)
    digests, finite = _jitted(tree)
    host = lambda v: np.asarray(v.addressable_data(0) if isinstance(v, jax.Array) else v)  # noqa: E731
    out, nonfinite = {}, []
    for (path, d), (_, ok), (_, x) in zip(jax.tree_util.tree_leaves_with_path(digests),
                                          jax.tree_util.tree_leaves_with_path(finite),
                                          jax.tree_util.tree_leaves_with_path(tree)):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        d = host(d)
        out[name] = f"{x.dtype}{list(x.shape)}:{int(d[0]):08x}{int(d[1]):08x}"
        if not bool(host(ok)):
            nonfinite.append(name)
    return out, nonfinite


def verify(tree, record: dict) -> str | None:
    """Why a restored `tree` must not be used (checksums differ from the saved record, or a floating leaf
    is not finite), or None. A record without checksums (an older checkpoint) checks finiteness only."""
    digests, nonfinite = checksums(tree)
    saved = record.get("checksums")
    if saved is not None:
        bad = sorted(k for k in saved.keys() | digests.keys() if saved.get(k) != digests.get(k))
        if bad:
            return f"checksum mismatch in {', '.join(bad[:3])}{' and others' if len(bad) > 3 else ''}"
    if nonfinite:
        return f"non-finite values in {', '.join(nonfinite[:3])}{' and others' if len(nonfinite) > 3 else ''}"
    return None
