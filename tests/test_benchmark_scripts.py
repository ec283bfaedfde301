"""Helpers of the benchmark scripts that decide what a result says."""

import json
import os

import pytest

from conftest import REPO


@pytest.fixture
def hh_best_rm(monkeypatch):
  monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
  import hh_best_rm
  return hh_best_rm


def test_a_resumed_runs_wall_time_adds_its_invocations_up_to_their_last_logged_rows(hh_best_rm):
  rows = [{"time": t} for t in (50.0, 80.0, 130.0, 190.0)]
  # one invocation: start to end, whatever it logged
  assert hh_best_rm.invocations_wall_s([10.0], rows, 200.0) == pytest.approx(190.0)
  # killed after its row at 80 (the rows it logged later were dropped on resume), resumed at 100
  assert hh_best_rm.invocations_wall_s([0.0, 100.0], rows, 200.0) == pytest.approx(80 + 100)
  # one killed before it logged anything counts nothing, not the gap to the next start
  assert hh_best_rm.invocations_wall_s([0.0, 90.0, 120.0], rows[:1] + rows[2:],
                                       200.0) == pytest.approx(50 + 0 + 80)


def test_steps_of_a_budget_and_the_finals_validation_interval(hh_best_rm):
  assert hh_best_rm.steps_in(60.0, 2.0) == 60 * 60 * 2 // hh_best_rm.RECIPE["batch"]
  assert hh_best_rm.steps_in(0.01, 0.1) == 2
  assert hh_best_rm.final_eval_every(2659) == 664
  assert hh_best_rm.final_eval_every(3) == 1
  raw = {"settings": {"budget_minutes": 60.0}, "winner": "a",
         "screen": {"a": {"pairs_per_s": 1.66}}}
  assert hh_best_rm.final_run_steps(raw) == hh_best_rm.final_steps(raw) == 1494
  raw["final"] = {"westofn": {"steps": 1492}}     # TRL trains what westofn's final trained
  assert hh_best_rm.final_run_steps(raw) == 1492


def test_sides_of_the_final_are_checked(hh_best_rm):
  assert hh_best_rm.sides("trl") == ["trl"]
  assert hh_best_rm.sides("westofn,trl") == ["westofn", "trl"]
  with pytest.raises(Exception, match="unknown side trll"):
    hh_best_rm.sides("westofn,trll")


def test_a_jobs_invocation_log_gives_the_starts_since_it_last_ended(tmp_path, monkeypatch):
  from benchmarks import bench_common
  clock = iter(range(100, 200))
  monkeypatch.setattr(bench_common.time, "time", lambda: float(next(clock)))
  log = str(tmp_path / "won.invocations.jsonl")
  mark = bench_common.mark_invocation
  assert mark(log, "start") == [100.0]
  assert mark(log, "end") == [100.0]                     # ran through
  assert mark(log, "start") == [102.0]                   # the next job starts afresh
  assert mark(log, "start") == [102.0, 103.0]            # the first was killed: resumed
  assert mark(log, "start") == [102.0, 103.0, 104.0]
  assert mark(log, "end") == [102.0, 103.0, 104.0]
  assert mark(log, "start") == [106.0]
  assert [(e["event"], e["time"]) for e in map(json.loads, open(log))] == [
      ("start", 100.0), ("end", 101.0), ("start", 102.0), ("start", 103.0), ("start", 104.0),
      ("end", 105.0), ("start", 106.0)]
  with pytest.raises(ValueError, match="won.invocations.jsonl: event must be start or end"):
    mark(log, "stop")
  assert len(open(log).readlines()) == 7                 # a wrong event writes nothing
