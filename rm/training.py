"""Training and evaluation of the pairwise reward model."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import optax
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.read_only_jit import read_only_jit
from policies.core.sharding import to_host
# make_optimizer and TrainingDiverged are re-exported: gin files and callers name them here.
from policies.core.train_loop import (LoopResult, Selection, TrainingDiverged,  # noqa: F401
                                      make_optimizer, run_training, to_device)
from rm.losses import pair_accuracy, pairwise_loss
from rm.packing import PackedPairs


@dataclasses.dataclass(frozen=True)
class LossConfig:
  # Use the per-pair margin field (Llama-2 margin loss); False is plain Bradley–Terry.
  use_margin: bool = False
  centering_coef: float = 0.0


def new_train_metrics() -> nnx.MultiMetric:
  return nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
                         accuracy=nnx.metrics.Average("accuracy"),
                         grad_norm=nnx.metrics.Average("grad_norm"))


def _flat_loss(loss_cfg: LossConfig, chosen_RxP, rejected_RxP, batch):
  return pairwise_loss(
      chosen_RxP.reshape(-1), rejected_RxP.reshape(-1),
      margin_B=batch["margin"].reshape(-1) if loss_cfg.use_margin else None,
      weights_B=batch["weight"].reshape(-1),
      # soft labels where the batch has them (a hand-made batch without: hard labels)
      label_B=batch["label"].reshape(-1) if "label" in batch else None,
      centering_coef=loss_cfg.centering_coef)


def loss_and_grads(model, batch: dict, loss_cfg: LossConfig, wrt=nnx.Param):
  """The training step's pairwise loss, its gradient with respect to the ``wrt`` parameters,
  and the rewards (``chosen_RxP``, ``rejected_RxP``) it came from: what one step of TRL's
  ``RewardTrainer`` computes in ``compute_loss`` and its backward pass (a test pins the two)."""
  def loss_fn(model):
    chosen, rejected = model(batch)
    return _flat_loss(loss_cfg, chosen, rejected, batch), (chosen, rejected)

  (loss, (chosen, rejected)), grads = nnx.value_and_grad(
      loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
  return loss, chosen, rejected, grads


@nnx.jit(static_argnames=("loss_cfg",))
def train_step(model, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict,
               loss_cfg: LossConfig):
  loss, chosen, rejected, grads = loss_and_grads(model, batch, loss_cfg, optimizer.wrt)
  optimizer.update(model, grads)
  metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                 accuracy=pair_accuracy(chosen.reshape(-1), rejected.reshape(-1),
                                        batch["weight"].reshape(-1)))


def step_temp_bytes(model, optimizer: nnx.Optimizer, batch: dict, loss_cfg: LossConfig) -> int:
  """XLA's temporary memory per device for one ``train_step`` on ``batch``: activations
  kept for the backward pass and workspace. Compiled ahead of the loop; its first step
  then reuses the compilation."""
  compiled = train_step.lower(model, optimizer, new_train_metrics(), batch, loss_cfg).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


@read_only_jit
def pair_rewards_step(model, batch: dict):
  return model(batch)


def _to_device(batch: PackedPairs | dict, mesh) -> dict:
  return to_device(batch.arrays() if isinstance(batch, PackedPairs) else batch, mesh)


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
    chosen.append(to_host(c)[keep])
    rejected.append(to_host(r)[keep])
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


TrainResult = LoopResult


def train_reward_model(*, model, optimizer: nnx.Optimizer,
                       train_batches: Callable[[int], Iterator[PackedPairs]], num_steps: int,
                       writer, checkpoints: Optional[Checkpoints] = None,
                       eval_batches: Optional[list[PackedPairs]] = None, eval_every: int = 0,
                       log_every: int = 50, loss: LossConfig = LossConfig(), mesh=None,
                       progress: bool = True, desc: str = "reward model",
                       validation_batches: Optional[list[PackedPairs]] = None,
                       selection: Optional[Selection] = None,
                       best_checkpoints: Optional[Checkpoints] = None) -> LoopResult:
  """Trains ``model`` in place for ``num_steps`` steps, resuming from ``checkpoints``.

  ``train_batches(start_step)`` yields the batches from a global step on, so a
  resumed run sees the same data as an uninterrupted one. The final checkpoint
  carries the held-out reward mean/std (for later normalisation). With ``selection``
  the parameters with the best result on ``validation_batches`` are kept and the run
  may stop early (``policies.core.train_loop.Selection``).
  """
  evaluate = validate = None
  if eval_batches:
    evaluate = lambda: evaluate_reward_model(model=model, batches=eval_batches, mesh=mesh)
  if validation_batches:
    validate = lambda: evaluate_reward_model(model=model, batches=validation_batches, mesh=mesh)
  return run_training(
      model=model, optimizer=optimizer, metrics=new_train_metrics(),
      step_fn=lambda m, o, met, b: train_step(m, o, met, b, loss), train_batches=train_batches,
      num_steps=num_steps, writer=writer, checkpoints=checkpoints, evaluate=evaluate,
      eval_every=eval_every, log_every=log_every, mesh=mesh, progress=progress, desc=desc,
      units_of=lambda batch: batch.num_pairs, units_name="pairs",
      final_metadata=lambda ev: {k: ev.metrics[k] for k in ("reward_mean", "reward_std",
                                                             "accuracy")},
      validate=validate, selection=selection, best_checkpoints=best_checkpoints)
