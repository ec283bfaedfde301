"""policies/core/checkpoints.py: each step verified against the digest written with it; a
damaged step (flipped bytes in an array file or in Orbax's metadata, a truncated or missing
file) is never loaded; old steps go only once a newer one verifies; and, end to end, a
damaged final checkpoint makes the commands refuse the stage in one line while the training
command resumes from the step before to the same result."""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from policies.core import checkpoints as ckpt_lib
from policies.core.checkpoints import Checkpoints, DamagedCheckpoint
from policies.transformer import TransformerConfig
from rm.model import make_reward_model
from rm.training import make_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=48)


def _params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _saved(tmp_path, steps=(10, 20, 30), keep=3):
  """Checkpoints of distinct parameters at each step; returns them and each step's params."""
  ck = Checkpoints(str(tmp_path / "c"), save_every=10, keep=keep)
  model = make_reward_model(CFG, seed=0)
  opt = make_optimizer(model, total_steps=10)
  params = {}
  for step in steps:
    model.head_w[...] = model.head_w[...] + step   # a different model at every step
    ck.save(step, model, opt, metadata={"at": step})
    params[step] = _params(model)
  return ck, params


def _flip(path, offset=None, count=64):
  data = bytearray(open(path, "rb").read())
  start = len(data) // 2 if offset is None else offset
  for i in range(start, min(start + count, len(data))):
    data[i] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _array_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
           if os.path.isfile(f) and os.sep + "d" + os.sep in f]
  return max(files, key=os.path.getsize)


DAMAGE = {
    "array bytes flipped": lambda d: _flip(_array_file(d)),
    "metadata bytes flipped": lambda d: _flip(os.path.join(d, "state", "_METADATA"), 0),
    "file truncated": lambda d: open(_array_file(d), "r+b").truncate(100),
    "file deleted": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "file added": lambda d: open(os.path.join(d, "state", "stray"), "w").write("x"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_newest_step_is_passed_over_and_refused_when_strict(tmp_path, kind, caplog):
  ck, params = _saved(tmp_path)
  DAMAGE[kind](os.path.join(ck.directory, "30"))
  fresh = Checkpoints(ck.directory)
  assert fresh.newest_step() == 30 and fresh.latest_step() == 20
  assert "checkpoint step 30" in caplog.text and "is damaged" in caplog.text
  model = make_reward_model(CFG, seed=5)
  opt = make_optimizer(model, total_steps=10)
  meta = fresh.restore(model, opt)                 # training: the newest good step
  assert meta["at"] == 20
  for a, b in zip(_params(model), params[20]):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(DamagedCheckpoint, match=r"step 30 .* is damaged: .*; run the training"):
    Checkpoints(ck.directory).restore(make_reward_model(CFG, seed=5), strict=True)
  with pytest.raises(DamagedCheckpoint):
    Checkpoints(ck.directory).restore(make_reward_model(CFG, seed=5), step=30)


def test_a_damaged_step_is_rewritten_when_training_reaches_it_again(tmp_path):
  ck, params = _saved(tmp_path)
  DAMAGE["array bytes flipped"](os.path.join(ck.directory, "30"))
  again = Checkpoints(ck.directory, save_every=10, keep=3)
  model = make_reward_model(CFG, seed=0)
  opt = make_optimizer(model, total_steps=10)
  again.restore(model, opt)
  assert again.save(30, model, opt, metadata={"at": 30})
  fresh = Checkpoints(ck.directory)
  assert fresh.latest_step() == 30 and fresh.damage(30) is None


def test_retention_keeps_the_newest_verified_steps(tmp_path, monkeypatch):
  ck, _ = _saved(tmp_path, steps=(10, 20, 30, 40, 50), keep=2)
  assert sorted(ck.manager.all_steps()) == [40, 50]
  assert all(os.path.exists(os.path.join(ck.directory, s, ckpt_lib.DIGEST_FILE))
             for s in ("40", "50"))
  # a step that does not verify right after it is written deletes nothing
  monkeypatch.setattr(ckpt_lib, "damage", lambda step_dir: "simulated" if step_dir.endswith(
      "60") else None)
  model = make_reward_model(CFG, seed=0)
  ck.save(60, model, make_optimizer(model, total_steps=10))
  assert sorted(ck.manager.all_steps()) == [40, 50, 60]
  with pytest.raises(ValueError, match="keep"):
    Checkpoints(str(tmp_path / "x"), keep=0)


def test_a_step_retired_while_a_reader_lists_it_is_read_again(tmp_path, monkeypatch):
  """A writer retiring a step between Orbax's ``exists()`` and ``is_dir()`` makes the
  reader's listing raise NotADirectoryError; the reader lists again and opens."""
  from orbax.checkpoint._src.metadata import checkpoint as ocp_metadata
  ck, params = _saved(tmp_path)
  real, raised = ocp_metadata._sanitize_metadata_path, []

  def retired_once(path):
    if not raised:
      raised.append(path)
      raise NotADirectoryError(f"Path is not a directory: {path}")
    return real(path)

  monkeypatch.setattr(ocp_metadata, "_sanitize_metadata_path", retired_once)
  model = make_reward_model(CFG, seed=5)
  meta = Checkpoints(ck.directory, read_only=True).restore(model, strict=True)
  assert raised and meta["at"] == 30
  for a, b in zip(_params(model), params[30]):
    np.testing.assert_array_equal(a, b)


def test_steps_written_before_digests_still_read(tmp_path):
  ck, params = _saved(tmp_path)
  os.remove(os.path.join(ck.directory, "30", ckpt_lib.DIGEST_FILE))
  fresh = Checkpoints(ck.directory)
  assert fresh.latest_step() == 30
  model = make_reward_model(CFG, seed=5)
  fresh.restore(model, strict=True)
  for a, b in zip(_params(model), params[30]):
    np.testing.assert_array_equal(a, b)


def _cli(module, *args):
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=900)
  return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
def test_damaged_final_checkpoint_commands_refuse_and_training_resumes(tmp_path):
  """The reported case: a 60-step demo, 64 bytes flipped in the final step's _METADATA."""
  flags = ["--gin_file=gin/demo.gin", "--gin.RewardModelRecipe.num_steps=60",
           "--gin.RunSettings.save_every=20",
           "--gin.RunSettings.eval_every=0", "--gin.DataSource.default_num_pairs=300",
           "--gin.RunSettings.progress=False"]
  clean, damaged = str(tmp_path / "clean"), str(tmp_path / "damaged")
  code, _, err = _cli("westofn.train", *flags, f"--gin.MODEL_DIR={clean}")
  assert code == 0, err[-3000:]
  # A copy is the run a second identical command makes (training is deterministic), at no cost.
  shutil.copytree(clean, damaged)
  _flip(os.path.join(damaged, "base_rm", "checkpoints", "60", "state", "_METADATA"), 0)
  pairs = tmp_path / "pairs.jsonl"
  pairs.write_text(json.dumps({"prompt": "Q: a\nA:", "chosen": "aaa", "rejected": "b"}) + "\n")
  code, out, err = _cli("westofn.evaluate", f"--model_dir={damaged}", f"--data={pairs}")
  lines = [ln for ln in err.splitlines() if ln.startswith("westofn: error:")]
  assert code == 5 and len(lines) == 1, err[-3000:]
  assert "checkpoint step 60" in lines[0] and "_METADATA differs" in lines[0]
  assert "Traceback" not in err
  code, _, err = _cli("westofn.score", f"--model_dir={damaged}", f"--input={tmp_path}/in.jsonl",
                      f"--output={tmp_path}/out.jsonl")
  assert code in (3, 5)   # (the input file is missing too: either error is one line)
  (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "Q", "response": "a"}) + "\n")
  code, _, err = _cli("westofn.score", f"--model_dir={damaged}", f"--input={tmp_path}/in.jsonl",
                      f"--output={tmp_path}/out.jsonl")
  assert code == 5 and "checkpoint step 60" in err and "Traceback" not in err
  # the same training command resumes from step 40 and ends where the clean run did
  code, _, err = _cli("westofn.train", *flags, f"--gin.MODEL_DIR={damaged}")
  assert code == 0, err[-3000:]
  assert "checkpoint step 60" in err and "using an earlier step" in err
  with np.load(os.path.join(clean, "base_rm", "eval.npz")) as a, \
       np.load(os.path.join(damaged, "base_rm", "eval.npz")) as b:
    np.testing.assert_array_equal(a["chosen"], b["chosen"])
    np.testing.assert_array_equal(a["rejected"], b["rejected"])
  code, out, err = _cli("westofn.evaluate", f"--model_dir={damaged}", f"--data={pairs}")
  assert code == 0, err[-3000:]


@pytest.mark.slow
def test_a_reader_beside_a_training_run_reads_only_complete_verified_steps(tmp_path):
  """evaluate/score/export restore through ``Checkpoints.restore(strict=True)``: looped while
  the same MODEL_DIR trains (a save every 5 steps, the oldest retired), every read succeeds
  and gives a step that was written whole."""
  model_dir = str(tmp_path / "run")
  proc = subprocess.Popen(
      [sys.executable, "-m", "westofn.train", "--gin_file=gin/demo.gin",
       f"--gin.MODEL_DIR={model_dir}", "--gin.RewardModelRecipe.num_steps=150",
       "--gin.RunSettings.save_every=5",
       "--gin.RunSettings.eval_every=0", "--gin.DataSource.default_num_pairs=300",
       "--gin.RunSettings.progress=False"], cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  directory = os.path.join(model_dir, "base_rm", "checkpoints")
  reads, steps = 0, []
  try:
    while proc.poll() is None:
      if not os.path.isdir(directory):
        time.sleep(0.05)   # not spinning a core the training run needs while it starts
        continue
      model = make_reward_model(TransformerConfig(
          vocab_size=259, d_model=128, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=384),
          seed=1)
      meta = Checkpoints(directory, read_only=True).restore(model, strict=True)
      if meta is not None:
        reads += 1
        steps.append(meta["step"])
  finally:
    err = proc.communicate(timeout=600)[1]
  assert proc.returncode == 0, err[-3000:]
  assert reads >= 3 and steps == sorted(steps), (reads, steps)
  assert all(s % 5 == 0 for s in steps)
