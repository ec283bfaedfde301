"""The embedded preference tasks with a gold reward, by name. What they share (pairs of
behaviour responses labelled by Bradley–Terry on the gold reward) is ``task_pairs``, whose
functions are reached from here too."""

from __future__ import annotations

import types

from westofn import default_task, sorting_task
from westofn.errors import ConfigError
from westofn.task_pairs import label_agreement, label_gold_accuracy, make_pairs  # noqa: F401

# name → module with random_prompt(rng), behaviour_response(rng, prompt), gold_reward(p, y)
TASKS = {"letters": default_task, "sorting": sorting_task}


def get_task(name: str) -> types.ModuleType:
  if name not in TASKS:
    raise ConfigError(f"unknown embedded task {name!r}; known: {sorted(TASKS)}")
  return TASKS[name]
