"""Checkpoint selection on validation data with early stopping (policies.core.train_loop)."""

import dataclasses

import numpy as np
import optax
import pytest
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.metrics_writer import NullWriter
from policies.core.train_loop import Selection, run_training


class Batch:
  def arrays(self):
    return {"x": np.ones((2, 2), np.float32)}


@nnx.jit
def _step(model, optimizer, metrics, batch):
  grads = nnx.grad(lambda m: (m(batch["x"]) ** 2).mean())(model)
  optimizer.update(model, grads)
  metrics.update(loss=(model(batch["x"]) ** 2).mean())


@dataclasses.dataclass
class Eval:
  metrics: dict


def _run(tmp_path, losses, *, selection, num_steps=100, eval_every=10):
  """Trains a linear model; validation 'loss' follows ``losses`` (one per evaluation)."""
  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
  seen = {}   # step -> parameters at that validation

  def validate():
    k = len(seen)
    seen[k] = np.asarray(model.kernel[...]).copy()
    return Eval({"loss": losses[k], "accuracy": -losses[k]})

  ckpt = Checkpoints(str(tmp_path / "ckpt"), save_every=10)
  best = Checkpoints(str(tmp_path / "best"), save_every=0, model_only=True)
  result = run_training(
      model=model, optimizer=optimizer, metrics=nnx.MultiMetric(loss=nnx.metrics.Average("loss")),
      step_fn=_step, train_batches=lambda start: iter(Batch, None), num_steps=num_steps,
      writer=NullWriter(), checkpoints=ckpt, evaluate=lambda: Eval({"loss": 0.0}),
      eval_every=eval_every, log_every=10, progress=False, validate=validate,
      selection=selection, best_checkpoints=best)
  ckpt.close()
  best.close()
  return result, model, seen


def test_keeps_the_best_validation_checkpoint_and_stops_early(tmp_path):
  losses = [5.0, 3.0, 4.0, 4.5, 6.0, 1.0, 0.5, 0.1, 0.1, 0.1]
  result, model, seen = _run(tmp_path, losses, selection=Selection(patience=3))
  # best at the 2nd evaluation (step 20); three worse ones follow, so it stops at step 50
  assert (result.best_step, result.step) == (20, 50)
  np.testing.assert_array_equal(np.asarray(model.kernel[...]), seen[1])
  assert not np.array_equal(seen[1], seen[4])   # training did move on after step 20
  # a re-run finds the run finished: it neither trains nor validates, and has the best params
  again, model2, seen2 = _run(tmp_path, losses, selection=Selection(patience=3))
  assert (again.best_step, again.step) == (20, 50) and not seen2
  np.testing.assert_array_equal(np.asarray(model2.kernel[...]), seen[1])


def test_accuracy_is_maximised_and_min_steps_delays_the_stop(tmp_path):
  losses = [5.0, 3.0, 4.0, 4.5, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0]   # accuracy = -loss
  result, _, _ = _run(tmp_path, losses, selection=Selection(metric="accuracy", patience=2,
                                                            min_steps=70))
  assert (result.best_step, result.step) == (20, 70)


def test_without_patience_runs_the_whole_budget_and_resumes_mid_run(tmp_path):
  losses = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1]
  first, _, _ = _run(tmp_path, losses, selection=Selection(), num_steps=50)
  assert (first.best_step, first.step) == (30, 50)
  # asking for a larger budget of a finished selection run does not train on
  more, _, seen = _run(tmp_path, losses, selection=Selection(), num_steps=100)
  assert more.step == 50 and not seen


def test_selection_needs_validation_and_rejects_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="metric"):
    Selection(metric="f1")
  with pytest.raises(ValueError, match=">= 0"):
    Selection(patience=-1)
  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="validation data"):
    run_training(model=model, optimizer=nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param),
                 metrics=nnx.MultiMetric(loss=nnx.metrics.Average("loss")), step_fn=_step,
                 train_batches=lambda s: iter(Batch, None), num_steps=5, writer=NullWriter(),
                 selection=Selection(), eval_every=1)
