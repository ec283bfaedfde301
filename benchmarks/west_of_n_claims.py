"""The paper's claims about West-of-N, tested on the embedded gold tasks with a sound protocol.

    python benchmarks/west_of_n_claims.py [--tasks letters,sorting] [--seeds 0,1,2] [--root DIR]

Protocol (the same for every RM, ``gin/selection.gin``): each RM trains for 10 passes over its
own training pairs (300 to 3000 steps, the learning-rate schedule over that run), and a
validation part carved from the human-labelled data selects its checkpoint; accuracy is measured
against the gold reward on a large held-out part (~4,000 pairs, one s.e. < 1 point); every row
is the mean over seeds with a 95% t interval; every comparison is a paired bootstrap over seeds
and held-out pairs (or prompts), against RM(human 50%) unless said otherwise. The policy is
trained once per task; seeds change the RMs' initialisation and data order and West-of-N's
sampling. Each task runs in its own process (both cores busy), then the parent prints the table.
Everything is resumable: a killed run picks up from the finished stages in ``--root``.
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
sys.path.insert(0, REPO)

SPLIT = {"train": 0.2, "validation": 0.05, "unlabeled": 0.25, "heldout": 0.5}
# Fractions of all human pairs (train ∪ unlabeled); 50% is the base RM's 'train' part.
CURVE = {"human_10": 0.2, "human_25": 0.5}   # share of 'train' they keep
BEST_OF = 16
N_CURVE = (2, 4, 8, 16, 32)
QUANTILES = (0.0, 0.25, 0.5, 0.75)


def _components(task: str, root: str, num_pairs: int, quick: bool):
  from policies.core.train_loop import Selection
  from policies.transformer import TransformerConfig
  from rm import tasks
  from rm.training import make_optimizer
  from westofn import pipeline, stages
  from westofn.settings import Batching, DataSource, PolicySft
  vocab = tasks.byte_vocabulary()
  data = pipeline.load_preference_data(
      source=DataSource(task=task, default_num_pairs=num_pairs, split=SPLIT,
                        task_name=f"claims_{task}"), vocabulary=vocab)
  small = functools.partial(TransformerConfig, d_model=128, num_layers=2, num_heads=4,
                            num_kv_heads=2, ffn_dim=384)
  batching = Batching(rows=8, row_len=256, pairs_per_row=8, max_response_len=32)
  optimizer = functools.partial(make_optimizer, learning_rate=2e-3, warmup_steps=40,
                                weight_decay=0.01)
  # The protocol (gin/selection.gin): 10 passes over each RM's own data (300 to 3000 steps),
  # the checkpoint with the best validation loss.
  new = stages.RewardModelRecipe(
      make_optimizer=optimizer, batching=batching, num_steps=60 if quick else 3000,
      model_config=small, selection=Selection(metric="loss"), epochs=10,
      min_steps=0 if quick else 300)
  # Two protocols it is compared with: a fixed 400 steps and the last checkpoint (before this
  # benchmark), and early stopping on the validation loss within a 3000-step schedule.
  old = stages.RewardModelRecipe(make_optimizer=optimizer, batching=batching,
                                 num_steps=40 if quick else 400, model_config=small)
  early = stages.RewardModelRecipe(
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


def _subset(data, part: str, keep: float):
  """The pairs of ``part`` whose prompt falls in the first ``keep`` of prompt-hash order."""
  from rm.data import prompt_bucket
  return [t for t, p in zip(data.tokenized[part], data.raw[part])
          if prompt_bucket(p.prompt, "claims/curve") < keep]


def _score(model, vocab, prompts, texts):
  from westofn.samples import score_texts
  return score_texts(model, vocab, prompts, texts)


def run_task(task: str, seeds: list[int], root: str, num_pairs: int, out_path: str,
             quick: bool = False) -> None:
  """Trains every RM of the claims for one task and writes the per-seed results."""
  from westofn import selection, stages
  from westofn import gold_tasks
  from westofn.settings import WestOfN
  from westofn.stages.reward_model import gold_verdicts
  from westofn.west_of_n import pseudo_label_correct
  t0 = time.time()
  vocab, data, recipes, policy = _components(task, root, num_pairs, quick)
  new = recipes["new"]
  gold_fn = data.gold_task.gold_reward
  g_chosen, g_rejected = data.gold("heldout")
  heldout_prompts = sorted({p.prompt for p in data.raw["heldout"]})[:128]
  bon = policy.model.sample(heldout_prompts, BEST_OF, seed=12345)
  bon_texts = [[s.text for s in row] for row in bon]
  bon_gold = np.array([[gold_fn(p, t) for t in row]
                       for p, row in zip(heldout_prompts, bon_texts)])
  un_prompts = sorted({p.prompt for p in data.raw["unlabeled"]})
  curve_prompts = un_prompts[:500]
  curve_samples = policy.model.sample(curve_prompts, max(N_CURVE), seed=54321)
  curve_texts = [[s.text for s in row] for row in curve_samples]
  curve_gold = np.array([[gold_fn(p, t) for t in row]
                         for p, row in zip(curve_prompts, curve_texts)])
  results = {"task": task, "description": data.description,
             "label_gold_accuracy_heldout": gold_tasks.label_gold_accuracy(data.raw["heldout"]),
             "policy": policy.metrics, "bon_random": float(bon_gold[:, 0].mean()),
             "bon_oracle": float(bon_gold.max(1).mean()), "seeds": {}}
  for seed in seeds:
    run = stages.RunContext(model_dir=os.path.join(root, task, f"seed{seed}"), vocabulary=vocab,
                            seed=seed, eval_every=50, save_every=500, progress=False)
    rms = {}
    train = data.tokenized["train"]
    common = dict(run=run, **stages.reward_model.evaluation_parts(data))
    for name, keep in CURVE.items():
      pairs = _subset(data, "train", keep)
      rms[name] = stages.reward_model_stage(
          name=name, stage_dir=os.path.join(run.model_dir, name), train_pairs=pairs,
          recipe=new, **common)
      rms[name].metrics["trained_on"] = f"human {len(pairs)}"
    rms["human_50"] = stages.base_rm(data=data, run=run, recipe=new)
    rms["human_100"] = stages.human_100(data=data, run=run, recipe=new)
    for protocol in ("old", "early"):
      for name, pairs in ((f"{protocol}_human_50", train),
                          (f"{protocol}_human_100", train + data.tokenized["unlabeled"])):
        rms[name] = stages.reward_model_stage(
            name=name, stage_dir=os.path.join(run.model_dir, name), train_pairs=pairs,
            recipe=recipes[protocol], **common)
        rms[name].metrics["trained_on"] = f"human {len(pairs)}"
    base = rms["human_50"]
    won_kw = dict(data=data, source=_source(task, num_pairs), run=run, recipe=new,
                  policy=policy)
    # The paper's West-of-N: hard labels (soft_labels=False), as these results were recorded.
    wn = stages.west_of_n(
        settings=WestOfN(num_samples=8, rounds=3, max_new_tokens=24, soft_labels=False),
        base=base, **won_kw)
    for k, student in enumerate(wn.students, start=1):
      rms[f"won_round{k}"] = student
    rms["naive_n2"] = stages.west_of_n(
        settings=WestOfN(num_samples=2, max_new_tokens=24, soft_labels=False), base=base,
        **won_kw).students[0]
    rms["best_random"] = stages.west_of_n(
        settings=WestOfN(num_samples=8, selection="best_random", max_new_tokens=24,
                         soft_labels=False),
        base=base, **won_kw).students[0]
    rms["won_from_25"] = stages.west_of_n(
        settings=WestOfN(num_samples=8, max_new_tokens=24, soft_labels=False),
        base=rms["human_25"],
        human=_subset(data, "train", CURVE["human_25"]), tag="from_human_25",
        **won_kw).students[0]
    per_seed = {"rms": {}, "rounds": [c for c in wn.round_counts]}
    for name, r in rms.items():
      ev = r.train.eval
      scores = _score(r.model, vocab, heldout_prompts, bon_texts)
      picks = np.array([g[int(np.argmax(s))] for g, s in zip(bon_gold, scores)])
      per_seed["rms"][name] = {
          "accuracy": r.metrics["accuracy"], "gold_accuracy": r.metrics["gold_accuracy"],
          "trained_on": r.metrics["trained_on"],
          "best_step": r.metrics.get("best_step"), "stopped_at": r.metrics.get("stopped_at"),
          "gold_correct": gold_verdicts(ev, (g_chosen, g_rejected)).tolist(),
          "bon_gold": picks.tolist()}
    # Claim 5: the base RM's pseudo-labels on prompts with 32 samples each.
    scores = np.array(_score(base.model, vocab, curve_prompts, curve_texts), np.float32)
    rows = np.arange(len(curve_prompts))
    by_n, best_worst = {}, {}
    for n in N_CURVE:
      b, w, usable = (np.asarray(x) for x in selection.best_and_worst(
          scores[:, :n], np.ones((len(curve_prompts), n), bool)))
      best_worst[n] = (b, w, usable)
      by_n[n] = {"correct": pseudo_label_correct(curve_gold[rows, b], curve_gold[rows, w],
                                                 usable).tolist()}
    b, w, usable = best_worst[8]
    conf = np.asarray(selection.pair_confidence(scores[rows, b], scores[rows, w]))
    by_q = {q: {"correct": pseudo_label_correct(
        curve_gold[rows, b], curve_gold[rows, w],
        np.asarray(selection.quantile_keep(conf, usable, q))).tolist()} for q in QUANTILES}
    per_seed["pseudo_labels"] = {"by_n": by_n, "by_quantile": by_q}
    results["seeds"][str(seed)] = per_seed
    print(f"[{task}] seed {seed} done at {(time.time() - t0) / 60:.1f} min", flush=True)
  results["minutes"] = (time.time() - t0) / 60
  from policies.core.atomic import write_text_atomic
  write_text_atomic(out_path, json.dumps(results))


def _source(task: str, num_pairs: int):
  from westofn.settings import DataSource
  return DataSource(task=task, default_num_pairs=num_pairs, split=SPLIT,
                    task_name=f"claims_{task}")


ROWS = [("RM(human 10%)", "human_10"), ("RM(human 25%)", "human_25"),
        ("RM(human 50%) (base)", "human_50"), ("+ West-of-N, N=8", "won_round1"),
        ("+ West-of-N, round 2", "won_round2"), ("+ West-of-N, round 3", "won_round3"),
        ("+ naive self-training (N=2)", "naive_n2"), ("+ best vs random (N=8)", "best_random"),
        ("RM(human 25%) + West-of-N, N=8", "won_from_25"), ("RM(human 100%)", "human_100"),
        ("fixed 400 steps, last checkpoint: RM(human 50%)", "old_human_50"),
        ("fixed 400 steps, last checkpoint: RM(human 100%)", "old_human_100"),
        ("early stopping, 3000-step schedule: RM(human 50%)", "early_human_50"),
        ("early stopping, 3000-step schedule: RM(human 100%)", "early_human_100")]


def _matrix(res, name, key):
  return np.array([res["seeds"][s]["rms"][name][key] for s in sorted(res["seeds"])], np.float64)


def _fmt_ci(values, scale=100.0, sign=False):
  from westofn.stats import mean_ci
  m, h = mean_ci(np.asarray(values) * scale)
  return f"{m:+.2f} ± {h:.2f}" if sign else f"{m:.2f} ± {h:.2f}"


def _cmp(a, b, scale=100.0):
  from westofn.stats import paired_bootstrap
  r = paired_bootstrap(a, b, num_resamples=2000, seed=0)
  r = {k: (v * scale if k != "p" else v) for k, v in r.items()}
  return r, f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] p={r['p']:.3f}"


def _verdict(r, *, keeps: bool = False, needs=None) -> str:
  if r["low"] > 0:
    return "holds" + (" (raises)" if keeps else "")
  if r["high"] < 0:
    return "does not hold"
  if keeps:
    return "holds (keeps: no significant change)"
  if needs is not None:
    return needs
  return "not shown (difference within noise)"


def holm_verdict(result, adjusted_p: float, family: str) -> str:
  """``_verdict`` for one test of a family, given its Holm-adjusted p: a difference that is
  significant alone but not after the correction is not shown."""
  verdict = _verdict(result)
  if verdict in ("holds", "does not hold") and adjusted_p >= 0.05:
    verdict = f"not shown: p={result['p']:.3f} alone, not significant among {family}"
  return f"{verdict} [{adjusted_p:.3f}]"


def ensemble_evaluation(members: list):
  """The held-out evaluation of an ensemble judge: its members' mean rewards per pair."""
  import types
  return types.SimpleNamespace(**{
      side: np.mean([np.asarray(getattr(m.train.eval, side)) for m in members], 0)
      for side in ("chosen", "rejected")})


def round_columns(res, name: str) -> tuple[str, str]:
  """A West-of-N option's pseudo-label gold accuracy and its kept pairs' gold gap over seeds
  (``—`` for an RM without a round)."""
  seeds = sorted(res["seeds"])
  if name not in res["seeds"][seeds[0]]["counts"]:
    return "—", "—"
  cs = [res["seeds"][s]["counts"][name] for s in seeds]
  return (_fmt_ci([c["pseudo_label_gold_accuracy"] for c in cs]),
          _fmt_ci([c["kept_gold_gap"] for c in cs], 1.0))


def holm_verdict_lines(verdicts: list) -> list[str]:
  """The verdicts of several options, each ``(label, vs_base, vs_paper or None)`` with
  ``_cmp`` results, Holm-corrected within each family of comparisons."""
  from westofn.stats import holm
  adj_base = holm([b[0]["p"] for _, b, _ in verdicts])
  adj_won = iter(holm([w[0]["p"] for _, _, w in verdicts if w]))
  lines = [f"Verdicts with Holm's correction over the {len(verdicts)} options against "
           f"RM(human 50%) and the {len(verdicts) - 1} against the paper's West-of-N "
           "(adjusted p in brackets):", "",
           "| option | better than RM(human 50%)? | better than the paper's West-of-N? |",
           "|---|---|---|"]
  for (label, vs_base, vs_won), p_base in zip(verdicts, adj_base):
    verdict = lambda result, p: holm_verdict(result, p, "the options tried")
    lines.append(f"| {label} | {verdict(vs_base[0], p_base)} | "
                 f"{verdict(vs_won[0], next(adj_won)) if vs_won else '—'} |")
  return lines


def report_task(res) -> tuple[str, list]:
  from westofn.stats import pair_equivalents
  seeds = sorted(res["seeds"])
  lines = [f"### Task `{res['task']}` ({len(seeds)} seeds: {', '.join(seeds)}; "
           f"{res['minutes']:.1f} min)", "", f"Data: {res['description']}.", "",
           f"Human labels agree with the gold reward on "
           f"{100 * res['label_gold_accuracy_heldout']:.1f}% of held-out pairs (gold ties "
           f"dropped). Best-of-{BEST_OF} gold reward: random pick {res['bon_random']:+.3f}, "
           f"oracle {res['bon_oracle']:+.3f}.", "",
           "| model | gold accuracy % | label accuracy % | best-of-16 gold | Δ gold acc. vs "
           "base, points [95% CI] | kept step (stopped at) |", "|---|---|---|---|---|---|"]
  base_gc = _matrix(res, "human_50", "gold_correct")
  for label, name in ROWS:
    gc = _matrix(res, name, "gold_correct")
    steps = [res["seeds"][s]["rms"][name] for s in seeds]
    kept = ("—" if steps[0]["best_step"] is None else
            f"{np.mean([x['best_step'] for x in steps]):.0f} "
            f"({np.mean([x['stopped_at'] for x in steps]):.0f})")
    delta = "—" if name == "human_50" else _cmp(gc, base_gc)[1]
    lines.append(f"| {label} | {_fmt_ci(gc.mean(1))} | "
                 f"{_fmt_ci(_matrix(res, name, 'accuracy'))} | "
                 f"{_fmt_ci(_matrix(res, name, 'bon_gold').mean(1), 1.0, True)} | "
                 f"{delta} | {kept} |")
  lines += ["", "Mean ± half-width of the 95% t interval over seeds; Δ: paired bootstrap over "
            "seeds and held-out pairs (2,000 resamples), two-sided p.", ""]
  # The protocol: seed spread before and after.
  spread = ["| protocol | RM(human 50%) gold acc. per seed | RM(human 100%) per seed | "
            "100% − 50%, points [95% CI] |", "|---|---|---|---|"]
  for label, p50, p100 in (("fixed 400 steps, last checkpoint", "old_human_50", "old_human_100"),
                           ("validation loss, early stopping (patience 4) in a 3000-step "
                            "schedule", "early_human_50", "early_human_100"),
                           ("validation loss, 10 epochs each (this protocol)", "human_50",
                            "human_100")):
    a, b = _matrix(res, p50, "gold_correct"), _matrix(res, p100, "gold_correct")
    spread.append(f"| {label} | {', '.join(f'{100 * x:.1f}' for x in a.mean(1))} | "
                  f"{', '.join(f'{100 * x:.1f}' for x in b.mean(1))} | {_cmp(b, a)[1]} |")
  lines += ["Seed spread of the gold accuracy under three protocols, and whether twice the "
            "human data shows:", ""] + spread + [""]
  # Learning curve and human-pair equivalents.
  names = ["human_10", "human_25", "human_50", "human_100"]
  n_pairs = [int(res["seeds"][seeds[0]]["rms"][n]["trained_on"].split()[1]) for n in names]
  curve = [float(_matrix(res, n, "gold_correct").mean()) for n in names]
  won_acc = float(_matrix(res, "won_round1", "gold_correct").mean())
  equiv = pair_equivalents(won_acc, n_pairs, curve)
  lines += ["Learning curve (gold accuracy, mean over seeds): " +
            ", ".join(f"{n} human pairs {100 * a:.2f}%" for n, a in zip(n_pairs, curve)) +
            f". RM(human 50%) + West-of-N ({100 * won_acc:.2f}%) is worth about {equiv:.0f} "
            f"human pairs on this curve (the base RM has {n_pairs[2]}).", ""]
  # Pseudo-labels.
  pl = [res["seeds"][s]["pseudo_labels"] for s in seeds]
  by_n = {n: np.array([p["by_n"][str(n)]["correct"] for p in pl]) for n in N_CURVE}
  by_q = {q: np.array([p["by_quantile"][str(q)]["correct"] for p in pl]) for q in QUANTILES}
  lines += ["Gold accuracy of the base RM's pseudo-labels (best vs worst of the first N of 32 "
            "samples; 500 unlabeled prompts): " +
            ", ".join(f"N={n} {100 * np.nanmean(v):.1f}%" for n, v in by_n.items()) +
            ". With the confidence filter at N=8 (keep pairs at or above the quantile): " +
            ", ".join(f"q={q} {100 * np.nanmean(v):.1f}%" for q, v in by_q.items()) +
            f". Human labels: {100 * res['label_gold_accuracy_heldout']:.1f}%.", ""]
  # The claims.
  g = lambda n: _matrix(res, n, "gold_correct")
  bon = lambda n: _matrix(res, n, "bon_gold")
  claims = []
  r1, t1 = _cmp(g("won_round1"), g("human_50"))
  claims.append(("1. RM(human 50% + West-of-N) > RM(human 50%), gold accuracy", t1, _verdict(r1)))
  r2, t2 = _cmp(g("won_round1"), g("human_100"))
  claims.append(("2. ... at least as good as RM(human 100%)",
                 t2 + f"; worth ~{equiv:.0f} human pairs (base {n_pairs[2]}, all {n_pairs[3]})",
                 _verdict(r2, needs=("holds (no significant difference)" if r1["low"] > 0
                                     else "not shown (claim 1 not shown)"))))
  for other, label in (("naive_n2", "naive self-training (N=2)"),
                       ("best_random", "best vs random")):
    r, t = _cmp(g("won_round1"), g(other))
    claims.append((f"3. West-of-N > {label}", t, _verdict(r)))
  gain = lambda won, b: g(won) - g(b)
  r4, t4 = _cmp(gain("won_round1", "human_50"), gain("won_from_25", "human_25"))
  claims.append(("4. gain grows with base quality (gain from base 50% − gain from base 25%)",
                 t4, _verdict(r4)))
  r5, t5 = _cmp(by_n[max(N_CURVE)], by_n[2])
  claims.append((f"5a. pseudo-label gold accuracy rises with N (N={max(N_CURVE)} − N=2)", t5,
                 _verdict(r5)))
  r5b, t5b = _cmp(by_q[0.75], by_q[0.0])
  claims.append(("5b. ... and with the confidence filter (top 25% − all, N=8)", t5b,
                 _verdict(r5b)))
  r6, t6 = _cmp(bon("won_round1"), bon("human_50"), 1.0)
  claims.append(("6. best-of-16: the West-of-N RM picks responses of higher gold reward "
                 "(gold reward difference)", t6, _verdict(r6)))
  r7, t7 = _cmp(bon("won_round3"), bon("won_round1"), 1.0)
  claims.append(("7. iterative West-of-N keeps or raises best-of-16 gold (round 3 − round 1)",
                 t7, _verdict(r7, keeps=True)))
  lines += ["| claim | difference [95% CI], p | verdict |", "|---|---|---|"]
  lines += [f"| {c} | {t} | **{v}** |" for c, t, v in claims]
  return "\n".join(lines) + "\n", claims


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
        root_prefix: str, report=None) -> None:
  """The command line of a gold-task benchmark: one child process per task (both cores busy),
  each writing ``result_file`` (with ``{task}``) under ``--root``; then the report: each
  task's ``report_task(result)``, or ``report(results)`` over all tasks."""
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tasks", default="letters,sorting")
  parser.add_argument("--seeds", default="0,1,2")
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
  seeds = [int(s) for s in args.seeds.split(",")]
  result = lambda task: os.path.join(root, result_file.format(task=task))
  if args.run_task:
    run_task(args.run_task, seeds, root, args.num_pairs, result(args.run_task), args.quick)
    return
  t0 = time.time()
  tasks = args.tasks.split(",")
  if not args.report_only:
    children = [subprocess.Popen([sys.executable, os.path.abspath(script), "--run_task", t,
                                  "--seeds", args.seeds, "--num_pairs", str(args.num_pairs),
                                  "--root", root] + (["--quick"] if args.quick else []),
                                 cwd=REPO) for t in tasks]
    codes = [c.wait() for c in children]
    if any(codes):
      raise SystemExit(f"a task failed: exit codes {dict(zip(tasks, codes))}")
  command = (f"`python benchmarks/{os.path.basename(script)} --tasks {args.tasks} --seeds "
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


def main():
  cli(doc=__doc__, script=__file__, run_task=run_task, result_file="{task}_results.json",
      title="# West-of-N claims on the embedded gold tasks",
      report_task=lambda res: report_task(res)[0], root_prefix="won_claims_")


if __name__ == "__main__":
  main()
