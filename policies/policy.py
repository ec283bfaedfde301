"""Policies as West-of-N sees them: N responses per prompt, each with its log-likelihood.

* ``Policy``: our decoder LM plus a vocabulary; samples with ``sampling.py``.
* ``FileBackedPolicy``: samples made by another engine (e.g. vLLM), read from
  ``{"prompt": str, "samples": [{"text": str, "token_logprobs": [float, ...]}]}``
  jsonl and validated like the preference files (errors name file, line, field).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from typing import Iterator, Optional, Sequence

import numpy as np

from policies.core import buckets
from policies.sampling import sample_tokens, score_tokens
from policies.transformer import Decoder


@dataclasses.dataclass(frozen=True)
class Sample:
  text: str
  token_ids: tuple                 # empty for file-backed samples
  token_logprobs: np.ndarray       # log p_policy of each response token (temperature 1)
  stopped_at_eos: bool

  @property
  def length(self) -> int:
    return len(self.token_logprobs)

  @property
  def sum_logprob(self) -> float:
    return float(np.sum(self.token_logprobs))

  @property
  def mean_logprob(self) -> float:
    return float(np.mean(self.token_logprobs)) if self.length else float("-inf")


@dataclasses.dataclass
class Policy:
  model: Decoder
  vocabulary: object
  max_new_tokens: int = 64
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_prompt_len: int = 1024

  def _side(self, role: str):
    # Chat vocabularies (rm.bpe_vocabulary) encode prompts as chat turns; others as text.
    return getattr(self.vocabulary, f"{role}_vocabulary", self.vocabulary)

  def _encode_prompt(self, prompt: str) -> np.ndarray:
    ids = np.asarray(self._side("prompt").encode(prompt), np.int32)
    return ids[-self.max_prompt_len:]

  def sample(self, prompts: Sequence[str], num_samples: int, *, seed: int = 0,
             batch_size: int = 8) -> list[list[Sample]]:
    """``num_samples`` responses for each prompt (text without the EOS token).

    Prompts go in batches of ``batch_size``; a smaller batch (the last one) is padded with
    copies of its last prompt to a power of two (``buckets.bucket``), so a run compiles one
    sampler per prompt width and batch bucket, not one per leftover count.
    """
    out: list = [None] * len(prompts)
    for batch, rows in self.sample_batches(prompts, num_samples, seed=seed,
                                           batch_size=batch_size):
      for i, row in zip(batch, rows):
        out[i] = row
    return out

  def sample_batches(self, prompts: Sequence[str], num_samples: int, *, seed: int = 0,
                     batch_size: int = 8, skip: frozenset = frozenset()
                     ) -> Iterator[tuple[list[int], list[list[Sample]]]]:
    """``sample``'s batches as they finish: ``(prompt indices, their samples)``.

    A batch's prompts and seed depend on ``prompts`` alone, so a caller that kept the
    batches of a killed run passes their prompt indices as ``skip`` and gets the samples an
    uninterrupted run would have drawn for the rest; a batch is skipped only whole.
    """
    encoded = [self._encode_prompt(p) for p in prompts]
    # Batches of similar length: less left padding and fewer compiled prompt widths.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    eos = self.vocabulary.eos_id
    for start in range(0, len(prompts), batch_size):
      batch = order[start:start + batch_size]
      if all(i in skip for i in batch):
        continue
      chunk = [encoded[i] for i in batch]
      chunk += chunk[-1:] * (buckets.bucket(len(chunk), 1, cap=batch_size) - len(chunk))
      res = sample_tokens(self.model, chunk, num_samples=num_samples,
                          max_new_tokens=self.max_new_tokens, eos_id=eos,
                          pad_id=self.vocabulary.pad_id, temperature=self.temperature,
                          top_k=self.top_k, top_p=self.top_p, seed=seed + start)
      rows = []
      for b in range(len(batch)):
        row = []
        for n in range(num_samples):
          ids = res.response(b, n)
          text_ids = ids[:-1] if res.stopped[b, n] else ids
          row.append(Sample(self.vocabulary.decode(text_ids.tolist()), tuple(ids.tolist()),
                            res.logprobs[b, n, :len(ids)].copy(), bool(res.stopped[b, n])))
        rows.append(row)
      yield batch, rows

  def score(self, prompts: Sequence[str], responses: Sequence[str], *,
            add_eos: bool = True) -> list[np.ndarray]:
    """Teacher-forced per-token log-likelihoods of text responses (EOS included by default)."""
    eos = [self.vocabulary.eos_id] if add_eos else []
    resp = [np.asarray(list(self._side("response").encode(r)) + eos, np.int32)
            for r in responses]
    return score_tokens(self.model, [self._encode_prompt(p) for p in prompts], resp,
                        pad_id=self.vocabulary.pad_id)

  def score_samples(self, prompts: Sequence[str],
                    samples: Sequence[Sequence[Sample]]) -> list[list[np.ndarray]]:
    """This model's per-token log-likelihoods of another policy's sampled tokens (the
    same token ids, EOS included where the sample stopped): the reference side of a KL."""
    flat_prompts, flat_tokens = [], []
    for p, row in zip(prompts, samples, strict=True):
      for s in row:
        if not s.token_ids:
          raise ValueError("samples read from a file carry no token ids to score")
        flat_prompts.append(self._encode_prompt(p))
        flat_tokens.append(np.asarray(s.token_ids, np.int32))
    scored = iter(score_tokens(self.model, flat_prompts, flat_tokens,
                               pad_id=self.vocabulary.pad_id))
    return [[next(scored) for _ in row] for row in samples]


def sample_file_rows(prompts: Sequence[str], samples: Sequence[Sequence[Sample]]) -> list[dict]:
  """Samples as the jsonl rows ``FileBackedPolicy`` reads (one row per prompt)."""
  return [{"prompt": p, "samples": [{"text": s.text, "token_logprobs": s.token_logprobs.tolist(),
                                     "stopped": s.stopped_at_eos} for s in row]}
          for p, row in zip(prompts, samples)]


class SampleFileError(ValueError):
  pass


def read_sample_line(raw: bytes, where: str) -> dict:
  """One line of a samples file as a JSON object; ``where`` (file:line) names it in errors."""
  try:
    row = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError:
    raise SampleFileError(f"{where}: <line>: is not valid UTF-8") from None
  except json.JSONDecodeError as e:
    raise SampleFileError(f"{where}: <line>: malformed JSON: {e.msg}") from None
  if not isinstance(row, dict):
    raise SampleFileError(f"{where}: <row>: must be a JSON object")
  return row


def parse_sample_row(row: dict, where: str) -> tuple[str, list[Sample]]:
  """A samples file's row as (prompt, samples), validated; errors name ``where`` and the field."""
  prompt = row.get("prompt")
  if not isinstance(prompt, str) or not prompt.strip():
    raise SampleFileError(f"{where}: prompt: missing or empty")
  samples = row.get("samples")
  if not isinstance(samples, list) or not samples:
    raise SampleFileError(f"{where}: samples: must be a non-empty list")
  out = []
  for i, s in enumerate(samples):
    field = f"samples[{i}]"
    if not isinstance(s, dict) or not isinstance(s.get("text"), str):
      raise SampleFileError(f"{where}: {field}.text: missing or not a string")
    lps = s.get("token_logprobs")
    if (not isinstance(lps, list) or not lps or
        not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and x <= 1e-6 for x in lps)):
      raise SampleFileError(f"{where}: {field}.token_logprobs: must be a non-empty list of "
                            "finite log-probabilities (<= 0)")
    out.append(Sample(s["text"], (), np.asarray(lps, np.float32), bool(s.get("stopped", True))))
  return prompt, out


class FileBackedPolicy:
  """Serves samples (and their log-likelihoods) read from a jsonl file."""

  def __init__(self, path: str):
    self.path = path
    self.samples: dict[str, list[Sample]] = {}
    opener = gzip.open if path.endswith(".gz") else open
    try:
      f = opener(path, "rb")
    except OSError as e:
      raise SampleFileError(f"{path}: cannot be opened: {e}") from None
    with f:
      for lineno, raw in enumerate(f, start=1):
        if raw.strip():
          where = f"{path}:{lineno}"
          prompt, samples = parse_sample_row(read_sample_line(raw, where), where)
          self.samples.setdefault(prompt, []).extend(samples)
    if not self.samples:
      raise SampleFileError(f"{path}: contains no samples")

  def sample(self, prompts: Sequence[str], num_samples: int, *, seed: int = 0,
             batch_size: Optional[int] = None) -> list[list[Sample]]:
    del seed, batch_size  # the file already fixed the samples
    out = []
    for p in prompts:
      if p not in self.samples:
        raise SampleFileError(f"{self.path}: has no samples for prompt {p[:80]!r}")
      have = self.samples[p]
      if len(have) < num_samples:
        raise SampleFileError(f"{self.path}: prompt {p[:80]!r} has {len(have)} samples, "
                              f"{num_samples} were asked for")
      out.append(have[:num_samples])
    return out
