"""Checkpoint selection on validation data with early stopping (policies.core.train_loop)."""

import dataclasses

import numpy as np
import optax
import pytest
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.metrics_writer import NullWriter
from policies.core.train_loop import (Selection, averaged_parameters, make_optimizer,
                                      run_training)


class Batch:
  def arrays(self):
    return {"x": np.ones((2, 2), np.float32)}


def _eager_step(model, optimizer, metrics, batch):
  grads = nnx.grad(lambda m: (m(batch["x"]) ** 2).mean())(model)
  optimizer.update(model, grads)
  metrics.update(loss=(model(batch["x"]) ** 2).mean())


_step = nnx.jit(_eager_step)


@dataclasses.dataclass
class Eval:
  metrics: dict


class Killed(Exception):
  """The run is killed here."""


def _batches(kill_at=None):
  """A batch stream from a start step; with ``kill_at``, the process dies before that
  step."""
  def stream(start):
    for step in range(start + 1, 10 ** 9):
      if step == kill_at:
        raise Killed(step)
      yield Batch()
  return stream


def _run(tmp_path, losses, *, selection, num_steps=100, eval_every=10, save_every=10,
         kill_at=None):
  """Trains a linear model; validation 'loss' follows ``losses`` (one per evaluation). With
  ``selection.average_decay`` the optimizer is ``make_optimizer``'s, keeping the average."""
  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  if selection.average_decay:
    optimizer = make_optimizer(model, learning_rate=0.05, total_steps=num_steps, warmup_steps=1,
                               average_decay=selection.average_decay)
  else:
    optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
  seen = {}   # step -> parameters at that validation

  def validate():
    k = len(seen)
    seen[k] = np.asarray(model.kernel[...]).copy()
    return Eval({"loss": losses[k], "accuracy": -losses[k]})

  ckpt = Checkpoints(str(tmp_path / "ckpt"), save_every=save_every)
  best = Checkpoints(str(tmp_path / "best"), save_every=0, model_only=True, keep=1)
  try:
    result = run_training(
        model=model, optimizer=optimizer,
        metrics=nnx.MultiMetric(loss=nnx.metrics.Average("loss")), step_fn=_step,
        train_batches=_batches(kill_at), num_steps=num_steps, writer=NullWriter(),
        checkpoints=ckpt, evaluate=lambda: Eval({"loss": 0.0}), eval_every=eval_every,
        log_every=10, progress=False, validate=validate, selection=selection,
        best_checkpoints=best)
  except Killed:
    result = None
  finally:
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


def test_a_run_killed_before_its_first_checkpoint_redoes_its_best_steps(tmp_path):
  """Killed after saving best parameters at steps 10 and 20 but before any checkpoint (every
  30 steps), the run starts again from step 0: its new best at step 10 replaces the dead
  run's step 20 (Orbax saves no step older than one on disk)."""
  losses = [5.0, 4.0, 3.0, 3.5, 3.6]   # steps 10..50: best at 30
  killed, _, _ = _run(tmp_path, losses, selection=Selection(), num_steps=50, save_every=30,
                      kill_at=25)
  assert killed is None and Checkpoints(str(tmp_path / "best"), read_only=True,
                                        model_only=True).latest_step() == 20
  again, model, seen = _run(tmp_path, losses, selection=Selection(), num_steps=50,
                            save_every=30)
  assert (again.best_step, again.step) == (30, 50)
  np.testing.assert_array_equal(np.asarray(model.kernel[...]), seen[2])
  uninterrupted, _, _ = _run(tmp_path / "fresh", losses, selection=Selection(), num_steps=50,
                             save_every=30)
  assert (uninterrupted.best_step, uninterrupted.step) == (30, 50)


def test_the_best_a_checkpoint_names_survives_a_kill_after_a_newer_best(tmp_path):
  """The checkpoint at step 20 names step 20 as the best; the run saves a better step 30 and
  is killed at 35. The resumed run (from step 20) sees worse results this time: it must end
  with step 20's parameters, not the dead run's step 30 nor nothing."""
  first, _, seen = _run(tmp_path, [5.0, 3.0, 2.0], selection=Selection(), num_steps=50,
                        save_every=20, kill_at=35)
  assert first is None
  again, model, seen_again = _run(tmp_path, [4.0, 4.5, 5.0], selection=Selection(),
                                  num_steps=50, save_every=20)
  assert (again.best_step, again.step) == (20, 50) and len(seen_again) == 3
  np.testing.assert_array_equal(np.asarray(model.kernel[...]), seen[1])


def _ema_reference(trajectory, decay):
  """numpy: the zero-started exponential moving average after each step, bias-corrected."""
  average, out = np.zeros_like(trajectory[0]), []
  for t, params in enumerate(trajectory, start=1):
    average = decay * average + (1 - decay) * params
    out.append(average / (1 - decay ** t))
  return out


@pytest.mark.parametrize("jit", [True, False])
def test_the_parameter_average_matches_numpy_and_leaves_training_alone(jit):
  step = _step if jit else _eager_step
  models = [nnx.Linear(2, 1, rngs=nnx.Rngs(0)) for _ in range(2)]
  plain = make_optimizer(models[0], learning_rate=0.05, total_steps=20, warmup_steps=1)
  averaging = make_optimizer(models[1], learning_rate=0.05, total_steps=20, warmup_steps=1,
                             average_decay=0.8)
  metrics = [nnx.MultiMetric(loss=nnx.metrics.Average("loss")) for _ in range(2)]
  trajectory = []
  for _ in range(7):
    for model, opt, m in zip(models, (plain, averaging), metrics):
      step(model, opt, m, Batch().arrays())
    trajectory.append(np.asarray(models[1].kernel[...]).copy())
  # the average is a passenger: the parameters train exactly as without it
  np.testing.assert_array_equal(np.asarray(models[0].kernel[...]), trajectory[-1])
  want = _ema_reference(trajectory, 0.8)[-1]
  np.testing.assert_allclose(np.asarray(averaging.averaged_params()["kernel"]), want, rtol=1e-5)
  with averaged_parameters(models[1], averaging):
    np.testing.assert_allclose(np.asarray(models[1].kernel[...]), want, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(models[1].kernel[...]), trajectory[-1])
  with pytest.raises(ValueError, match="no parameter average"):
    plain.averaged_params()


def test_selection_validates_keeps_and_resumes_the_average(tmp_path):
  losses = [5.0, 4.0, 3.0, 3.5, 3.6]   # steps 10..50: best at 30
  selection = Selection(average_decay=0.9)
  plain, plain_model, plain_seen = _run(tmp_path / "plain", losses, selection=Selection(),
                                        num_steps=50)
  result, model, seen = _run(tmp_path / "avg", losses, selection=selection, num_steps=50)
  assert (result.best_step, result.step) == (30, 50)
  # validation saw the average (not the raw parameters, which move faster), and the model
  # ends with the average at the best step
  np.testing.assert_array_equal(np.asarray(model.kernel[...]), seen[2])
  assert not np.allclose(seen[2], plain_seen[2])
  # killed at step 25 (after the checkpoint at 20) and resumed: the average travelled in the
  # checkpoint, so every validation and the kept parameters are the uninterrupted run's
  killed, _, _ = _run(tmp_path / "killed", losses, selection=selection, num_steps=50,
                      kill_at=25)
  assert killed is None
  # (the resumed run validates from step 30 on: its validation losses are the ones from there)
  again, model2, seen2 = _run(tmp_path / "killed", losses[2:], selection=selection,
                              num_steps=50)
  assert (again.best_step, again.step) == (30, 50)
  for k in (2, 3, 4):   # evaluations after the resume (steps 30, 40, 50)
    np.testing.assert_allclose(seen2[k - 2], seen[k], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(model2.kernel[...]), seen[2], rtol=1e-6)


def test_the_average_needs_selection_on_both_sides(tmp_path):
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    Selection(average_decay=1.0)
  assert "average_decay" not in Selection().record()
  assert Selection(average_decay=0.99).record()["average_decay"] == 0.99
  model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  best = Checkpoints(str(tmp_path / "best"), save_every=0, model_only=True, keep=1)
  common = dict(model=model, metrics=nnx.MultiMetric(loss=nnx.metrics.Average("loss")),
                step_fn=_step, train_batches=_batches(), num_steps=5, writer=NullWriter(),
                eval_every=1, validate=lambda: Eval({"loss": 0.0}), best_checkpoints=best)
  with pytest.raises(ValueError, match="go together"):
    run_training(optimizer=nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param),
                 selection=Selection(average_decay=0.9), **common)
  with pytest.raises(ValueError, match="go together"):
    run_training(optimizer=make_optimizer(model, average_decay=0.9), selection=Selection(),
                 **common)
  best.close()
