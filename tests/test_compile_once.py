"""Compile once: policies/core/compile_meter.py counts compilations, and the steps, schedules,
buckets and cache (train_loop.py, buckets.py, compile_cache.py) keep their number down."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from policies.core import buckets, compile_cache
from policies.core.compile_meter import CompileCost, CompileMeter
from policies.core.metrics_writer import NullWriter
from policies.core.sharding import Partitioning
from policies.core.train_loop import schedule_settings, warmup_cosine_lr
from policies.transformer import Decoder, TransformerConfig
from rm.model import make_reward_model
from rm.packing import PairBatches
from rm.tasks import TokenizedPair
from rm.training import make_optimizer, train_reward_model
from westofn.costs import StageCosts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=48)


def test_compile_meter_counts_compilations_and_their_seconds():
  f = jax.jit(lambda x: jnp.sin(x) * 3 + 1)
  with CompileMeter() as first:
    f(jnp.ones(7)).block_until_ready()
  with CompileMeter() as again:
    f(jnp.ones(7)).block_until_ready()
  with CompileMeter() as other_shape:
    f(jnp.ones(9)).block_until_ready()
  assert first.cost.compiles >= 1 and first.cost.compile_s > 0
  assert first.cost.wall_s >= first.cost.compile_s * 0.5
  assert again.cost.compiles == 0 and again.cost.compile_s == 0
  assert other_shape.cost.compiles >= 1
  c = CompileCost(wall_s=10.0, compiles=3, trace_s=1.0, lower_s=0.5, backend_s=2.5)
  assert c.compile_s == 4.0 and c.compute_s == 6.0
  assert c.as_dict()["compute_s"] == 6.0 and "3 XLA compilations" in c.describe()


def test_stage_costs_table_and_json(tmp_path):
  costs = StageCosts()
  with costs.stage("a"):
    jax.jit(lambda x: x * 2)(jnp.ones(3)).block_until_ready()
  with costs.stage("b"):
    pass
  table = costs.table()
  assert "| a |" in table and "| b | " in table and "| all stages |" in table
  costs.write_json(str(tmp_path / "costs.json"))
  got = json.load(open(tmp_path / "costs.json"))
  assert [s["stage"] for s in got["stages"]] == ["a", "b"]
  assert got["total"]["compiles"] == got["stages"][0]["compiles"] >= 1
  assert got["stages"][1]["compiles"] == 0


def test_stage_costs_written_after_each_stage(tmp_path):
  path = str(tmp_path / "costs.json")
  costs = StageCosts(path=path)
  with costs.stage("a"):
    pass
  assert [s["stage"] for s in json.load(open(path))["stages"]] == ["a"]
  with pytest.raises(RuntimeError):   # a stage that dies keeps the ones before it
    with costs.stage("b"):
      raise RuntimeError("killed")
  assert [s["stage"] for s in json.load(open(path))["stages"]] == ["a"]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("peak,warmup,total,end", [(2e-3, 40, 400, 2e-4), (2e-5, 15, 170, 2e-6),
                                                    (1e-3, 1, 2, 1e-4), (0.0, 5, 10, 0.0)])
def test_learning_rate_schedule_as_data_equals_optax(jit, peak, warmup, total, end):
  ref = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=end)
  settings = jnp.asarray(schedule_settings(peak=peak, warmup_steps=warmup, total_steps=total,
                                           end=end), jnp.float32)
  counts = jnp.arange(0, total + 20, dtype=jnp.int32)
  ours = jax.vmap(lambda c: warmup_cosine_lr(c, settings))
  want = jax.vmap(ref)
  if jit:
    ours, want = jax.jit(ours), jax.jit(want)
  np.testing.assert_array_equal(np.asarray(ours(counts)), np.asarray(want(counts)))
  with pytest.raises(ValueError, match="shape"):
    warmup_cosine_lr(jnp.int32(0), settings[:3])


def _pairs(n, seed):
  rng = np.random.default_rng(seed)
  ints = lambda k: rng.integers(3, 64, k).astype(np.int32)
  return [TokenizedPair(ints(6), ints(5), ints(5)) for _ in range(n)]


def test_stages_of_other_lengths_reuse_one_compiled_train_step():
  """A base RM and a student of another length (and so another learning-rate schedule),
  with metrics reset at every log step, run one compiled step between them."""
  mesh = Partitioning().mesh()
  stream = PairBatches(_pairs(64, 0), rows=2, row_len=64, pairs_per_row=4, max_response_len=8,
                       eos_id=1, pad_id=0, seed=0, shuffle=True)

  def stage(steps, seed):
    model = make_reward_model(CFG, seed=seed)
    opt = make_optimizer(model, total_steps=steps, warmup_steps=2)
    Partitioning().place(model, mesh)
    Partitioning().place(opt, mesh)
    with CompileMeter() as meter:
      train_reward_model(model=model, optimizer=opt, train_batches=stream, num_steps=steps,
                         writer=NullWriter(), log_every=2, mesh=mesh, progress=False)
    return meter.cost

  first = stage(6, 0)
  second = stage(9, 1)
  assert first.compiles >= 1
  assert second.compiles == 0, second


def test_bucket_rule():
  assert [buckets.bucket(n, 32) for n in (1, 32, 33, 64, 65, 1000)] == [32, 32, 64, 64, 128,
                                                                         1024]
  assert [buckets.bucket(n) for n in (0, 1, 3, 5, 8)] == [1, 1, 4, 8, 8]
  assert buckets.bucket(5, 1, cap=6) == 6 and buckets.bucket(3, 1, cap=6) == 4
  want = lambda n, b: b * 2 ** int(np.ceil(np.log2(max(1, -(-n // b)))))
  assert all(buckets.bucket(n, b) == want(n, b) for n in range(1, 300) for b in (1, 16, 32))
  with pytest.raises(ValueError):
    buckets.bucket(-1, 4)
  with pytest.raises(ValueError):
    buckets.bucket(4, 0)


def test_sampling_pads_a_short_batch_to_its_bucket_and_keeps_the_results():
  """Greedy samples do not depend on the padding rows, and three prompts compile the
  program of four."""
  from policies.policy import Policy
  from rm.tasks import byte_vocabulary
  vocab = byte_vocabulary()
  model = Decoder(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32, num_layers=2,
                                    num_heads=4, num_kv_heads=2, ffn_dim=48),
                  rngs=__import__("flax").nnx.Rngs(0))
  policy = Policy(model, vocab, max_new_tokens=5, temperature=0.0)
  prompts = ["Q: abc\nA:", "Q: a\nA:", "Q: abcdef\nA:", "Q: ab\nA:"]
  together = policy.sample(prompts[:3], 2, batch_size=8)
  with CompileMeter() as four:
    policy.sample(prompts, 2, batch_size=8)
  assert four.cost.compiles == 0   # 3 prompts were padded to the 4-prompt program
  alone = [policy.sample([p], 2, batch_size=8)[0] for p in prompts[:3]]
  assert [[s.text for s in row] for row in together] == [[s.text for s in row]
                                                          for row in alone]


def test_compilation_cache_setting_precedence(monkeypatch, tmp_path):
  for var in ("WESTOFN_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert compile_cache.resolve(None) == str(tmp_path / ".cache" / "westofn" / "xla")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert compile_cache.resolve(None) == str(tmp_path / "jax")
  monkeypatch.setenv("WESTOFN_COMPILATION_CACHE", "off")
  assert compile_cache.resolve(None) is None
  assert compile_cache.resolve(str(tmp_path / "flag")) == str(tmp_path / "flag")
  assert compile_cache.resolve("off") is None


@pytest.mark.slow
def test_persistent_cache_serves_a_second_process(tmp_path):
  """The second process reads the train step the first compiled."""
  code = textwrap.dedent(f"""
      import json, sys
      sys.path.insert(0, {REPO!r})
      from policies.core import compile_cache
      compile_cache.configure(sys.argv[1])
      import jax.numpy as jnp
      from policies.core.compile_meter import CompileMeter
      from policies.transformer import TransformerConfig
      from rm.model import make_reward_model
      from rm.training import make_optimizer, new_train_metrics, train_step, LossConfig
      cfg = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4,
                              num_kv_heads=2, ffn_dim=48)
      model = make_reward_model(cfg, seed=0)
      opt = make_optimizer(model, total_steps=10)
      batch = dict(tokens=jnp.ones((2, 32), jnp.int32), positions=jnp.zeros((2, 32), jnp.int32),
                   group=jnp.ones((2, 32), jnp.int32), segment=jnp.ones((2, 32), jnp.int32),
                   ends=jnp.zeros((2, 1, 2), jnp.int32), margin=jnp.zeros((2, 1)),
                   weight=jnp.ones((2, 1)))
      with CompileMeter() as m:
        train_step(model, opt, new_train_metrics(), batch, LossConfig())
      print(json.dumps(m.cost.as_dict()))
      """)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "WESTOFN_"))}
  run = lambda: json.loads(subprocess.run(
      [sys.executable, "-c", code, str(tmp_path / "xla")], env=env, capture_output=True,
      text=True, check=True, timeout=600).stdout.strip().splitlines()[-1])
  cold, warm = run(), run()
  assert cold["cache_hits"] == 0 and cold["compiles"] >= 1
  assert warm["cache_hits"] >= 1
  assert os.listdir(tmp_path / "xla")
