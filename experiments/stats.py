"""The protocol's statistics as table cells: a mean with its 95% interval over seeds, a paired
comparison with its interval and p, and the verdicts (alone and Holm-corrected over a family of
options). The statistics themselves are the library's (``westofn.stats``)."""

from __future__ import annotations

import numpy as np


def matrix(res, name, key):
  return np.array([res["seeds"][s]["rms"][name][key] for s in sorted(res["seeds"])], np.float64)


def fmt_ci(values, scale=100.0, sign=False):
  """The mean over seeds ± its 95% t interval's half-width; one seed has no interval, and says
  so rather than "± 0.00"."""
  from westofn.stats import mean_ci
  m, h = mean_ci(np.asarray(values) * scale)
  mean = f"{m:+.2f}" if sign else f"{m:.2f}"
  return f"{mean} (1 seed)" if np.size(values) == 1 else f"{mean} ± {h:.2f}"


RESAMPLES = 2000


def compare(a, b, scale=100.0):
  from westofn.stats import format_p, paired_bootstrap
  r = paired_bootstrap(a, b, num_resamples=RESAMPLES, seed=0)
  r = {k: (v * scale if k != "p" else v) for k, v in r.items()}
  p = format_p(r["p"], RESAMPLES)
  return r, (f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] "
             + (f"p {p}" if p.startswith("<") else f"p={p}"))


def verdict(r, *, keeps: bool = False, needs=None) -> str:
  if r["low"] > 0:
    return "holds" + (" (raises)" if keeps else "")
  if r["high"] < 0:
    return "does not hold"
  if keeps:
    return "holds (keeps: no significant change)"
  if needs is not None:
    return needs
  return "not shown (difference within noise)"


def holm_verdict(result, adjusted_p: float, family: str, *, num_tests: int) -> str:
  """``verdict`` for one test of a family of ``num_tests``, given its Holm-adjusted p: a
  difference that is significant alone but not after the correction is not shown. A p no
  resample reached reads ``< num_tests/B``."""
  from westofn.stats import format_p
  alone = verdict(result)
  if alone in ("holds", "does not hold") and adjusted_p >= 0.05:
    alone = f"not shown: p={result['p']:.3f} alone, not significant among {family}"
  return f"{alone} [{format_p(adjusted_p, RESAMPLES, multiplier=num_tests)}]"


def round_columns(res, name: str) -> tuple[str, str]:
  """A West-of-N option's pseudo-label gold accuracy and its kept pairs' gold gap over seeds
  (``—`` for an RM without a round)."""
  seeds = sorted(res["seeds"])
  if name not in res["seeds"][seeds[0]]["counts"]:
    return "—", "—"
  cs = [res["seeds"][s]["counts"][name] for s in seeds]
  return (fmt_ci([c["pseudo_label_gold_accuracy"] for c in cs]),
          fmt_ci([c["kept_gold_gap"] for c in cs], 1.0))


def holm_verdict_lines(verdicts: list) -> list[str]:
  """The verdicts of several options, each ``(label, vs_base, vs_paper or None)`` with
  ``compare`` results, Holm-corrected within each family of comparisons."""
  from westofn.stats import holm
  adj_base = holm([b[0]["p"] for _, b, _ in verdicts])
  adj_won = iter(holm([w[0]["p"] for _, _, w in verdicts if w]))
  lines = [f"Verdicts with Holm's correction over the {len(verdicts)} options against "
           f"RM(human 50%) and the {len(verdicts) - 1} against the paper's West-of-N "
           "(adjusted p in brackets):", "",
           "| option | better than RM(human 50%)? | better than the paper's West-of-N? |",
           "|---|---|---|"]
  won_tests = sum(1 for _, _, w in verdicts if w)
  for (label, vs_base, vs_won), p_base in zip(verdicts, adj_base):
    verdict = lambda result, p, k: holm_verdict(result, p, "the options tried", num_tests=k)
    lines.append(f"| {label} | {verdict(vs_base[0], p_base, len(verdicts))} | "
                 f"{verdict(vs_won[0], next(adj_won), won_tests) if vs_won else '—'} |")
  return lines
