"""Partitioning (data parallel, FSDP, tensor parallel) and runs of several processes on
JAX's own runtime: ``jax.distributed`` on localhost, CPU collectives over Gloo, each
process a subprocess of the test with 2 forced host devices."""

import json
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from policies.core.sharding import (RULE_TABLES, Partitioning, logical_to_mesh_spec,
                                    process_rows)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "multiprocess_rm.py")


def fake_mesh(shape, devices_per_process):
  """A mesh over stand-in devices (``process_index`` and ``id``), as ``Partitioning.mesh``
  orders them: by process, then id."""
  n = int(np.prod(shape))
  devs = [SimpleNamespace(id=i, process_index=i // devices_per_process) for i in range(n)]
  return SimpleNamespace(devices=np.asarray(devs, object).reshape(shape),
                         axis_names=("data", "fsdp", "tensor"),
                         shape=dict(zip(("data", "fsdp", "tensor"), shape)))


@pytest.mark.parametrize("shape", [(1, 4, 1), (1, 2, 2), (2, 2, 1), (4, 1, 1), (2, 1, 2)])
def test_each_process_gets_a_disjoint_block_of_rows_and_together_the_whole_batch(shape):
  mesh = fake_mesh(shape, devices_per_process=2)
  rows = [process_rows(mesh, 16, p) for p in (0, 1)]
  got = np.concatenate([np.arange(16)[r] for r in rows])
  np.testing.assert_array_equal(np.sort(got), np.arange(16))
  assert rows[0].stop <= rows[1].start
  # devices that hold the same rows (a tensor-parallel group) are one process's
  per_chunk = 16 // (shape[0] * shape[1])
  assert all((r.stop - r.start) % per_chunk == 0 for r in rows)


def test_process_rows_rejects_bad_layouts():
  with pytest.raises(ValueError, match="does not split over 4"):
    process_rows(fake_mesh((1, 4, 1), 2), 6, 0)
  with pytest.raises(ValueError, match="tensor-parallel group spans several processes"):
    process_rows(fake_mesh((1, 2, 2), 1), 8, 0)    # 1 device per process, tensor = 2
  with pytest.raises(ValueError, match="holds no device"):
    process_rows(fake_mesh((1, 4, 1), 2), 8, 5)


def test_partitioning_validates_and_sizes_its_mesh():
  assert Partitioning().axis_sizes(8) == (8, 1, 1)
  assert Partitioning({"data": 2, "fsdp": -1, "tensor": 2}).axis_sizes(8) == (2, 2, 2)
  assert Partitioning({"fsdp": -1}).axis_sizes(4) == (1, 4, 1)
  with pytest.raises(ValueError, match="needs 4 devices, there are 8"):
    Partitioning({"data": 2, "fsdp": 2, "tensor": 1}).axis_sizes(8)
  with pytest.raises(ValueError, match="does not divide 6"):
    Partitioning({"data": -1, "tensor": 4}).axis_sizes(6)
  with pytest.raises(ValueError, match="unknown axes"):
    Partitioning({"model": 2})
  with pytest.raises(ValueError, match="at most one axis"):
    Partitioning({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="rules='zero3'"):
    Partitioning(rules="zero3")
  assert Partitioning(rules=(("embed", "fsdp"),)).rule_table == (("embed", "fsdp"),)
  with pytest.raises(ValueError, match=r"unknown mesh axes \['model'\]"):
    Partitioning(rules=(("mlp", "model"),))


def test_rule_tables_map_logical_names_and_keep_undivisible_axes_whole():
  mesh = SimpleNamespace(shape={"data": 1, "fsdp": 2, "tensor": 2})
  names = ("embed", "q_heads", "head_dim")
  assert logical_to_mesh_spec(names, RULE_TABLES["data_parallel"]) == P(None, None, None)
  assert logical_to_mesh_spec(names, RULE_TABLES["fsdp"]) == P("fsdp", None, None)
  assert logical_to_mesh_spec(names, RULE_TABLES["tensor_parallel"]) == P(None, "tensor", None)
  assert logical_to_mesh_spec(names, RULE_TABLES["fsdp_tensor"], (576, 8, 64), mesh) == P(
      "fsdp", "tensor", None)
  # SmolLM2's 9 query heads do not split over 2 devices: that axis stays whole
  kept = set()
  assert logical_to_mesh_spec(names, RULE_TABLES["fsdp_tensor"], (576, 9, 64), mesh,
                              kept) == P("fsdp", None, None)
  assert kept == {("q_heads", 9, "tensor")}
  assert logical_to_mesh_spec(("mlp", "embed"), RULE_TABLES["fsdp_tensor"]) == P(
      "tensor", "fsdp")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _spawn(command_of, processes: int, devices: int, timeout: int = 1500) -> list:
  """Runs ``command_of(i)`` for processes ``i = 0..processes-1`` side by side, each with
  ``devices`` forced CPU devices; returns their logs, asserting that all succeeded. The
  timeout only catches a hang: a West-of-N run on 2 processes took 400 s on a 2-core machine
  shared with other jobs, so it is far above that."""
  # PYTHONPATH: the worker script imports this tree's code, not an installed copy
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  procs = [subprocess.Popen(command_of(i), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(processes)]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def _run(out, *args, processes=1, devices=1):
  """The worker script (``multiprocess_rm.py``); returns each process's result."""
  os.makedirs(out, exist_ok=True)
  cmd = [sys.executable, WORKER, "--out", str(out), *args]
  if processes > 1:
    cmd += ["--coordinator", f"localhost:{_free_port()}", "--num_processes", str(processes)]
  _spawn(lambda i: cmd + (["--process_id", str(i)] if processes > 1 else []), processes,
         devices)
  return [json.load(open(os.path.join(out, f"result_{i}.json"))) for i in range(processes)]


def _params(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_two_processes_fsdp_and_tensor_parallel_match_one_device_and_restore_across(tmp_path):
  """10 RM steps: 1 process x 1 device (reference) vs 2 processes x 2 devices with FSDP and
  FSDP + tensor parallelism; then checkpoints restored across the two topologies."""
  ref = _run(tmp_path / "ref", "--rules", "data_parallel")[0]["data_parallel"]
  # also reads the reference's checkpoint (1 process, 1 device) into each 2 x 2 layout
  multi = _run(tmp_path / "multi", "--rules", "fsdp,fsdp_tensor", "--restore",
               str(tmp_path / "ref" / "ckpt_data_parallel"), processes=2, devices=2)
  ref_params = _params(tmp_path / "ref" / "params_data_parallel.npz")
  for rules, mesh in (("fsdp", {"data": 1, "fsdp": 4, "tensor": 1}),
                      ("fsdp_tensor", {"data": 1, "fsdp": 2, "tensor": 2})):
    got = multi[0][rules]
    assert got["mesh"] == mesh
    assert len(got["losses"]) == 10
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)
    # parameters are really split: a matrix over fsdp (and its heads over tensor)
    assert got["specs"]["backbone/blocks/0/attn/wq"] == (
        "P('fsdp', 'tensor', None)" if rules == "fsdp_tensor" else "P('fsdp', None, None)")
    # each process's devices hold its own rows of a global batch, and the two cover it
    assert [m[rules]["held_rows"] for m in multi] == [[0, 4], [4, 8]]
    assert all(m[rules]["held_rows_are_the_batch_rows"] for m in multi)
    trained = _params(tmp_path / "multi" / f"params_{rules}.npz")
    assert trained.keys() == ref_params.keys()
    for k in ref_params:
      np.testing.assert_allclose(trained[k], ref_params[k], rtol=1e-4, atol=1e-6, err_msg=k)
    # a checkpoint of 1 process with 1 device, read by 2 processes x 2 devices
    restored = _params(tmp_path / "multi" / f"restored_{rules}.npz")
    for k, v in ref_params.items():
      np.testing.assert_array_equal(restored[k], v, err_msg=k)
  # and the reverse: written by 2 processes x 2 devices (FSDP), read by 1 process, 1 device
  _run(tmp_path / "back", "--rules", "data_parallel", "--no_train", "--restore",
       str(tmp_path / "multi" / "ckpt_fsdp"))
  restored = _params(tmp_path / "back" / "restored_data_parallel.npz")
  for k, v in _params(tmp_path / "multi" / "params_fsdp.npz").items():
    np.testing.assert_array_equal(restored[k], v, err_msg=k)


def test_only_process_0_writes_records_metrics_and_plots(tmp_path, monkeypatch):
  import jax

  from policies.core.atomic import write_text_atomic
  from policies.core.metrics_writer import NullWriter
  from policies.core.stage_dir import StageDir
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  write_text_atomic(str(tmp_path / "report.md"), "x")
  assert isinstance(StageDir(str(tmp_path / "stage")).metrics_writer(), NullWriter)
  assert not (tmp_path / "report.md").exists()
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  write_text_atomic(str(tmp_path / "report.md"), "x")
  assert (tmp_path / "report.md").read_text() == "x"


def test_multiprocess_flags_and_log_tags():
  import logging

  from westofn import train as train_script
  from westofn import distributed
  *_, flags = train_script.parse_flags(["--gin_file=a.gin", "--multiprocess",
                                        "--coordinator_address=h:1", "--num_processes=2",
                                        "--process_id=1"])
  assert flags == distributed.DistributedFlags(True, "h:1", 2, 1)
  with pytest.raises(SystemExit):
    train_script.parse_flags(["--gin_file=a.gin", "--process_id=1"])
  factory = logging.getLogRecordFactory()
  try:
    distributed.tag_log_records(1, 2)
    record = logging.getLogger("westofn").makeRecord("westofn", logging.INFO, "f", 1, "hi %d",
                                                      (3,), None)
    assert record.getMessage() == "[process 1/2] hi 3"
  finally:
    logging.setLogRecordFactory(factory)


def _train_cli(model_dir, extra, processes=1, devices=1):
  """``python -m westofn.train`` as 1 process or as ``processes`` joined by jax.distributed."""
  cmd = [sys.executable, "-m", "westofn.train", f"--gin.MODEL_DIR={model_dir}", *extra]
  if processes > 1:
    cmd += ["--multiprocess", f"--coordinator_address=localhost:{_free_port()}",
            f"--num_processes={processes}"]
  return _spawn(lambda i: cmd + ([f"--process_id={i}"] if processes > 1 else []), processes,
                devices)


@pytest.mark.slow
def test_west_of_n_pipeline_on_two_processes_with_fsdp_equals_one_device(tmp_path):
  """Every stage of a West-of-N run (base RM, SFT policy, sampling, judging, student,
  RM(human 100%), best-of-N) on 2 processes x 2 devices under FSDP gives the run of 1
  process on 1 device; process 0 alone writes the reports and records."""
  args = ["--gin_file=gin/west_of_n_demo.gin", "--gin_file=gin/fsdp.gin",
          "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=200",
          "--gin.RewardModelRecipe.num_steps=10", "--gin.PolicySft.num_steps=10",
          "--gin.PolicySft.num_prompts=2", "--gin.PolicySft.num_samples=2",
          "--gin.WestOfNSampling.num_samples=4", "--gin.WestOfNSampling.max_new_tokens=8",
          "--gin.train.best_of_n=4"]
  logs = _train_cli(tmp_path / "multi", args, processes=2, devices=2)
  _train_cli(tmp_path / "single", args)
  assert "[process 1/2] base_rm:" in logs[1] and "fsdp on mesh {'data': 1, 'fsdp': 4" in logs[1]
  assert "| base_rm |" in logs[0] and "| base_rm |" not in logs[1]   # the report: process 0
  for stage in ("base_rm", "human_100"):
    got, want = (json.load(open(tmp_path / run / stage / "eval.json")) for run in
                 ("multi", "single"))
    assert abs(got["accuracy"] - want["accuracy"]) <= 1.0 / want["num_pairs"], stage
  (multi_pairs,), (single_pairs,) = (
      list((tmp_path / run / "west_of_n").glob("*/round1/synthetic_pairs.jsonl"))
      for run in ("multi", "single"))
  texts = [[(r["prompt"], r["chosen"], r["rejected"]) for r in map(json.loads, open(p))]
           for p in (multi_pairs, single_pairs)]
  assert len(texts[0]) == len(texts[1]) > 0
  assert np.mean([a == b for a, b in zip(*texts)]) >= 0.95
  assert not list((tmp_path / "multi").rglob("*.tmp-*"))


@pytest.mark.slow
def test_a_lost_process_stops_the_others_in_one_line_and_the_run_resumes(tmp_path):
  """SIGKILL of process 1 of 2 mid-training: process 0 stops within the heartbeat timeout
  (not when a collective times out minutes later) with one line naming process 1 and exit
  code 6; the same command on both processes then resumes from the last verified
  checkpoint to the result of a run that was never interrupted."""
  import signal
  import time
  args = ["--gin_file=gin/demo.gin", "--gin.RunSettings.progress=False",
          "--gin.DataSource.default_num_pairs=300", "--gin.RewardModelRecipe.num_steps=160",
          "--gin.RunSettings.save_every=20", "--gin.RunSettings.eval_every=0",
          "--heartbeat_timeout=8"]
  _train_cli(tmp_path / "whole", args, processes=2)
  model_dir = tmp_path / "killed"
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [sys.executable, "-m", "westofn.train", f"--gin.MODEL_DIR={model_dir}", *args,
         "--multiprocess", f"--coordinator_address=localhost:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    digest = model_dir / "base_rm" / "checkpoints" / "40" / "westofn_digest.json"
    deadline = time.time() + 600
    while not digest.exists() and time.time() < deadline and procs[0].poll() is None:
      time.sleep(0.2)
    assert digest.exists() and procs[0].poll() is None, "the run ended before step 40"
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    err = procs[0].communicate(timeout=120)[1]
    stopped_after = time.time() - killed_at
  finally:
    for p in procs:
      p.kill()
  assert procs[0].returncode == 6, err[-3000:]
  assert stopped_after < 8 + 30, stopped_after
  lines = [line for line in err.splitlines() if line.startswith("westofn: error:")]
  assert len(lines) == 1 and "process 1 of 2 is lost" in lines[0], err[-3000:]
  assert "Traceback" not in err and "Check failure" not in err
  _train_cli(model_dir, args, processes=2)   # the same command again: resumes
  got, want = (json.load(open(d / "base_rm" / "eval.json")) for d in (model_dir,
                                                                      tmp_path / "whole"))
  assert got["accuracy"] == want["accuracy"] and got["loss"] == pytest.approx(want["loss"],
                                                                              rel=1e-6)
