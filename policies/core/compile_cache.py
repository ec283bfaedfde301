"""JAX's persistent compilation cache, on by default for every westofn command.

A compiled program is written to a directory keyed by its HLO, compile options and
backend, and any later process that compiles the same program reads it back instead
(seconds to minutes saved per program: seeds, variants, re-runs, the other commands and
the test suite all compile the same steps). The setting, in order of precedence:

* ``--compilation_cache=DIR`` or ``--compilation_cache=off`` on any command;
* the environment variable ``WESTOFN_COMPILATION_CACHE`` (a directory, or ``off``);
* JAX's own ``JAX_COMPILATION_CACHE_DIR``;
* ``$XDG_CACHE_HOME/westofn/xla`` (``~/.cache/westofn/xla``).

The cache is bounded (``MAX_BYTES``, least recently used entries go first) and only keeps
programs that took at least ``MIN_COMPILE_SECS`` to compile. It is safe to share between
processes and to delete at any time.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import jax

log = logging.getLogger("westofn")
ENV = "WESTOFN_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false", "")
MAX_BYTES = 8 * 1024 ** 3
MIN_COMPILE_SECS = 0.05


def default_directory() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "westofn", "xla")


def resolve(setting: Optional[str]) -> Optional[str]:
  """The cache directory a setting names, or None for off (see the module docstring)."""
  for value in (setting, os.environ.get(ENV), os.environ.get("JAX_COMPILATION_CACHE_DIR")):
    if value is not None:
      return None if value.strip().lower() in OFF else os.path.abspath(os.path.expanduser(value))
  return default_directory()


def configure(setting: Optional[str] = None) -> Optional[str]:
  """Turns the persistent cache on (or off) for this process; call before the first
  compilation. Returns the directory in use, or None."""
  directory = resolve(setting)
  if directory is None:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    log.warning("compilation cache %s cannot be created (%s): compiling without it",
                directory, e)
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", directory)
  # Settings a user gave JAX directly win over these defaults.
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return directory
