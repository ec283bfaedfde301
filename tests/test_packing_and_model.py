"""rm/packing.py and rm/model.py: truncation, the packed row layout and mask, rewards independent
of batch and padding, resumable batches, seqio tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.transformer import TransformerConfig, causal_mask
from rm import tasks
from rm.data import PreferencePair
from rm.model import make_reward_model
from rm.packing import (CHOSEN, PROMPT, REJECTED, PairBatches, pack_pairs, pair_attention_mask,
                        truncate_pair)
from rm.tasks import TokenizedPair

EOS = 1
CFG = TransformerConfig(vocab_size=259, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=64)


def random_pairs(n, seed=0, max_len=30):
  rng = np.random.default_rng(seed)
  ints = lambda lo, hi: rng.integers(3, 259, rng.integers(lo, hi)).astype(np.int32)
  return [TokenizedPair(ints(4, max_len), ints(2, 20), ints(2, 20), float(rng.normal()))
          for _ in range(n)]


def test_truncation_keeps_response_start_eos_and_prompt_end():
  p, c, r = np.arange(100, 200), np.arange(10, 60), np.arange(60, 65)
  tp, tc, tr = truncate_pair(p, c, r, row_len=64, max_response_len=20, eos_id=EOS)
  assert tc[-1] == EOS and tr[-1] == EOS
  assert list(tc[:-1]) == list(range(10, 29)) and list(tr[:-1]) == list(range(60, 65))
  assert tp[-1] == 199 and len(tp) + len(tc) + len(tr) == 64  # left-truncated prompt


def test_packing_layout_positions_and_mask():
  pairs = random_pairs(10)
  (batch,) = pack_pairs(pairs, rows=2, row_len=256, pairs_per_row=8, max_response_len=32,
                        eos_id=EOS)
  assert sorted(batch.index[batch.weight > 0].tolist()) == list(range(10))
  row, slot = np.argwhere(batch.index == 3)[0]
  sel = batch.group[row] == slot + 1
  seg, pos = batch.segment[row][sel], batch.positions[row][sel]
  lp, lc = (seg == PROMPT).sum(), (seg == CHOSEN).sum()
  assert list(pos[seg == REJECTED]) == list(range(lp, lp + (seg == REJECTED).sum()))
  assert list(pos[:lp + lc]) == list(range(lp + lc))
  c_end, r_end = batch.ends[row, slot]
  assert batch.tokens[row, c_end] == EOS and batch.tokens[row, r_end] == EOS
  mask = np.asarray(pair_attention_mask(jnp.asarray(batch.group), jnp.asarray(batch.segment)))[row]
  idx = np.flatnonzero(sel)
  c_idx, r_idx, p_idx = idx[seg == CHOSEN], idx[seg == REJECTED], idx[seg == PROMPT]
  assert not mask[np.ix_(r_idx, c_idx)].any() and not mask[np.ix_(c_idx, r_idx)].any()
  assert mask[np.ix_(r_idx, p_idx)].all() and mask[np.ix_(c_idx, p_idx)].all()
  other = np.flatnonzero((batch.group[row] != slot + 1))
  assert not mask[np.ix_(idx, other)].any()


def _forward(model, arrays):
  return model(arrays)


# Compiled, as training and scoring run it (once per batch shape; eager dispatch of every op
# made these tests 30 s).
_forward_jit = nnx.jit(_forward)


def rewards_by_index(model, pairs, **shape):
  out = np.zeros((len(pairs), 2))
  for b in pack_pairs(pairs, max_response_len=32, eos_id=EOS, **shape):
    c, r = _forward_jit(model, {k: jnp.asarray(v) for k, v in b.arrays().items()})
    keep = b.weight > 0
    out[b.index[keep]] = np.stack([np.asarray(c)[keep], np.asarray(r)[keep]], -1)
  return out


@pytest.mark.slow
def test_reward_same_alone_in_batch_and_with_more_padding():
  model = make_reward_model(CFG, seed=0)
  pairs = random_pairs(12)
  alone = np.stack([rewards_by_index(model, [p], rows=1, row_len=128, pairs_per_row=1)[0]
                    for p in pairs])
  packed = rewards_by_index(model, pairs, rows=2, row_len=256, pairs_per_row=8)
  padded = rewards_by_index(model, pairs, rows=8, row_len=512, pairs_per_row=2)
  np.testing.assert_allclose(packed, alone, atol=1e-5)
  np.testing.assert_allclose(padded, alone, atol=1e-5)


@pytest.mark.slow
def test_shared_prompt_row_equals_two_separate_causal_sequences():
  """Packing [prompt|chosen|rejected] must equal scoring prompt+chosen and prompt+rejected."""
  model = make_reward_model(CFG, seed=1)
  pairs = random_pairs(4, seed=3)
  packed = rewards_by_index(model, pairs, rows=1, row_len=256, pairs_per_row=4)
  rewards_at = nnx.jit(lambda m, *args: m.rewards_at(*args))
  for i, pair in enumerate(pairs):
    p, c, r = truncate_pair(pair.prompt, pair.chosen, pair.rejected, row_len=256,
                            max_response_len=32, eos_id=EOS)
    for j, resp in enumerate((c, r)):
      seq = np.concatenate([p, resp])
      L = 80  # right-padded to a different length on purpose
      toks = np.zeros((1, L), np.int32)
      toks[0, :len(seq)] = seq
      valid = np.arange(L)[None] < len(seq)
      reward = rewards_at(model, jnp.asarray(toks), jnp.arange(L)[None],
                          causal_mask(jnp.asarray(valid)), jnp.asarray([[[len(seq) - 1]]]))
      assert float(reward[0, 0, 0]) == pytest.approx(packed[i, j], abs=1e-5)


def test_pair_batches_resume_gives_the_same_stream():
  stream = PairBatches(random_pairs(50), rows=2, row_len=128, pairs_per_row=4,
                       max_response_len=32, eos_id=EOS, seed=7)
  full = [b for _, b in zip(range(20), stream(0))]
  resumed = [b for _, b in zip(range(13), stream(7))]
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.index, b.index)
  epochs = {len(stream.epoch(0)), len(stream.epoch(1))}
  assert not np.array_equal(stream.epoch(0)[0].index, stream.epoch(1)[0].index) or len(epochs) > 1


def test_seqio_task_tokens_equal_vocabulary_encode():
  vocab = tasks.byte_vocabulary()
  pairs = [PreferencePair("Q: héllo?\nA:", " yes", " no", 0.5),
           PreferencePair("Q: 2+2?\nA:", " 4", " 5", 0.0)]
  task = tasks.register_preference_task("test_pairs", {"train": pairs}, vocab)
  got = tasks.tokenized_pairs(task, "train")
  assert [g.prompt.tolist() for g in got] == [vocab.encode(p.prompt) for p in pairs]
  assert [g.rejected.tolist() for g in got] == [vocab.encode(p.rejected) for p in pairs]
  assert [g.margin for g in got] == [0.5, 0.0]


def remat_policies(jaxpr, times: int = 1) -> list:
  """The policy of every rematerialised block a jaxpr runs: a remat inside a layer scan
  counts once per layer."""
  out = []
  for e in jaxpr.eqns:
    if e.primitive.name == "remat2":
      out += [e.params["policy"]] * times
    elif e.primitive.name == "scan":
      out += remat_policies(e.params["jaxpr"].jaxpr, times * e.params["length"])
  return out


def test_remat_and_bfloat16_compute_match_float32():
  import dataclasses
  from flax import nnx
  pairs = random_pairs(6, seed=4)
  (b,) = pack_pairs(pairs, rows=2, row_len=256, pairs_per_row=4, max_response_len=32, eos_id=EOS)
  batch = {k: jnp.asarray(v) for k, v in b.arrays().items()}

  @nnx.jit
  def forward_and_grad(model):   # jitted: op by op, the grads of 5 configs take ~40 s
    loss = lambda m: jnp.sum(jnp.stack(m(batch)) ** 2)
    return model(batch), nnx.grad(loss)(model)

  def rewards_and_grad(cfg):
    return forward_and_grad(make_reward_model(cfg, seed=2))

  base_r, base_g = rewards_and_grad(CFG)
  for policy in (None, "dots_with_no_batch_dims_saveable"):
    remat_r, remat_g = rewards_and_grad(dataclasses.replace(CFG, remat=True,
                                                            remat_policy=policy))
    np.testing.assert_allclose(np.asarray(remat_r), np.asarray(base_r), atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 nnx.to_pure_dict(remat_g), nnx.to_pure_dict(base_g))
  # the policy reaches every block's checkpoint
  graphdef, state = nnx.split(make_reward_model(dataclasses.replace(
      CFG, remat=True, remat_policy="dots_with_no_batch_dims_saveable"), seed=2))
  jaxpr = jax.make_jaxpr(lambda st: nnx.merge(graphdef, st)(batch))(state)
  assert remat_policies(jaxpr.jaxpr) == [jax.checkpoint_policies.dots_with_no_batch_dims_saveable] * (
      CFG.num_layers - 1)   # the last block reads two tokens a pair and runs without remat
  with pytest.raises(ValueError, match="needs remat=True"):
    dataclasses.replace(CFG, remat_policy="nothing_saveable")
  with pytest.raises(ValueError, match="not a jax.checkpoint_policies name"):
    dataclasses.replace(CFG, remat=True, remat_policy="everything")
  bf16_r, bf16_g = rewards_and_grad(dataclasses.replace(CFG, dtype="bfloat16"))
  assert jax.tree.leaves(nnx.to_pure_dict(bf16_g))[0].dtype == jnp.float32  # master weights
  np.testing.assert_allclose(np.asarray(bf16_r), np.asarray(base_r), atol=0.1)


def test_pointwise_scoring_shares_the_prompt_and_matches_pair_rewards():
  from rm.response_rewards import score_responses
  model = make_reward_model(CFG, seed=3)
  pairs = random_pairs(5, seed=9)
  pair_rewards = rewards_by_index(model, pairs, rows=2, row_len=256, pairs_per_row=4)
  items = [(p.prompt, [p.chosen, p.rejected]) for p in pairs]
  # max_per_row=1 forces one response per row (prompt repeated); 16 shares it; share_rows
  # puts several prompts' blocks in one row
  for per_row in (1, 16):
    for share in (False, True):
      got = score_responses(model, items, rows=3, row_len=256, max_response_len=32,
                            max_per_row=per_row, eos_id=EOS, share_rows=share)
      np.testing.assert_allclose(np.stack(got), pair_rewards, atol=1e-5)


def test_concurrent_scoring_calls_and_a_fitted_last_batch_give_the_same_rewards():
  from rm.response_rewards import pack_prompt_responses, score_responses
  model = make_reward_model(CFG, seed=5)
  rng = np.random.default_rng(7)
  items = [(rng.integers(3, 50, rng.integers(1, 30)),
            [rng.integers(3, 50, rng.integers(1, 20)) for _ in range(rng.integers(1, 4))])
           for _ in range(11)]
  kw = dict(rows=4, row_len=64, max_response_len=16, max_per_row=4, eos_id=EOS)
  plain = score_responses(model, items, **kw)
  for extra in (dict(concurrent=2), dict(concurrent=3, fit_last=True, share_rows=True)):
    got = score_responses(model, items, **kw, **extra)
    for a, b in zip(got, plain):
      np.testing.assert_allclose(a, b, atol=1e-5)
  # 11 rows (one item each) in batches of 4: 4, 4, and the last 3 rows padded to 4, or
  # to the smallest bucket that holds them (4 too); 9 rows leave 1 for the last
  for n, last in ((11, 4), (9, 1)):
    padded, fitted = (pack_prompt_responses(items[:n], **kw, fit_last=f) for f in (False, True))
    assert [len(b["tokens"]) for b in padded] == [4, 4, 4]
    assert [len(b["tokens"]) for b in fitted] == [4, 4, last]
    np.testing.assert_array_equal(fitted[-1]["ids"], padded[-1]["ids"][:last])


def test_shared_rows_hold_several_prompts_each_in_its_own_group():
  from rm.response_rewards import pack_prompt_responses
  rng = np.random.default_rng(4)
  items = [(rng.integers(3, 50, rng.integers(1, 40)),
            [rng.integers(3, 50, rng.integers(0, 20)) for _ in range(rng.integers(1, 5))])
           for _ in range(12)]
  kw = dict(rows=2, row_len=128, max_response_len=16, max_per_row=8, eos_id=EOS)
  alone, shared = (pack_prompt_responses(items, **kw, share_rows=s) for s in (False, True))
  rows_used = lambda batches: sum(int((b["group"].max(1) > 0).sum()) for b in batches)
  assert rows_used(shared) < rows_used(alone) == 12   # alone: one row per item here
  placed = sorted(tuple(int(v) for v in ij) for b in shared for ij in b["ids"].reshape(-1, 2)
                  if ij[0] >= 0)
  assert placed == [(i, j) for i, (_, rs) in enumerate(items) for j in range(len(rs))]
  assert max(int(b["group"].max()) for b in shared) > 1
  for b in shared:
    for r in range(kw["rows"]):
      for slot in np.flatnonzero(b["ids"][r, :, 0] >= 0):
        i, j = b["ids"][r, slot]
        end = b["ends"][r, slot, 0]
        g = b["group"][r, end]
        block = np.flatnonzero(b["group"][r] == g)
        prompt_len = int((b["segment"][r, block] == 0).sum())
        # the block is [prompt | responses], positions restart at its prompt
        np.testing.assert_array_equal(b["tokens"][r, block[:prompt_len]],
                                      items[i][0][-prompt_len:])
        assert b["positions"][r, block[0]] == 0
        response = block[b["segment"][r, block] == slot + 1]
        np.testing.assert_array_equal(b["tokens"][r, response],
                                      np.append(items[i][1][j][:kw["max_response_len"] - 1], EOS))
        assert response[-1] == end and b["positions"][r, end] == prompt_len + len(response) - 1


def test_shared_rows_are_packed_first_fit_largest_first():
  from rm.response_rewards import pack_prompt_responses
  # blocks of 60, 60, 40, 40 tokens (prompt + responses with EOS) in rows of 100: in arrival
  # order each row would be closed once the next block does not fit (60 | 60+40 | 40: 3
  # rows); first fit, largest first, needs the fewest, 2 (60+40 | 60+40)
  block = lambda n, seed: (np.full(10, 3 + seed), [np.full(n - 11, 5 + seed)])
  items = [block(60, 0), block(60, 1), block(40, 2), block(40, 3)]
  kw = dict(row_len=100, max_response_len=64, max_per_row=4, eos_id=EOS)
  (batch,) = pack_prompt_responses(items, rows=2, **kw, share_rows=True)
  assert (batch["group"] > 0).sum(1).tolist() == [100, 100]
  assert sorted(map(tuple, batch["ids"][:, :2, 0].tolist())) == [(0, 2), (1, 3)]
  # an item with more responses than a row holds fills a row and the rest goes first fit
  items = [(np.full(10, 3), [np.full(29, 5)] * 4), (np.full(10, 4), [np.full(9, 6)])]
  batches = pack_prompt_responses(items, rows=1, **kw, share_rows=True)
  assert [int(b["group"].max()) for b in batches] == [1, 2]
  assert (batches[1]["ids"][0, :2] == [[0, 3], [1, 0]]).all()
  alone = pack_prompt_responses(items, rows=1, **kw, share_rows=False)
  assert [b["ids"][0, :3, 0].tolist() for b in alone] == [[0, 0, 0], [0, -1, -1], [1, -1, -1]]
