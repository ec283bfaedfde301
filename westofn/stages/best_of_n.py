"""Best-of-N on a gold task: the gold reward of the policy sample each RM picks among N,
downstream of its held-out accuracy (what an RM is for: choosing among a policy's samples)."""

from __future__ import annotations

from typing import Optional, Sequence

from westofn import west_of_n
from westofn.pipeline import PreferenceData
from westofn.stages.common import RunContext, StageResult

MAX_PROMPTS = 128


def best_of_n(*, data: PreferenceData, run: RunContext, rm_results: Sequence[StageResult],
              policy: Optional[StageResult], judge: Optional[StageResult],
              n: int) -> Optional[dict]:
  """``{picker: mean gold reward}`` over held-out prompts for each pointwise RM, and the
  'random' and 'oracle' pickers; each RM's figure is also its ``best_of_n_gold`` metric.
  ``None`` where there is no gold task, no policy or ``n <= 1``."""
  if data.gold_task is None or policy is None or n <= 1 or not rm_results:
    return None
  gold = west_of_n.best_of_n_gold(
      # pointwise RMs only: best-of-N by a pairwise model would need a tournament per prompt
      reward_models={r.name: r.model for r in rm_results if r is not judge},
      policy=policy.model, vocabulary=run.vocabulary,
      prompts=sorted({p.prompt for p in data.raw["heldout"]})[:MAX_PROMPTS],
      n=n, gold_reward=data.gold_task.gold_reward, seed=run.seed)
  for r in rm_results:
    if r.name in gold:
      r.metrics["best_of_n_gold"] = gold[r.name]
  return gold
