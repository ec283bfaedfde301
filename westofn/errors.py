"""The errors a user can fix (bad data, a setting that cannot work, a model_dir in use or from
another run, a full disk), and the exit code the CLI gives each: one line, no traceback."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Callable, Optional, Sequence

from policies.core import compile_cache
from policies.core.stage_dir import StageMismatch
from policies.hf_export import ExportError
from policies.hf_loader import CheckpointError
from policies.policy import SampleFileError
from rm.data import DataError


class ConfigError(ValueError):
  """A setting that cannot work (a gin binding, the split, the stage list); names the knob."""


def require_room(owner: str, *, row_len: int, max_response_len: int, min_row_len: int,
                 what: str, row_len_field: str = "row_len") -> None:
  """A row of ``row_len`` tokens must hold ``what`` (at least ``min_row_len`` tokens, a
  prompt token included); checked when the settings are built, not hours into a run."""
  if max_response_len < 2:
    raise ConfigError(f"{owner}.max_response_len={max_response_len} leaves no room for a "
                      "response token before its EOS: set it to 2 or more")
  if row_len < min_row_len:
    knob = f"{owner}.{row_len_field}"
    raise ConfigError(f"{knob}={row_len} leaves no room for {what}: set {knob} to at least "
                      f"{min_row_len} (prompts are left-truncated to fit, responses cut to "
                      "max_response_len)")


class ModelDirLocked(RuntimeError):
  """Another live run holds the model directory."""


# Checked in order: the first class an error is an instance of gives its exit code.
EXIT_CODES = ((ConfigError, 2), (ExportError, 2), (DataError, 3), (SampleFileError, 3),
              (CheckpointError, 3), (StageMismatch, 4), (ModelDirLocked, 4), (OSError, 5))


def exit_code(error: BaseException) -> Optional[int]:
  """The CLI's exit code for a user error; None for anything else (a bug: traceback)."""
  return next((code for cls, code in EXIT_CODES if isinstance(error, cls)), None)


def describe(error: BaseException) -> str:
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return (f"no space left on device while writing {error.filename or 'a file'}; the files "
            "written before are intact: free some space and run the same command again")
  # gin appends "\n  In call to configurable 'train' (<function ...>)" to what it re-raises
  return str(error).split("\n  In call to configurable")[0]


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
    code = exit_code(e)
    if code is None or debug:
      raise
    print(f"westofn: error: {describe(e)}", file=sys.stderr)
    raise SystemExit(code) from None


class ModelDirLock:
  """One run per model directory: an exclusive ``flock`` on ``MODEL_DIR/.lock``.

  The kernel drops the lock when its process dies, so a run killed with SIGKILL leaves no
  stale lock: the next run takes it over. The file records the holder (pid, host, start
  time) for the message a second run gets.
  """

  def __init__(self, model_dir: str):
    self.path = os.path.join(model_dir, ".lock")
    self._fd: Optional[int] = None

  def __enter__(self) -> "ModelDirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 4096).decode("utf-8", "replace")
      os.close(fd)
      try:
        h = json.loads(holder)
        who = f"pid {h['pid']} on {h['host']} (started {h['started']})"
      except (ValueError, KeyError, TypeError):
        who = "another process"
      raise ModelDirLocked(f"{os.path.dirname(self.path)} is in use by {who}: wait for that run "
                           "to finish, or give this one another MODEL_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
