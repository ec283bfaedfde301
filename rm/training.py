"""Training and evaluation of the pairwise reward model."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from policies.sharding import shard_batch
from rm.checkpoints import Checkpoints
from rm.losses import pair_accuracy, pairwise_loss
from rm.packing import PackedPairs


class TrainingDiverged(FloatingPointError):
  """Raised when the loss or gradient norm stops being finite."""


@dataclasses.dataclass(frozen=True)
class LossConfig:
  # Use the per-pair margin field (Llama-2 margin loss); False is plain Bradley–Terry.
  use_margin: bool = False
  centering_coef: float = 0.0


def make_optimizer(model: nnx.Module, *, learning_rate: float = 1e-3, total_steps: int = 1000,
                   warmup_steps: int = 50, weight_decay: float = 0.01, clip_norm: float = 1.0,
                   b1: float = 0.9, b2: float = 0.98, end_lr_ratio: float = 0.1) -> nnx.Optimizer:
  """AdamW with linear warmup, cosine decay and global-norm gradient clipping.

  Weight decay skips vectors and scalars (norm scales, the reward head's bias).
  """
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, warmup_steps), max(total_steps, warmup_steps + 1),
      end_value=learning_rate * end_lr_ratio)
  tx = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                  mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)))
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def new_train_metrics() -> nnx.MultiMetric:
  return nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
                         accuracy=nnx.metrics.Average("accuracy"),
                         grad_norm=nnx.metrics.Average("grad_norm"))


def _flat_loss(loss_cfg: LossConfig, chosen_RxP, rejected_RxP, batch):
  return pairwise_loss(
      chosen_RxP.reshape(-1), rejected_RxP.reshape(-1),
      margin_B=batch["margin"].reshape(-1) if loss_cfg.use_margin else None,
      weights_B=batch["weight"].reshape(-1), centering_coef=loss_cfg.centering_coef)


@nnx.jit(static_argnames=("loss_cfg",))
def train_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict,
               loss_cfg: LossConfig):
  def loss_fn(model):
    chosen, rejected = model(batch)
    return _flat_loss(loss_cfg, chosen, rejected, batch), (chosen, rejected)

  (loss, (chosen, rejected)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads)
  metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                 accuracy=pair_accuracy(chosen.reshape(-1), rejected.reshape(-1),
                                        batch["weight"].reshape(-1)))


@nnx.jit
def pair_rewards_step(model, batch: dict):
  return model(batch)


def _to_device(batch: PackedPairs | dict, mesh) -> dict:
  arrays = batch.arrays() if isinstance(batch, PackedPairs) else batch
  arrays = {k: v for k, v in arrays.items() if k != "index"}
  return shard_batch(arrays, mesh) if mesh is not None else {k: jnp.asarray(v) for k, v in arrays.items()}


@dataclasses.dataclass
class EvalResult:
  metrics: dict
  chosen: np.ndarray    # [num_pairs] rewards, in the order of the evaluated pairs
  rejected: np.ndarray


def evaluate_reward_model(*, model, batches: Iterable[PackedPairs], mesh=None) -> EvalResult:
  """Accuracy, reward statistics and BT loss over every pair in ``batches``."""
  chosen, rejected, index = [], [], []
  for batch in batches:
    c, r = pair_rewards_step(model, _to_device(batch, mesh))
    keep = batch.weight > 0
    chosen.append(np.asarray(c)[keep])
    rejected.append(np.asarray(r)[keep])
    index.append(batch.index[keep])
  if not chosen:
    raise ValueError("evaluate_reward_model got no batches")
  order = np.argsort(np.concatenate(index), kind="stable")
  c = np.concatenate(chosen)[order].astype(np.float64)
  r = np.concatenate(rejected)[order].astype(np.float64)
  both = np.concatenate([c, r])
  delta = c - r
  metrics = {
      "accuracy": float(np.mean(np.where(delta > 0, 1.0, np.where(delta == 0, 0.5, 0.0)))),
      "loss": float(np.mean(np.logaddexp(0.0, -delta))),
      "chosen_mean": float(c.mean()), "chosen_std": float(c.std()),
      "rejected_mean": float(r.mean()), "rejected_std": float(r.std()),
      "margin_mean": float(delta.mean()),
      "reward_mean": float(both.mean()), "reward_std": float(both.std()),
      "num_pairs": int(len(c)),
  }
  return EvalResult(metrics, c, r)


@dataclasses.dataclass
class TrainResult:
  step: int
  eval: Optional[EvalResult]
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


def train_reward_model(*, model, optimizer: nnx.Optimizer,
                       train_batches: Callable[[int], Iterator[PackedPairs]], num_steps: int,
                       writer, checkpoints: Optional[Checkpoints] = None,
                       eval_batches: Optional[list[PackedPairs]] = None, eval_every: int = 0,
                       log_every: int = 50, loss: LossConfig = LossConfig(), mesh=None,
                       progress: bool = True, desc: str = "reward model") -> TrainResult:
  """Trains ``model`` in place for ``num_steps`` steps, resuming from ``checkpoints``.

  ``train_batches(start_step)`` yields the batches from a global step on, so a
  resumed run sees the same data as an uninterrupted one. The final checkpoint
  carries the held-out reward mean/std (for later normalisation).
  """
  start = 0
  if checkpoints is not None:
    meta = checkpoints.restore(model, optimizer)
    if meta is not None:
      start = int(meta["step"])
  metrics = new_train_metrics()
  history, pairs_seen, t0 = [], 0, time.perf_counter()
  batches = train_batches(start)
  final_eval = None
  bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
  for step in range(start + 1, num_steps + 1):
    batch = next(batches)
    train_step(model, optimizer, metrics, _to_device(batch, mesh), loss)
    pairs_seen += batch.num_pairs
    bar.update(1)
    save_due = checkpoints is not None and checkpoints.save_every > 0 and (
        step % checkpoints.save_every == 0)
    if step % log_every == 0 or step == num_steps or save_due:
      values = {k: float(v) for k, v in metrics.compute().items()}
      metrics.reset()
      _check_finite(step, values, checkpoints)
      elapsed = time.perf_counter() - t0
      values["pairs_per_sec"] = pairs_seen / max(elapsed, 1e-9)
      writer.write(step, "train", values)
      history.append({"step": step, **values})
      bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.3f}")
      pairs_seen, t0 = 0, time.perf_counter()
    is_last = step == num_steps
    if eval_batches and ((eval_every and step % eval_every == 0) or is_last):
      final_eval = evaluate_reward_model(model=model, batches=eval_batches, mesh=mesh)
      writer.write(step, "eval", final_eval.metrics)
      history.append({"step": step, **{f"eval_{k}": v for k, v in final_eval.metrics.items()}})
    if checkpoints is not None:
      meta = {}
      if is_last and final_eval is not None:
        meta = {k: final_eval.metrics[k] for k in ("reward_mean", "reward_std", "accuracy")}
      checkpoints.save(step, model, optimizer, metadata=meta, force=is_last)
  bar.close()
  if final_eval is None and eval_batches:
    final_eval = evaluate_reward_model(model=model, batches=eval_batches, mesh=mesh)
  return TrainResult(step=max(start, num_steps), eval=final_eval, history=history)
