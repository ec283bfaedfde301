"""The settings of an LM judge (``rm.lm_judge``) and the one place that builds it: the
``label`` command and West-of-N's ``WestOfNJudge.kind='lm'`` both go through ``build_lm_judge``."""

from __future__ import annotations

import functools

from rm.lm_judge import LMJudge, read_principles
from westofn.errors import ConfigError
from westofn.settings import LMJudgeSettings


@functools.lru_cache(maxsize=2)
def build_lm_judge(settings: LMJudgeSettings) -> LMJudge:
  """The judge of ``settings`` (loaded once per process and settings)."""
  from rm.bpe_vocabulary import pretrained_vocabulary
  try:
    principles = read_principles(settings.principles_file) if settings.principles_file else ()
    vocabulary = pretrained_vocabulary(settings.pretrained.path)
    return LMJudge(settings.pretrained.load(), vocabulary, prompt=settings.prompt,
                   principles=principles, max_len=settings.max_len,
                   batch_size=settings.batch_size)
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(f"LM judge ({settings.describe()}): {e}") from None
