"""Texts sampled from a policy and scored by a reward model, as every stage that samples or
scores them uses them (West-of-N, ReST, the commands, best-of-N): policy samples written
once and reused, prompts and responses encoded for the scorer, ragged per-prompt values as
padded arrays."""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from policies.core.atomic import write_jsonl_atomic
from policies.policy import FileBackedPolicy, sample_file_rows
from rm import tasks
from rm.response_rewards import score_responses

log = logging.getLogger("westofn")


def scoring_items(vocabulary, prompts: Sequence[str], texts: Sequence[Sequence[str]]) -> list:
  """(prompt ids, [response ids]) per prompt, as ``score_responses`` takes them. A prompt
  without responses gets one placeholder so that every row keeps its index."""
  prompt_vocab = tasks.field_vocabulary(vocabulary, "prompt")
  response_vocab = tasks.field_vocabulary(vocabulary, "chosen")
  return [(np.asarray(prompt_vocab.encode(p), np.int32),
           [np.asarray(response_vocab.encode(t), np.int32) for t in ts]
           or [np.zeros(1, np.int32)])
          for p, ts in zip(prompts, texts)]


def score_texts(reward_model, vocabulary, prompts: Sequence[str],
                texts: Sequence[Sequence[str]], **score_kw) -> list[np.ndarray]:
  """``rewards[i][j]``: the RM's reward of text response j to prompt i (each prompt once)."""
  scores = score_responses(reward_model, scoring_items(vocabulary, prompts, texts),
                           eos_id=vocabulary.eos_id, pad_id=vocabulary.pad_id, **score_kw)
  return [r[:len(t)] for r, t in zip(scores, texts)]


def reuse_or_sample(policy, prompts: Sequence[str], num_samples: int, *, seed: int,
                    samples_path: Optional[str], batch_size: int = 8) -> list:
  """The samples in ``samples_path`` if it exists; else ``policy``'s, written there (in
  ``FileBackedPolicy``'s format) for the next caller that needs the same samples."""
  if samples_path and os.path.exists(samples_path):
    log.info("reusing the policy samples in %s", samples_path)
    return FileBackedPolicy(samples_path).sample(list(prompts), num_samples)
  samples = policy.sample(list(prompts), num_samples, seed=seed, batch_size=batch_size)
  if samples_path:
    os.makedirs(os.path.dirname(samples_path), exist_ok=True)
    write_jsonl_atomic(samples_path, sample_file_rows(prompts, samples))
  return samples


def pad_ragged(rows: Sequence[Sequence[float]], fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """[B, N] values and validity from ragged per-prompt lists."""
  n = max((len(r) for r in rows), default=0)
  values = np.full((len(rows), max(n, 1)), fill, np.float32)
  valid = np.zeros((len(rows), max(n, 1)), bool)
  for i, r in enumerate(rows):
    values[i, :len(r)] = r
    valid[i, :len(r)] = True
  return values, valid
