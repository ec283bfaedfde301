"""Fault injection: the CLI killed with SIGKILL at random moments in every stage (base RM,
policy SFT, West-of-N sampling and judging, the student, RM(human 100%)) and restarted each
time ends with the same report, evaluations, samples and synthetic pairs as a run that was
never killed, and leaves no partial file behind."""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from westofn import costs
from westofn.model_dir import ModelDir

pytestmark = pytest.mark.slow   # end-to-end or real models: see pytest.ini

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--gin_file=gin/west_of_n_demo.gin", "--gin.RunSettings.progress=False",
         "--gin.DataSource.default_num_pairs=300", "--gin.RewardModelRecipe.num_steps=20",
         "--gin.RunSettings.save_every=5", "--gin.WestOfNSampling.max_new_tokens=12",
         "--gin.PolicySft.num_steps=20", "--gin.PolicySft.num_prompts=4",
         "--gin.PolicySft.num_samples=2", "--gin.WestOfNSampling.num_samples=4",
         "--gin.train.best_of_n=4"]
# A kill lands a random delay after each of these log lines (the stage's first line).
STAGE_STARTS = ["base_rm: ", "policy_sft: ", "policy samples:", "west_of_n_round1: ",
                "human_100: "]
TIMEOUT_S = 300


def run_cli(model_dir, kill_after=None):
  """Runs the CLI; with ``kill_after=(line_prefix, seconds)`` SIGKILLs it that long after
  the first log line containing the prefix. Returns (returncode, stderr)."""
  proc = subprocess.Popen([sys.executable, "-m", "westofn.train", f"--gin.MODEL_DIR={model_dir}"]
                          + FLAGS, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  watchdog = threading.Timer(TIMEOUT_S, proc.kill)
  watchdog.start()
  lines, timer = [], None
  try:
    for line in proc.stderr:
      lines.append(line)
      if kill_after and timer is None and kill_after[0] in line:
        timer = threading.Timer(kill_after[1], proc.send_signal, [signal.SIGKILL])
        timer.start()
    return proc.wait(), "".join(lines)
  finally:
    watchdog.cancel()
    if timer is not None:
      timer.cancel()


def outputs(model_dir):
  """What a finished run produced: the report (but its timings), each RM's held-out rewards (a
  function of its final parameters), the policy's samples, the West-of-N samples and
  synthetic pairs."""
  report = open(os.path.join(model_dir, "report.md")).read()
  assert costs.TITLE in report and os.path.exists(ModelDir(model_dir).costs)
  found = {"report.md": report.split(costs.TITLE)[0]}
  for path in sorted(glob.glob(os.path.join(model_dir, "**", "eval.npz"), recursive=True)):
    with np.load(path) as npz:
      found[os.path.relpath(path, model_dir)] = {k: npz[k] for k in npz.files}
  for pattern in ("policy_sft/samples.jsonl", "west_of_n_samples/*.jsonl",
                  "west_of_n/*/round1/synthetic_pairs.jsonl", "*/eval.json"):
    for path in sorted(glob.glob(os.path.join(model_dir, pattern))):
      found[os.path.relpath(path, model_dir)] = open(path).read()
  return found


def assert_same(got, want):
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    if isinstance(value, dict):
      for key in value:
        np.testing.assert_array_equal(got[name][key], value[key], err_msg=f"{name}:{key}")
    else:
      assert got[name] == value, name


def test_killed_at_random_moments_in_every_stage_resumes_to_the_uninterrupted_result(tmp_path):
  reference = str(tmp_path / "uninterrupted")
  code, err = run_cli(reference)
  assert code == 0, err[-3000:]
  rng = random.Random(20261125)
  killed_dir, killed = str(tmp_path / "killed"), []
  for prefix in STAGE_STARTS:
    delay = rng.uniform(0.5, 3.0)
    code, err = run_cli(killed_dir, kill_after=(prefix, delay))
    assert code in (0, -signal.SIGKILL), err[-3000:]
    killed.append((prefix, round(delay, 2), code))
  # Most kills must land mid-run for the test to mean anything (a stage may be quicker).
  assert sum(code == -signal.SIGKILL for _, _, code in killed) >= 4, killed
  code, err = run_cli(killed_dir)
  assert code == 0, err[-3000:]
  assert_same(outputs(killed_dir), outputs(reference))
  # No partial file: no temporary file of an atomic write, no sampling log, no unfinished
  # Orbax checkpoint.
  leftovers = [p for p in glob.glob(os.path.join(killed_dir, "**", "*"), recursive=True)
               if ".tmp" in os.path.basename(p) or p.endswith(".partial")
               or "orbax-checkpoint-tmp" in p]
  assert not leftovers, leftovers
  # Each (step, split) is logged once, though steps after a checkpoint ran twice.
  for path in glob.glob(os.path.join(killed_dir, "**", "metrics.jsonl"), recursive=True):
    rows = [json.loads(l) for l in open(path)]
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)), path
