"""The pipeline's stages, one module each.

Every stage is a keyword-only function that receives built components (data, models,
settings, a ``RunContext``) and returns a ``StageResult``; ``westofn.train`` only wires
them from gin, in the order of the pipeline. A stage owns one directory under
``model_dir`` (``policies.core.stage_dir.StageDir``), resumes from its checkpoints, and
is skipped when it finished with the same identity.
"""

from westofn.stages.best_of_n import best_of_n
from westofn.stages.common import RunContext, StageResult
from westofn.stages.conditioned import c_rlft, hir
from westofn.stages.policy_improvement import dpo, rest
from westofn.stages.policy import policy_sft
from westofn.stages.reward_model import (base_rm, evaluate_named_sets, human_100, pairwise_judge,
                                         reward_model_stage)
from westofn.stages.west_of_n import WestOfNResult, west_of_n

__all__ = ["RunContext", "StageResult", "WestOfNResult", "base_rm",
           "best_of_n", "c_rlft", "dpo", "evaluate_named_sets", "hir", "human_100",
           "pairwise_judge", "policy_sft", "rest", "reward_model_stage", "west_of_n"]
