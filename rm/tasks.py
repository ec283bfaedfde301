"""seqio tasks and vocabularies for preference data.

seqio brings TensorFlow; it stays in this module. TensorFlow is kept off every
GPU (as t5x does) so it never takes accelerator memory from JAX, and its log
noise is silenced before it is imported. Where seqio cannot be imported (an
accelerator image without TensorFlow), ``rm.plain_vocabulary`` stands in: the same
token ids, tokenized in Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Mapping, Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_native_stderr():
  """TensorFlow's C++ runtime logs to fd 2 before absl can be configured."""
  saved = os.dup(2)
  try:
    with open(os.devnull, "wb") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


try:
  with _quiet_native_stderr():
    import seqio  # noqa: E402
    import tensorflow as tf  # noqa: E402

    tf.config.set_visible_devices([], "GPU")
    tf.get_logger().setLevel("ERROR")
  Vocabulary = seqio.Vocabulary
except ImportError as e:
  seqio = tf = None
  from rm.plain_vocabulary import InMemoryTask, Vocabulary  # noqa: E402
  logging.getLogger(__name__).info("seqio is not importable (%s): tokenizing in Python", e)

from rm.data import PreferencePair  # noqa: E402

TEXT_FIELDS = ("prompt", "chosen", "rejected")


def byte_vocabulary() -> Vocabulary:
  """UTF-8 bytes + 3 specials (pad 0, eos 1, unk 2); needs no model file."""
  if seqio is None:
    from rm.plain_vocabulary import ByteVocabulary
    return ByteVocabulary()
  return seqio.ByteVocabulary()


def sentencepiece_vocabulary(model_file: str) -> Vocabulary:
  if not os.path.exists(model_file):
    raise FileNotFoundError(f"SentencePiece model file {model_file!r} does not exist")
  if seqio is None:
    raise ImportError("SentencePiece vocabularies need seqio (pip install seqio)")
  return seqio.SentencePieceVocabulary(model_file)


def field_vocabulary(vocabulary: Vocabulary, field: str) -> Vocabulary:
  """The vocabulary that encodes ``field``: chat vocabularies format prompts and responses
  differently (see ``rm.bpe_vocabulary``); others encode every field alike."""
  role = "prompt" if field == "prompt" else "response"
  return getattr(vocabulary, f"{role}_vocabulary", vocabulary)


@dataclasses.dataclass(frozen=True)
class TokenizedPair:
  prompt: np.ndarray
  chosen: np.ndarray
  rejected: np.ndarray
  margin: float = 0.0
  label: float = 1.0   # P(chosen ≻ rejected): 1 for a human pair, soft for a distilled one


def _pairs_to_columns(pairs: Sequence[PreferencePair]) -> dict:
  return {
      "prompt": [p.prompt for p in pairs],
      "chosen": [p.chosen for p in pairs],
      "rejected": [p.rejected for p in pairs],
      "margin": np.asarray([p.margin for p in pairs], np.float32),
      "label": np.asarray([p.label for p in pairs], np.float32),
  }


def register_preference_task(name: str, pairs_by_split: Mapping[str, Sequence[PreferencePair]],
                             vocabulary: Vocabulary):
  """Registers (or re-registers) a seqio Task over in-memory validated pairs.

  The pairs come from ``rm.data`` readers, which do the validation with
  file/line errors; seqio does the tokenization and is what other seqio-based
  tooling (mixtures, caching) sees.
  """
  columns = {split: _pairs_to_columns(pairs) for split, pairs in pairs_by_split.items()}
  if seqio is None:
    return InMemoryTask(name, columns, {f: field_vocabulary(vocabulary, f) for f in TEXT_FIELDS})

  def dataset_fn(split: str, shuffle_files: bool, seed=None):
    del shuffle_files, seed  # order is ours to control; shuffling happens at packing
    return tf.data.Dataset.from_tensor_slices(columns[split])

  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=list(columns)),
      preprocessors=[seqio.preprocessors.tokenize],
      output_features={f: seqio.Feature(field_vocabulary(vocabulary, f), add_eos=False,
                                        dtype=tf.int32)
                       for f in TEXT_FIELDS},
  )


def tokenized_pairs(task, split: str) -> list[TokenizedPair]:
  """All examples of a split (of a seqio Task, its registered name, or the stand-in's
  task), tokenized, in file order."""
  if seqio is None:
    if isinstance(task, str):
      raise ValueError(f"without seqio there is no task registry: pass the task that "
                       f"register_preference_task returned, not its name {task!r}")
    examples = task.encoded(split)
  else:
    if isinstance(task, str):
      task = seqio.get_mixture_or_task(task)
    examples = task.get_dataset(sequence_length=None, split=split, shuffle=False,
                                use_cached=False).as_numpy_iterator()
  return [TokenizedPair(ex["prompt"].astype(np.int32), ex["chosen"].astype(np.int32),
                        ex["rejected"].astype(np.int32), float(ex["margin"]),
                        float(ex["label"]))
          for ex in examples]
