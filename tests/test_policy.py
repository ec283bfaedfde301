"""policies/sampling.py, policy.py and sft.py: cached and shared-prefix decoding against the full
forward, the sampling rules against numpy, scoring, SFT, the file-backed policy, and sampling
that resumes after a kill (westofn/samples.py)."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.policy import FileBackedPolicy, Policy, SampleFileError
from policies.sampling import process_logits, sample_categorical, sample_tokens, score_tokens
from policies.sft import SequenceBatches, pack_sequences, train_policy
from policies.core.metrics_writer import NullWriter
from policies.core.train_loop import make_optimizer
from policies.transformer import Decoder, TransformerConfig, causal_mask

EOS = 1
CFG = TransformerConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=64)


@pytest.fixture(scope="module")
def model():
  return Decoder(CFG, rngs=nnx.Rngs(0))


def prompts(seed=0, lens=(3, 11, 6)):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 40, n).astype(np.int32) for n in lens]


@pytest.mark.slow
def test_cached_decoding_equals_full_forward(model):
  rng = np.random.default_rng(1)
  seq = jnp.asarray(rng.integers(3, 40, (2, 10)), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  full = model.logits(model(seq, pos, causal_mask(jnp.ones((2, 10), bool))))
  # Compiled, as the sampler runs it, the step index traced (eager dispatch made this 20 s).
  decode = nnx.jit(lambda m, *args: m.decode(*args))
  caches = model.init_cache(2, 10)
  mask = jnp.concatenate([causal_mask(jnp.ones((2, 4), bool)), jnp.zeros((2, 4, 6), bool)], -1)
  h, caches = decode(model, seq[:, :4], pos[:, :4], mask, caches, jnp.int32(0))
  step_logits = [model.logits(h)]
  for t in range(4, 10):
    m = (jnp.arange(10) <= t)[None, None, :].repeat(2, 0)
    h, caches = decode(model, seq[:, t:t + 1], pos[:, t:t + 1], m, caches, jnp.int32(t))
    step_logits.append(model.logits(h))
  np.testing.assert_allclose(jnp.concatenate(step_logits, 1), full, atol=1e-5)


@pytest.mark.slow
def test_shared_prefix_decoding_equals_full_forward(model):
  """N continuations of each (left-padded) prompt, decoded over the prompts' cache
  stored once (``prefix``), give each full sequence's logits."""
  rng = np.random.default_rng(2)
  n, p_len, new = 3, 6, 4
  prompt_lens = np.array([6, 4])
  prompts_ = rng.integers(3, 40, (2, p_len))
  prompts_[1, :2] = 0                                       # left padding
  conts = rng.integers(3, 40, (2 * n, new))
  valid = jnp.asarray(np.arange(p_len)[None] >= (p_len - prompt_lens)[:, None])
  pos = jnp.maximum(jnp.arange(p_len)[None] - (p_len - prompt_lens)[:, None], 0)
  _, prefix_caches = model.decode(jnp.asarray(prompts_, jnp.int32), pos, causal_mask(valid),
                                  model.init_cache(2, p_len), 0)
  caches = model.init_cache(2 * n, new)
  # Compiled, as the sampler runs them (eager dispatch made this test 25 s).
  decode = nnx.jit(lambda m, *args, prefix: m.decode(*args, prefix=prefix))
  forward = nnx.jit(lambda m, *args: m.logits(m(*args)))
  got = []
  for t in range(new):
    m = jnp.broadcast_to(jnp.arange(new) <= t, (2 * n, 1, new))
    tok_pos = jnp.repeat(jnp.asarray(prompt_lens), n)[:, None] + t
    h, caches = decode(model, jnp.asarray(conts[:, t:t + 1], jnp.int32), tok_pos, m, caches,
                       jnp.int32(t), prefix=(prefix_caches, valid))
    got.append(model.logits(h)[:, 0])
  got = np.stack(got, 1)
  for i in range(2 * n):
    b = i // n
    seq = np.concatenate([prompts_[b, p_len - prompt_lens[b]:], conts[i]])[None]
    full = forward(model, jnp.asarray(seq, jnp.int32), jnp.arange(seq.shape[1])[None],
                   causal_mask(jnp.ones(seq.shape, bool)))
    np.testing.assert_allclose(got[i], full[0, prompt_lens[b]:], atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_sample_categorical_is_the_inverse_cdf_and_never_draws_zero_probability(jit):
  logits = jnp.log(jnp.asarray([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 1.0, 0.0],
                                [0.25, 0.25, 0.25, 0.25]]))
  fn = jax.jit(sample_categorical) if jit else sample_categorical
  key = jax.random.key(3)
  u = np.asarray(jax.random.uniform(key, (3, 1)))[:, 0]
  cdf = np.cumsum(np.exp(np.asarray(logits)), axis=-1)
  want = [int(np.searchsorted(c, x * c[-1], side="right")) for c, x in zip(cdf, u)]
  assert np.asarray(fn(key, logits)).tolist() == want
  draws = np.stack([np.asarray(fn(jax.random.key(i), logits)) for i in range(400)])
  assert not (draws[:, 0] == 1).any() and (draws[:, 1] == 2).all()
  freq = np.bincount(draws[:, 0], minlength=4) / len(draws)
  np.testing.assert_allclose(freq, [0.5, 0.0, 0.2, 0.3], atol=0.08)
  with pytest.raises(ValueError, match="batch, vocab"):
    fn(key, logits[0])
  # log-probabilities in: the same draws without normalising again
  rng = np.random.default_rng(0)
  raw = jnp.asarray(rng.normal(size=(64, 500)) * 3, jnp.float32)
  logp = jax.nn.log_softmax(raw, axis=-1)
  from_logp = jax.jit(functools.partial(sample_categorical, log_probs=True)) if jit else (
      functools.partial(sample_categorical, log_probs=True))
  for i in range(5):
    np.testing.assert_array_equal(np.asarray(from_logp(jax.random.key(i), logp)),
                                  np.asarray(fn(jax.random.key(i), raw)))


def test_top_k_1_equals_greedy_and_seed_reproduces(model):
  greedy = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=8, eos_id=EOS,
                         temperature=0.0)
  top1 = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=8, eos_id=EOS, top_k=1,
                       seed=42)
  np.testing.assert_array_equal(greedy.tokens, top1.tokens)
  a = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=8, eos_id=EOS, seed=7)
  b = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=8, eos_id=EOS, seed=7)
  c = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=8, eos_id=EOS, seed=8)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)


def test_full_distribution_sampling_matches_model_probabilities(model):
  p = prompts(lens=(5,))
  res = sample_tokens(model, p, num_samples=4000, max_new_tokens=1, eos_id=-1, seed=0)
  first = res.tokens[0, :, 0]
  pos = jnp.arange(5)[None]
  probs = np.asarray(jax.nn.softmax(model.logits(model(jnp.asarray(p[0])[None], pos,
                                                       causal_mask(jnp.ones((1, 5), bool))))[0, -1]))
  freq = np.bincount(first, minlength=40) / len(first)
  # total variation distance of 4000 draws from the true distribution
  assert 0.5 * np.abs(freq - probs).sum() < 0.06
  np.testing.assert_allclose(res.logprobs[0, :, 0], np.log(probs[first]), rtol=1e-4, atol=1e-5)


def test_process_logits_top_p_and_top_k_against_numpy():
  logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda **kw: np.asarray(process_logits(logits, temperature=1.0, **kw)[0] > -1e30)
  assert kept(top_k=0, top_p=0.6).tolist() == [True, True, False, False, False]
  assert kept(top_k=0, top_p=0.7).tolist() == [True, True, False, False, False]
  assert kept(top_k=0, top_p=0.71).tolist() == [True, True, True, False, False]
  assert kept(top_k=2, top_p=1.0).tolist() == [True, True, False, False, False]
  assert kept(top_k=0, top_p=1.0).all()


def test_eos_stops_and_pads_and_padding_does_not_change_samples(model):
  batch = sample_tokens(model, prompts(), num_samples=2, max_new_tokens=10, eos_id=EOS,
                        temperature=0.0)
  for i, p in enumerate(prompts()):
    alone = sample_tokens(model, [p], num_samples=2, max_new_tokens=10, eos_id=EOS,
                          temperature=0.0, prompt_bucket=64)
    np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])
    np.testing.assert_allclose(alone.logprobs[0], batch.logprobs[i], atol=1e-5)
  # a token frequent under this model as "EOS": samples must stop there
  stop_tok = int(np.bincount(batch.tokens.ravel()).argmax())
  res = sample_tokens(model, prompts(), num_samples=4, max_new_tokens=10, eos_id=stop_tok, seed=1)
  for b in range(3):
    for n in range(4):
      L = res.lengths[b, n]
      toks = res.tokens[b, n]
      if res.stopped[b, n]:
        assert toks[L - 1] == stop_tok and stop_tok not in toks[:L - 1]
      else:
        assert L == 10 and stop_tok not in toks
      assert (toks[L:] == 0).all() and (res.logprobs[b, n, L:] == 0).all()
  assert res.stopped.any()


def test_score_equals_sampled_logprobs_at_temperature_1(model):
  res = sample_tokens(model, prompts(), num_samples=3, max_new_tokens=9, eos_id=EOS, seed=3)
  ps, rs, want = [], [], []
  for b, p in enumerate(prompts()):
    for n in range(3):
      ps.append(p)
      rs.append(res.response(b, n))
      want.append(res.logprobs[b, n, :res.lengths[b, n]])
  for got, w in zip(score_tokens(model, ps, rs), want):
    np.testing.assert_allclose(got, w, atol=2e-5)


def test_sft_packing_puts_loss_on_response_tokens_only():
  ex = [(np.array([5, 6, 7]), np.array([8, 9])), (np.array([10, 11]), np.array([12]))]
  (b,) = pack_sequences(ex, rows=1, row_len=16, max_sequences_per_row=4, max_response_len=8,
                        eos_id=EOS)
  assert b.tokens[0, :11].tolist() == [5, 6, 7, 8, 9, EOS, 10, 11, 12, EOS, 0]
  assert b.positions[0, :10].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
  # weights sit on positions whose *next* token is a response token
  assert b.weights[0, :11].tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
  assert b.targets[0, 2:5].tolist() == [8, 9, EOS]


def test_sft_loss_decreases_and_policy_learns_the_pattern(tmp_path):
  # Responses repeat the prompt's last token: a policy that learns it predicts it.
  rng = np.random.default_rng(0)
  ex = []
  for _ in range(3000):
    p = rng.integers(3, 40, rng.integers(2, 6)).astype(np.int32)
    ex.append((p, np.full(4, p[-1], np.int32)))
  model = Decoder(CFG, rngs=nnx.Rngs(1))
  opt = make_optimizer(model, learning_rate=1e-2, total_steps=200, warmup_steps=10)
  stream = SequenceBatches(ex, rows=4, row_len=128, max_sequences_per_row=16, max_response_len=8,
                           eos_id=EOS)
  result = train_policy(model=model, optimizer=opt, train_batches=stream, num_steps=200,
                        writer=NullWriter(), log_every=25, progress=False)
  losses = [h["loss"] for h in result.history]
  assert losses[-1] < 0.5 * losses[0], losses
  unseen = [rng.integers(3, 40, 4).astype(np.int32) for _ in range(30)]
  res = sample_tokens(model, unseen, num_samples=1, max_new_tokens=5, eos_id=EOS, temperature=0.0)
  correct = [res.tokens[i, 0, :4].tolist() == [p[-1]] * 4 for i, p in enumerate(unseen)]
  # a policy that had not learned the pattern would copy by chance 1/37 of the time
  assert np.mean(correct) > 0.6, np.mean(correct)


class _CharVocab:
  eos_id, pad_id = EOS, 0

  def encode(self, s):
    return [3 + (ord(c) % 37) for c in s]

  def decode(self, ids):
    return "".join(chr(97 + (i - 3) % 26) for i in ids)


def test_policy_text_api_returns_samples_with_logprobs(model):
  policy = Policy(model, _CharVocab(), max_new_tokens=6)
  (row,) = policy.sample(["hello"], 3, seed=0)
  assert len(row) == 3
  for s in row:
    assert s.length == len(s.token_ids) and s.length <= 6
    assert s.sum_logprob == pytest.approx(float(np.sum(s.token_logprobs)))
    assert s.mean_logprob <= 0
  scored = policy.score(["hello"], ["abc"])
  assert scored[0].shape == (4,)  # three characters and EOS


def test_file_backed_policy_reads_and_validates(tmp_path):
  good = {"prompt": "Q?", "samples": [{"text": "a", "token_logprobs": [-0.1, -0.2]},
                                      {"text": "b", "token_logprobs": [-1.0]}]}
  p = tmp_path / "samples.jsonl"
  p.write_text(json.dumps(good) + "\n")
  pol = FileBackedPolicy(str(p))
  (row,) = pol.sample(["Q?"], 2)
  assert [s.text for s in row] == ["a", "b"] and row[0].mean_logprob == pytest.approx(-0.15)
  with pytest.raises(SampleFileError, match="has 2 samples, 3 were asked"):
    pol.sample(["Q?"], 3)
  with pytest.raises(SampleFileError, match="no samples for prompt"):
    pol.sample(["other"], 1)
  bad = dict(good, samples=[{"text": "a", "token_logprobs": [0.5]}])
  p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
  with pytest.raises(SampleFileError, match=r"samples.jsonl:2: samples\[0\].token_logprobs"):
    FileBackedPolicy(str(p))
  p.write_text("{not json\n")
  with pytest.raises(SampleFileError, match=r"samples.jsonl:1: <line>: malformed JSON"):
    FileBackedPolicy(str(p))


def test_policy_batches_by_length_and_returns_samples_in_prompt_order(model):
  policy = Policy(model, _CharVocab(), max_new_tokens=5, temperature=0.0)
  prompts = ["a much longer prompt than the others", "hi", "medium one", "x", "yo yo"]
  together = policy.sample(prompts, 2, batch_size=2)
  for p, row in zip(prompts, together):
    (alone,) = policy.sample([p], 2)
    assert [s.token_ids for s in row] == [s.token_ids for s in alone]


class _Killed(Exception):
  pass


class _Dying:
  """A policy whose sampling is killed after ``after`` batches (never, if None); it records
  the batches it sampled."""

  def __init__(self, policy, after=None):
    self.policy, self.after, self.batches = policy, after, []

  def sample_batches(self, *args, **kw):
    for batch, rows in self.policy.sample_batches(*args, **kw):
      if len(self.batches) == self.after:
        raise _Killed()
      self.batches.append(batch)
      yield batch, rows


def test_sampling_killed_part_way_resumes_to_the_uninterrupted_samples(model, tmp_path, caplog):
  from westofn.samples import reuse_or_sample
  policy = Policy(model, _CharVocab(), max_new_tokens=5)   # temperature 1: random samples
  prompts = ["a much longer prompt", "hi", "medium one", "x", "yo yo", "abc"]
  want_path = str(tmp_path / "want" / "samples.jsonl")
  want = reuse_or_sample(policy, prompts, 3, seed=7, samples_path=want_path, batch_size=2)
  path = str(tmp_path / "killed" / "samples.jsonl")
  with pytest.raises(_Killed):
    reuse_or_sample(_Dying(policy, after=2), prompts, 3, seed=7, samples_path=path, batch_size=2)
  assert not os.path.exists(path)
  with open(path + ".partial") as f:
    logged = [json.loads(line) for line in f]
  assert len(logged) == 4 and len({row["index"] for row in logged}) == 4
  with open(path + ".partial", "a") as f:
    f.write('{"index": 5, "prompt": "ab')   # a line the kill tore
  resumed = _Dying(policy)
  with caplog.at_level("INFO", logger="westofn"):
    got = reuse_or_sample(resumed, prompts, 3, seed=7, samples_path=path, batch_size=2)
  assert "resuming: 4 of 6 prompts were sampled" in caplog.text
  assert "sampled 6 of 6 prompts x 3 in" in caplog.text
  assert len(resumed.batches) == 1 and not set(resumed.batches[0]) & {r["index"] for r in logged}
  assert open(path).read() == open(want_path).read()
  assert not os.path.exists(path + ".partial")
  for got_row, want_row in zip(got, want):
    assert [s.text for s in got_row] == [s.text for s in want_row]
    for g, w in zip(got_row, want_row):
      np.testing.assert_array_equal(g.token_logprobs, w.token_logprobs)


def test_a_partial_sample_log_of_other_prompts_or_counts_is_refused(model, tmp_path):
  from westofn.samples import reuse_or_sample
  policy = Policy(model, _CharVocab(), max_new_tokens=4)
  path = str(tmp_path / "samples.jsonl")
  row = {"index": 1, "prompt": "hi", "samples": [{"text": "a", "token_logprobs": [-0.5]}] * 2}
  for bad, match in [(dict(row, index=0), r"samples\.jsonl\.partial:1: index: 0 is not"),
                     (dict(row, index=True), r"samples\.jsonl\.partial:1: index: True"),
                     (dict(row, samples=row["samples"][:1]),
                      r"samples\.jsonl\.partial:1: samples: 1, not the 2"),
                     (dict(row, samples=[{"text": "a", "token_logprobs": [0.5]}] * 2),
                      r"samples\.jsonl\.partial:1: samples\[0\]\.token_logprobs")]:
    with open(path + ".partial", "w") as f:
      f.write(json.dumps(bad) + "\n")
    with pytest.raises(SampleFileError, match=match):
      reuse_or_sample(policy, ["yo", "hi"], 2, seed=0, samples_path=path)
    assert not os.path.exists(path)
    assert open(path + ".partial").read() == json.dumps(bad) + "\n"   # kept, not lost


def test_mixed_precision_sampling_reads_a_bfloat16_prompt_cache():
  """Under mixed precision the prompt cache is rounded to bfloat16 once; the shared-prefix
  attention over it stays within bf16 rounding of the float32 cache's, and the sampler's
  log-probabilities still match teacher-forced scoring of the same model."""
  from policies.attention import shared_prefix_attention
  rng = np.random.default_rng(4)
  b0, n, kv, g, d, p, s = 2, 3, 2, 2, 8, 5, 4
  q = jnp.asarray(rng.normal(size=(b0 * n, 1, kv * g, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b0 * n, kv, d, s)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b0 * n, kv, s, d)), jnp.float32)
  k_pre = jnp.asarray(rng.normal(size=(b0, kv, d, p)), jnp.float32)
  v_pre = jnp.asarray(rng.normal(size=(b0, kv, p, d)), jnp.float32)
  mask = jnp.asarray(np.arange(s)[None, None] < 2).repeat(b0 * n, 0)
  valid = jnp.asarray([[True] * p, [False, True, True, True, True]])
  want = shared_prefix_attention(q, k, v, mask, (k_pre, v_pre, valid))
  for fn in (shared_prefix_attention, jax.jit(shared_prefix_attention)):
    got = fn(q, k, v, mask, (k_pre.astype(jnp.bfloat16), v_pre.astype(jnp.bfloat16), valid))
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.05)
    assert not np.array_equal(got, want)

  mixed = Decoder(dataclasses.replace(CFG, matmul_dtype="bfloat16"),
                  rngs=nnx.Rngs(0))
  res = sample_tokens(mixed, prompts(), num_samples=3, max_new_tokens=9, eos_id=EOS, seed=3)
  ps = [p for p in prompts() for _ in range(3)]
  rs = [res.response(i // 3, i % 3) for i in range(9)]
  for i, got in enumerate(score_tokens(mixed, ps, rs)):
    np.testing.assert_allclose(got, res.logprobs[i // 3, i % 3, :res.lengths[i // 3, i % 3]],
                               atol=0.03)
