"""The West-of-N research protocol on the embedded gold tasks: the data split, the reward
models' training recipes (validation-based checkpoint selection), the SFT policy, the host line
and the command line that every study of ``experiments/`` shares.

Protocol (the same for every RM, ``gin/selection.gin``): each RM trains for 10 passes over its
own training pairs (300 to 3000 steps, the learning-rate schedule over that run), and a
validation part carved from the human-labelled data selects its checkpoint; accuracy is measured
against the gold reward on a large held-out part (~4,000 pairs); the policy is trained once per
task; seeds change the RMs' initialisation and data order and West-of-N's sampling. Each task
runs in its own process (both cores busy), then the parent prints the table. Everything is
resumable: a killed run picks up from the finished stages in ``--root``.

The studies run from the repository's root: ``python -m experiments.<study> ...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPLIT = {"train": 0.2, "validation": 0.05, "unlabeled": 0.25, "heldout": 0.5}
# Fractions of all human pairs (train ∪ unlabeled); 50% is the base RM's 'train' part.
CURVE = {"human_10": 0.2, "human_25": 0.5}   # share of 'train' they keep
BEST_OF = 16
N_CURVE = (2, 4, 8, 16, 32)
QUANTILES = (0.0, 0.25, 0.5, 0.75)


def components(task: str, root: str, num_pairs: int, quick: bool, data_seed: int = 0):
  from policies.core.train_loop import Selection
  from policies.transformer import TransformerConfig
  from rm import tasks
  from rm.training import make_optimizer
  from westofn import pipeline, stages
  from westofn.settings import Batching, PolicySft, RewardModelRecipe
  vocab = tasks.byte_vocabulary()
  data = pipeline.load_preference_data(
      source=source(task, num_pairs, data_seed), vocabulary=vocab)
  small = functools.partial(TransformerConfig, d_model=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, ffn_dim=384)
  batching = Batching(rows=8, row_len=256, pairs_per_row=8, max_response_len=32)
  optimizer = functools.partial(make_optimizer, learning_rate=2e-3, warmup_steps=40,
                                weight_decay=0.01)
  # The protocol (gin/selection.gin): 10 passes over each RM's own data (300 to 3000 steps),
  # the checkpoint with the best validation loss.
  new = RewardModelRecipe(
      make_optimizer=optimizer, batching=batching, num_steps=60 if quick else 3000,
      model_config=small, selection=Selection(metric="loss"), epochs=10,
      min_steps=0 if quick else 300)
  # Two protocols it is compared with: a fixed 400 steps and the last checkpoint (before this
  # benchmark), and early stopping on the validation loss within a 3000-step schedule.
  old = RewardModelRecipe(make_optimizer=optimizer, batching=batching,
                          num_steps=40 if quick else 400, model_config=small)
  early = RewardModelRecipe(
      make_optimizer=optimizer, batching=batching, num_steps=60 if quick else 3000,
      model_config=small, selection=Selection(metric="loss", patience=4,
                                              min_steps=0 if quick else 200))
  policy = stages.policy_sft(
      data=data, run=stages.RunContext(model_dir=os.path.join(root, task), vocabulary=vocab,
                                       seed=0, eval_every=0, save_every=500, progress=False),
      settings=PolicySft(num_steps=30 if quick else 500, rows=8, row_len=256,
                         max_sequences_per_row=8, max_response_len=24, num_samples=8,
                         num_prompts=64, max_new_tokens=24),
      model_config=small, make_optimizer=functools.partial(make_optimizer, learning_rate=3e-3,
                                                           warmup_steps=50, weight_decay=0.0))
  return vocab, data, {"new": new, "old": old, "early": early}, policy


def subset(data, part: str, keep: float):
  """The pairs of ``part`` whose prompt falls in the first ``keep`` of prompt-hash order."""
  from rm.data import prompt_bucket
  return [t for t, p in zip(data.tokenized[part], data.raw[part])
          if prompt_bucket(p.prompt, "claims/curve") < keep]


def score(model, vocab, prompts, texts):
  from westofn.samples import score_texts
  return score_texts(model, vocab, prompts, texts)


def source(task: str, num_pairs: int, data_seed: int = 0):
  """The task's pairs: ``data_seed`` 0 is every study's data until the confirmation, which
  generates (and splits) fresh data with its own seed."""
  from westofn.settings import DataSource
  fresh = (dict(default_seed=data_seed, split_salt=f"data seed {data_seed}")
           if data_seed else {})
  return DataSource(task=task, default_num_pairs=num_pairs, split=SPLIT,
                    task_name=f"claims_{task}" + (f"_data{data_seed}" if data_seed else ""),
                    **fresh)


def ensemble_evaluation(members: list):
  """The held-out evaluation of an ensemble judge: its members' mean rewards per pair."""
  import types
  return types.SimpleNamespace(**{
      side: np.mean([np.asarray(getattr(m.train.eval, side)) for m in members], 0)
      for side in ("chosen", "rejected")})


def host_header() -> str:
  import jax
  import jaxlib
  flags = ""
  if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
      if line.startswith("flags"):
        have = set(line.split(":", 1)[1].split())
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
        break
  return (f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: "
          f"{flags or 'none of avx2/avx512f/avx512_bf16/amx_bf16'}; jax {jax.__version__}, "
          f"jaxlib {jaxlib.__version__}, python {platform.python_version()}")


def cli(*, doc: str, script: str, run_task, result_file: str, title: str, report_task,
        root_prefix: str, report=None, default_seeds: str = "0,1,2") -> None:
  """The command line of a gold-task benchmark: one child process per task (both cores busy),
  each writing ``result_file`` (with ``{task}``) under ``--root``; then the report: each
  task's ``report_task(result)``, or ``report(results)`` over all tasks."""
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tasks", default="letters,sorting")
  parser.add_argument("--seeds", default=default_seeds)
  parser.add_argument("--num_pairs", type=int, default=8000)
  parser.add_argument("--root", default=None, help="where models go (reused on a re-run)")
  parser.add_argument("--out", default=None, help="also write the report (markdown) here")
  parser.add_argument("--quick", action="store_true",
                      help="a few steps per model: checks that the script runs, measures nothing")
  parser.add_argument("--report_only", action="store_true",
                      help="rebuild the report from the results already in --root")
  parser.add_argument("--run_task", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.report_only and not args.root:
    parser.error("--report_only reads the results of an earlier run: give its --root")
  root = args.root or tempfile.mkdtemp(prefix=root_prefix)
  module = f"experiments.{os.path.splitext(os.path.basename(script))[0]}"
  seeds = [int(s) for s in args.seeds.split(",")]
  result = lambda task: os.path.join(root, result_file.format(task=task))
  if args.run_task:
    run_task(args.run_task, seeds, root, args.num_pairs, result(args.run_task), args.quick)
    return
  t0 = time.time()
  tasks = args.tasks.split(",")
  if not args.report_only:
    children = [subprocess.Popen([sys.executable, "-m", module, "--run_task", t,
                                  "--seeds", args.seeds, "--num_pairs", str(args.num_pairs),
                                  "--root", root] + (["--quick"] if args.quick else []),
                                 cwd=REPO) for t in tasks]
    codes = [c.wait() for c in children]
    if any(codes):
      raise SystemExit(f"a task failed: exit codes {dict(zip(tasks, codes))}")
  command = (f"`python -m {module} --tasks {args.tasks} --seeds "
             f"{args.seeds} --num_pairs {args.num_pairs}{' --quick' if args.quick else ''}`")
  out = [title, "", command + (": rebuilt from its results with `--report_only` (each task's "
                               "run time is in its heading)." if args.report_only else
                               f": {(time.time() - t0) / 60:.1f} min in all."),
         "", host_header(), ""]
  results = [json.load(open(result(t))) for t in tasks]
  out += [report(results)] if report is not None else [report_task(r) for r in results]
  text = "\n".join(out)
  print(text)
  if args.out:
    from policies.core.atomic import write_text_atomic
    write_text_atomic(args.out, text)
