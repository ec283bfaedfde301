"""Packs preference pairs into fixed-shape rows that compute each prompt once.

A pair occupies ``[prompt | chosen | rejected]`` inside a row. Per token we keep:

* ``group``: which pair of the row it belongs to (1..P; 0 = padding),
* ``segment``: 0 prompt, 1 chosen, 2 rejected,
* ``positions``: rejected positions restart at the prompt length, so rejected
  sees exactly the positions it would see in its own sequence.

Attention (``pair_attention_mask``) allows a token to see earlier tokens of its
own pair that are prompt or of its own segment. A pair's rewards are read at
``ends[r, p] = (index of last chosen token, index of last rejected token)``:
explicit indices, never a search for a pad id.

Rows hold as many pairs as fit (first fit), so there is little padding; shapes
``[rows, row_len]`` and ``[rows, pairs_per_row]`` are fixed so jit compiles once.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np

from policies.core.train_loop import stream_from_step
from policies.transformer import PROMPT, segment_mask as pair_attention_mask  # noqa: F401
from rm.tasks import TokenizedPair

CHOSEN, REJECTED = 1, 2


@dataclasses.dataclass
class PackedPairs:
  """One batch: ``R`` rows of ``L`` tokens holding up to ``P`` pairs a row."""

  tokens: np.ndarray      # [R, L] int32
  positions: np.ndarray   # [R, L] int32
  group: np.ndarray       # [R, L] int32
  segment: np.ndarray     # [R, L] int32
  ends: np.ndarray        # [R, P, 2] int32
  margin: np.ndarray      # [R, P] float32
  label: np.ndarray       # [R, P] float32, P(chosen ≻ rejected): 1 for a human pair
  weight: np.ndarray      # [R, P] float32, 1 for a real pair, 0 for an empty slot
  index: np.ndarray       # [R, P] int32, position of the pair in the packed sequence; -1 empty

  @property
  def num_pairs(self) -> int:
    return int(self.weight.sum())

  def arrays(self) -> dict:
    return dataclasses.asdict(self)


def truncate_pair(prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, *, row_len: int,
                  max_response_len: int, eos_id: int, min_prompt_len: int = 1):
  """Fits a pair into ``row_len`` tokens; returns (prompt, chosen, rejected).

  Each response keeps its beginning and always ends in EOS, the token whose
  hidden state the reward head reads. The prompt loses its *beginning*
  (left-truncation) so the turn being answered survives.
  """
  budget = row_len - min_prompt_len
  resp_cap = min(max_response_len, budget // 2)
  if resp_cap < 2:
    raise ValueError(f"row_len={row_len} leaves no room for two responses")
  c = np.append(chosen[:resp_cap - 1], eos_id).astype(np.int32)
  r = np.append(rejected[:resp_cap - 1], eos_id).astype(np.int32)
  room = row_len - len(c) - len(r)
  p = prompt[max(0, len(prompt) - room):].astype(np.int32)
  return p, c, r


class _BatchBuilder:

  def __init__(self, rows: int, row_len: int, pairs_per_row: int, pad_id: int):
    self.rows, self.row_len, self.ppr = rows, row_len, pairs_per_row
    self.tokens = np.full((rows, row_len), pad_id, np.int32)
    self.positions = np.zeros((rows, row_len), np.int32)
    self.group = np.zeros((rows, row_len), np.int32)
    self.segment = np.zeros((rows, row_len), np.int32)
    self.ends = np.zeros((rows, pairs_per_row, 2), np.int32)
    self.margin = np.zeros((rows, pairs_per_row), np.float32)
    self.label = np.ones((rows, pairs_per_row), np.float32)
    self.weight = np.zeros((rows, pairs_per_row), np.float32)
    self.index = np.full((rows, pairs_per_row), -1, np.int32)
    self.fill = np.zeros(rows, np.int64)
    self.count = np.zeros(rows, np.int64)

  def try_add(self, p, c, r, margin, label, index) -> bool:
    n = len(p) + len(c) + len(r)
    for row in range(self.rows):
      if self.count[row] < self.ppr and self.fill[row] + n <= self.row_len:
        self._place(row, p, c, r, margin, label, index)
        return True
    return False

  def _place(self, row, p, c, r, margin, label, index):
    start, slot = int(self.fill[row]), int(self.count[row])
    seq = np.concatenate([p, c, r])
    sl = slice(start, start + len(seq))
    self.tokens[row, sl] = seq
    lp, lc, lr = len(p), len(c), len(r)
    self.positions[row, sl] = np.concatenate([np.arange(lp + lc), lp + np.arange(lr)])
    self.segment[row, sl] = np.repeat([PROMPT, CHOSEN, REJECTED], [lp, lc, lr])
    self.group[row, sl] = slot + 1
    self.ends[row, slot] = (start + lp + lc - 1, start + lp + lc + lr - 1)
    self.margin[row, slot] = margin
    self.label[row, slot] = label
    self.weight[row, slot] = 1.0
    self.index[row, slot] = index
    self.fill[row] += len(seq)
    self.count[row] += 1

  @property
  def empty(self) -> bool:
    return not self.count.any()

  def build(self) -> PackedPairs:
    return PackedPairs(self.tokens, self.positions, self.group, self.segment, self.ends,
                       self.margin, self.label, self.weight, self.index)


def pack_pairs(pairs: Sequence[TokenizedPair], *, rows: int, row_len: int, pairs_per_row: int,
               max_response_len: int, eos_id: int, pad_id: int = 0,
               indices: Optional[Sequence[int]] = None) -> list[PackedPairs]:
  """Packs pairs, in order, into batches of fixed shape (first fit within a batch).

  ``indices`` (default 0..n-1) is what each pair's slot records in ``index``.
  """
  if indices is None:
    indices = range(len(pairs))
  batches, builder = [], _BatchBuilder(rows, row_len, pairs_per_row, pad_id)
  for i, pair in zip(indices, pairs):
    p, c, r = truncate_pair(pair.prompt, pair.chosen, pair.rejected, row_len=row_len,
                            max_response_len=max_response_len, eos_id=eos_id)
    if not builder.try_add(p, c, r, pair.margin, pair.label, i):
      batches.append(builder.build())
      builder = _BatchBuilder(rows, row_len, pairs_per_row, pad_id)
      if not builder.try_add(p, c, r, pair.margin, pair.label, i):
        raise AssertionError("a truncated pair must fit an empty row")
  if not builder.empty:
    batches.append(builder.build())
  return batches


@dataclasses.dataclass
class PairBatches:
  """A deterministic, resumable stream of packed training batches.

  Epoch ``e`` shuffles the pairs with ``seed + e`` and packs them; the batch at
  a global step is a pure function of (pairs, seed, step), so a run restored at
  step ``s`` sees exactly the batches an uninterrupted run would.
  """

  pairs: Sequence[TokenizedPair]
  rows: int
  row_len: int
  pairs_per_row: int
  max_response_len: int
  eos_id: int
  seed: int = 0
  shuffle: bool = True
  pad_id: int = 0

  def __post_init__(self):
    if not self.pairs:
      raise ValueError("PairBatches needs at least one pair")
    self._cache: dict[int, list[PackedPairs]] = {}

  def epoch(self, e: int) -> list[PackedPairs]:
    if e not in self._cache:
      order = np.arange(len(self.pairs))
      if self.shuffle:
        order = np.random.default_rng(self.seed + e).permutation(len(self.pairs))
      self._cache = {e: pack_pairs([self.pairs[i] for i in order], rows=self.rows,
                                   row_len=self.row_len, pairs_per_row=self.pairs_per_row,
                                   max_response_len=self.max_response_len, eos_id=self.eos_id,
                                   pad_id=self.pad_id, indices=order)}
    return self._cache[e]

  def __call__(self, start_step: int = 0) -> Iterator[PackedPairs]:
    """Infinite stream of batches beginning at global step ``start_step``."""
    return stream_from_step(self.epoch, start_step)

  def one_pass(self, limit: Optional[int] = None) -> list[PackedPairs]:
    """The batches of epoch 0 (unshuffled when ``shuffle=False``): for evaluation."""
    batches = self.epoch(0)
    return batches if limit is None else batches[:limit]
