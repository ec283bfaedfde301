"""``reward_model_stage(start=)`` (``WestOfNStudent.start='teacher'``): an RM that continues
from a trained one's parameters, recorded in its identity."""

import dataclasses

import numpy as np
import pytest

from policies.core.stage_dir import StageRecord, params_digest
from policies.core.train_loop import make_optimizer
from policies.transformer import TransformerConfig
from rm import tasks
from rm.data import PreferencePair
from westofn.settings import Batching, WestOfN, WestOfNStudent
from westofn.settings import RewardModelRecipe
from westofn.stages.common import RunContext
from westofn.stages.reward_model import reward_model_stage


def _pairs(vocab, n, name):
  pairs = [PreferencePair(f"q{i}:", "yes" * (1 + i % 3), "no" * (1 + i % 2), 0.0, f"{name}{i}")
           for i in range(n)]
  task = tasks.register_preference_task(name, {"train": pairs}, vocab)
  return tasks.tokenized_pairs(task, "train")


def _recipe(num_steps, width=32):
  return RewardModelRecipe(
      make_optimizer=lambda model, total_steps: make_optimizer(model, learning_rate=1e-2,
                                                               total_steps=total_steps),
      batching=Batching(rows=2, row_len=64, pairs_per_row=2, max_response_len=16),
      num_steps=num_steps,
      model_config=lambda vocab_size: TransformerConfig(
          vocab_size=vocab_size, d_model=width, num_layers=1, num_heads=2, num_kv_heads=1,
          ffn_dim=48))


def test_a_student_starts_from_its_teacher_and_records_it(tmp_path):
  vocab = tasks.byte_vocabulary()
  train, heldout = _pairs(vocab, 8, "start_train"), _pairs(vocab, 4, "start_heldout")
  run = RunContext(model_dir=str(tmp_path), vocabulary=vocab, progress=False)
  teacher = reward_model_stage(name="teacher", stage_dir=str(tmp_path / "teacher"),
                               train_pairs=train, eval_pairs=heldout, run=run,
                               recipe=_recipe(3))
  # 0 steps from the teacher: the teacher itself, whatever the student's own seed
  other_seed = dataclasses.replace(run, seed=7)
  copy = reward_model_stage(name="copy", stage_dir=str(tmp_path / "copy"), train_pairs=train,
                            eval_pairs=heldout, run=other_seed, recipe=_recipe(0),
                            start=teacher)
  assert params_digest(copy.model) == params_digest(teacher.model)
  np.testing.assert_allclose(copy.train.eval.chosen, teacher.train.eval.chosen, rtol=1e-6)
  scratch = reward_model_stage(name="scratch", stage_dir=str(tmp_path / "scratch"),
                               train_pairs=train, eval_pairs=heldout, run=other_seed,
                               recipe=_recipe(0))
  assert params_digest(scratch.model) != params_digest(teacher.model)
  # the start is part of the stage's identity: its name and its parameters
  student = reward_model_stage(name="student", stage_dir=str(tmp_path / "student"),
                               train_pairs=train, eval_pairs=heldout, run=run,
                               recipe=_recipe(2), start=teacher)
  assert StageRecord(str(tmp_path / "student")).identity["start"] == {
      "stage": "teacher", "params": params_digest(teacher.model)}
  assert "start" not in StageRecord(str(tmp_path / "teacher")).identity
  assert params_digest(student.model) != params_digest(teacher.model)   # it trained on
  # resuming it from another start is refused, not mixed
  with pytest.raises(ValueError, match="start"):
    reward_model_stage(name="student", stage_dir=str(tmp_path / "student"), train_pairs=train,
                       eval_pairs=heldout, run=run, recipe=_recipe(2), start=scratch)
  with pytest.raises(ValueError, match="cannot start from teacher: another kind of model or "
                                       "another architecture"):
    reward_model_stage(name="wide", stage_dir=str(tmp_path / "wide"), train_pairs=train,
                       eval_pairs=heldout, run=run, recipe=_recipe(2, width=64), start=teacher)


def test_student_start_is_checked_and_named_only_when_not_the_papers():
  from westofn import west_of_n
  assert "student_start" not in west_of_n.settings_record(WestOfN())
  assert west_of_n.settings_record(WestOfN.build(start="teacher"))["student_start"] == "teacher"
  with pytest.raises(ValueError, match="WestOfNStudent.start must be 'scratch' or 'teacher'"):
    WestOfNStudent(start="base")


def test_a_stage_with_a_parameter_average_keeps_the_average_and_records_it(tmp_path):
  """``Selection.average_decay``: the stage's optimizer keeps the average, validation reads it,
  the kept model is it (not the raw parameters'), and the setting is in the stage's identity
  only when on (so stages from before it keep theirs)."""
  from policies.core.train_loop import Selection
  vocab = tasks.byte_vocabulary()
  train, heldout = _pairs(vocab, 8, "avg_train"), _pairs(vocab, 4, "avg_heldout")
  validation = _pairs(vocab, 4, "avg_validation")
  run = RunContext(model_dir=str(tmp_path), vocabulary=vocab, progress=False, eval_every=2)

  def recipe(selection):
    return dataclasses.replace(
        _recipe(6), selection=selection,
        make_optimizer=lambda model, total_steps, **kw: make_optimizer(
            model, learning_rate=1e-2, total_steps=total_steps, **kw))

  results = {}
  for name, selection in (("plain", Selection()), ("average", Selection(average_decay=0.5))):
    results[name] = reward_model_stage(name=name, stage_dir=str(tmp_path / name),
                                       train_pairs=train, eval_pairs=heldout, run=run,
                                       recipe=recipe(selection), validation_pairs=validation)
  identity = {k: StageRecord(str(tmp_path / k)).identity["selection"] for k in results}
  assert "average_decay" not in identity["plain"]
  assert identity["average"]["average_decay"] == 0.5
  # same data, seed and steps: the average differs from the parameters the plain run kept
  assert params_digest(results["average"].model) != params_digest(results["plain"].model)
  again = reward_model_stage(name="average", stage_dir=str(tmp_path / "average"),
                             train_pairs=train, eval_pairs=heldout, run=run,
                             recipe=recipe(Selection(average_decay=0.5)),
                             validation_pairs=validation)
  assert params_digest(again.model) == params_digest(results["average"].model)
