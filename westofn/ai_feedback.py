"""The settings of an LM judge (``rm.lm_judge``) and the one place that builds it: the
``label`` command and West-of-N's ``judge='lm'`` both go through ``build_lm_judge``."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

from policies.pretrained import PretrainedLM
from rm.lm_judge import JudgePrompt, LMJudge, read_principles
from westofn.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LMJudgeSettings:
  """``pretrained``: the judging LM (default SmolLM2-135M-Instruct); ``principles_file``:
  one principle per line, shown to the judge (Constitutional AI); ``prompt``: the
  comparison prompt and answer labels; comparison prompts longer than ``max_len`` tokens
  keep the end of the conversation; ``batch_size`` prompts run together."""

  pretrained: PretrainedLM = PretrainedLM()
  principles_file: Optional[str] = None
  prompt: JudgePrompt = JudgePrompt()
  max_len: int = 1024
  batch_size: int = 8

  def __post_init__(self):
    if self.max_len < 16 or self.batch_size < 1:
      raise ConfigError(f"LMJudgeSettings needs max_len >= 16 and batch_size >= 1, got "
                        f"{self.max_len} and {self.batch_size}")

  def describe(self) -> str:
    return (self.pretrained.describe()
            + (f" with the principles of {self.principles_file}" if self.principles_file
               else ""))


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
