"""What the commands share: running one for a person at a terminal (``run_cli``: one-line
user errors, exit codes, the compilation cache), their logging, the argument parser the
``evaluate``, ``score`` and ``export`` commands start from, and ``--columns``."""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from typing import Callable, Optional, Sequence

from policies.core import compile_cache
from westofn import distributed
from westofn.errors import ConfigError, describe, exit_code


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True, help="a westofn.train MODEL_DIR")
  return p


def parse_columns(text: Optional[str]) -> Optional[dict]:
  """``prompt:question,chosen:good`` → ``{'prompt': 'question', 'chosen': 'good'}``."""
  if not text:
    return None
  out = {}
  for item in text.split(","):
    ours, sep, theirs = item.partition(":")
    if not sep or not ours.strip() or not theirs.strip():
      raise ConfigError(f"--columns: {item!r} is not FIELD:COLUMN (e.g. prompt:question)")
    out[ours.strip()] = theirs.strip()
  return out


def run_cli(main: Callable[[list], object], argv: Optional[Sequence[str]] = None) -> None:
  """``main(argv)`` for a person at a terminal: a user error (bad data, a setting that
  cannot work, a model_dir in use, a full disk) is one line on stderr and a distinct exit
  code (``EXIT_CODES``); ``--debug`` shows the traceback instead. Every command takes
  ``--compilation_cache=DIR|off`` (``policies.core.compile_cache``; on by default)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  cache = [a for a in argv if a.startswith("--compilation_cache=")]
  compile_cache.configure(cache[-1].split("=", 1)[1] if cache else None)
  try:
    main([a for a in argv if a != "--debug" and a not in cache])
  except Exception as e:  # noqa: BLE001 (sorted below: user errors vs bugs)
    distributed.await_lost_peer(e)
    distributed.finish(completed=False)
    code = exit_code(e)
    if code is None or debug:
      raise
    print(f"westofn: error: {describe(e)}", file=sys.stderr)
    distributed.exit_now(code)
    raise SystemExit(code) from None
  distributed.finish(completed=True)


def configure_logging() -> None:
  """INFO logs of the pipeline on stderr. ``force``: an import (absl, via TensorFlow)
  has already put a WARNING-level handler on the root logger, which would otherwise
  make ``basicConfig`` a no-op and the run silent."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S", force=True)
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gin logs every search path it tries before an include resolves.
  gin_noise = ("Path not found:", "system_path_file_exists:")
  for handler in logging.getLogger().handlers:
    handler.addFilter(lambda record: not record.getMessage().startswith(gin_noise))


def gin_value(value: str) -> str:
  """Leaves gin syntax alone; quotes a bare string such as ``/tmp/demo``."""
  v = value.strip()
  if v[:1] in "@%'\"[({" or v in ("True", "False", "None"):
    return v
  try:
    ast.literal_eval(v)
    return v
  except (ValueError, SyntaxError):
    return repr(v)


def gin_bindings(args: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
  """t5x-style ``--gin.NAME=VALUE`` flags as gin bindings; anything else is an error."""
  bindings = []
  for arg in args:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      bindings.append(f"{name} = {gin_value(value)}")
    else:
      parser.error(f"unrecognised argument {arg!r} (bindings are --gin.NAME=VALUE)")
  return bindings
