"""One run per model directory (``ModelDirLock``)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

from westofn.errors import ModelDirLocked
from westofn.model_dir import ModelDir


class ModelDirLock:
  """One run per model directory: an exclusive ``flock`` on ``MODEL_DIR/.lock``.

  The kernel drops the lock when its process dies, so a run killed with SIGKILL leaves no
  stale lock: the next run takes it over. The file records the holder (pid, host, start
  time) for the message a second run gets.
  """

  def __init__(self, model_dir: str):
    self.path = ModelDir(model_dir).lock
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
