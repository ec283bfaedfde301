"""The training loop shared by the reward model and the policy LM.

The jitted step updates model, optimizer and metrics in place; this loop only
fetches batches, logs, evaluates, checkpoints, and stops on divergence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from policies.core.checkpoints import Checkpoints
from policies.core.sharding import shard_batch, shard_module


def warmup_cosine_lr(count, schedule_5):
  """``optax.warmup_cosine_decay_schedule`` (from 0) at step ``count``, its settings given as
  data: ``schedule_5 = [peak, warmup_steps, total_steps, alpha, 1 - alpha]`` (float32; alpha
  is end / peak, both it and ``1 - alpha`` computed in double precision as optax does). The
  same float32 operations as optax's, so the same learning rates."""
  if jnp.shape(schedule_5) != (5,):
    raise ValueError(f"schedule_5 must have shape (5,) (schedule_settings), got "
                     f"{jnp.shape(schedule_5)}")
  peak, warmup, total, alpha, one_minus_alpha = (schedule_5[i] for i in range(5))
  count = jnp.asarray(count, jnp.float32)
  warm = (0.0 - peak) * (1 - jnp.clip(count, 0, warmup) / warmup) + peak
  decay_steps = total - warmup
  t = jnp.minimum(count - warmup, decay_steps)
  cosine = peak * (one_minus_alpha * (0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))) + alpha)
  return jnp.where(count < warmup, warm, cosine)


def schedule_settings(*, peak: float, warmup_steps: int, total_steps: int, end: float) -> list:
  """``warmup_cosine_lr``'s settings vector."""
  alpha = 0.0 if peak == 0.0 else end / peak
  return [peak, warmup_steps, total_steps, alpha, 1 - alpha]


def scale_by_warmup_cosine() -> optax.GradientTransformationExtraArgs:
  """``optax.scale_by_learning_rate(warmup_cosine_decay_schedule)``, its schedule given to
  ``update`` as the extra argument ``lr_schedule`` (``warmup_cosine_lr``), not baked into
  the program: two stages that differ in their number of steps share one compiled step.
  Its state is optax's (``ScaleByScheduleState``), so checkpoints read either way."""

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, lr_schedule, **extra):
    del params, extra
    step_size = -warmup_cosine_lr(state.count, lr_schedule)
    updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformationExtraArgs(init, update)


class LearningRateSchedule(nnx.Variable):
  """A run's schedule settings (``schedule_settings``): settings, not
  optimizer state, so never checkpointed (``Checkpoints`` saves ``OptState`` only)."""


class TransformationSettings(nnx.Variable):
  """The settings the transformation was built with (``_adamw``'s), kept for ``record``: data,
  so that ``jit`` does not key on their values; not ``OptState``, so never checkpointed."""


class ScheduledOptimizer(nnx.Optimizer):
  """``nnx.Optimizer`` whose transformation reads its learning-rate schedule from
  ``self.lr_schedule`` (data) at every update. The transformation itself is built once per
  set of static settings (``_adamw``), so optimizers of different lengths are equal as
  far as ``jit`` can tell and reuse each other's compiled steps."""

  def __init__(self, model, tx, *, wrt, lr_schedule, average_decay: float = 0.0,
               tx_settings: Optional[dict] = None):
    super().__init__(model, tx, wrt=wrt)
    self.lr_schedule = LearningRateSchedule(jnp.asarray(lr_schedule, jnp.float32))
    self.tx_names = tuple(tx_settings or {})
    self.tx_settings = TransformationSettings(
        jnp.asarray([float(v) for v in (tx_settings or {}).values()], jnp.float32))
    if not 0.0 <= average_decay < 1.0:
      raise ValueError(f"average_decay must be in [0, 1), got {average_decay}")
    self.average_decay = float(average_decay)
    # The parameters' exponential moving average lives in the optimizer's state, so that
    # checkpoints and resumes carry it; it starts at zero and is read bias-corrected.
    self.average = (nnx.data(nnx.optimizer.to_opt_state(
        jax.tree.map(jnp.zeros_like, nnx.state(model, wrt)))) if average_decay else None)

  def update(self, model, grads, /, **kwargs):
    updates = super().update(model, grads, lr_schedule=self.lr_schedule[...], **kwargs)
    if self.average is not None:
      d = self.average_decay
      nnx.update(self.average, jax.tree.map(
          lambda a, p: d * a + (1.0 - d) * p.astype(a.dtype), nnx.as_pure(self.average),
          nnx.as_pure(nnx.state(model, self.wrt))))
    return updates

  def record(self) -> dict:
    """What shapes the updates, for a stage's identity: a run resumed or reused with another
    learning rate, warm-up, weight decay or set of trained parameters would mix two runs. The
    schedule's length is left out (more steps extend a finished run), and so is the average
    (``Selection.average_decay`` is recorded with the selection)."""
    peak, warmup, _, alpha, _ = np.asarray(self.lr_schedule[...], np.float64).tolist()
    close = lambda x: float(f"{x:.6g}")   # float32 holds ~7 digits: 1e-3, not 0.0010000000475
    values = np.asarray(self.tx_settings[...], np.float64).tolist()
    return {"learning_rate": close(peak), "warmup_steps": int(round(warmup)),
            "end_lr_ratio": close(alpha), **{k: close(v) for k, v in zip(self.tx_names, values)},
            "trainable": getattr(self.wrt, "__name__", None) or repr(self.wrt)}

  def averaged_params(self):
    """The parameters' moving average after ``step`` updates, corrected for its zero start."""
    if self.average is None:
      raise ValueError("this optimizer keeps no parameter average (average_decay=0)")
    correction = 1.0 - self.average_decay ** self.step[...].astype(jnp.float32)
    return jax.tree.map(lambda a: a / correction.astype(a.dtype), nnx.as_pure(self.average))


@contextlib.contextmanager
def averaged_parameters(model, optimizer):
  """Within the block ``model`` holds the optimizer's parameter average (if it keeps one);
  its own parameters come back after it."""
  if getattr(optimizer, "average", None) is None:
    yield
    return
  own = nnx.as_pure(nnx.state(model, optimizer.wrt))   # arrays are immutable: references do
  nnx.update(model, optimizer.averaged_params())
  try:
    yield
  finally:
    nnx.update(model, own)


@functools.lru_cache(maxsize=None)
def _adamw(clip_norm: float, b1: float, b2: float, weight_decay: float):
  """One transformation object per setting (a cache of pure constructions): ``jit`` keys its
  compiled programs on the optimizer's static parts, this object among them."""
  return optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.chain(optax.scale_by_adam(b1=b1, b2=b2),
                  optax.add_decayed_weights(
                      weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim > 1,
                                                                     params)),
                  scale_by_warmup_cosine()))


def make_optimizer(model: nnx.Module, *, learning_rate: float = 1e-3, total_steps: int = 1000,
                   warmup_steps: int = 50, weight_decay: float = 0.01, clip_norm: float = 1.0,
                   b1: float = 0.9, b2: float = 0.98, end_lr_ratio: float = 0.1,
                   trainable=None, average_decay: float = 0.0) -> nnx.Optimizer:
  """AdamW with linear warmup, cosine decay and global-norm gradient clipping, over the
  parameters ``trainable`` selects: an nnx filter with ``prepare(model)``, such as
  ``policies.trainable.Trainable`` (default: every parameter).

  Weight decay skips vectors and scalars (norm scales, the reward head's bias). The
  state is ``optax.chain(clip_by_global_norm, adamw(warmup_cosine_decay_schedule))``'s;
  the schedule's settings are data (``ScheduledOptimizer``). ``average_decay`` > 0 also
  keeps the parameters' exponential moving average (``Selection.average_decay``).
  """
  if trainable is None:
    trainable = nnx.Param
  else:
    trainable.prepare(model)
  warmup = max(1, warmup_steps)
  schedule = schedule_settings(peak=learning_rate, warmup_steps=warmup,
                               total_steps=max(total_steps, warmup + 1),
                               end=learning_rate * end_lr_ratio)
  tx_settings = dict(weight_decay=float(weight_decay), clip_norm=float(clip_norm),
                     b1=float(b1), b2=float(b2))
  return ScheduledOptimizer(model, _adamw(**tx_settings), wrt=trainable, lr_schedule=schedule,
                            average_decay=average_decay, tx_settings=tx_settings)


@dataclasses.dataclass(frozen=True)
class Selection:
  """Checkpoint selection on validation data, with early stopping.

  Every ``eval_every`` steps the model is evaluated on the validation part; the run keeps
  the parameters with the best ``metric`` (``'loss'`` is minimised, ``'accuracy'``
  maximised) and stops once ``patience`` evaluations in a row brought no improvement
  (0: never early), but not before ``min_steps``. ``num_steps`` is then a budget, not a
  target, so RMs trained on more or less data each stop where they are best.
  """

  metric: str = "loss"
  patience: int = 0
  min_steps: int = 0
  # > 0: the optimizer keeps the parameters' exponential moving average with this decay, and
  # that average (not the last step's parameters) is validated, kept and returned.
  average_decay: float = 0.0

  def __post_init__(self):
    if self.metric not in ("loss", "accuracy"):
      raise ValueError(f"Selection.metric must be 'loss' or 'accuracy', got {self.metric!r}")
    if self.patience < 0 or self.min_steps < 0:
      raise ValueError("Selection.patience and Selection.min_steps must be >= 0")
    if not 0.0 <= self.average_decay < 1.0:
      raise ValueError(f"Selection.average_decay must be in [0, 1), got {self.average_decay}")

  def record(self) -> dict:
    """The settings for a stage's identity; ``average_decay`` only when on, so that runs
    from before it existed keep their identity."""
    out = dataclasses.asdict(self)
    if not out["average_decay"]:
      del out["average_decay"]
    return out

  def improves(self, value: float, best: Optional[float]) -> bool:
    if best is None:
      return True
    return value < best if self.metric == "loss" else value > best


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
  best_step: Optional[int] = None   # with a Selection: the step whose parameters were kept


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
                 final_metadata: Callable[[Any], dict] = lambda ev: {},
                 validate: Optional[Callable[[], Any]] = None,
                 selection: Optional[Selection] = None,
                 best_checkpoints: Optional[Checkpoints] = None) -> LoopResult:
  """Trains for ``num_steps`` global steps, resuming from ``checkpoints``.

  ``train_batches(start_step)`` yields host batches (objects with ``arrays()``)
  from a global step on, so a resumed run sees exactly the data an
  uninterrupted one would. ``evaluate()`` returns an object with a ``metrics``
  dict; it runs every ``eval_every`` steps and at the end, and
  ``final_metadata(eval)`` is stored with the last checkpoint. Every step's
  metrics are checked for finiteness before any checkpoint is written.

  With ``selection`` (and ``validate()``, ``best_checkpoints``), ``validate`` runs every
  ``eval_every`` steps instead of ``evaluate``; the best parameters so far are kept in
  ``best_checkpoints``, the run may stop early, and at the end the best parameters are
  put back in ``model``, evaluated once with ``evaluate`` and saved as the last
  checkpoint (marked finished, so a re-run does not train on). The selection state
  travels in the checkpoints' metadata, so a killed run resumes where it was.
  """
  if selection is not None and (validate is None or best_checkpoints is None or eval_every <= 0):
    raise ValueError("checkpoint selection needs validation data, a place for the best "
                     "checkpoint and eval_every > 0 (RunSettings.eval_every)")
  averaging = getattr(optimizer, "average", None) is not None
  if averaging != bool(selection is not None and selection.average_decay):
    raise ValueError("a parameter average is kept and read through checkpoint selection: "
                     "Selection.average_decay and the optimizer's average_decay go together")
  start, state = 0, {"best": None, "best_step": None, "bad_evals": 0, "finished": False}
  if checkpoints is not None:
    meta = checkpoints.restore(model, optimizer)
    if meta is not None:
      start = int(meta["step"])
      state.update(meta.get("selection", {}))
  writer.resume_at(start)
  if best_checkpoints is not None:
    # Best parameters a killed run saved after the checkpoint this one resumes from belong
    # to the steps it redoes; the best that checkpoint names (``committed``) stays on disk
    # until a newer checkpoint names another.
    best_checkpoints.discard_after(start)
  committed = state["best_step"]
  # The metrics live on the mesh as a step leaves them: fresh (or reset) ones would be
  # uncommitted arrays, another input signature, and every step function would compile twice.
  place_metrics = (lambda: shard_module(metrics, mesh, ())) if mesh is not None else lambda: None
  place_metrics()
  history, units, t0 = [], 0, time.perf_counter()
  final_eval = None
  # A selection run that finished (perhaps early) trains no further, whatever num_steps is.
  stop_step = start if state["finished"] else num_steps
  bar = tqdm(total=num_steps, initial=start, desc=desc,
             disable=not progress or state["finished"], dynamic_ncols=True)
  batches = train_batches(start)   # lazy: nothing is packed before the first step
  for step in range(start + 1, stop_step + 1):
    batch = next(batches)
    step_fn(model, optimizer, metrics, to_device(batch.arrays(), mesh))
    units += units_of(batch)
    bar.update(1)
    save_due = checkpoints is not None and checkpoints.save_every > 0 and (
        step % checkpoints.save_every == 0)
    if step % log_every == 0 or step == num_steps or save_due:
      values = {k: float(v) for k, v in metrics.compute().items()}
      metrics.reset()
      place_metrics()
      _check_finite(step, values, checkpoints)
      values[f"{units_name}_per_sec"] = units / max(time.perf_counter() - t0, 1e-9)
      writer.write(step, "train", values)
      history.append({"step": step, **values})
      bar.set_postfix({k: f"{v:.4f}" for k, v in values.items() if k in ("loss", "accuracy")})
      units, t0 = 0, time.perf_counter()
    is_last = step == num_steps
    eval_due = (eval_every and step % eval_every == 0) or is_last
    if selection is not None:
      if eval_due:
        with averaged_parameters(model, optimizer):
          is_last = _select(step, validate(), selection, state, model, best_checkpoints,
                            writer, history, keep_also=(committed,)) or is_last
    elif evaluate is not None and eval_due:
      final_eval = evaluate()
      writer.write(step, "eval", final_eval.metrics)
      history.append({"step": step, **{f"eval_{k}": v for k, v in final_eval.metrics.items()}})
    if selection is not None and is_last:
      stop_step = step
      break
    if checkpoints is not None:
      meta = final_metadata(final_eval) if is_last and final_eval is not None else {}
      if selection is not None:
        meta = {**meta, "selection": state}
      if checkpoints.save(step, model, optimizer, metadata=meta, force=is_last):
        committed = state["best_step"]
  bar.close()
  if selection is not None and not state["finished"]:
    best_checkpoints.restore(model)   # the selected parameters, not the last ones
    final_eval = evaluate() if evaluate is not None else None
    state["finished"] = True
    if checkpoints is not None:
      meta = final_metadata(final_eval) if final_eval is not None else {}
      checkpoints.save(stop_step, model, optimizer, force=True,
                       metadata={**meta, "selection": state})
  if final_eval is None and evaluate is not None:
    final_eval = evaluate()
  return LoopResult(step=stop_step if selection is not None else max(start, num_steps),
                    eval=final_eval, history=history, best_step=state["best_step"])


def _select(step: int, validation, selection: Selection, state: dict, model,
            best_checkpoints: Checkpoints, writer, history: list,
            keep_also: tuple = ()) -> bool:
  """Records a validation result; keeps the parameters if they are the best so far (and the
  best steps in ``keep_also``). Returns whether the run should stop now (patience
  exhausted)."""
  writer.write(step, "validation", validation.metrics)
  history.append({"step": step, **{f"validation_{k}": v for k, v in validation.metrics.items()}})
  value = float(validation.metrics[selection.metric])
  if selection.improves(value, state["best"]):
    state.update(best=value, best_step=step, bad_evals=0)
    best_checkpoints.save(step, model, force=True, keep_also=keep_also)
    return False
  state["bad_evals"] += 1
  return bool(selection.patience and state["bad_evals"] >= selection.patience
              and step >= selection.min_steps)
