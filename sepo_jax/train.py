"""Command line: `python -m sepo_jax.train --config=configs/kuhn.py [--config.key=value ...] [--workdir=DIR]`.

Trains (SFT warm start, then SEPO-GRPO) and writes DIR/metrics.jsonl, sft_metrics.jsonl, TensorBoard
files and orbax checkpoints, one step counter for all of them. Without `--workdir` the run lives in
`runs/<config file stem>` (plus a digest of the overrides that change the trajectory), so rerunning the
same command resumes it, or, once it is complete, prints its final metrics; `--fresh` starts a new
folder instead. `--overwrite` deletes an earlier run's files in the workdir first (needed when it holds
metrics but no checkpoint of this config). `--helpconfig` prints every config key (docs/config.md).
What a user must fix (a bad key or value, model source, mesh or workdir, a workdir in use by another
run, a full disk) stops with one line `sepo_jax: error: ...` and exit code 2.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from sepo_jax import cli, parallel
from sepo_jax.config import settings

config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/kuhn.py; --config.KEY=VALUE overrides a "
                                "key (--helpconfig lists them)", lock_config=True)
flags.DEFINE_string("workdir", None, "run folder (default: runs/<config file stem>, which a rerun resumes)")
flags.DEFINE_bool("fresh", False, "train in a new folder runs/<config file stem>-<time> instead of the default one")
flags.DEFINE_bool("overwrite", False,
                  "delete the workdir's run files (checkpoints, metrics, tb, config.json) and start over")
flags.DEFINE_bool("helpconfig", False, "print every config key with its meaning, default and allowed values, and exit")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    if FLAGS.helpconfig:
        print(cli.config_reference(), end="")
        return
    c = FLAGS.config
    if c is None:
        cli.fail("--config is required, e.g. --config=configs/kuhn.py (--helpconfig lists the config keys)")
    if FLAGS.fresh and FLAGS.workdir:
        cli.fail("--fresh picks a new folder under runs/; drop it or --workdir")
    try:
        s = settings(c)
    except ValueError as e:
        cli.fail(str(e))
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    parallel.initialize_distributed()
    if FLAGS.fresh and jax.process_count() > 1:
        cli.fail("--fresh names the folder by each process's clock; in a multi-process run pass one --workdir")
    spec = config_flags.get_config_filename(FLAGS["config"])
    workdir = FLAGS.workdir or cli.default_workdir(spec, c, fresh=FLAGS.fresh)
    last = cli.run_training(s, workdir, overwrite=FLAGS.overwrite)
    if jax.process_index() == 0:
        print(cli.run_summary(workdir, last), flush=True)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
