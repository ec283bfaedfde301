"""Orbax checkpoints of (model, optimizer) plus JSON metadata, in ``<dir>/checkpoints``,
verified before they are read.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact. What Orbax does not guard against is
damage afterwards (a flipped or truncated file, a file gone): so once a step is written, the
digest of every one of its files is written last, atomically (``westofn_digest.json``), and a
step is used only if its files still match it. A damaged newest step is reported in one line
and skipped for the newest good one (training resumes from there), or, for the commands that
read a trained stage (``strict``), refused with that line. Steps older than the ``keep``
newest are deleted only once the newer one is written and verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Optional, Sequence

import jax
import orbax.checkpoint as ocp
from flax import nnx

from policies.core.atomic import write_text_atomic, writes_here

log = logging.getLogger("westofn")
DIGEST_FILE = "westofn_digest.json"


class DamagedCheckpoint(OSError):
  """A checkpoint step whose files no longer match the digest written with them."""


def _files(step_dir: str) -> list[str]:
  out = []
  for root, dirs, files in os.walk(step_dir):
    dirs.sort()
    out += [os.path.relpath(os.path.join(root, f), step_dir) for f in sorted(files)
            if f != DIGEST_FILE]
  return out


def _digest_of(path: str) -> str:
  h = hashlib.blake2b(digest_size=16)
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def step_digest(step_dir: str) -> dict:
  """``{relative path: [size, blake2b]}`` of every file of a step."""
  return {rel: [os.path.getsize(os.path.join(step_dir, rel)),
                _digest_of(os.path.join(step_dir, rel))] for rel in _files(step_dir)}


def damage(step_dir: str) -> Optional[str]:
  """What is wrong with a step's files against its digest (None: nothing, or a step written
  before digests existed, which Orbax's atomic rename still guarantees complete)."""
  path = os.path.join(step_dir, DIGEST_FILE)
  if not os.path.exists(path):
    return None
  try:
    want = json.load(open(path))["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"{DIGEST_FILE} is unreadable ({type(e).__name__})"
  have = set(_files(step_dir))
  for rel, (size, digest) in sorted(want.items()):
    full = os.path.join(step_dir, rel)
    if rel not in have:
      return f"{rel} is missing"
    actual = os.path.getsize(full)
    if actual != size:
      return f"{rel} has {actual} bytes, {size} were written"
    if _digest_of(full) != digest:
      return f"{rel} differs from what was written"
  extra = sorted(have - set(want))
  if extra:
    return f"{extra[0]} was not written with the step"
  return None


class Checkpoints:
  """Saves every ``save_every`` steps (and on demand); restores the newest good step.

  ``keep``: how many of the newest steps stay on disk (the selected best parameters have a
  ``Checkpoints`` of their own). ``model_only``: the checkpoints hold the model's parameters
  alone (e.g. the best parameters on validation data), saved and restored without an
  optimizer. ``read_only``: a reader beside the run that writes (the commands): it never
  touches the directory, in particular not the unfinished save of a run still training,
  which a writer's start-up clears away.
  """

  def __init__(self, directory: str, *, save_every: int = 500, keep: int = 2,
               model_only: bool = False, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"Checkpoints.keep must be >= 1, got {keep}")
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    self.keep = keep
    self.model_only = model_only
    self.read_only = read_only
    self._verdicts: dict = {}   # step -> damage (None: good), checked once per object
    self._logged: set = set()   # damaged steps already reported
    absl = logging.getLogger("absl")
    level = absl.level
    if read_only:   # Orbax warns that a read-only manager saves nothing: as intended
      absl.setLevel(logging.ERROR)
    try:
      options = ocp.CheckpointManagerOptions(
          # Orbax keeps every step; ``_retire`` deletes old ones once a newer one verifies.
          max_to_keep=None, create=not read_only, read_only=read_only,
          enable_async_checkpointing=False,
          # what a save killed midway left behind
          cleanup_tmp_directories=not read_only)
      self.manager = self._retrying(lambda: ocp.CheckpointManager(
          self.directory, options=options, item_names=("state", "metadata")))
    finally:
      absl.setLevel(level)

  @staticmethod
  def _retrying(build, attempts: int = 5):
    """``build()``, again if a step it lists vanished meanwhile (a run writing beside this
    reader retired it). Orbax reports a step deleted between its ``exists()`` and its
    ``is_dir()`` as NotADirectoryError: the same race."""
    for attempt in range(attempts):
      try:
        return build()
      except (FileNotFoundError, NotADirectoryError):
        if attempt == attempts - 1:
          raise

  @staticmethod
  def _state(model: nnx.Module, optimizer: Optional[nnx.Optimizer]) -> dict:
    state = {"model": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    if optimizer is not None:
      state["optimizer"] = nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))
    return state

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def damage(self, step: int) -> Optional[str]:
    """What is wrong with ``step``'s files (None: it is good); checked once."""
    if step not in self._verdicts:
      self._verdicts[step] = damage(self._step_dir(step))
    return self._verdicts[step]

  def describe_damage(self, step: int) -> str:
    return f"checkpoint step {step} in {self.directory} is damaged: {self.damage(step)}"

  def latest_step(self) -> Optional[int]:
    """The newest step whose files match their digest. A damaged newer one is logged (once)
    and passed over: a resumed run continues from the newest good step."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      if self.damage(step) is None:
        return step
      if step not in self._logged:
        self._logged.add(step)
        log.warning("%s; using an earlier step", self.describe_damage(step))
    return None

  def newest_step(self) -> Optional[int]:
    """The newest step on disk, good or not."""
    steps = self.manager.all_steps()
    return max(steps) if steps else None

  def save(self, step: int, model, optimizer=None, metadata: Optional[dict] = None,
           force: bool = False, keep_also: Sequence[Optional[int]] = ()) -> bool:
    """Saves ``step`` (every ``save_every`` steps, or with ``force``), then deletes steps older
    than the ``keep`` newest, but for those in ``keep_also``. False: nothing was saved."""
    if self.read_only:
      raise ValueError(f"{self.directory} was opened to read: nothing is saved")
    if not force and (self.save_every <= 0 or step % self.save_every):
      return False
    if step in self.manager.all_steps():
      if self.damage(step) is None:
        return False
      # a damaged step of the same number is rewritten, not kept
      self.manager.delete(step)
      self._verdicts.pop(step, None)
    if self.model_only:
      optimizer = None
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(self._state(model, optimizer)),
        metadata=ocp.args.JsonSave(dict(metadata or {}, step=int(step)))))
    self.manager.wait_until_finished()
    # The digest goes last: a step without one (a save killed here) still reads, as Orbax's
    # rename made it complete; a step with one is checked against it from now on.
    files = step_digest(self._step_dir(step)) if writes_here() else {}
    write_text_atomic(os.path.join(self._step_dir(step), DIGEST_FILE),
                      json.dumps({"algorithm": "blake2b-128", "files": files}, indent=1))
    self._verdicts.pop(step, None)
    self._retire(step, keep_also)
    return True

  def discard_after(self, step: int) -> None:
    """Deletes the steps newer than ``step``: what a killed run saved after the point its
    successor resumes from, which that successor redoes. Orbax saves no step older than one
    on disk, so a stale newer step would also block the redo's saves."""
    for s in self.manager.all_steps():
      if s > step:
        self.manager.delete(s)
        self._verdicts.pop(s, None)

  def _retire(self, newest: int, keep_also: Sequence[Optional[int]] = ()) -> None:
    """Deletes steps older than the ``keep`` newest (but ``keep_also``), once ``newest``
    verifies."""
    if self.damage(newest) is not None:
      log.warning("%s just after it was written; older steps are kept",
                  self.describe_damage(newest))
      return
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps[self.keep:]:
      if step in keep_also:
        continue
      self.manager.delete(step)
      self._verdicts.pop(step, None)

  def bytes_per_step(self, model, optimizer=None) -> int:
    """What one step takes on disk, about: the arrays it holds."""
    state = self._state(model, None if self.model_only else optimizer)
    return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)))

  def restore(self, model, optimizer=None, step: Optional[int] = None, *,
              strict: bool = False) -> Optional[dict]:
    """Loads a checkpoint into ``model``/``optimizer`` in place; returns its metadata.

    Without ``step``, the newest good step (``latest_step``); with ``strict``, a damaged
    newest step raises ``DamagedCheckpoint`` instead of being passed over: a trained stage
    is read as it was trained, or not at all. A reader beside a run that is still training
    may see the step it picked retired mid-read; it then reads the newest step again.
    """
    if step is not None:
      if self.damage(step) is not None:
        raise DamagedCheckpoint(self.describe_damage(step))
      return self._restore(model, optimizer, step)
    attempts = 5
    for attempt in range(attempts):
      newest = self.newest_step()
      if strict and newest is not None and self.damage(newest) is not None:
        raise DamagedCheckpoint(f"{self.describe_damage(newest)}; run the training command "
                                "again to rewrite it from the step before")
      step = self.latest_step()
      if step is None:
        return None
      try:
        return self._restore(model, optimizer, step)
      except Exception:  # noqa: BLE001 (Orbax wraps TensorStore's read errors in Exception)
        # A writer beside this reader retires a step by deleting its files, then its
        # directory: if a newer step has been saved meanwhile, the failed read is that
        # retirement, and the newest step is read instead. Otherwise the error is real.
        # The state decides, not the error's type, which depends on where the read broke.
        self._verdicts.clear()
        self._retrying(self.manager.reload)
        steps = self.manager.all_steps()
        if attempt == attempts - 1 or not steps or (max(steps) <= step
                                                     and os.path.isdir(self._step_dir(step))):
          raise

  def _restore(self, model, optimizer, step: int) -> dict:
    if self.model_only and optimizer is not None:
      raise ValueError(f"{self.directory} holds model-only checkpoints: no optimizer state")
    target = self._state(model, optimizer)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    # Without an optimizer only the model is read (e.g. a trained RM reused for scoring).
    state_args = (ocp.args.StandardRestore(abstract) if optimizer is not None or self.model_only
                  else
                  ocp.args.PyTreeRestore(
                      abstract, partial_restore=True,
                      restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=state_args, metadata=ocp.args.JsonRestore()))
    _replace(model, nnx.Param, restored["state"]["model"])
    if optimizer is not None:
      _replace(optimizer, nnx.optimizer.OptState, restored["state"]["optimizer"])
    return dict(restored["metadata"])

  def read_metadata(self, step: Optional[int] = None) -> Optional[dict]:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    if self.damage(step) is not None:
      raise DamagedCheckpoint(self.describe_damage(step))
    return dict(self.manager.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))["metadata"])

  def close(self):
    self.manager.close()


def _replace(module, filt, pure):
  state = nnx.state(module, filt)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)
