"""The layout of a run's ``MODEL_DIR``: every path under it is named here, and nowhere else.

::

  MODEL_DIR/
    config.gin  report.md  costs.json  heldout_rewards.png  evaluate.json  .lock
    base_rm/  pairwise_pm/  human_100/  policy_sft/      one StageDir per stage
    west_of_n/<variant>/round<k>/                        a round: its pairs and record
    west_of_n/<variant>/round<k>/student/                the round's student RM
    west_of_n_judges/<human pairs>/member<m>/            an ensemble judge's extra RMs
    west_of_n_samples/<sampling>.jsonl                   policy samples, shared by variants
    rest/<upstream>/grow<g>/improve<i>/                  ReST's Improve steps
    rest_samples/<sampling>.jsonl                        ReST's Grow samples
    dpo/<pairs>-<identity>/                              a DPO run
    hir/<upstream>/round<k>/                             HIR's rounds (samples, relabeled)
    c_rlft/<upstream>/                                   C-RLFT (samples, classes, policy)
    eval_sets/<RM>.json                                  named evaluation sets' metrics

A stage writes only under the directory named for it; samples live in directories of
their own because several stages (variants, ReST with another RM) read the same ones.
``<...>`` parts are digests of what the directory's contents depend on
(``policies.core.stage_dir.short_digest``).
"""

from __future__ import annotations

import os
import re

from policies.core.stage_dir import StageRecord

RM_KINDS = ("pointwise", "pairwise")
STAGE_DIRS = ("base_rm", "pairwise_pm", "human_100", "policy_sft")


class ModelDir:
  """Paths of one run's files and stage directories."""

  def __init__(self, root: str):
    self.root = root

  def _file(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def config_gin(self) -> str:
    return self._file("config.gin")

  @property
  def report(self) -> str:
    return self._file("report.md")

  @property
  def costs(self) -> str:
    return self._file("costs.json")

  @property
  def heldout_rewards_plot(self) -> str:
    return self._file("heldout_rewards.png")

  @property
  def evaluate_output(self) -> str:
    return self._file("evaluate.json")

  @property
  def lock(self) -> str:
    return self._file(".lock")

  def stage(self, name: str) -> str:
    """A pipeline stage's directory: ``base_rm``, ``pairwise_pm``, ``human_100``, ``policy_sft``."""
    if name not in STAGE_DIRS:
      raise ValueError(f"no stage directory {name!r}; stages: {list(STAGE_DIRS)}")
    return self._file(name)

  def west_of_n_round(self, variant: str, k: int) -> str:
    return self._file("west_of_n", variant, f"round{k}")

  def west_of_n_student(self, variant: str, k: int) -> str:
    return os.path.join(self.west_of_n_round(variant, k), "student")

  def west_of_n_samples(self, sampling_digest: str) -> str:
    return self._file("west_of_n_samples", f"{sampling_digest}.jsonl")

  def judge_member(self, human_digest: str, m: int) -> str:
    return self._file("west_of_n_judges", human_digest, f"member{m}")

  def rest(self, upstream_digest: str) -> str:
    return self._file("rest", upstream_digest)

  def rest_step(self, upstream_digest: str, grow: int, improve: int) -> str:
    return os.path.join(self.rest(upstream_digest), f"grow{grow}", f"improve{improve}")

  def rest_samples(self, sampling_digest: str) -> str:
    return self._file("rest_samples", f"{sampling_digest}.jsonl")

  def hir(self, upstream_digest: str) -> str:
    return self._file("hir", upstream_digest)

  def hir_round(self, upstream_digest: str, round_index: int) -> str:
    return os.path.join(self.hir(upstream_digest), f"round{round_index}")

  def c_rlft(self, upstream_digest: str) -> str:
    return self._file("c_rlft", upstream_digest)

  def dpo(self, pairs_name: str, identity_digest: str) -> str:
    return self._file("dpo", f"{pairs_name}-{identity_digest}")

  def eval_sets_cache(self, rm_name: str) -> str:
    """Where an RM's metrics on the named evaluation sets are kept (by the RM's name)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", rm_name).strip("_")
    return self._file("eval_sets", slug + ".json")

  def reward_model_stages(self) -> dict:
    """``{name: directory}`` of every trained reward-model stage (base RM, references,
    judges, West-of-N students), by name relative to the root."""
    found = {}
    for root, dirs, files in os.walk(self.root):
      dirs.sort()
      if "stage.json" not in files or not os.path.isdir(os.path.join(root, "checkpoints")):
        continue
      identity = StageRecord.read_identity(root)
      if identity and identity.get("kind") in RM_KINDS:
        found[os.path.relpath(root, self.root)] = root
    return found

  def is_west_of_n_student(self, name: str) -> bool:
    """Whether a stage named by ``reward_model_stages`` is a West-of-N round's student."""
    parts = os.path.normpath(name).split(os.sep)
    return len(parts) == 4 and parts[0] == "west_of_n" and parts[3] == "student"
