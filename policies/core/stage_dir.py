"""A pipeline stage's directory, and the record of what it was trained on.

``StageDir`` owns everything a stage writes under ``MODEL_DIR/<stage>/``: its
Orbax checkpoints, ``metrics.jsonl`` and TensorBoard events, ``eval.json``, and
the ``StageRecord`` that lets a re-run skip it or refuse to mix runs.

``stage.json`` holds the stage's *identity* (its data, model and
settings, everything but the number of steps) and the key of its last evaluation;
``eval.npz`` holds that evaluation's per-pair arrays. A re-run then:

* skips training and evaluation when the final checkpoint and the evaluation exist
  for the same identity, step and held-out data (it only restores the weights);
* resumes from the checkpoint when only more steps were asked for;
* stops with an error when the identity changed: resuming another run's
  checkpoint on different data or settings would silently mix the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence

import numpy as np

from policies.core.atomic import write_npz_atomic, write_text_atomic, writes_here
from policies.core.checkpoints import Checkpoints
from policies.core.metrics_writer import MetricsWriter, NullWriter


class StageMismatch(ValueError):
  """The stage directory holds a run with a different identity."""


def short_digest(value, length: int) -> str:
  """A stable name for a JSON-able value (settings), ``length`` hex digits."""
  text = json.dumps(value, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def pairs_digest(pairs: Sequence) -> str:
  """A digest of tokenized pairs (tokens, margins and soft labels, in order)."""
  h = hashlib.sha256()
  for p in pairs:
    for part in (p.prompt, p.chosen, p.rejected):
      a = np.asarray(part, np.int32)
      h.update(len(a).to_bytes(4, "little"))
      h.update(a.tobytes())
    h.update(np.float32(p.margin).tobytes())
    label = getattr(p, "label", 1.0)
    if label != 1.0:   # soft labels only: digests of hard-labelled pairs stay as they were
      h.update(b"label" + np.float32(label).tobytes())
  return f"{len(pairs)}:{h.hexdigest()[:16]}"


def params_digest(model) -> str:
  """A digest of a model's parameters (their paths, shapes, dtypes and values)."""
  from flax import nnx   # here, not at the top: the record's other users need no flax
  h = hashlib.sha256()
  for path, param in sorted(nnx.to_flat_state(nnx.state(model, nnx.Param)),
                            key=lambda kv: tuple(map(str, kv[0]))):
    a = np.asarray(param[...])
    h.update("/".join(map(str, path)).encode() + str((a.shape, a.dtype)).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


def model_identity(cfg) -> dict:
  """A model config without its compute-only options (same math, other speed or memory).
  ``matmul_dtype`` and ``attention_dtype`` change the math, but are left out while unset,
  so that records written before they existed still match."""
  return {k: v for k, v in dataclasses.asdict(cfg).items()
          if k not in ("remat", "remat_policy", "attention_block", "scan_layers")
          and not (k in ("matmul_dtype", "attention_dtype") and v is None)}


def _jsonable(value):
  return json.loads(json.dumps(value, sort_keys=True, default=repr))


class StageRecord:

  def __init__(self, stage_dir: str):
    self.path = self.file_in(stage_dir)
    self.eval_path = os.path.join(stage_dir, "eval.npz")
    self._data = json.load(open(self.path)) if os.path.exists(self.path) else {}

  @staticmethod
  def file_in(stage_dir: str) -> str:
    """The record's file in ``stage_dir``."""
    return os.path.join(stage_dir, "stage.json")

  @property
  def identity(self) -> Optional[dict]:
    """What the stage is (its data, model and settings), as ``check_identity`` recorded it."""
    return self._data.get("identity")

  @staticmethod
  def read_identity(stage_dir: str) -> Optional[dict]:
    """The identity recorded in ``stage_dir``, or ``None`` (no record, or one unreadable):
    for readers that look at a stage without taking part in its run."""
    try:
      return StageRecord(stage_dir).identity
    except (OSError, json.JSONDecodeError, AttributeError):
      return None

  def check_identity(self, identity: dict, added_later: Sequence[str] = ()) -> None:
    """Records ``identity`` on first use; raises ``StageMismatch`` if it changed. Keys in
    ``added_later`` that a record from before they existed lacks are not compared (what they
    were is unknown), so that such a stage can still be resumed and reused."""
    identity = _jsonable(identity)
    old = self.identity
    if old is None:
      self._data = {"identity": identity}
      self._write()
      return
    identity = {k: v for k, v in identity.items() if k in old or k not in added_later}
    if old != identity:
      changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
      details = ", ".join(f"{k}: {old.get(k)} -> {identity.get(k)}" for k in changed)[:400]
      raise StageMismatch(
          f"{os.path.dirname(self.path)} holds a run trained with different "
          f"{', '.join(changed)} ({details}). "
          "Resuming it would mix two runs: use a new MODEL_DIR, or move that directory away.")

  @property
  def result_key(self) -> Optional[dict]:
    """The key (step, held-out data; a West-of-N round's fingerprint) of the stored result."""
    return self._data.get("evaluated")

  def cached_metrics(self, key: dict) -> Optional[dict]:
    """The stored metrics if they were computed under ``key`` (step, held-out data)."""
    if self._data.get("evaluated") != _jsonable(key):
      return None
    return dict(self._data.get("metrics", {}))

  def save_metrics(self, key: dict, metrics: dict) -> None:
    self._data.update(evaluated=_jsonable(key), metrics=_jsonable(metrics))
    self._write()

  def cached_eval(self, key: dict, eval_cls) -> Optional[object]:
    """The stored evaluation (metrics and per-pair arrays) made under ``key``."""
    metrics = self.cached_metrics(key)
    if metrics is None or not os.path.exists(self.eval_path):
      return None
    with np.load(self.eval_path) as arrays:
      fields = {k: arrays[k] for k in arrays.files}
    return eval_cls(metrics=metrics, **fields)

  def save_eval(self, key: dict, evaluation) -> None:
    arrays = {f.name: np.asarray(getattr(evaluation, f.name))
              for f in dataclasses.fields(evaluation) if f.name != "metrics"}
    write_npz_atomic(self.eval_path, **arrays)
    self.save_metrics(key, evaluation.metrics)

  def _write(self):
    write_text_atomic(self.path, json.dumps(self._data, indent=2, sort_keys=True))


class StageDir:
  """The directory of one stage: its record, checkpoints, metrics and evaluation files."""

  def __init__(self, path: str):
    os.makedirs(path, exist_ok=True)
    self.path = path
    self.record = StageRecord(path)

  def checkpoints(self, save_every: int, subdir: str = "checkpoints",
                  model_only: bool = False, keep: int = 2, read_only: bool = False
                  ) -> Checkpoints:
    return Checkpoints(os.path.join(self.path, subdir), save_every=save_every,
                       model_only=model_only, keep=keep, read_only=read_only)

  def metrics_writer(self) -> MetricsWriter | NullWriter:
    return MetricsWriter(self.path) if writes_here() else NullWriter()

  def write_eval_json(self, metrics: dict) -> None:
    write_text_atomic(os.path.join(self.path, "eval.json"), json.dumps(metrics, indent=2))

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  def reuse(self, key: dict, *, checkpoints: Optional[Checkpoints] = None, model=None,
            finished: bool = True, eval_cls=None, files: Sequence[str] = ()):
    """The stage's stored result if it ``finished`` under ``key`` and its ``files`` exist:
    its evaluation (``eval_cls``) or metrics, with ``model``'s weights restored from the last
    of ``checkpoints`` (then closed: nothing trains). ``None``: the stage has to run (or
    resume), and ``checkpoints`` stay open for it.

    This and ``save_result`` are how every stage and West-of-N round resumes: identity
    first (``record.check_identity``), then reuse, else train and save.
    """
    if not finished:
      return None
    cached = (self.record.cached_eval(key, eval_cls) if eval_cls is not None
              else self.record.cached_metrics(key))
    if cached is None or not all(os.path.exists(self.file(f)) for f in files):
      return None
    if checkpoints is not None:
      if model is not None:
        checkpoints.restore(model)
      checkpoints.close()
    return cached

  def save_result(self, key: dict, metrics: dict, evaluation=None) -> None:
    """Records the stage's result under ``key`` (what ``reuse`` returns next time):
    ``eval.json`` for people, the record (and ``evaluation``'s per-pair arrays) for re-runs."""
    self.write_eval_json(metrics)
    if evaluation is not None:
      evaluation.metrics = metrics
      self.record.save_eval(key, evaluation)
    else:
      self.record.save_metrics(key, metrics)
