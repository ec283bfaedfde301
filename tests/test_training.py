"""rm/training.py and policies/core/train_loop.py: learning, resume to identical parameters after a
kill, NaN stops, stored reward statistics, 8-device parallelism against 1 device."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from policies.transformer import TransformerConfig
from rm import tasks
from policies.core.checkpoints import Checkpoints
from policies.core.metrics_writer import MetricsWriter, NullWriter
from rm.model import make_reward_model
from rm.training import (LossConfig, TrainingDiverged, evaluate_reward_model, make_optimizer,
                         train_reward_model)
from rm.pairwise import pair_batches
from westofn import pipeline
from westofn.settings import Batching, DataSource

TINY = dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, ffn_dim=64)
BATCHING = Batching(rows=4, row_len=192, pairs_per_row=6, max_response_len=24)


@pytest.fixture(scope="module")
def default_data():
  vocab = tasks.byte_vocabulary()
  source = DataSource(default_num_pairs=2000, default_seed=1)
  return pipeline.load_preference_data(source=source, vocabulary=vocab)


def params_of(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def build(data, steps, seed=0, **cfg):
  vocab = data.vocabulary
  model = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, **{**TINY, **cfg}),
                            seed=seed)
  opt = make_optimizer(model, learning_rate=3e-3, total_steps=steps, warmup_steps=10)
  stream = pair_batches(data.tokenized["train"], BATCHING, vocab, seed=seed, shuffle=True)
  return model, opt, stream


def test_loss_decreases_and_heldout_accuracy_beats_chance(default_data, tmp_path):
  model, opt, stream = build(default_data, 150)
  heldout = pair_batches(default_data.tokenized["heldout"], BATCHING,
                                  default_data.vocabulary, seed=0, shuffle=False).one_pass()
  before = evaluate_reward_model(model=model, batches=heldout).metrics
  writer = MetricsWriter(str(tmp_path))
  result = train_reward_model(model=model, optimizer=opt, train_batches=stream, num_steps=150,
                              writer=writer, eval_batches=heldout, log_every=25, progress=False)
  writer.close()
  losses = [h["loss"] for h in result.history if "loss" in h]
  assert losses[-1] < losses[0] - 0.05, losses
  after = result.eval.metrics
  assert after["loss"] < before["loss"]
  # 400 held-out pairs: 0.60 is > 4 standard errors above chance.
  assert after["accuracy"] > 0.60, after
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert {r["split"] for r in rows} == {"train", "eval"}
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


class Killed(Exception):
  pass


def test_killed_run_resumes_to_identical_parameters(default_data, tmp_path):
  steps = 12
  model, opt, stream = build(default_data, steps)
  train_reward_model(model=model, optimizer=opt, train_batches=stream, num_steps=steps,
                     writer=NullWriter(), log_every=100, progress=False)
  uninterrupted = params_of(model)

  def dying(start):  # the process "dies" while fetching the batch for step 11
    for i, batch in enumerate(stream(start), start=start + 1):
      if i == 11:
        raise Killed()
      yield batch

  ckpt_dir = str(tmp_path / "ckpt")
  model, opt, _ = build(default_data, steps)
  with pytest.raises(Killed):
    train_reward_model(model=model, optimizer=opt, train_batches=dying, num_steps=steps,
                       writer=NullWriter(), checkpoints=Checkpoints(ckpt_dir, save_every=4),
                       log_every=100, progress=False)
  assert Checkpoints(ckpt_dir).latest_step() == 8
  # A save killed midway leaves Orbax's temporary directory; metrics of steps 9-10 were logged.
  half_saved = os.path.join(ckpt_dir, "10.orbax-checkpoint-tmp-1234567")
  os.makedirs(os.path.join(half_saved, "state"))
  writer = MetricsWriter(str(tmp_path / "logs"), tensorboard=False)
  for step in (4, 8, 9, 10):
    writer.write(step, "train", {"loss": 1.0})
  model, opt, _ = build(default_data, steps, seed=0)  # fresh process: new objects
  result = train_reward_model(model=model, optimizer=opt, train_batches=stream, num_steps=steps,
                              writer=writer, checkpoints=Checkpoints(ckpt_dir, save_every=4),
                              log_every=1, progress=False)
  assert result.step == steps
  jax.tree.map(np.testing.assert_array_equal, params_of(model), uninterrupted)
  assert not os.path.exists(half_saved)
  logged = [json.loads(l)["step"] for l in open(writer.path)]
  assert logged == [4, 8, 9, 10, 11, 12]   # 9 and 10 once, from the resumed run


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(default_data, tmp_path):
  model, opt, stream = build(default_data, 20)

  def poisoned(start):
    for i, batch in enumerate(stream(start), start=start + 1):
      if i == 6:
        batch.margin = np.full_like(batch.margin, np.nan)
      yield batch

  ckpt = Checkpoints(str(tmp_path / "ckpt"), save_every=4)
  with pytest.raises(TrainingDiverged, match=r"diverged by step 8.*step 4\) .* is intact"):
    train_reward_model(model=model, optimizer=opt, train_batches=poisoned, num_steps=20,
                       writer=NullWriter(), checkpoints=ckpt, log_every=100,
                       loss=LossConfig(use_margin=True), progress=False)
  assert ckpt.latest_step() == 4
  fresh, fresh_opt, _ = build(default_data, 20, seed=5)
  ckpt.restore(fresh, fresh_opt)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params_of(fresh)))


def test_final_checkpoint_stores_heldout_reward_statistics(default_data, tmp_path):
  model, opt, stream = build(default_data, 6)
  heldout = pair_batches(default_data.tokenized["heldout"][:40], BATCHING,
                                  default_data.vocabulary, seed=0, shuffle=False).one_pass()
  ckpt = Checkpoints(str(tmp_path / "ckpt"), save_every=100)
  result = train_reward_model(model=model, optimizer=opt, train_batches=stream, num_steps=6,
                              writer=NullWriter(), checkpoints=ckpt, eval_batches=heldout,
                              log_every=100, progress=False)
  meta = ckpt.read_metadata()
  assert meta["step"] == 6
  assert meta["reward_mean"] == pytest.approx(result.eval.metrics["reward_mean"])
  assert meta["reward_std"] == pytest.approx(result.eval.metrics["reward_std"])


DP_SCRIPT = r"""
import jax, numpy as np
from flax import nnx
from policies.core.sharding import Partitioning
from policies.sampling import sample_tokens
from policies.transformer import Decoder, TransformerConfig
from rm import tasks
from rm.model import make_reward_model
from rm.training import LossConfig, make_optimizer, new_train_metrics, train_step, _to_device
from rm.pairwise import pair_batches
from westofn import pipeline
from westofn.settings import Batching, DataSource
assert jax.device_count() == 8, jax.devices()
vocab = tasks.byte_vocabulary()
data = pipeline.load_preference_data(source=DataSource(default_num_pairs=300),
                                     vocabulary=vocab)
b = Batching(rows=8, row_len=192, pairs_per_row=6, max_response_len=24)
layouts = {"1 device": (Partitioning(), 1),
           "data parallel": (Partitioning(), 8),
           "fsdp": (Partitioning({"data": 1, "fsdp": -1, "tensor": 1}, "fsdp"), 8),
           "fsdp x tensor": (Partitioning({"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tensor"), 8)}
losses, samples = {}, {}
prompts = [np.arange(3, 3 + n, dtype=np.int32) for n in (5, 9)]
# the blocks as a Python loop and as a layer scan (the default on GPUs and TPUs)
for scan in (False, True):
  cfg = TransformerConfig(vocab_size=vocab.vocab_size, d_model=32, num_layers=3, num_heads=2,
                          num_kv_heads=2, ffn_dim=64, scan_layers=scan)
  for name, (part, n) in layouts.items():
    mesh = part.mesh(jax.devices()[:n])
    model = make_reward_model(cfg, seed=0)
    part.place(model, mesh)
    opt = make_optimizer(model, total_steps=10)
    part.place(opt, mesh)
    stream = pair_batches(data.tokenized["train"], b, vocab, seed=0, shuffle=True)(0)
    out = []
    for _ in range(4):
      metrics = new_train_metrics()
      train_step(model, opt, metrics, _to_device(next(stream), mesh), LossConfig())
      out.append(float(metrics.compute()["loss"]))
    losses[name, scan] = out
    # the policy samples under the same layout
    policy = Decoder(cfg, rngs=nnx.Rngs(0))
    part.place(policy, mesh)
    s = sample_tokens(policy, prompts, num_samples=3, max_new_tokens=6, eos_id=1, seed=0)
    samples[name, scan] = (s.tokens, s.logprobs)
print("LOSSES", losses)
for key in losses:
  ref = ("1 device", False)
  np.testing.assert_allclose(losses[key], losses[ref], rtol=2e-5, err_msg=str(key))
  np.testing.assert_array_equal(samples[key][0], samples[ref][0], err_msg=str(key))
  np.testing.assert_allclose(samples[key][1], samples[ref][1], atol=1e-5, err_msg=str(key))
print("OK")
"""


@pytest.mark.slow
def test_data_parallel_fsdp_and_tensor_parallel_on_8_devices_match_1_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", DP_SCRIPT], cwd=repo, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_optimizer_record_holds_what_shapes_the_updates_but_not_the_run_length():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  make = lambda **kw: make_optimizer(model, **{"learning_rate": 1e-3, "total_steps": 100,
                                               "warmup_steps": 10, "weight_decay": 0.05, **kw})
  record = make().record()
  assert record == {"learning_rate": 1e-3, "warmup_steps": 10, "end_lr_ratio": 0.1,
                    "weight_decay": 0.05, "clip_norm": 1.0, "b1": 0.9, "b2": 0.98,
                    "trainable": "Param"}
  assert make(total_steps=5000).record() == record   # more steps extend a run
  assert make(learning_rate=3e-4).record()["learning_rate"] == 3e-4
  assert make(weight_decay=0.0).record()["weight_decay"] == 0.0
  assert make(warmup_steps=0).record()["warmup_steps"] == 1   # as the schedule runs it
