"""Command line: `python -m sepo_jax.train --config=configs/kuhn.py [--config.key=value ...] --workdir=DIR`.

Trains (SFT warm start, then SEPO-GRPO) and writes DIR/metrics.jsonl, TensorBoard files and orbax
checkpoints; rerunning the same command resumes. `--workdir` defaults to a new folder under runs/.
"""

from __future__ import annotations

import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from sepo_jax import parallel
from sepo_jax.config import validate

config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/kuhn.py", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder (default: runs/<game>-<time>)")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    c = FLAGS.config
    if c is None:
        raise app.UsageError("--config is required, e.g. --config=configs/kuhn.py")
    validate(c)
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    parallel.initialize_distributed()
    workdir = FLAGS.workdir or os.path.join("runs", f"{c.game}-{time.strftime('%Y%m%d-%H%M%S')}")
    from sepo_jax.rl.loop import run

    print(f"sepo_jax: training {c.game} in {os.path.abspath(workdir)}", flush=True)
    last = run(c, workdir)
    print(f"\nmetrics: {os.path.abspath(os.path.join(workdir, 'metrics.jsonl'))}")
    print(f"checkpoints: {os.path.abspath(os.path.join(workdir, 'checkpoints'))}")
    if "nash_conv" in last:
        print(f"final NashConv of the learner's strategy: {last['nash_conv']:.4f}")


if __name__ == "__main__":
    app.run(main)
