r"""The pipeline and its command. ``train()``, the function gin configures
(``westofn.train.train`` in every .gin file and in each run's ``config.gin``), runs the stages
in order in one MODEL_DIR; ``python -m westofn.train --gin_file=gin/demo.gin
--gin.MODEL_DIR=/tmp/demo`` (or ``westofn train ...``) parses the flags and calls it.

Flags, t5x style:
  --gin_file=F          a .gin file (repeatable; found relative to --gin_search_paths)
  --gin.NAME=VALUE      one binding, e.g. --gin.train.num_steps=200; a bare string
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
import importlib
import logging
import os
import sys
from typing import Callable, Optional, Sequence

import gin

from policies.core.atomic import write_text_atomic, writes_here
from policies.core.sharding import Partitioning
from policies.core.train_loop import Selection
from policies.pretrained import PretrainedLM
from westofn import compat, distributed, pipeline, report
from westofn import stages as stages_lib
from westofn.cli.common import configure_logging, gin_bindings, run_cli
from westofn.costs import StageCosts
from westofn.errors import ConfigError
from westofn.model_dir import ModelDir
from westofn.model_dir_lock import ModelDirLock
from westofn.settings import Batching, CRlft, DataSource, Dpo, Hir, PolicySft, Rest, WestOfN

log = logging.getLogger("westofn")
STAGES = ("base_rm", "policy_sft", "west_of_n", "human_100", "rest", "dpo", "hir", "c_rlft")


def train(*, model_dir: str, vocabulary, data: DataSource,
          model_config: Optional[Callable] = None, make_optimizer: Callable,
          batching: Batching, loss, num_steps: int,
          seed: int = 0, log_every: int = 50, eval_every: int = 0, save_every: int = 200,
          keep_checkpoints: int = 2,
          stages: Sequence[str] = ("base_rm",), progress: bool = True,
          policy_model_config: Optional[Callable] = None,
          policy_optimizer: Optional[Callable] = None,
          improve_optimizer: Optional[Callable] = None,
          policy_sft: PolicySft = PolicySft(),
          west_of_n: WestOfN = WestOfN(), best_of_n: int = 16,
          rm_backbone: Optional[PretrainedLM] = None,
          policy_backbone: Optional[PretrainedLM] = None,
          selection: Optional[Selection] = None, epochs: Optional[float] = None,
          min_steps: int = 0, rest: Rest = Rest(),
          dpo: Dpo = Dpo(), hir: Hir = Hir(), c_rlft: CRlft = CRlft(),
          base_rm_steps: Optional[int] = None,
          partitioning: Partitioning = Partitioning()) -> dict:
  """Runs the pipeline's stages in ``model_dir``; each stage resumes from its checkpoints.

  ``rm_backbone`` / ``policy_backbone`` start the reward models / the policy from a
  pretrained LM (e.g. SmolLM2, see gin/smollm2_hh.gin) instead of from scratch; the
  ``vocabulary`` must then be that model's. ``selection`` keeps each RM's best checkpoint
  on the data's 'validation' part (and may stop it early); ``epochs`` sizes each RM's run
  to its data, between ``min_steps`` and ``num_steps`` steps. ``base_rm_steps`` overrides
  ``num_steps`` for the base RM alone: 0 uses an imported reward model (``rm_backbone`` a
  Hugging Face sequence-classification directory) as it is, as West-of-N's judge, while
  the students train from it. The ``rest``, ``dpo``, ``hir`` and ``c_rlft``
  stages improve the SFT policy with the RM named in their settings (ReST or
  rejection-sampling fine-tuning; DPO on human and/or West-of-N pairs; hindsight
  instruction relabeling; class-conditioned fine-tuning), with
  ``improve_optimizer`` (default: ``policy_optimizer``). ``partitioning`` lays models,
  optimizer state and batches out on the devices (data parallel by default; FSDP and
  tensor parallelism by rule table, ``policies.core.sharding``).

  Returns ``{stage name: held-out metrics}``; the report table is written to
  ``model_dir/report.md`` and printed.
  """
  check_stages(stages=stages, west_of_n=west_of_n, rest=rest, dpo=dpo, hir=hir,
               c_rlft=c_rlft, has_rm_model=model_config is not None or rm_backbone is not None)
  os.makedirs(model_dir, exist_ok=True)
  layout = ModelDir(model_dir)
  # One run per model_dir: process 0 holds the lock for all of a run's processes.
  with ModelDirLock(model_dir) if writes_here() else contextlib.nullcontext():
    write_text_atomic(layout.config_gin, gin.config_str())
    run = stages_lib.RunContext(model_dir=model_dir, vocabulary=vocabulary, seed=seed,
                                log_every=log_every, eval_every=eval_every,
                                save_every=save_every, keep_checkpoints=keep_checkpoints,
                                progress=progress and writes_here(),
                                partitioning=partitioning, costs=StageCosts())
    recipe = stages_lib.RewardModelRecipe(make_optimizer=make_optimizer, batching=batching,
                                          num_steps=num_steps, loss=loss,
                                          model_config=model_config, backbone=rm_backbone,
                                          selection=selection, epochs=epochs,
                                          min_steps=min_steps)
    improve_optimizer = improve_optimizer or policy_optimizer

    with run.metered("data: read, split, tokenize"):
      prefs = pipeline.load_preference_data(source=data, vocabulary=vocabulary)
    log.info("%s", prefs.description)
    log.info("%s", pipeline.summarize_lengths(prefs.tokenized["train"]))

    base = sft = judge = rounds = human_100 = None
    rms, improved = [], []
    if "base_rm" in stages:
      base_recipe = (recipe if base_rm_steps is None
                     else dataclasses.replace(recipe, num_steps=base_rm_steps))
      base = stages_lib.base_rm(data=prefs, run=run, recipe=base_recipe)
      rms.append(base)
    if "policy_sft" in stages:
      with run.metered("policy_sft"):
        sft = stages_lib.policy_sft(data=prefs, run=run, settings=policy_sft,
                                    model_config=policy_model_config,
                                    make_optimizer=policy_optimizer, pretrained=policy_backbone)

    def rest_with(*, reward_model, policy, name, reference=None, tag=""):
      with run.metered(name):
        return stages_lib.rest(data=prefs, run=run, settings=rest, policy=policy,
                               reward_model=reward_model, reference=reference,
                               sft_settings=policy_sft, make_optimizer=improve_optimizer,
                               name=name, tag=tag)

    if "west_of_n" in stages:
      if west_of_n.needs_preference_model:
        judge = stages_lib.pairwise_judge(data=prefs, run=run, recipe=recipe)
        rms.append(judge)
      rounds = stages_lib.west_of_n(
          data=prefs, source=data, run=run, recipe=recipe, settings=west_of_n, base=base,
          policy=sft, judge=judge, improve=lambda *, policy, student, round_index: rest_with(
              reward_model=student, policy=policy, reference=sft,
              name=f"rest_west_of_n_round{round_index}", tag=f"west_of_n round {round_index}"))
      rms += rounds.judge_members + rounds.students
      improved += rounds.policies
    if "human_100" in stages:
      human_100 = stages_lib.human_100(data=prefs, run=run, recipe=recipe)
      rms.append(human_100)

    named_rms = {"base_rm": base, "west_of_n": rounds.students[-1] if rounds else None,
                 "human_100": human_100}
    if "rest" in stages:
      improved.append(rest_with(reward_model=named_rms[rest.reward_model], policy=sft,
                                name=f"rest ({rest.reward_model})"))
    if "dpo" in stages:
      pairs = {"human": prefs.tokenized["train"],
               "west_of_n": rounds.synthetic[-1] if rounds else None}
      pairs["both"] = (pairs["human"] + pairs["west_of_n"]) if rounds else None
      with run.metered(f"dpo ({dpo.pairs} pairs)"):
        improved.append(stages_lib.dpo(
            data=prefs, run=run, settings=dpo, policy=sft, pairs=pairs[dpo.pairs],
            pairs_name=dpo.pairs, reward_model=named_rms[dpo.reward_model],
            make_optimizer=improve_optimizer, name=f"dpo ({dpo.pairs} pairs)"))

    if "hir" in stages:
      with run.metered(f"hir ({hir.reward_model})"):
        improved.append(stages_lib.hir(
            data=prefs, run=run, settings=hir, policy=sft,
            reward_model=named_rms[hir.reward_model], make_optimizer=improve_optimizer,
            name=f"hir ({hir.reward_model})"))
    if "c_rlft" in stages:
      with run.metered(f"c_rlft ({c_rlft.reward_model})"):
        improved.append(stages_lib.c_rlft(
            data=prefs, run=run, settings=c_rlft, policy=sft,
            reward_model=named_rms[c_rlft.reward_model], sft_settings=policy_sft,
            make_optimizer=improve_optimizer, name=f"c_rlft ({c_rlft.reward_model})"))

    with run.metered("named evaluation sets"):
      named_sets = stages_lib.evaluate_named_sets(data=prefs, run=run, recipe=recipe,
                                                  rm_results=rms, source=data)
    best_gold = None
    if sft is not None and prefs.gold_task is not None and best_of_n > 1 and rms:
      with run.metered(f"best-of-{best_of_n} (gold)"):
        best_gold = stages_lib.best_of_n(data=prefs, run=run, rm_results=rms, policy=sft,
                                         judge=judge, n=best_of_n)
    with run.metered("report (plots)"):
      text = report.make_report(model_dir=model_dir, data=prefs, rm_results=rms, policy=sft,
                                round_counts=rounds.round_counts if rounds else [],
                                best_of_n_gold=best_gold, best_of_n=best_of_n,
                                improved=improved, eval_sets=named_sets)
    text += run.costs.table()   # last, so that it counts the report's own time too
    write_text_atomic(layout.report, text)
    run.costs.write_json(layout.costs)
    # Operative config: only the values this run actually read.
    write_text_atomic(layout.config_gin, gin.operative_config_str())
    if writes_here():
      print(text)
    for r in rms:
      if r.name in named_sets:
        r.metrics["eval_sets"] = named_sets[r.name]
    return {r.name: r.metrics for r in rms + ([sft] if sft else []) + improved}


def check_stages(*, stages: Sequence[str], west_of_n: WestOfN, rest: Rest, dpo: Dpo,
                 has_rm_model: bool, hir: Hir = Hir(), c_rlft: CRlft = CRlft()) -> None:
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
  if not has_rm_model:
    raise ConfigError("give train.model_config (a reward model from scratch) or "
                      "train.rm_backbone (one initialised from a pretrained LM)")


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
