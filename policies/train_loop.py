"""The training loop shared by the reward model and the policy LM.

The jitted step updates model, optimizer and metrics in place; this loop only
fetches batches, logs, evaluates, checkpoints, and stops on divergence.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tqdm.auto import tqdm

from policies.checkpoints import Checkpoints
from policies.sharding import shard_batch
from policies.trainable import Trainable


def make_optimizer(model: nnx.Module, *, learning_rate: float = 1e-3, total_steps: int = 1000,
                   warmup_steps: int = 50, weight_decay: float = 0.01, clip_norm: float = 1.0,
                   b1: float = 0.9, b2: float = 0.98, end_lr_ratio: float = 0.1,
                   trainable: Trainable = Trainable()) -> nnx.Optimizer:
  """AdamW with linear warmup, cosine decay and global-norm gradient clipping, over the
  parameters ``trainable`` selects (all by default; see ``policies.trainable``).

  Weight decay skips vectors and scalars (norm scales, the reward head's bias).
  """
  trainable.check(model)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, warmup_steps), max(total_steps, warmup_steps + 1),
      end_value=learning_rate * end_lr_ratio)
  tx = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                  mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)))
  return nnx.Optimizer(model, tx, wrt=trainable)


class TrainingDiverged(FloatingPointError):
  """Raised when a logged metric (loss, gradient norm) stops being finite."""


def stream_from_step(epoch: Callable[[int], list], start_step: int) -> Iterator:
  """Batches from global step ``start_step`` on, given ``epoch(e)`` -> that epoch's batches.

  Epochs are pure functions of their index (shuffled with ``seed + e``), so a
  resumed run sees exactly the batches an uninterrupted one would.
  """
  e, skip = 0, start_step
  while True:
    batches = epoch(e)
    if not batches:
      raise ValueError(f"epoch {e} has no batches")
    if skip < len(batches):
      yield from batches[skip:]
      skip = 0
    else:
      skip -= len(batches)
    e += 1


def to_device(arrays: dict, mesh=None, drop=("index",)) -> dict:
  arrays = {k: v for k, v in arrays.items() if k not in drop}
  if mesh is not None:
    return shard_batch(arrays, mesh)
  return {k: jnp.asarray(v) for k, v in arrays.items()}


@dataclasses.dataclass
class LoopResult:
  step: int
  eval: Any
  history: list


def _check_finite(step: int, values: dict, checkpoints: Optional[Checkpoints]):
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  if bad:
    last = checkpoints.latest_step() if checkpoints is not None else None
    where = (f"the last good checkpoint (step {last}) in {checkpoints.directory} is intact"
             if last is not None else "no checkpoint was written")
    raise TrainingDiverged(
        f"training diverged by step {step}: {bad}; {where}. Lower the learning rate, "
        "check the data (margins, lengths), or tighten gradient clipping.")


def run_training(*, model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric,
                 step_fn: Callable[[Any, nnx.Optimizer, nnx.MultiMetric, dict], None],
                 train_batches: Callable[[int], Iterator], num_steps: int, writer,
                 checkpoints: Optional[Checkpoints] = None,
                 evaluate: Optional[Callable[[], Any]] = None, eval_every: int = 0,
                 log_every: int = 50, mesh=None, progress: bool = True, desc: str = "training",
                 units_of: Callable[[Any], int] = lambda batch: 0, units_name: str = "items",
                 final_metadata: Callable[[Any], dict] = lambda ev: {}) -> LoopResult:
  """Trains for ``num_steps`` global steps, resuming from ``checkpoints``.

  ``train_batches(start_step)`` yields host batches (objects with ``arrays()``)
  from a global step on, so a resumed run sees exactly the data an
  uninterrupted one would. ``evaluate()`` returns an object with a ``metrics``
  dict; it runs every ``eval_every`` steps and at the end, and
  ``final_metadata(eval)`` is stored with the last checkpoint. Every step's
  metrics are checked for finiteness before any checkpoint is written.
  """
  start = 0
  if checkpoints is not None:
    meta = checkpoints.restore(model, optimizer)
    if meta is not None:
      start = int(meta["step"])
  history, units, t0 = [], 0, time.perf_counter()
  batches = train_batches(start)
  final_eval = None
  bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
  for step in range(start + 1, num_steps + 1):
    batch = next(batches)
    step_fn(model, optimizer, metrics, to_device(batch.arrays(), mesh))
    units += units_of(batch)
    bar.update(1)
    save_due = checkpoints is not None and checkpoints.save_every > 0 and (
        step % checkpoints.save_every == 0)
    if step % log_every == 0 or step == num_steps or save_due:
      values = {k: float(v) for k, v in metrics.compute().items()}
      metrics.reset()
      _check_finite(step, values, checkpoints)
      values[f"{units_name}_per_sec"] = units / max(time.perf_counter() - t0, 1e-9)
      writer.write(step, "train", values)
      history.append({"step": step, **values})
      bar.set_postfix({k: f"{v:.4f}" for k, v in values.items() if k in ("loss", "accuracy")})
      units, t0 = 0, time.perf_counter()
    is_last = step == num_steps
    if evaluate is not None and ((eval_every and step % eval_every == 0) or is_last):
      final_eval = evaluate()
      writer.write(step, "eval", final_eval.metrics)
      history.append({"step": step, **{f"eval_{k}": v for k, v in final_eval.metrics.items()}})
    if checkpoints is not None:
      meta = final_metadata(final_eval) if is_last and final_eval is not None else {}
      checkpoints.save(step, model, optimizer, metadata=meta, force=is_last)
  bar.close()
  if final_eval is None and evaluate is not None:
    final_eval = evaluate()
  return LoopResult(step=max(start, num_steps), eval=final_eval, history=history)
