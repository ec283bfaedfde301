"""The errors a user can fix (bad data, a setting that cannot work, a model_dir in use or from
another run, a full disk), and the exit code the CLI gives each: one line, no traceback."""

from __future__ import annotations

import errno
from typing import Optional

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
