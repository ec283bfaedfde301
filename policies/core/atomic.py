"""Atomic file writes: a reader sees the old file or the new one, never half of either; and
the complete lines of an append-only log a killed writer left.

In a run of several processes (``jax.distributed``) every process computes the same
records and only process 0 writes them (``writes_here``); every process then waits at a
barrier, so that none reads a file before it exists. Checkpoints are the exception: Orbax
has each process write its own shards.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from typing import Iterable, Mapping

import numpy as np


def writes_here() -> bool:
  """Whether this process writes the run's files: process 0 of a multi-process run."""
  import jax
  return jax.process_index() == 0


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes ``path`` via a temporary file, flushed to disk, and a rename.

  If the write fails (a full disk, say) the temporary file is removed and the
  previous ``path``, if any, is left as it was.
  """
  if writes_here():
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
      with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"westofn wrote {path}")


def write_text_atomic(path: str, text: str) -> None:
  """``write_bytes_atomic`` of UTF-8 text; a ``.gz`` path is gzip-compressed."""
  data = text.encode("utf-8")
  write_bytes_atomic(path, gzip.compress(data) if path.endswith(".gz") else data)


def write_jsonl_atomic(path: str, rows: Iterable[Mapping]) -> None:
  """Writes one JSON object per line, atomically (see ``write_text_atomic``)."""
  write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def complete_lines(path: str) -> list[bytes]:
  """The complete lines of an append-only file (a resumable run's ``.partial`` log), none if
  it does not exist. A last line without its newline, torn by a killed writer, is cut off
  the file, so that the next writer appends after the last complete line."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    raw = f.read()
  complete = raw[:raw.rfind(b"\n") + 1]
  if len(complete) != len(raw) and writes_here():
    with open(path, "r+b") as f:
      f.truncate(len(complete))
  return complete.splitlines()


def write_npz_atomic(path: str, **arrays) -> None:
  """``np.savez`` of ``arrays``, written atomically (see ``write_bytes_atomic``)."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes_atomic(path, buf.getvalue())
