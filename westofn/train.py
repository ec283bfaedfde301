r"""The pipeline and its command. ``train()``, the function gin configures
(``westofn.train.train`` in every .gin file and in each run's ``config.gin``), runs the stages
in order in one MODEL_DIR; ``python -m westofn.train --gin_file=gin/demo.gin
--gin.MODEL_DIR=/tmp/demo`` (or ``westofn train ...``) parses the flags and calls it.

Flags, t5x style:
  --gin_file=F          a .gin file (repeatable; found relative to --gin_search_paths)
  --gin.NAME=VALUE      one binding, e.g. --gin.RewardModelRecipe.num_steps=200; a bare string
                        value such as a path is quoted for you
  --gin_search_paths=P  comma-separated directories to look for gin files in
  --gin_bindings=B      a raw gin binding (repeatable)
  --multiprocess        one of several processes (jax.distributed): on TPU VMs and SLURM
                        the cluster says who is who; elsewhere give --coordinator_address
                        (host:port of process 0), --num_processes and --process_id
  --debug               show the traceback of a user error (bad data, config, model_dir)
  --compilation_cache=D where compiled programs are kept for later runs (default
                        ~/.cache/westofn/xla; 'off' for none): policies.core.compile_cache

The operative config (every value the run used) is written to MODEL_DIR/config.gin.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

import gin

from policies.core.atomic import write_text_atomic, writes_here
from policies.core.sharding import Partitioning
from westofn import compat, distributed, pipeline, report
from westofn import stages as stages_lib
from westofn.cli.common import configure_logging, gin_bindings, run_cli
from westofn.costs import StageCosts
from westofn.errors import ConfigError
from westofn.model_dir import ModelDir
from westofn.model_dir_lock import ModelDirLock
from westofn.settings import (CRlft, DataSource, Dpo, Hir, PolicyRecipe, Rest, RewardModelRecipe,
                              RunSettings, WestOfN)

log = logging.getLogger("westofn")
STAGES = ("base_rm", "policy_sft", "west_of_n", "human_100", "rest", "dpo", "hir", "c_rlft")
# Every run's setting groups, bound before the user's files (which may bind their own), so
# that a flag such as --gin.RunSettings.seed=1 reaches train() whatever the files bind. One
# ScoringRows serves every stage that scores samples.
GROUPS = """from __gin__ import dynamic_registration
import westofn.settings
import westofn.train as train_script
train_script.train.rm_recipe = @westofn.settings.RewardModelRecipe()
westofn.settings.RewardModelRecipe.batching = @westofn.settings.Batching()
train_script.train.run_settings = @westofn.settings.RunSettings()
train_script.train.policy_recipe = @westofn.settings.PolicyRecipe()
westofn.settings.PolicyRecipe.sft = @westofn.settings.PolicySft()
train_script.train.west_of_n = @westofn.settings.WestOfN()
train_script.train.rest = @westofn.settings.Rest()
train_script.train.dpo = @westofn.settings.Dpo()
train_script.train.hir = @westofn.settings.Hir()
train_script.train.c_rlft = @westofn.settings.CRlft()
westofn.settings.WestOfN.sampling = @westofn.settings.WestOfNSampling()
westofn.settings.WestOfN.judge = @westofn.settings.WestOfNJudge()
westofn.settings.WestOfN.filters = @westofn.settings.WestOfNFilters()
westofn.settings.WestOfN.student = @westofn.settings.WestOfNStudent()
westofn.settings.WestOfNJudge.scoring = @westofn.settings.ScoringRows()
westofn.settings.Rest.scoring = @westofn.settings.ScoringRows()
westofn.settings.Dpo.scoring = @westofn.settings.ScoringRows()
westofn.settings.Hir.scoring = @westofn.settings.ScoringRows()
westofn.settings.CRlft.scoring = @westofn.settings.ScoringRows()
"""


def train(*, model_dir: str, vocabulary, data: DataSource, rm_recipe: RewardModelRecipe,
          stages: Sequence[str] = ("base_rm",), run_settings: RunSettings = RunSettings(),
          policy_recipe: PolicyRecipe = PolicyRecipe(), west_of_n: WestOfN = WestOfN(),
          rest: Rest = Rest(), dpo: Dpo = Dpo(), hir: Hir = Hir(), c_rlft: CRlft = CRlft(),
          best_of_n: int = 16, partitioning: Partitioning = Partitioning()) -> dict:
  """Runs the pipeline's ``stages`` in ``model_dir``; each stage resumes from its checkpoints.

  Every reward model (base, West-of-N's judges and students, RM(human 100%)) follows
  ``rm_recipe``; the policy follows ``policy_recipe`` (SFT, then ReST, DPO, HIR or C-RLFT with
  the RM their settings name). ``run_settings`` (seed, logging, checkpoints) and
  ``partitioning`` (data parallel by default; FSDP and tensor parallelism by rule table,
  ``policies.core.sharding``) hold for every stage. Each group is bound in gin by its class
  (``westofn.settings.RewardModelRecipe.num_steps = 400``, ``--gin.RunSettings.seed=1``).

  Returns ``{stage name: held-out metrics}``; the report table is written to
  ``model_dir/report.md`` and printed.
  """
  check_stages(stages=stages, west_of_n=west_of_n, rest=rest, dpo=dpo, hir=hir, c_rlft=c_rlft)
  os.makedirs(model_dir, exist_ok=True)
  # One run per model_dir: process 0 holds the lock for all of a run's processes.
  with ModelDirLock(model_dir) if writes_here() else contextlib.nullcontext():
    write_text_atomic(ModelDir(model_dir).config_gin, gin.config_str())
    run = stages_lib.RunContext(
        **dict(dataclasses.asdict(run_settings), progress=run_settings.progress and writes_here()),
        model_dir=model_dir, vocabulary=vocabulary, partitioning=partitioning,
        # every process: the write is process 0's, the barrier after it everyone's
        costs=StageCosts(path=ModelDir(model_dir).costs))
    with run.metered("data: read, split, tokenize"):
      prefs = pipeline.load_preference_data(source=data, vocabulary=vocabulary)
    log.info("%s", prefs.description)
    log.info("%s", pipeline.summarize_lengths(prefs.tokenized["train"]))

    out = Trained()
    if "base_rm" in stages:
      out.base = stages_lib.base_rm(data=prefs, run=run, recipe=rm_recipe.for_base_rm())
      out.rms.append(out.base)
    if "policy_sft" in stages:
      with run.metered("policy_sft"):
        out.sft = stages_lib.policy_sft(
            data=prefs, run=run, settings=policy_recipe.sft,
            model_config=policy_recipe.model_config,
            make_optimizer=policy_recipe.make_optimizer, pretrained=policy_recipe.backbone)
    rest_with = functools.partial(_rest, data=prefs, run=run, settings=rest,
                                  policy_recipe=policy_recipe)
    if "west_of_n" in stages:
      _west_of_n(out, data=prefs, source=data, run=run, recipe=rm_recipe, settings=west_of_n,
                 rest_with=rest_with)
    if "human_100" in stages:
      out.human_100 = stages_lib.human_100(data=prefs, run=run, recipe=rm_recipe)
      out.rms.append(out.human_100)
    _improve_policy(out, stages=stages, data=prefs, run=run, rest_with=rest_with, rest=rest,
                    dpo=dpo, hir=hir, c_rlft=c_rlft, policy_recipe=policy_recipe)
    return _report(out, data=prefs, source=data, run=run, recipe=rm_recipe, best_of_n=best_of_n)


@dataclasses.dataclass
class Trained:
  """What a run's stages made, in the order they made it."""

  base: Optional[stages_lib.StageResult] = None
  sft: Optional[stages_lib.StageResult] = None
  judge: Optional[stages_lib.StageResult] = None   # West-of-N's pairwise preference model
  rounds: Optional[stages_lib.WestOfNResult] = None
  human_100: Optional[stages_lib.StageResult] = None
  rms: list = dataclasses.field(default_factory=list)        # every reward model
  improved: list = dataclasses.field(default_factory=list)   # every improved policy

  def reward_model(self, name: str) -> Optional[stages_lib.StageResult]:
    """The RM an improvement's settings name (``Rest.reward_model``): a stage of the run."""
    return {"base_rm": self.base, "human_100": self.human_100,
            "west_of_n": self.rounds.students[-1] if self.rounds else None}[name]


def _rest(*, data, run, settings: Rest, policy_recipe: PolicyRecipe, reward_model, policy,
          name: str, reference=None, tag: str = ""):
  with run.metered(name):
    return stages_lib.rest(data=data, run=run, settings=settings, policy=policy,
                           reward_model=reward_model, reference=reference,
                           sft_settings=policy_recipe.sft,
                           make_optimizer=policy_recipe.improvement_optimizer, name=name, tag=tag)


def _west_of_n(out: Trained, *, data, source, run, recipe, settings: WestOfN, rest_with) -> None:
  """West-of-N's rounds from the base RM (and its pairwise judge, where the settings name
  one); each round's policy, where the settings improve it, by ReST with its student."""
  if settings.judge.needs_preference_model:
    out.judge = stages_lib.pairwise_judge(data=data, run=run, recipe=recipe)
    out.rms.append(out.judge)
  out.rounds = stages_lib.west_of_n(
      data=data, source=source, run=run, recipe=recipe, settings=settings, base=out.base,
      policy=out.sft, judge=out.judge,
      improve=lambda *, policy, student, round_index: rest_with(
          reward_model=student, policy=policy, reference=out.sft,
          name=f"rest_west_of_n_round{round_index}", tag=f"west_of_n round {round_index}"))
  out.rms += out.rounds.judge_members + out.rounds.students
  out.improved += out.rounds.policies


def _improve_policy(out: Trained, *, stages, data, run, rest_with, rest: Rest, dpo: Dpo,
                    hir: Hir, c_rlft: CRlft, policy_recipe: PolicyRecipe) -> None:
  """The SFT policy improved with the RMs the settings name: ReST, DPO, HIR, C-RLFT."""
  optimizer = policy_recipe.improvement_optimizer
  if "rest" in stages:
    out.improved.append(rest_with(reward_model=out.reward_model(rest.reward_model),
                                  policy=out.sft, name=f"rest ({rest.reward_model})"))
  if "dpo" in stages:
    human = data.tokenized["train"]
    synthetic = out.rounds.synthetic[-1] if out.rounds else None
    pairs = {"human": human, "west_of_n": synthetic,
             "both": human + synthetic if out.rounds else None}[dpo.pairs]
    with run.metered(f"dpo ({dpo.pairs} pairs)"):
      out.improved.append(stages_lib.dpo(
          data=data, run=run, settings=dpo, policy=out.sft, pairs=pairs, pairs_name=dpo.pairs,
          reward_model=out.reward_model(dpo.reward_model), make_optimizer=optimizer,
          name=f"dpo ({dpo.pairs} pairs)"))
  # the conditioned methods: the same call but for C-RLFT's SFT packing
  for stage, settings, method, extra in (
      ("hir", hir, stages_lib.hir, {}),
      ("c_rlft", c_rlft, stages_lib.c_rlft, {"sft_settings": policy_recipe.sft})):
    if stage in stages:
      name = f"{stage} ({settings.reward_model})"
      with run.metered(name):
        out.improved.append(method(
            data=data, run=run, settings=settings, policy=out.sft,
            reward_model=out.reward_model(settings.reward_model), make_optimizer=optimizer,
            name=name, **extra))


def _report(out: Trained, *, data, source, run, recipe, best_of_n: int) -> dict:
  """The named evaluation sets, best-of-n by each RM (gold tasks), the report and the
  operative config; returns ``{stage name: held-out metrics}``."""
  with run.metered("named evaluation sets"):
    named_sets = stages_lib.evaluate_named_sets(data=data, run=run, recipe=recipe,
                                                rm_results=out.rms, source=source)
  best_gold = None
  if out.sft is not None and data.gold_task is not None and best_of_n > 1 and out.rms:
    with run.metered(f"best-of-{best_of_n} (gold)"):
      best_gold = stages_lib.best_of_n(data=data, run=run, rm_results=out.rms, policy=out.sft,
                                       judge=out.judge, n=best_of_n)
  with run.metered("report (plots)"):
    text = report.make_report(model_dir=run.model_dir, data=data, rm_results=out.rms,
                              policy=out.sft,
                              round_counts=out.rounds.round_counts if out.rounds else [],
                              best_of_n_gold=best_gold, best_of_n=best_of_n,
                              improved=out.improved, eval_sets=named_sets)
  text += run.costs.table()   # last, so that it counts the report's own time too
  write_text_atomic(run.layout.report, text)
  # Operative config: only the values this run actually read.
  write_text_atomic(run.layout.config_gin, gin.operative_config_str())
  if writes_here():
    print(text)
  for r in out.rms:
    if r.name in named_sets:
      r.metrics["eval_sets"] = named_sets[r.name]
  return {r.name: r.metrics for r in out.rms + ([out.sft] if out.sft else []) + out.improved}


def check_stages(*, stages: Sequence[str], west_of_n: WestOfN, rest: Rest, dpo: Dpo,
                 hir: Hir = Hir(), c_rlft: CRlft = CRlft()) -> None:
  """Refuses, before anything runs, a list of stages that cannot run together."""
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ConfigError(f"unknown stages {unknown}; known: {list(STAGES)}")
  if "west_of_n" in stages and not {"base_rm", "policy_sft"} <= set(stages):
    raise ConfigError("the west_of_n stage needs the base_rm and policy_sft stages")
  for stage, needs, owner in (("rest", rest.reward_model, "Rest"),
                              ("dpo", dpo.reward_model, "Dpo"), ("hir", hir.reward_model, "Hir"),
                              ("c_rlft", c_rlft.reward_model, "CRlft")):
    if stage in stages and not {"policy_sft", needs} <= set(stages):
      raise ConfigError(f"the {stage} stage needs the policy_sft stage and the {needs} stage "
                        f"(its reward model: {owner}.reward_model)")
  if "dpo" in stages and dpo.pairs != "human" and "west_of_n" not in stages:
    raise ConfigError(f"Dpo.pairs={dpo.pairs!r} needs the west_of_n stage")


def parse_flags(argv: Sequence[str]
                ) -> tuple[list[str], list[str], list[str], distributed.DistributedFlags]:
  """Returns (gin files, gin bindings, search paths, multi-process flags) from t5x-style
  flags."""
  parser = argparse.ArgumentParser(prog="python -m westofn.train", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--gin_search_paths", default="")
  parser.add_argument("--multiprocess", action="store_true")
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--heartbeat_timeout", type=int, default=20,
                      help="seconds without a heartbeat after which a process is lost")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings) + gin_bindings(rest, parser)
  paths = [p for p in args.gin_search_paths.split(",") if p]
  flags = distributed.DistributedFlags(args.multiprocess, args.coordinator_address,
                                       args.num_processes, args.process_id,
                                       args.heartbeat_timeout)
  if not flags.multiprocess and (flags.coordinator_address or flags.num_processes
                                 or flags.process_id is not None):
    parser.error("--coordinator_address, --num_processes and --process_id go with "
                 "--multiprocess")
  return args.gin_file, bindings, paths, flags


def main(argv: Optional[Sequence[str]] = None) -> dict:
  configure_logging()
  files, bindings, search_paths, flags = parse_flags(sys.argv[1:] if argv is None else argv)
  if not files:
    raise SystemExit("give at least one --gin_file (e.g. --gin_file=gin/demo.gin)")
  distributed.initialize(flags)
  repo_gin = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
  for path in search_paths + [os.getcwd(), repo_gin]:
    gin.add_config_file_search_path(path)
  # Under ``python -m westofn.train`` that module is __main__; gin files bind the importable
  # ``westofn.train.train`` (``import westofn.train as train_script``), so that is the
  # function made configurable here, before parsing.
  canonical = importlib.import_module("westofn.train")
  configurable_train = gin.configurable(canonical.train)
  try:
    gin.parse_config(GROUPS)
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  except (ValueError, TypeError, KeyError, OSError) as e:  # an unknown name, a missing file
    # a hand-written .gin file that binds an old name gets the new one in the error
    raise ConfigError(compat.hint(f"gin config: {e}".replace("\n", " "))) from e
  return configurable_train()


def cli(argv: Optional[Sequence[str]] = None) -> None:
  """``main`` with one-line user errors and exit codes (``westofn.errors.run_cli``)."""
  run_cli(main, argv)


if __name__ == "__main__":
  cli()
