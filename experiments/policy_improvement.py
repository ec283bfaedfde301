"""Using the reward model: does a policy improved with it gain gold reward, and does a West-of-N
student improve it more than the base RM it came from (the paper's downstream claim)?

    python -m experiments.policy_improvement [--tasks letters,sorting] [--seeds 0,1,2] [--root DIR]

Same data, SFT policy and RMs as the claims benchmark (``west_of_n_claims._components``: every
RM trained for 10 passes over its data, its checkpoint chosen on validation pairs): RM(human
50%), its West-of-N student (best vs worst of 8, the paper), the student of an ensemble judge of
3 base RMs (``west_of_n_beyond.py``) and RM(human 100%). Methods, each from the SFT policy:

- best-of-8 at inference, picked by an RM (no training);
- ReST (Gulcehre et al. 2023): one Grow step (8 samples for each of 1,000 training prompts),
  Improve steps at thresholds 0, 0.7, 0.8, 0.9 of the normalised reward, 100 SFT steps each;
- rejection-sampling fine-tuning (Llama 2): the best of 8 per prompt, 200 SFT steps;
- DPO (Rafailov et al. 2023): beta 0.1, 300 steps, on the human pairs, on the West-of-N pairs,
  or both;
- HIR (Zhang et al. 2023): 2 rounds, each 8 samples for each of 1,000 training prompts relabeled
  with the bin (of 4) their normalised reward reached, 100 steps of 8 responses (each under the
  4 instructions) with the paper's contrastive term at weight 1; asked for the best outcome;
- C-RLFT (Wang et al. 2023): the 'train' part's human responses and 8 samples for each of 1,000
  prompts in 4 classes by normalised reward, weights exp((r_c − max r) / 0.1), 200 steps;
  conditioned on the best class.

The HIR and C-RLFT settings above were fixed before any run of them on these tasks (the
papers' forms, and ReST's budget of samples and steps); none is tuned on the held-out prompts.

Every policy is measured on the same 256 held-out prompts, 4 samples each, drawn with the
same seed: the mean gold reward per prompt. Rows are means over seeds with a 95% t interval;
differences are paired bootstraps over seeds and prompts; the West-of-N-vs-base comparisons
get Holm's correction as one family. Seeds change the RMs, the improvement's sampling and data
order, and the evaluation samples; the SFT policy is trained once per task. Everything resumes
from ``--root``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import numpy as np

from experiments import protocol, stats

BEST_OF = 8
EVAL = dict(eval_prompts=256, eval_samples=4)
RMS = {"human_50": "RM(human 50%)", "won": "West-of-N student",
       "won_ens3": "West-of-N student (ensemble judge)", "human_100": "RM(human 100%)"}
METHODS = [   # (name, label, kind, RM or pairs)
    ("sft", "SFT policy", "sft", None),
    ("bon_human_50", "best-of-8 by RM(human 50%)", "bon", "human_50"),
    ("bon_won", "best-of-8 by the West-of-N student", "bon", "won"),
    ("rest_human_50", "ReST with RM(human 50%)", "rest", "human_50"),
    ("rest_won", "ReST with the West-of-N student", "rest", "won"),
    ("rest_won_ens3", "ReST with the ensemble-judge student", "rest", "won_ens3"),
    ("rest_human_100", "ReST with RM(human 100%)", "rest", "human_100"),
    ("rsft_human_50", "rejection-sampling FT, RM(human 50%)", "rsft", "human_50"),
    ("rsft_won", "rejection-sampling FT, West-of-N student", "rsft", "won"),
    ("dpo_human", "DPO on the human pairs", "dpo", "human"),
    ("dpo_won", "DPO on the West-of-N pairs", "dpo", "won"),
    ("dpo_both", "DPO on human + West-of-N pairs", "dpo", "both"),
    ("hir_human_50", "HIR with RM(human 50%)", "hir", "human_50"),
    ("hir_won", "HIR with the West-of-N student", "hir", "won"),
    ("c_rlft_human_50", "C-RLFT with RM(human 50%)", "c_rlft", "human_50"),
    ("c_rlft_won", "C-RLFT with the West-of-N student", "c_rlft", "won"),
]
# The downstream claim, one comparison per method: the West-of-N side vs the human-50% side.
CLAIMS = [("bon_won", "bon_human_50"), ("rest_won", "rest_human_50"),
          ("rest_won_ens3", "rest_human_50"), ("rsft_won", "rsft_human_50"),
          ("dpo_won", "dpo_human"), ("dpo_both", "dpo_human"), ("hir_won", "hir_human_50"),
          ("c_rlft_won", "c_rlft_human_50")]
# Does a method beat ReST with the same RM? One comparison each, not a family (no claim rests
# on all of them at once).
VERSUS_REST = [("rsft_human_50", "rest_human_50"), ("rsft_won", "rest_won"),
               ("hir_human_50", "rest_human_50"), ("hir_won", "rest_won"),
               ("c_rlft_human_50", "rest_human_50"), ("c_rlft_won", "rest_won")]


def _settings(quick: bool):
  from westofn.settings import CRlft, Dpo, Hir, Rest
  scale = dict(num_prompts=40, steps_per_improve=5, eval_prompts=16, eval_samples=2) if quick \
      else dict(num_prompts=1000, steps_per_improve=100, **EVAL)
  rest = Rest(improve_thresholds=(0.0, 0.7, 0.8, 0.9), num_samples=8, max_new_tokens=24,
              learning_rate=1e-3, **scale)
  rsft = dataclasses.replace(rest, keep="best", improve_thresholds=(0.0,),
                             steps_per_improve=2 * rest.steps_per_improve)
  dpo = Dpo(beta=0.1, num_steps=10 if quick else 300, learning_rate=1e-4, row_len=96,
            max_response_len=24, eval_prompts=rest.eval_prompts, eval_samples=rest.eval_samples)
  hir = Hir(rounds=2, num_bins=4, num_samples=8, num_prompts=rest.num_prompts,
            steps_per_round=rest.steps_per_improve, batch=8, contrastive_coef=1.0,
            learning_rate=1e-3, max_new_tokens=24, row_len=96, max_response_len=24,
            eval_prompts=rest.eval_prompts, eval_samples=rest.eval_samples)
  c_rlft = CRlft(classes="reward_bins", num_bins=4, beta=0.1, num_samples=8,
                 num_prompts=rest.num_prompts, num_steps=2 * rest.steps_per_improve,
                 learning_rate=1e-3, max_new_tokens=24, eval_prompts=rest.eval_prompts,
                 eval_samples=rest.eval_samples)
  return rest, rsft, dpo, hir, c_rlft


def _gold_of(result, label: str) -> np.ndarray:
  with np.load(os.path.join(result.metrics["directory"], "gold_per_prompt.npz")) as f:
    return f[label]


def run_task(task: str, seeds: list[int], root: str, num_pairs: int, out_path: str,
             quick: bool = False) -> None:
  from rm.training import make_optimizer
  from westofn import stages
  from westofn.settings import WestOfN
  from westofn.stages.policy_improvement import EVAL_SEED
  from westofn.samples import score_texts
  t0 = time.time()
  vocab, data, recipes, policy = protocol.components(task, root, num_pairs, quick)
  recipe, source = recipes["new"], protocol.source(task, num_pairs)
  rest, rsft, dpo, hir, c_rlft = _settings(quick)
  optimizer = functools.partial(make_optimizer, warmup_steps=10, weight_decay=0.0)
  gold_fn = data.gold_task.gold_reward
  prompts = sorted({p.prompt for p in data.raw["heldout"]})[:rest.eval_prompts]
  results = {"task": task, "description": data.description, "settings": {
      "rest": dataclasses.asdict(rest), "rsft": dataclasses.asdict(rsft),
      "dpo": dataclasses.asdict(dpo), "hir": dataclasses.asdict(hir),
      "c_rlft": dataclasses.asdict(c_rlft)}, "seeds": {}}
  for seed in seeds:
    run = stages.RunContext(model_dir=os.path.join(root, task, f"seed{seed}"), vocabulary=vocab,
                            seed=seed, eval_every=50, save_every=500, progress=False)
    cpu = _CpuClock()
    rms = {"human_50": stages.base_rm(data=data, run=run, recipe=recipe),
           "human_100": stages.human_100(data=data, run=run, recipe=recipe)}
    synthetic = {}
    for name, options in (("won", {}), ("won_ens3", {"ensemble": 3})):
      result = stages.west_of_n(
          settings=WestOfN.build(num_samples=8, max_new_tokens=24, soft_labels=False, **options),
          base=rms["human_50"],
          data=data, source=source, run=run, recipe=recipe, policy=policy)
      rms[name], synthetic[name] = result.students[0], result.synthetic[0]
    rm_minutes = cpu.lap()
    human = data.tokenized["train"]
    pairs = {"human": human, "won": synthetic["won"], "both": human + synthetic["won"]}
    # Best-of-N at inference: the SFT policy's samples, picked by each RM.
    bon = policy.model.sample(prompts, BEST_OF, seed=seed + EVAL_SEED)
    texts = [[s.text for s in row] for row in bon]
    gold_bon = np.array([[gold_fn(p, t) for t in row] for p, row in zip(prompts, texts)])
    methods = {}
    for name, _, kind, what in METHODS:
      if kind == "sft":
        continue
      if kind == "bon":
        scores = np.array(score_texts(rms[what].model, vocab, prompts, texts))
        gold = gold_bon[np.arange(len(prompts)), scores.argmax(1)]
        methods[name] = {"gold": gold.tolist(), "metrics": {}, "steps": [],
                         "cpu_minutes": cpu.lap()}
        continue
      if kind in ("rest", "rsft"):
        result = stages.rest(data=data, run=run, settings=rest if kind == "rest" else rsft,
                             policy=policy, reward_model=rms[what], sft_settings=claims_sft(),
                             make_optimizer=optimizer, name=name)
      elif kind == "hir":
        result = stages.hir(data=data, run=run, settings=hir, policy=policy,
                            reward_model=rms[what], make_optimizer=optimizer, name=name)
      elif kind == "c_rlft":
        result = stages.c_rlft(data=data, run=run, settings=c_rlft, policy=policy,
                               reward_model=rms[what], sft_settings=claims_sft(),
                               make_optimizer=optimizer, name=name)
      else:
        result = stages.dpo(data=data, run=run, settings=dpo, policy=policy, pairs=pairs[what],
                            pairs_name=what, reward_model=rms["human_50"],
                            make_optimizer=optimizer, name=name)
      steps = result.metrics["steps"]
      methods[name] = {"gold": _gold_of(result, steps[-1]["label"]).tolist(),
                       "metrics": {k: v for k, v in steps[-1].items() if k != "label"},
                       "steps": steps, "cpu_minutes": cpu.lap()}
      if "sft" not in methods:
        methods["sft"] = {"gold": _gold_of(result, "start").tolist(),
                          "metrics": {k: v for k, v in steps[0].items() if k != "label"},
                          "steps": []}
      print(f"[{task}] seed {seed} {name}: gold {steps[-1]['gold_reward']:+.3f} "
            f"(SFT {steps[0]['gold_reward']:+.3f}) at {(time.time() - t0) / 60:.1f} min",
            flush=True)
    results["seeds"][str(seed)] = {
        "methods": methods, "rm_cpu_minutes": rm_minutes,
        "rm_gold_accuracy": {n: r.metrics.get("gold_accuracy") for n, r in rms.items()},
        "bon_oracle": float(gold_bon.max(1).mean()), "bon_random": float(gold_bon[:, 0].mean())}
  results["minutes"] = (time.time() - t0) / 60
  from policies.core.atomic import write_text_atomic
  write_text_atomic(out_path, json.dumps(results))


class _CpuClock:
  """CPU-minutes of this process (every thread, XLA's included) since the last lap: what a
  method cost, whichever other process shares the host."""

  def __init__(self):
    self.last = time.process_time()

  def lap(self) -> float:
    now = time.process_time()
    minutes, self.last = (now - self.last) / 60, now
    return minutes


def claims_sft():
  """The SFT packing the claims benchmark trained its policy with (its ``_components``)."""
  from westofn.settings import PolicySft
  return PolicySft(rows=8, row_len=256, max_sequences_per_row=8, max_response_len=24)


def _gold(res, name) -> np.ndarray:
  return np.array([res["seeds"][s]["methods"][name]["gold"] for s in sorted(res["seeds"])])


def _metric(res, name, key) -> np.ndarray:
  return np.array([res["seeds"][s]["methods"][name]["metrics"].get(key, np.nan)
                   for s in sorted(res["seeds"])], np.float64)


def report_task(res, figures: str = None) -> str:
  from westofn.stats import holm
  seeds = sorted(res["seeds"])
  first = res["seeds"][seeds[0]]
  acc = lambda n: stats.fmt_ci([res["seeds"][s]["rm_gold_accuracy"][n] for s in seeds])
  bon = lambda key: stats.fmt_ci([res["seeds"][s][key] for s in seeds], 1.0, True)
  lines = [f"### Task `{res['task']}` ({len(seeds)} seeds: {', '.join(seeds)}; "
           f"{res['minutes']:.1f} min)", "", f"Data: {res['description']}.", "",
           "RMs (gold accuracy %, mean over seeds): " +
           ", ".join(f"{label} {acc(n)}" for n, label in RMS.items()) + ". Best-of-8 of the "
           f"SFT policy: random pick {bon('bon_random')}, oracle {bon('bon_oracle')} "
           "(gold reward).", "",
           "| method | gold reward | Δ vs SFT [95% CI], p | RM reward (normalised) | KL from "
           "SFT (nats) | response tokens | CPU-minutes |", "|---|---|---|---|---|---|---|"]
  sft = _gold(res, "sft")
  measured = [m for m in METHODS if m[0] in first["methods"] or m[0] == "sft"]
  for name, label, kind, _ in measured:   # results made before a method existed lack it
    g = _gold(res, name)
    delta = "—" if name == "sft" else stats.compare(g, sft, 1.0)[1]
    fmt = lambda key, sign=False: ("—" if kind == "bon" else
                                   stats.fmt_ci(_metric(res, name, key), 1.0, sign))
    lines.append(f"| {label} | {stats.fmt_ci(g.mean(1), 1.0, True)} | {delta} | "
                 f"{fmt('proxy_reward_normalised')} | {fmt('kl_from_sft')} | "
                 f"{fmt('response_tokens')} | {_cpu_minutes(res, name)} |")
  lines += ["", "Gold reward: mean over 256 held-out prompts (4 samples each; best-of-8: the one "
            "picked) ± half-width of the 95% t interval over seeds. Δ: paired bootstrap over "
            "seeds and prompts (2,000 resamples), two-sided p. The RM reward is the one each "
            "method trained with (DPO: RM(human 50%)), so it compares steps, not methods. "
            "CPU-minutes: the task's process's CPU time (all threads) in each method, mean over "
            "seeds; samples that methods share (the SFT policy's samples of the training "
            "prompts, reused where the settings match) are paid by the first method that draws "
            f"them, in the table's order. The RMs themselves {_rm_cpu_minutes(res)}.", ""]
  tests = [(a, b, stats.compare(_gold(res, a), _gold(res, b), 1.0)) for a, b in CLAIMS
           if a in first["methods"] and b in first["methods"]]
  adjusted = holm([t[2][0]["p"] for t in tests])
  label_of = {n: l for n, l, _, _ in METHODS}
  lines += ["The downstream claim: a policy improved with the West-of-N student gains more gold "
            "reward than one improved with RM(human 50%). Holm-adjusted p over the "
            f"{len(tests)} comparisons in brackets:", "",
            "| West-of-N side | base side | Δ gold reward [95% CI], p | verdict [adjusted p] |",
            "|---|---|---|---|"]
  for (a, b, (r, text)), p_adj in zip(tests, adjusted):
    verdict = stats.holm_verdict(r, p_adj, f"the {len(tests)} tests", num_tests=len(tests))
    lines.append(f"| {label_of[a]} | {label_of[b]} | {text} | {verdict} |")
  # The methods beside ReST with the same RM: does any beat it?
  versus = [(a, b) for a, b in VERSUS_REST if a in first["methods"] and b in first["methods"]]
  lines += ["", "Against ReST with the same RM (Δ gold reward, paired bootstrap over seeds and "
            "prompts):", "", "| method | ReST with | Δ gold reward vs ReST [95% CI], p |",
            "|---|---|---|"]
  for a, b in versus:
    lines.append(f"| {label_of[a]} | {label_of[b].removeprefix('ReST with ')} | "
                 f"{stats.compare(_gold(res, a), _gold(res, b), 1.0)[1]} |")
  lines += _rounds_table(res, [n for n, _, k, _ in METHODS if k == "hir"], label_of, "HIR")
  # ReST step by step: where the proxy keeps rising, does the gold reward follow?
  rest_names = [n for n, _, k, _ in METHODS if k == "rest"]
  labels = [s["label"] for s in first["methods"][rest_names[0]]["steps"]]
  lines += _rounds_table(res, rest_names, label_of, "ReST")
  if figures:
    path = _plot_steps(res, rest_names, labels, label_of,
                       f"{figures}_{res['task']}.png")
    lines += ["", f"![ReST steps on {res['task']}]({os.path.basename(path)})"]
  return "\n".join(lines) + "\n"


def _rounds_table(res, names, label_of, method: str) -> list:
  """``method``'s rows step by step (mean over seeds): where the RM's reward keeps rising,
  does the gold reward follow, and how far does the policy move?"""
  seeds = sorted(res["seeds"])
  names = [n for n in names if n in res["seeds"][seeds[0]]["methods"]]
  if not names:
    return []
  labels = [s["label"] for s in res["seeds"][seeds[0]]["methods"][names[0]]["steps"]]
  lines = ["", f"{method} step by step (mean over seeds): gold reward / RM reward (normalised) "
           "/ KL from SFT:", "", "| RM | " + " | ".join(labels) + " |",
           "|---" * (len(labels) + 1) + "|"]
  for n in names:
    per_step = [[res["seeds"][s]["methods"][n]["steps"][i] for s in seeds]
                for i in range(len(labels))]
    cells = [f"{np.mean([x['gold_reward'] for x in st]):+.3f} / "
             f"{np.mean([x['proxy_reward_normalised'] for x in st]):.3f} / "
             f"{np.mean([x['kl_from_sft'] for x in st]):.2f}" for st in per_step]
    lines.append(f"| {label_of[n]} | " + " | ".join(cells) + " |")
  return lines


def _cpu_minutes(res, name: str) -> str:
  """Mean CPU-minutes of a method over seeds (``—`` for results recorded before they were)."""
  values = [res["seeds"][s]["methods"][name].get("cpu_minutes") for s in sorted(res["seeds"])]
  return "—" if name == "sft" or None in values else f"{np.mean(values):.1f}"


def _rm_cpu_minutes(res) -> str:
  values = [res["seeds"][s].get("rm_cpu_minutes") for s in sorted(res["seeds"])]
  return ("were not timed in this run" if None in values else
          f"(RM(human 50%), RM(human 100%) and the two West-of-N students, with their samples "
          f"and judging) took {np.mean(values):.1f} CPU-minutes a seed")


def _plot_steps(res, names, labels, label_of, path: str) -> str:
  from westofn.plots import _figure, _save
  plt, fig, (ax_gold, ax_proxy) = _figure(2)
  seeds = sorted(res["seeds"])
  x = np.arange(len(labels))
  for n in names:
    for ax, key in ((ax_gold, "gold_reward"), (ax_proxy, "proxy_reward_normalised")):
      values = np.array([[res["seeds"][s]["methods"][n]["steps"][i][key] for i in x]
                         for s in seeds])
      ax.errorbar(x, values.mean(0), yerr=values.std(0, ddof=1) if len(seeds) > 1 else None,
                  marker="o", capsize=3, label=label_of[n])
  for ax, title in ((ax_gold, "gold reward"), (ax_proxy, "RM reward it trained on (normalised)")):
    ax.set_xticks(x, ["SFT"] + [f"I{i}" for i in x[1:]])
    ax.set(title=f"{res['task']}: {title}", xlabel="ReST improve step")
  ax_gold.legend(fontsize=7)
  return _save(plt, fig, path)


def main():
  import argparse
  # The figures go beside the report (--out), named after it (policy_improvement.md:
  # policy_improvement_letters.png), where the report's links find them.
  out = argparse.ArgumentParser(add_help=False)
  out.add_argument("--out")
  path = out.parse_known_args()[0].out
  figures = os.path.splitext(os.path.abspath(path))[0] if path else None
  protocol.cli(doc=__doc__, script=__file__, run_task=run_task,
             result_file="{task}_policy_improvement.json",
             title="# Policy improvement with the reward model (ReST, rejection sampling, DPO, "
                   "HIR, C-RLFT)",
             report_task=lambda res: report_task(res, figures),
             root_prefix="policy_improvement_")


if __name__ == "__main__":
  main()
