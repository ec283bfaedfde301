"""Texts sampled from a policy and scored by a reward model, as every stage that samples or
scores them uses them (West-of-N, ReST, the commands, best-of-N): policy samples written
once and reused, prompts and responses encoded for the scorer, ragged per-prompt values as
padded arrays."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Optional, Sequence

import numpy as np

from policies.core.atomic import complete_lines, write_jsonl_atomic, writes_here
from policies.policy import (FileBackedPolicy, SampleFileError, parse_sample_row,
                             read_sample_line, sample_file_rows)
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
  ``FileBackedPolicy``'s format) for the next caller that needs the same samples.

  A policy that samples batch by batch (``sample_batches``) logs each batch to
  ``samples_path + '.partial'`` as it finishes; a run killed part way resumes from there and
  ends with the samples an uninterrupted run would have written."""
  if samples_path and os.path.exists(samples_path):
    log.info("reusing the policy samples in %s", samples_path)
    return FileBackedPolicy(samples_path).sample(list(prompts), num_samples)
  if samples_path and hasattr(policy, "sample_batches"):
    return _sample_resumably(policy, list(prompts), num_samples, seed=seed,
                             samples_path=samples_path, batch_size=batch_size)
  samples = policy.sample(list(prompts), num_samples, seed=seed, batch_size=batch_size)
  if samples_path:
    os.makedirs(os.path.dirname(samples_path), exist_ok=True)
    write_jsonl_atomic(samples_path, sample_file_rows(prompts, samples))
  return samples


def _sampled_before(partial: str, prompts: Sequence[str], num_samples: int) -> dict:
  """``{prompt index: (file row, samples)}`` that a killed run logged in ``partial``. A line
  for another prompt or sample count is an error: its samples are not this run's."""
  done = {}
  for lineno, raw in enumerate(complete_lines(partial), start=1):
    where = f"{partial}:{lineno}"
    row = read_sample_line(raw, where)
    prompt, samples = parse_sample_row(row, where)
    index = row.get("index")
    if (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(prompts)
        or prompts[index] != prompt):
      raise SampleFileError(f"{where}: index: {index!r} is not the index of this prompt among "
                            f"the {len(prompts)} this run samples; delete {partial} to start "
                            "again")
    if len(samples) != num_samples:
      raise SampleFileError(f"{where}: samples: {len(samples)}, not the {num_samples} this run "
                            f"samples; delete {partial} to start again")
    done[index] = ({"prompt": prompt, "samples": row["samples"]}, samples)
  return done


def _sample_resumably(policy, prompts: list, num_samples: int, *, seed: int, samples_path: str,
                      batch_size: int) -> list:
  partial = f"{samples_path}.partial"
  os.makedirs(os.path.dirname(samples_path), exist_ok=True)
  done = _sampled_before(partial, prompts, num_samples)
  if done:
    log.info("resuming: %d of %d prompts were sampled in %s", len(done), len(prompts), partial)
  rows = {i: row for i, (row, _) in done.items()}
  samples = {i: sampled for i, (_, sampled) in done.items()}
  # A line at every tenth of the prompts: sampling is the longest wait with no other output.
  started, resumed_at, next_report = time.monotonic(), len(done), 1
  writer = open(partial, "a", encoding="utf-8") if writes_here() else contextlib.nullcontext()
  with writer as log_file:
    for batch, batch_samples in policy.sample_batches(prompts, num_samples, seed=seed,
                                                      batch_size=batch_size,
                                                      skip=frozenset(done)):
      batch_rows = sample_file_rows([prompts[i] for i in batch], batch_samples)
      for i, row, row_samples in zip(batch, batch_rows, batch_samples):
        rows[i], samples[i] = row, row_samples
        if log_file is not None:
          log_file.write(json.dumps({"index": i, **row}, ensure_ascii=False) + "\n")
      if log_file is not None:
        log_file.flush()
        os.fsync(log_file.fileno())
      if len(rows) >= next_report * len(prompts) / 10:
        next_report = int(10 * len(rows) / len(prompts)) + 1
        rate = (len(rows) - resumed_at) / max(time.monotonic() - started, 1e-9)
        log.info("sampled %d of %d prompts x %d in %.0f s (%.0f s to go)", len(rows),
                 len(prompts), num_samples, time.monotonic() - started,
                 (len(prompts) - len(rows)) / max(rate, 1e-9))
  write_jsonl_atomic(samples_path, [rows[i] for i in range(len(prompts))])
  if writes_here():
    os.remove(partial)
  return [samples[i] for i in range(len(prompts))]


def pad_ragged(rows: Sequence[Sequence[float]], fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """[B, N] values and validity from ragged per-prompt lists."""
  n = max((len(r) for r in rows), default=0)
  values = np.full((len(rows), max(n, 1)), fill, np.float32)
  valid = np.zeros((len(rows), max(n, 1)), bool)
  for i, r in enumerate(rows):
    values[i, :len(r)] = r
    valid[i, :len(r)] = True
  return values, valid
