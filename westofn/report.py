"""The run's report, formatted from what the stages measured: the paper's table, the
filters' counts, the policy, best-of-N gold on gold tasks, and the plots. Written to
``model_dir/report.md``; nothing here trains, samples or scores."""

from __future__ import annotations

from typing import Optional, Sequence

from westofn import gold_tasks, plots
from westofn.eval_sets import format_eval_cell, format_eval_sets
from westofn.model_dir import ModelDir
from westofn.pipeline import PreferenceData
from westofn.stages.common import StageResult


def format_report(results: Sequence[StageResult], data_description: str,
                  eval_sets: Optional[dict] = None) -> str:
  """The RMs' table; ``eval_sets`` (``{RM name: {set: metrics}}``) adds a column per named
  evaluation set."""
  eval_sets = eval_sets or {}
  set_names = list(next(iter(eval_sets.values()), {}))
  gold = any("gold_accuracy" in r.metrics for r in results)
  selected = any(r.metrics.get("best_step") is not None for r in results)
  cols = (["model", "trained on", "held-out accuracy"] + (["gold accuracy"] if gold else [])
          + (["kept step (stopped at)"] if selected else [])
          + ["chosen mean", "rejected mean", "mean margin", "held-out pairs"]
          + [f"{s}: accuracy ± s.e." for s in set_names])
  lines = [f"data: {data_description}", "", "| " + " | ".join(cols) + " |",
           "|---" * len(cols) + "|"]
  num = lambda m, k: f"{m[k]:+.3f}" if k in m else "—"   # a pairwise model has no rewards
  for r in results:
    m = r.metrics
    cells = [r.name, m.get("trained_on", ""), f"{m['accuracy']:.4f}"]
    if gold:
      cells.append(f"{m['gold_accuracy']:.4f}" if "gold_accuracy" in m else "—")
    if selected:
      cells.append(f"{m['best_step']} ({m['stopped_at']})" if m.get("best_step") else "—")
    cells += [num(m, "chosen_mean"), num(m, "rejected_mean"), num(m, "margin_mean"),
              str(m["num_pairs"])]
    cells += [format_eval_cell(eval_sets[r.name][s]) if r.name in eval_sets else "—"
              for s in set_names]
    lines.append("| " + " | ".join(cells) + " |")
  if gold:
    lines += ["", "gold accuracy: how often the RM orders a held-out pair as the gold reward "
              "does (pairs whose gold rewards tie are left out), whatever the pair's label."]
  return "\n".join(lines) + "\n"


def format_round_counts(rounds: Sequence[dict]) -> str:
  keys = ("prompts", "fewer_than_2_distinct", "usable", "pass_confidence", "pass_likelihood",
          "kept", "confidence_threshold", "likelihood_threshold")
  if any(c.get("disagreement_threshold") is not None for c in rounds):   # the filter was on
    keys += ("pass_disagreement", "disagreement_threshold")
  if any("pseudo_label_gold_accuracy" in c for c in rounds):
    keys += ("pseudo_label_gold_accuracy_unfiltered", "pseudo_label_gold_accuracy")

  def cell(value):
    return "off" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

  lines = ["", "| West-of-N round | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for i, c in enumerate(rounds, start=1):
    lines.append(f"| {i} | " + " | ".join(cell(c.get(k)) for k in keys) + " |")
  return "\n".join(lines) + "\n"


def format_best_of_n(gold: dict, n: int) -> str:
  lines = ["", f"Gold reward of the best-of-{n} policy sample picked by each RM (held-out "
           "prompts; 'random' takes the first sample, 'oracle' the truly best):", "",
           "| picker | mean gold reward |", "|---|---|"]
  lines += [f"| {k} | {v:+.3f} |" for k, v in gold.items()]
  return "\n".join(lines) + "\n"


def format_policy_report(result: StageResult) -> str:
  m = result.metrics
  lines = ["", "| policy | held-out perplexity | samples ending in EOS | mean log-prob / token |"
           + (" gold reward: policy | gold reward: behaviour data |" if "gold_reward_policy" in m
              else ""),
           "|---|---|---|---|" + ("---|---|" if "gold_reward_policy" in m else "")]
  line = (f"| policy_sft | {m['heldout_perplexity']:.3f} | {m['samples_ended_with_eos']:.1%} | "
          f"{m['samples_mean_logprob']:.3f} |")
  if "gold_reward_policy" in m:
    line += f" {m['gold_reward_policy']:+.3f} | {m['gold_reward_behaviour']:+.3f} |"
  lines.append(line)
  return "\n".join(lines) + "\n"


def format_improvement(results: Sequence[StageResult]) -> str:
  """One row per step of every policy-improvement stage (ReST, rejection sampling, DPO)."""
  gold = any("gold_reward" in s for r in results for s in r.metrics["steps"])
  cols = (["policy", "step", "samples kept"] + (["gold reward"] if gold else [])
          + ["RM reward (normalised)", "KL from SFT (nats)", "log-prob / token",
             "SFT log-prob / token", "response tokens"])
  lines = ["", "Policy improvement (held-out prompts; the same sampling seed for every policy):",
           "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
  for r in results:
    for s in r.metrics["steps"]:
      cells = [r.name, s["label"], "—" if s.get("kept") is None else str(s["kept"])]
      if gold:
        cells.append(f"{s['gold_reward']:+.3f}" if "gold_reward" in s else "—")
      cells += [f"{s['proxy_reward_normalised']:.3f}", f"{s['kl_from_sft']:.2f}",
                f"{s['logprob_per_token']:.3f}", f"{s['reference_logprob_per_token']:.3f}",
                f"{s['response_tokens']:.1f}"]
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Plots: <stage directory>/improvement.png (RM reward and gold reward per step: "
            "over-optimisation shows as the first rising while the second falls)."]
  return "\n".join(lines) + "\n"


def make_report(*, model_dir: str, data: PreferenceData, rm_results: Sequence[StageResult],
                policy: Optional[StageResult], round_counts: Sequence[dict],
                best_of_n_gold: Optional[dict] = None, best_of_n: int = 0,
                improved: Sequence[StageResult] = (), eval_sets: Optional[dict] = None) -> str:
  """Assembles the report's text from what the stages measured (``best_of_n_gold``: the
  best_of_n stage's figures for ``best_of_n`` samples) and draws the held-out reward plot;
  the caller writes ``report.md``."""
  report = (format_report(rm_results, data.description, eval_sets) if rm_results
            else f"data: {data.description}\n")
  if eval_sets:
    report += ("\nNamed evaluation sets (DataSource.eval_paths; RewardBench's rules: a tie "
               "is wrong; gold accuracy in brackets where the rows carry gold rewards):\n\n"
               + format_eval_sets(eval_sets))
  if policy is not None:
    report += format_policy_report(policy)
  if round_counts:
    report += format_round_counts(round_counts)
  if improved:
    report += format_improvement(improved)
  if data.gold_task is not None and rm_results:
    ceiling = gold_tasks.label_agreement(data.raw["heldout"])
    report += (f"\nLabel ceiling: held-out labels agree with the gold reward on {ceiling:.1%} "
               "of pairs (no model can be expected to beat this); chance is 50%.\n")
  if best_of_n_gold:
    report += format_best_of_n(best_of_n_gold, best_of_n)
  heldout_rewards = {r.name: (r.train.eval.chosen, r.train.eval.rejected) for r in rm_results
                     if r.train is not None and getattr(r.train.eval, "chosen", None) is not None}
  if heldout_rewards:
    plots.plot_heldout_rewards(heldout_rewards, ModelDir(model_dir).heldout_rewards_plot)
    report += ("\nPlots: heldout_rewards.png (held-out reward margins per RM)" +
               (", west_of_n/<settings>/round<k>/filters.png (the filters' inputs and "
                "thresholds)" if round_counts else "") + ".\n")
  return report
