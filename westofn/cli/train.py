r"""The train command: ``python -m westofn.train --gin_file=gin/demo.gin --gin.MODEL_DIR=/tmp/demo``
parses these flags and calls the pipeline, ``westofn.train.train``, as gin configures it.

Flags, t5x style:
  --gin_file=F          a .gin file (repeatable; found relative to --gin_search_paths)
  --gin.NAME=VALUE      one binding, e.g. --gin.train.num_steps=200; a bare string
                        value such as a path is quoted for you
  --gin_search_paths=P  comma-separated directories to look for gin files in
  --gin_bindings=B      a raw gin binding (repeatable)
  --multiprocess        one of several processes (jax.distributed): on TPU VMs and SLURM
                        the cluster says who is who; elsewhere give --coordinator_address
                        (host:port of process 0), --num_processes and --process_id
  --debug               show the traceback of a user error (bad data, config, model_dir)
  --compilation_cache=D where compiled programs are kept for later runs (default
                        ~/.cache/westofn/xla; 'off' for none): policies.core.compile_cache

The operative config (every value the run used) is written to MODEL_DIR/config.gin.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Optional, Sequence

import gin

from westofn import distributed
from westofn.cli.common import configure_logging, gin_bindings, run_cli
from westofn.errors import ConfigError


def parse_flags(argv: Sequence[str]
                ) -> tuple[list[str], list[str], list[str], distributed.DistributedFlags]:
  """Returns (gin files, gin bindings, search paths, multi-process flags) from t5x-style
  flags."""
  parser = argparse.ArgumentParser(prog="python -m westofn.train", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--gin_search_paths", default="")
  parser.add_argument("--multiprocess", action="store_true")
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--heartbeat_timeout", type=int, default=20,
                      help="seconds without a heartbeat after which a process is lost")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings) + gin_bindings(rest, parser)
  paths = [p for p in args.gin_search_paths.split(",") if p]
  flags = distributed.DistributedFlags(args.multiprocess, args.coordinator_address,
                                       args.num_processes, args.process_id,
                                       args.heartbeat_timeout)
  if not flags.multiprocess and (flags.coordinator_address or flags.num_processes
                                 or flags.process_id is not None):
    parser.error("--coordinator_address, --num_processes and --process_id go with "
                 "--multiprocess")
  return args.gin_file, bindings, paths, flags


def main(argv: Optional[Sequence[str]] = None) -> dict:
  configure_logging()
  files, bindings, search_paths, flags = parse_flags(sys.argv[1:] if argv is None else argv)
  if not files:
    raise SystemExit("give at least one --gin_file (e.g. --gin_file=gin/demo.gin)")
  distributed.initialize(flags)
  repo_gin = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "gin")
  for path in search_paths + [os.getcwd(), repo_gin]:
    gin.add_config_file_search_path(path)
  # Under ``python -m westofn.train`` that module is __main__; gin files bind the importable
  # ``westofn.train.train`` (``import westofn.train as train_script``), so that is the
  # function made configurable here, before parsing.
  canonical = importlib.import_module("westofn.train")
  configurable_train = gin.configurable(canonical.train)
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  except (ValueError, TypeError, KeyError, OSError) as e:  # an unknown name, a missing file
    message = f"gin config: {e}".replace("\n", " ")
    for old, new in canonical.RENAMED_PARAMETERS.items():
      if re.search(rf"\btrain\.{old}\b|parameter named '{old}'", message):
        message += f" (train.{old} is now train.{new})"
    raise ConfigError(message) from e
  return configurable_train()


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """``main`` with one-line user errors and exit codes (``westofn.errors.run_cli``)."""
  run_cli(main, argv)


if __name__ == "__main__":
  cli()
