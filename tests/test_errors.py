"""User errors: one line and a distinct exit code at the CLI; one run per model_dir; a full
disk leaves the previous file intact."""

import errno
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from policies.core import atomic
from policies.sft import pack_sequences
from rm.response_rewards import pack_prompt_responses
from westofn.errors import ConfigError, ModelDirLocked, describe, exit_code
from westofn.model_dir_lock import ModelDirLock
from rm.data import DataError
from westofn.settings import Batching, PolicySft, ScoringRows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
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
       "from westofn.model_dir_lock import ModelDirLock; l = ModelDirLock(sys.argv[2]).__enter__();"
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


@pytest.mark.parametrize("build, knob", [
    (lambda: Batching(row_len=4), "Batching.row_len=4"),
    (lambda: Batching(max_response_len=1), "Batching.max_response_len=1"),
    (lambda: PolicySft(row_len=32, max_response_len=32), "PolicySft.row_len=32"),
    (lambda: ScoringRows(row_len=64, max_response_len=80), "ScoringRows.row_len=64"),
])
def test_rows_without_room_for_a_response_are_refused_when_the_settings_are_built(build, knob):
  with pytest.raises(ConfigError, match=re.escape(knob)):
    build()
  Batching(row_len=5), PolicySft(row_len=33, max_response_len=32)   # just enough room


def test_packers_refuse_responses_as_long_as_the_row_instead_of_hanging():
  items = [(np.arange(1, 9, dtype=np.int32), [np.arange(1, 40, dtype=np.int32)])]
  with pytest.raises(ValueError, match="max_response_len=32 must be below row_len=32"):
    pack_prompt_responses(items, rows=2, row_len=32, max_response_len=32, max_per_row=2, eos_id=1)
  with pytest.raises(ValueError, match="max_response_len=32 must be below row_len=32"):
    pack_sequences([(items[0][0], items[0][1][0])], rows=2, row_len=32, max_sequences_per_row=2,
                   max_response_len=32, eos_id=1)
  (batch,) = pack_prompt_responses(items, rows=2, row_len=33, max_response_len=32,
                                   max_per_row=2, eos_id=1)
  assert batch["tokens"][0, 0] == 8 and batch["ends"][0, 0, 0] == 32   # prompt cut from the left
