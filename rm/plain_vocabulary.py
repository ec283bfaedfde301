"""Vocabularies and tasks for images without TensorFlow (where seqio cannot be imported).

GPU and TPU containers often ship JAX without TensorFlow, and TensorFlow is too large to
add there. ``rm.tasks`` falls back to this module when ``import seqio`` fails: the same
vocabulary interface (``encode``, ``decode`` up to the first EOS, ``vocab_size``,
``eos_id``/``pad_id``/``unk_id``) and in-memory tasks that tokenize in Python, giving the
token ids seqio's ``tokenize`` preprocessor gives (``tests/test_plain_vocabulary.py``).
What needs TensorFlow (``encode_tf``, seqio's registry, caching and mixtures) is absent.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np


class Vocabulary(abc.ABC):
  """seqio.Vocabulary's Python half, with its rules: ``encode`` adds no EOS; ``decode``
  maps ids past the base vocabulary to UNK and stops after the first EOS."""

  def __init__(self, extra_ids: int = 0):
    self._extra_ids = extra_ids or 0

  @property
  @abc.abstractmethod
  def _base_vocab_size(self) -> int:
    ...

  @property
  @abc.abstractmethod
  def eos_id(self) -> Optional[int]:
    ...

  @property
  @abc.abstractmethod
  def unk_id(self) -> Optional[int]:
    ...

  @property
  def pad_id(self) -> int:
    return 0

  @property
  def extra_ids(self) -> int:
    return self._extra_ids

  @property
  def vocab_size(self) -> int:
    return self._base_vocab_size + self.extra_ids

  @abc.abstractmethod
  def _encode(self, s: str) -> Sequence[int]:
    ...

  @abc.abstractmethod
  def _decode(self, ids: Sequence[int]) -> str:
    ...

  def encode(self, s: str) -> Sequence[int]:
    return self._encode(s)

  def decode(self, ids: Iterable[int]) -> str:
    clean = [int(i) for i in ids]
    if self.unk_id is not None:
      clean = [self.unk_id if i >= self._base_vocab_size else i for i in clean]
    if self.eos_id is not None and self.eos_id in clean:
      clean = clean[:clean.index(self.eos_id) + 1]
    return self._decode(clean)


class ByteVocabulary(Vocabulary):
  """seqio.ByteVocabulary: UTF-8 bytes shifted past pad 0, EOS 1 and UNK 2."""

  _SPECIALS = 3

  @property
  def _base_vocab_size(self) -> int:
    return self._SPECIALS + 256

  eos_id = property(lambda self: 1)
  unk_id = property(lambda self: 2)
  bos_id = property(lambda self: None)

  def _encode(self, s) -> list[int]:
    s = s.decode() if isinstance(s, bytes) else s
    return [b + self._SPECIALS for b in s.encode("utf-8")]

  def _decode(self, ids) -> str:
    data = bytes(i - self._SPECIALS for i in ids if self._SPECIALS <= i < self._SPECIALS + 256)
    return data.decode("utf-8", errors="ignore")

  def __eq__(self, other):
    return isinstance(other, ByteVocabulary) and other.extra_ids == self.extra_ids

  def __hash__(self):
    return hash(("bytes", self.extra_ids))


@dataclasses.dataclass(frozen=True)
class InMemoryTask:
  """What ``rm.tasks.register_preference_task`` returns without seqio: the columns of each
  split and the vocabulary of each field."""

  name: str
  columns: Mapping[str, Mapping[str, Sequence]]
  vocabularies: Mapping[str, Vocabulary]

  def encoded(self, split: str) -> Iterable[dict]:
    if split not in self.columns:
      raise ValueError(f"task {self.name!r} has no split {split!r}; it has "
                       f"{sorted(self.columns)}")
    cols = self.columns[split]
    for i in range(len(cols["margin"])):
      ex = {f: np.asarray(v.encode(cols[f][i]), np.int32) for f, v in self.vocabularies.items()}
      ex["margin"], ex["label"] = cols["margin"][i], cols["label"][i]
      yield ex
