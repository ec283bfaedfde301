"""Best-of-N on a gold task: the gold reward of the policy sample each RM picks among N,
downstream of its held-out accuracy (what an RM is for: choosing among a policy's samples)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from westofn.judges import RewardModelJudge
from westofn.pipeline import PreferenceData
from westofn.stages.common import RunContext, StageResult

MAX_PROMPTS = 128


def best_of_n(*, data: PreferenceData, run: RunContext, rm_results: Sequence[StageResult],
              policy: Optional[StageResult], judge: Optional[StageResult],
              n: int) -> Optional[dict]:
  """``{picker: mean gold reward}`` over held-out prompts for each pointwise RM (a
  ``RewardModelJudge`` of one, in ``ScoringRows``' default rows), and the 'random' and
  'oracle' pickers; each RM's figure is also its ``best_of_n_gold`` metric. ``None`` where
  there is no gold task, no policy or ``n <= 1``."""
  if data.gold_task is None or policy is None or n <= 1 or not rm_results:
    return None
  prompts = sorted({p.prompt for p in data.raw["heldout"]})[:MAX_PROMPTS]
  texts = [[s.text for s in row] for row in policy.model.sample(prompts, n, seed=run.seed)]
  gold_BxN = [[data.gold_task.gold_reward(p, t) for t in row] for p, row in zip(prompts, texts)]
  picked = lambda index_B: float(np.mean([g[i] for g, i in zip(gold_BxN, index_B)]))
  gold = {"random": picked([0] * len(prompts)),
          "oracle": picked([int(np.argmax(g)) for g in gold_BxN])}
  # pointwise RMs only: best-of-N by a pairwise model would need a tournament per prompt
  for r in rm_results:
    if r is not judge:
      gold[r.name] = picked(RewardModelJudge([r.model], run.vocabulary).best(
          prompts=prompts, texts=texts))
      r.metrics["best_of_n_gold"] = gold[r.name]
  return gold
