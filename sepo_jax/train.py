"""Command line: `python -m sepo_jax.train --config=configs/kuhn.py [--config.key=value ...] --workdir=DIR`.

Trains (SFT warm start, then SEPO-GRPO) and writes DIR/metrics.jsonl, TensorBoard files and orbax
checkpoints; rerunning the same command resumes. `--workdir` defaults to a new folder under runs/.
`--overwrite` deletes an earlier run's files in the workdir first (needed when it holds metrics but no
checkpoint of this config). What a user must fix (a bad key or value, model source, mesh or workdir, a
workdir in use by another run, a full disk) stops with one line `sepo_jax: error: ...` and exit code 2.
"""

from __future__ import annotations

import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

from sepo_jax import cli, parallel
from sepo_jax.config import validate

config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/kuhn.py", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder (default: runs/<game>-<time>)")
flags.DEFINE_bool("overwrite", False, "delete the workdir's run files (checkpoints, metrics, tb, config.json) and start over")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    c = FLAGS.config
    if c is None:
        cli.fail("--config is required, e.g. --config=configs/kuhn.py")
    try:
        validate(c)
    except ValueError as e:
        cli.fail(str(e))
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    parallel.initialize_distributed()
    workdir = FLAGS.workdir or os.path.join("runs", f"{c.game}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"sepo_jax: training {c.game} in {os.path.abspath(workdir)}", flush=True)
    last = cli.run_training(c, workdir, overwrite=FLAGS.overwrite)
    print(f"\nmetrics: {os.path.abspath(os.path.join(workdir, 'metrics.jsonl'))}")
    print(f"checkpoints: {os.path.abspath(os.path.join(workdir, 'checkpoints'))}")
    if "nash_conv" in last:
        print(f"final NashConv of the learner's strategy: {last['nash_conv']:.4f}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
