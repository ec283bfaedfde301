"""User errors: one line and a distinct exit code at the CLI; one run per model_dir; a full
disk leaves the previous file intact."""

import errno
import json
import os
import subprocess
import sys

import pytest

from policies.core import atomic
from westofn.errors import ConfigError, ModelDirLock, ModelDirLocked, describe, exit_code
from rm.data import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_prints_one_line_and_a_distinct_exit_code_for_bad_data(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"prompt": "p", "chosen": None, "rejected": "r"}) + "\n")
  cmd = [sys.executable, "-m", "westofn.train", "--gin_file=gin/demo.gin",
         f"--gin.MODEL_DIR={tmp_path / 'm'}", f"--gin.DataSource.paths=['{bad}']"]
  run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 3, run.stderr[-2000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last == f"westofn: error: {bad}:1: chosen: must be a string, got NoneType"
  assert "Traceback" not in run.stderr
  debug = subprocess.run(cmd + ["--debug"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_exit_codes_tell_user_errors_from_bugs():
  assert exit_code(ConfigError("x")) == 2 and exit_code(DataError("x")) == 3
  assert exit_code(ModelDirLocked("x")) == 4
  assert exit_code(OSError(errno.ENOSPC, "full")) == 5
  assert exit_code(ValueError("a bug")) is None and exit_code(KeyError("k")) is None
  full = OSError(errno.ENOSPC, "No space left on device", "/m/report.md")
  assert "no space left on device while writing /m/report.md" in describe(full)


def test_one_run_per_model_dir_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
       "from westofn.errors import ModelDirLock; l = ModelDirLock(sys.argv[2]).__enter__();"
       "print('locked', flush=True); time.sleep(60)", REPO, str(tmp_path)],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ModelDirLocked, match=rf"in use by pid {holder.pid} on "):
      ModelDirLock(str(tmp_path)).__enter__()
  finally:
    holder.kill()
    holder.wait()
  with ModelDirLock(str(tmp_path)):   # SIGKILL released it: taken over
    with pytest.raises(ModelDirLocked):   # and held against a second taker in this process too
      ModelDirLock(str(tmp_path)).__enter__()
  with ModelDirLock(str(tmp_path)):   # released on exit
    pass


def test_a_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
  path = str(tmp_path / "report.md")
  atomic.write_text_atomic(path, "the previous report")

  def no_space(fd):
    raise OSError(errno.ENOSPC, "No space left on device", path)
  monkeypatch.setattr(atomic.os, "fsync", no_space)
  with pytest.raises(OSError) as e:
    atomic.write_text_atomic(path, "a new report that does not fit")
  assert exit_code(e.value) == 5
  assert open(path).read() == "the previous report"
  assert os.listdir(tmp_path) == ["report.md"]   # no temporary file left behind
