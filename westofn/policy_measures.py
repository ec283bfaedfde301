"""What is measured of every policy the improvement stages (ReST, rejection-sampling
fine-tuning, DPO) make: its gold reward where the task has one, the
RM's (proxy) reward, its KL from the SFT policy, and how long and likely its samples are."""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

from policies.objectives import kl_estimate, normalize_rewards
from policies.policy import Policy
from westofn.errors import ConfigError
from westofn.samples import pad_ragged, score_texts

def reward_model_fingerprint(rm_result) -> str:
  """Which RM this is, for the names of the stages it drives: its name and a digest of its
  held-out rewards (two RMs of one name, e.g. two West-of-N variants, score differently)."""
  evaluation = getattr(rm_result.train, "eval", None)
  h = hashlib.sha256(rm_result.name.encode())
  for side in ("chosen", "rejected"):
    h.update(np.asarray(getattr(evaluation, side, ()), np.float32).tobytes())
  return f"{rm_result.name}:{h.hexdigest()[:16]}"


def reward_scale(rm_result) -> tuple[float, float]:
  """The RM's mean and standard deviation over its held-out responses (chosen and
  rejected), which put its rewards on ReST's normalised scale."""
  evaluation = getattr(rm_result.train, "eval", None)
  if getattr(evaluation, "chosen", None) is None:
    raise ConfigError(f"{rm_result.name} has no held-out rewards to normalise with (a pairwise "
                      "model cannot score ReST's samples)")
  both = np.concatenate([np.asarray(evaluation.chosen), np.asarray(evaluation.rejected)])
  return float(both.mean()), float(max(both.std(), 1e-6))


def measure_policy(*, policy: Policy, reference: Policy, prompts: Sequence[str],
                   num_samples: int, seed: int, reward_model, scale: tuple[float, float],
                   vocabulary, gold_reward=None, **score_kw) -> tuple[dict, list[dict]]:
  """Samples ``num_samples`` responses per prompt (the same seed for every policy measured);
  returns the metrics and one row per prompt: its responses with their RM rewards (and gold
  rewards where the task has them).

  ``kl_from_sft`` is a Monte Carlo estimate of KL(policy ‖ reference) in nats per response;
  ``reference_logprob_per_token`` the reference's mean log-likelihood per token of these
  samples (how far from the SFT distribution they drifted).
  """
  samples = policy.sample(list(prompts), num_samples, seed=seed)
  texts = [[s.text for s in row] for row in samples]
  rewards = np.array(score_texts(reward_model, vocabulary, prompts, texts, **score_kw),
                     np.float64)
  ref = reference.score_samples(prompts, samples)
  flat = [s for row in samples for s in row]
  flat_ref = [r for row in ref for r in row]
  tokens = sum(s.length for s in flat)
  policy_BxT, mask_BxT = pad_ragged([s.token_logprobs for s in flat])
  reference_BxT, _ = pad_ragged(flat_ref)
  metrics = {
      "proxy_reward": float(rewards.mean()),
      "proxy_reward_normalised": float(np.mean(normalize_rewards(rewards, mean=scale[0],
                                                                 std=scale[1]))),
      "kl_from_sft": float(np.mean(kl_estimate(policy_BxT, reference_BxT, mask_BxT))),
      "logprob_per_token": float(sum(s.sum_logprob for s in flat) / max(tokens, 1)),
      "reference_logprob_per_token": float(sum(float(np.sum(r)) for r in flat_ref)
                                           / max(tokens, 1)),
      "response_tokens": float(tokens / len(flat)),
      "ended_with_eos": float(np.mean([s.stopped_at_eos for s in flat]))}
  rows = [{"prompt": p, "responses": row, "rewards": [float(x) for x in r]}
          for p, row, r in zip(prompts, texts, rewards)]
  if gold_reward is not None:
    for row in rows:
      row["gold"] = [float(gold_reward(row["prompt"], t)) for t in row["responses"]]
    metrics["gold_reward"] = float(gold_per_prompt(rows).mean())
  return metrics, rows


def gold_per_prompt(rows: Sequence[dict]) -> Optional[np.ndarray]:
  """Each prompt's mean gold reward over its measured responses (None without gold)."""
  if not rows or "gold" not in rows[0]:
    return None
  return np.array([np.mean(r["gold"]) for r in rows])


def before_and_after(before: Sequence[dict], after: Sequence[dict], *, title: str,
                     count: int = 10) -> str:
  """Markdown: the first ``count`` prompts' first response before and after improvement, with
  their RM (and gold) rewards."""
  gold = "gold" in before[0]
  lines = [f"# {title}", "", "| prompt | before | after |", "|---|---|---|"]
  cell = lambda r: (f"{r['responses'][0]!r} (RM {r['rewards'][0]:+.2f}"
                    + (f", gold {r['gold'][0]:+.2f})" if gold else ")"))
  for b, a in zip(before[:count], after[:count]):
    cells = (repr(b["prompt"]), cell(b), cell(a))
    lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
  return "\n".join(lines) + "\n"
