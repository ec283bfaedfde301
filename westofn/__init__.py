"""westofn: reward models made better with West-of-N synthetic preferences.

``westofn.reward_fn(model_dir, ...)`` is a trained RM as a TRL reward function
(``westofn.rewards.reward_fn``); the commands are ``python -m westofn.train``, ``evaluate``,
``score``, ``export`` and ``serve``.
"""


def reward_fn(model_dir: str, **kwargs):
  """A trained reward model as TRL's reward function: see ``westofn.rewards.reward_fn``."""
  from westofn.rewards import reward_fn as make   # imported on use: the commands need none of it
  return make(model_dir, **kwargs)
