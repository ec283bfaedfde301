"""Everything westofn keeps so that what earlier versions wrote keeps working: the old names a
``config.gin`` binds, and the records a MODEL_DIR holds from before a field existed. Nothing
else in the code knows about the past; each entry says what it reads and which version wrote
it (the package has been 0.1.0 throughout, so a version is the commit that changed the format
and its date: ``git show <commit>``).

A new entry goes here, with its version, and a test in ``tests/test_model_dir.py`` that reads
a record or config of that version back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from westofn.settings import WEST_OF_N_GROUPS

# ``config.gin``: train()'s parameters renamed {old: new} (runs written before 664bb60,
# 2026-12-01).
RENAMED_PARAMETERS = {"won": "west_of_n", "policy": "policy_sft"}

# ``config.gin`` and flags: train()'s flat parameters that moved into its setting groups
# (runs written before the groups, 2026-12-07): {old parameter: (class, field)}, each class
# in ``westofn.settings``.
MOVED_PARAMETERS = {
    **{name: ("RewardModelRecipe", name) for name in (
        "model_config", "make_optimizer", "batching", "loss", "num_steps", "selection",
        "epochs", "min_steps", "base_rm_steps")},
    "rm_backbone": ("RewardModelRecipe", "backbone"),
    **{name: ("RunSettings", name) for name in (
        "seed", "log_every", "eval_every", "save_every", "keep_checkpoints", "progress")},
    "policy_model_config": ("PolicyRecipe", "model_config"),
    "policy_optimizer": ("PolicyRecipe", "make_optimizer"),
    "improve_optimizer": ("PolicyRecipe", "improve_optimizer"),
    "policy_backbone": ("PolicyRecipe", "backbone"),
    "policy_sft": ("PolicyRecipe", "sft"),
}

# ``config.gin``: the settings classes bound by their homes before ``westofn.settings`` existed
# (runs written before 664bb60 and c5adc69, 2026-12-01): {old module: classes}.
OLD_HOMES = {"westofn.pipeline": ("Batching", "DataSource", "PolicySft"),
             "westofn.west_of_n": ("WestOfN",),
             "westofn.improve": ("Rest", "Dpo"),
             "westofn.ai_feedback": ("LMJudgeSettings",)}

# Stage identities: keys compared only where a stage's record has them (``StageRecord.
# check_identity(added_later=...)``): the optimizer entered the RM's and the policy's
# identity in cc86635 (2026-12-01).
REWARD_MODEL_ADDED_LATER = ("optimizer",)
POLICY_ADDED_LATER = ("optimizer",)

# ``WestOfN`` options added after the first runs, with the value every run had before they
# existed (3599322, 2026-12-01, to 33d76f2, 2026-12-02): a round's digest leaves them out at
# that value, so that those rounds keep their names.
WEST_OF_N_ADDED_LATER = {"rejected_rank": None, "judge_ensemble": 1, "policy": "sft",
                         "judge": "rm", "lm_judge": None, "soft_labels": False,
                         "prompt_repeats": 1, "student_start": "scratch",
                         "disagreement_quantile": 0.0, "disagreement_measure": "std",
                         "judge_members": "same", "unlabeled_pairs": False}

# ``Rest`` / ``Dpo``: how the RM reads responses became settings later (at their defaults,
# left out of a stage's identity, so that runs made before keep their directories).
IMPROVEMENT_ADDED_LATER = {"score_row_len": 256, "score_max_response_len": 64}

# How an RM reads the samples it scores was a field of each settings class until the
# ``ScoringRows`` group (2026-12-07): {(class, old field): new ScoringRows field}, for a
# ``config.gin`` and for the records that name rounds and stages (which keep the old names,
# so that runs made before keep their directories).
SCORING_FIELDS = {("WestOfN", "score_rows"): "rows", ("WestOfN", "score_row_len"): "row_len",
                  ("WestOfN", "max_response_len"): "max_response_len",
                  **{(owner, old): new for owner in ("Rest", "Hir", "CRlft", "Dpo")
                     for old, new in (("score_row_len", "row_len"),
                                      ("score_max_response_len", "max_response_len"))}}
# ScoringRows' fields that no settings class had, at the value every run used before.
SCORING_ADDED_LATER = {"rows": 8, "max_per_row": 16}

# ``WestOfN``'s flat fields until its groups (2026-12-07): {old field: (group, new field)}, the
# group a field of ``WestOfN`` (``westofn.settings.WEST_OF_N_GROUPS``), for a ``config.gin``
# and for a round's digest (which keeps the flat names, so that rounds made before keep
# their directories). ``scoring`` was ``WestOfN``'s own field from b77f670.
WEST_OF_N_FIELDS = {
    **{name: ("sampling", name) for name in ("num_samples", "max_new_tokens", "temperature",
                                             "top_p", "max_prompts", "prompt_repeats",
                                             "policy")},
    "sample_batch_prompts": ("sampling", "batch_prompts"),
    "judge": ("judge", "kind"), "selection": ("judge", "selection"),
    "rejected_rank": ("judge", "rejected_rank"), "judge_ensemble": ("judge", "ensemble"),
    "judge_members": ("judge", "members"), "lm_judge": ("judge", "lm"),
    "scoring": ("judge", "scoring"),
    **{name: ("filters", name) for name in ("confidence_quantile", "likelihood_quantile",
                                            "likelihood_threshold", "disagreement_quantile",
                                            "disagreement_measure")},
    **{name: ("student", name) for name in ("synthetic_per_human", "soft_labels",
                                            "unlabeled_pairs")},
    "student_start": ("student", "start"),
}


def _west_of_n_binding(old: str) -> str:
  """The group binding an old flat ``WestOfN`` field became (``WestOfNJudge.ensemble``)."""
  group, field = WEST_OF_N_FIELDS[old]
  return f"{WEST_OF_N_GROUPS[group].__name__}.{field}"


def _flat_scoring(record: dict, owner: str) -> dict:
  """``record`` with its ``scoring`` group back in the owner's old field names; a field no
  old version had is kept (as ``score_<field>``) only away from the value runs had."""
  scoring = record.pop("scoring")
  old_names = {new: old for (cls, old), new in SCORING_FIELDS.items() if cls == owner}
  for field, value in scoring.items():
    if field in old_names:
      record[old_names[field]] = value
    elif value != SCORING_ADDED_LATER[field]:
      record[f"score_{field}"] = value
  return record


def upgrade_config(text: str) -> str:
  """A ``config.gin`` of any earlier version in today's names: settings bound by their old
  homes (``westofn.pipeline.Batching``, or an alias of that module) bind
  ``westofn.settings``; train()'s renamed parameters take their new names, and those that
  moved into a setting group bind that group (``train.num_steps`` →
  ``westofn.settings.RewardModelRecipe.num_steps``)."""
  aliases = {}
  for module in OLD_HOMES:
    for m in re.finditer(rf"^import {re.escape(module)}(?: as (\w+))?\s*$", text, re.M):
      aliases[m.group(1) or module] = module
  for alias, module in aliases.items():
    names = "|".join(OLD_HOMES[module])
    text = re.sub(rf"(?<![\w.]){re.escape(alias)}\.({names})\b", r"westofn.settings.\1", text)
  # the old homes' imports go (westofn.improve is gone); today's modules are imported anew
  text = re.sub(r"^import westofn\.improve(?: as \w+)?\s*\n", "", text, flags=re.M)
  for old, new in RENAMED_PARAMETERS.items():
    text = re.sub(rf"^(\S*\btrain\.){old}(\s*=)", rf"\g<1>{new}\2", text, flags=re.M)
  names = "|".join(MOVED_PARAMETERS)
  text = re.sub(rf"^\S*\btrain\.({names})(\s*=)",
                lambda m: "westofn.settings.{}.{}".format(*MOVED_PARAMETERS[m.group(1)])
                + m.group(2), text, flags=re.M)
  # each class's old values stay its own: a scoped ScoringRows per class that had them
  for owner in sorted({owner for owner, _ in SCORING_FIELDS}):
    olds = "|".join(old for cls, old in SCORING_FIELDS if cls == owner)
    pattern = rf"^westofn\.settings\.{owner}\.({olds})(\s*=)"
    if re.search(pattern, text, re.M):
      text = re.sub(pattern, lambda m: f"{owner}/westofn.settings.ScoringRows."
                    f"{SCORING_FIELDS[owner, m.group(1)]}{m.group(2)}", text, flags=re.M)
      text += (f"\nwestofn.settings.{owner}.scoring = "
               f"@{owner}/westofn.settings.ScoringRows()\n")
  # WestOfN's flat fields bind its groups (after the scoring upgrade, which binds
  # WestOfN.scoring)
  names = "|".join(WEST_OF_N_FIELDS)
  text = re.sub(rf"^westofn\.settings\.WestOfN\.({names})(\s*=)",
                lambda m: f"westofn.settings.{_west_of_n_binding(m.group(1))}{m.group(2)}",
                text, flags=re.M)
  return _imports_settings(text)


def _imports_settings(text: str) -> str:
  """``text`` with ``import westofn.settings`` (after gin's dynamic registration, which must
  come first), where it binds that module's classes and does not import it yet."""
  if "westofn.settings." not in text or re.search(r"^import westofn\.settings\s*$", text, re.M):
    return text
  found = re.search(r"^from __gin__ import dynamic_registration[ \t]*\n", text, re.M)
  head = found.end() if found else 0
  return text[:head] + "import westofn.settings\n" + text[head:]


def hint(message: str) -> str:
  """A gin error on a hand-written .gin file that binds an old name, with the new name."""
  for old in (*RENAMED_PARAMETERS, *MOVED_PARAMETERS):
    if re.search(rf"\btrain\.{old}\b|parameter named '{old}'", message):
      new = RENAMED_PARAMETERS.get(old, old)
      new = "{}.{}".format(*MOVED_PARAMETERS[new]) if new in MOVED_PARAMETERS else f"train.{new}"
      return message + f" (train.{old} is now {new}: --gin.{new}=...)"
  for (owner, old), new in SCORING_FIELDS.items():
    if re.search(rf"\b{owner}\.{old}\b", message):
      return message + f" ({owner}.{old} is now ScoringRows.{new}, shared by every stage)"
  for old in WEST_OF_N_FIELDS:
    if re.search(rf"\bWestOfN\.{old}\b", message):
      new = _west_of_n_binding(old)
      return message + f" (WestOfN.{old} is now {new}: --gin.{new}=...)"
  for module, names in OLD_HOMES.items():
    if any(f"{module}.{name}" in message for name in names) or (
        module == "westofn.improve" and module in message):
      return message + f" ({module}'s {', '.join(names)} are now westofn.settings's)"
  return message


def west_of_n_record(settings) -> dict:
  """``WestOfN`` as a record for digests, in its flat names of before the groups, options
  added later left out at their old value."""
  grouped = dataclasses.asdict(settings)
  record = {"rounds": grouped["rounds"]}
  for old, (group, field) in WEST_OF_N_FIELDS.items():
    record[old] = grouped[group][field]
  record = _flat_scoring(record, "WestOfN")
  for name, before in WEST_OF_N_ADDED_LATER.items():
    if record[name] == before:
      del record[name]
  return record


def improvement_record(settings) -> dict:
  """``Rest`` / ``Dpo`` (...) for a stage's identity, the options added later left out at
  their defaults."""
  record = _flat_scoring(dataclasses.asdict(settings), type(settings).__name__)
  for name, before in IMPROVEMENT_ADDED_LATER.items():
    if record[name] == before:
      del record[name]
  return record


def adopt_round_json(stage) -> None:
  """A West-of-N round written before rounds had a ``StageRecord`` (before 664bb60,
  2026-12-01) kept its fingerprint and counts in ``round.json``: they become the record, so
  that the round is reused, not recomputed."""
  legacy = stage.file("round.json")
  if os.path.exists(legacy) and not os.path.exists(stage.record.path):
    meta = json.load(open(legacy))
    stage.record.save_metrics(meta["fingerprint"], meta["counts"])
