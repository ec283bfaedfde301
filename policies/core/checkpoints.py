"""Orbax checkpoints of (model, optimizer) plus JSON metadata, in ``<dir>/checkpoints``.

Orbax writes each step into a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp
from flax import nnx


class Checkpoints:
  """Saves every ``save_every`` steps (and on demand); restores the latest.

  ``model_only``: the checkpoints hold the model's parameters alone (e.g. the best
  parameters on validation data), saved and restored without an optimizer.
  """

  def __init__(self, directory: str, *, save_every: int = 500, max_to_keep: int = 2,
               model_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.save_every = save_every
    self.model_only = model_only
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             # what a save killed midway left behind
                                             cleanup_tmp_directories=True),
        item_names=("state", "metadata"),
    )

  @staticmethod
  def _state(model: nnx.Module, optimizer: Optional[nnx.Optimizer]) -> dict:
    state = {"model": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    if optimizer is not None:
      state["optimizer"] = nnx.to_pure_dict(nnx.state(optimizer, nnx.optimizer.OptState))
    return state

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, model, optimizer=None, metadata: Optional[dict] = None,
           force: bool = False) -> bool:
    if not force and (self.save_every <= 0 or step % self.save_every):
      return False
    if step in self.manager.all_steps():
      return False
    if self.model_only:
      optimizer = None
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(self._state(model, optimizer)),
        metadata=ocp.args.JsonSave(dict(metadata or {}, step=int(step)))))
    self.manager.wait_until_finished()
    return True

  def restore(self, model, optimizer=None, step: Optional[int] = None) -> Optional[dict]:
    """Loads a checkpoint into ``model``/``optimizer`` in place; returns its metadata."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
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
    return dict(self.manager.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))["metadata"])

  def close(self):
    self.manager.close()


def _replace(module, filt, pure):
  state = nnx.state(module, filt)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)
