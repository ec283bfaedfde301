"""PNG plots of a West-of-N run: what the filters saw and cut, and how the RMs' held-out
rewards separate chosen from rejected. Written atomically next to the data they show."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np

from policies.core.atomic import writes_here


def _figure(ncols: int):
  import matplotlib
  matplotlib.use("Agg")  # files only; never needs a display
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.8), squeeze=False)
  return plt, fig, axes[0]


def _save(plt, fig, path: str) -> str:
  if not writes_here():
    plt.close(fig)
    return path
  fig.tight_layout()
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def _cut_line(ax, value: Optional[float], label: str):
  if value is not None and np.isfinite(value):
    ax.axvline(value, color="black", linestyle="--", linewidth=1.2, label=label)


def plot_filters(candidates: Sequence[dict], counts: Mapping, path: str) -> str:
  """Confidence and log-likelihood of every candidate pair with the round's thresholds,
  and the base RM's scores of all samples, of the picked best and of the picked worst."""
  plt, fig, (ax_c, ax_l, ax_r) = _figure(3)
  conf = np.array([c["confidence"] for c in candidates])
  kept = np.array([c["kept"] for c in candidates], bool)
  bins = np.linspace(0.5, 1.0, 26)
  ax_c.hist(conf, bins=bins, color="tab:gray", alpha=0.6, label=f"candidates ({len(conf)})")
  ax_c.hist(conf[kept], bins=bins, color="tab:green", alpha=0.8, label=f"kept ({kept.sum()})")
  _cut_line(ax_c, counts.get("confidence_threshold"), "threshold")
  ax_c.set(title="base RM confidence P(best ≻ worst)", xlabel="confidence", ylabel="pairs")
  ax_c.legend(fontsize=8)

  ll_c = np.array([c["loglik_chosen"] for c in candidates])
  ll_r = np.array([c["loglik_rejected"] for c in candidates])
  both = np.concatenate([ll_c, ll_r])
  bins = np.linspace(both.min(), max(both.max(), both.min() + 1e-3), 31) if len(both) else 10
  ax_l.hist(ll_c, bins=bins, color="tab:blue", alpha=0.55, label="best (chosen)")
  ax_l.hist(ll_r, bins=bins, color="tab:red", alpha=0.55, label="worst (rejected)")
  _cut_line(ax_l, counts.get("likelihood_threshold"), "threshold")
  ax_l.set(title="policy log-likelihood per token", xlabel="mean log p", ylabel="responses")
  ax_l.legend(fontsize=8)

  scored = [c for c in candidates if c.get("base_scores")]
  if not scored:   # a pairwise judge gives no pointwise rewards
    ax_r.text(0.5, 0.5, "pairwise preference model:\nno pointwise rewards", ha="center",
              va="center", transform=ax_r.transAxes)
    ax_r.set_axis_off()
    return _save(plt, fig, path)
  scores = np.concatenate([c["base_scores"] for c in scored])
  best = np.array([max(c["base_scores"]) for c in scored])
  worst = np.array([min(c["base_scores"]) for c in scored])
  bins = np.linspace(scores.min(), max(scores.max(), scores.min() + 1e-3), 31)
  ax_r.hist(scores, bins=bins, color="tab:gray", alpha=0.5, density=True, label="all samples")
  ax_r.hist(best, bins=bins, color="tab:blue", alpha=0.55, density=True, label="best of N")
  ax_r.hist(worst, bins=bins, color="tab:red", alpha=0.55, density=True, label="worst of N")
  ax_r.set(title="base RM reward of the samples", xlabel="reward", ylabel="density")
  ax_r.legend(fontsize=8)
  return _save(plt, fig, path)


def plot_heldout_rewards(rewards: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str) -> str:
  """Per RM: held-out reward margins r(chosen) − r(rejected); right of 0 is correct."""
  plt, fig, axes = _figure(len(rewards))
  for ax, (name, (chosen, rejected)) in zip(axes, rewards.items()):
    margin = np.asarray(chosen) - np.asarray(rejected)
    ax.hist(margin, bins=40, color="tab:purple", alpha=0.75)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set(title=f"{name}: accuracy {np.mean(margin > 0):.1%}",
           xlabel="r(chosen) − r(rejected)", ylabel="held-out pairs")
  return _save(plt, fig, path)


def plot_improvement(steps: Sequence[dict], path: str) -> str:
  """Proxy (RM) reward and gold reward per improvement step, on two axes: over-optimisation
  shows as the proxy rising while the gold reward falls."""
  plt, fig, (ax,) = _figure(1)
  x = np.arange(len(steps))
  ax.plot(x, [s["proxy_reward_normalised"] for s in steps], "o-", color="tab:blue",
          label="proxy: RM reward (normalised)")
  ax.set(xlabel="step", ylabel="RM reward, normalised [0, 1]", title="policy improvement")
  ax.set_xticks(x, [s["label"] for s in steps], rotation=30, fontsize=7, ha="right")
  if all("gold_reward" in s for s in steps):
    ax2 = ax.twinx()
    ax2.plot(x, [s["gold_reward"] for s in steps], "s--", color="tab:orange", label="gold reward")
    ax2.set_ylabel("gold reward")
    ax2.legend(loc="lower right", fontsize=8)
  ax.legend(loc="upper left", fontsize=8)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  return _save(plt, fig, path)
