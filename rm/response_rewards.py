"""Pointwise rewards for many responses to one prompt, the prompt computed once.

A row holds ``[prompt | r1 | r2 | ... | rk]``: response j is segment j, its
positions restart after the prompt, and it sees only the prompt and itself
(``segment_mask``). Its reward is read at its last token (EOS). This is how
West-of-N scores the N samples of each prompt without running the prompt N times.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.transformer import segment_mask


def pack_prompt_responses(items: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], *, rows: int,
                          row_len: int, max_response_len: int, max_per_row: int, eos_id: int,
                          pad_id: int = 0, share_rows: bool = False) -> list[dict]:
  """Batches of rows; ``ids[r, j] = (item, response)`` index of each read slot (-1 empty).

  ``share_rows=True`` lets a row hold several items, each ``[prompt | responses]`` block
  its own group (attention stays inside it, positions restart): a server's short requests
  then fill rows instead of padding them. Off, each row holds one item (the rows the RM
  was trained and evaluated on); the rewards are the same either way.
  """
  batches, cur = [], None
  r = fill = slot = group = 0   # the current row, its next free position, slot and group

  def new_batch():
    return dict(tokens=np.full((rows, row_len), pad_id, np.int32),
                positions=np.zeros((rows, row_len), np.int32),
                group=np.zeros((rows, row_len), np.int32),
                segment=np.zeros((rows, row_len), np.int32),
                ends=np.zeros((rows, max_per_row, 1), np.int32),
                ids=np.full((rows, max_per_row, 2), -1, np.int32))

  def next_row():
    nonlocal cur, r, fill, slot, group
    if cur is None or r + 1 == rows:
      if cur is not None:
        batches.append(cur)
      cur, r = new_batch(), 0
    else:
      r += 1
    fill = slot = group = 0

  if max_response_len >= row_len:
    # a response that fills the row leaves no prompt token, and one longer never fits
    raise ValueError(f"max_response_len={max_response_len} must be below row_len={row_len}")
  for i, (prompt, responses) in enumerate(items):
    resps = [np.append(x[:max_response_len - 1], eos_id).astype(np.int32) for x in responses]
    longest = max(len(x) for x in resps)
    prompt = prompt[max(0, len(prompt) - (row_len - longest)):].astype(np.int32)
    lp, j = len(prompt), 0
    while j < len(resps):
      # an empty row always holds the prompt and any one response (the prompt was cut so)
      fits = cur is not None and slot < max_per_row and fill + lp + len(resps[j]) <= row_len
      if not fits or (fill > 0 and not share_rows):
        next_row()
      group += 1
      cur["tokens"][r, fill:fill + lp] = prompt
      cur["positions"][r, fill:fill + lp] = np.arange(lp)
      cur["group"][r, fill:fill + lp] = group
      fill += lp
      while j < len(resps) and slot < max_per_row and fill + len(resps[j]) <= row_len:
        n = len(resps[j])
        sl = slice(fill, fill + n)
        cur["tokens"][r, sl] = resps[j]
        cur["positions"][r, sl] = lp + np.arange(n)
        cur["group"][r, sl] = group
        cur["segment"][r, sl] = slot + 1
        cur["ends"][r, slot, 0] = fill + n - 1
        cur["ids"][r, slot] = (i, j)
        fill += n
        slot += 1
        j += 1
  if cur is not None:
    batches.append(cur)
  return batches


@nnx.jit
def _rewards(model, tokens, positions, group, segment, ends):
  return model.rewards_at(tokens, positions, segment_mask(group, segment), ends)[..., 0]


def score_responses(model, items: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], *,
                    rows: int = 8, row_len: int = 256, max_response_len: int = 64,
                    max_per_row: int = 16, eos_id: int, pad_id: int = 0,
                    share_rows: bool = False) -> list[np.ndarray]:
  """``rewards[i][j]``: the reward model's score of response j to prompt i."""
  out = [np.zeros(len(resps), np.float32) for _, resps in items]
  for b in pack_prompt_responses(items, rows=rows, row_len=row_len,
                                 max_response_len=max_response_len, max_per_row=max_per_row,
                                 eos_id=eos_id, pad_id=pad_id, share_rows=share_rows):
    rewards = np.asarray(_rewards(model, *(jnp.asarray(b[k]) for k in
                                           ("tokens", "positions", "group", "segment", "ends"))))
    for (r, s) in zip(*np.nonzero(b["ids"][..., 0] >= 0)):
      i, j = b["ids"][r, s]
      out[i][j] = rewards[r, s]
  return out
