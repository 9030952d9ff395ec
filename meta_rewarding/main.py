"""Runs Meta-Rewarding (or Self-Rewarding) iterations.

  python -m meta_rewarding.main --config=configs/local_cpu.py --workdir=/tmp/mr
  python -m meta_rewarding.main --config=configs/local_cpu.py:smoke --workdir=/tmp/mr \
      --config.pipeline.num_iterations=1

Rerunning the same command resumes at the first unfinished stage.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/local_cpu.py",
                                          "Config file (get_config(arg)).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Where artifacts, models and metrics go.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from meta_rewarding import run  # after flag parsing: keeps --help fast
  try:
    run.run(_CONFIG.value, _WORKDIR.value)
  except run.USER_ERRORS as e:
    logging.error("%s: %s", type(e).__name__, e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
