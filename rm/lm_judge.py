"""AI feedback: a pretrained LM that judges which of two responses is better (RLAIF, Lee et
al. 2023; against written principles as in Constitutional AI, Bai et al. 2022).

The judge reads one comparison prompt (the task's conversation, response A, response B and
optionally principles, in the LM's chat template) and compares the log-probabilities of the
two answer labels at the answer position: ``log P("A") − log P("B")``, one forward pass, no
generation. LMs favour one position, so every pair is judged in both orders and the two
verdicts averaged (``debiased_logit``); the preference probability ``σ(logit)`` is the
judge's confidence, and how often the verdict flips with the order is its position bias.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from policies.core import buckets
from policies.core.read_only_jit import read_only_jit
from policies.transformer import Decoder, causal_mask

PLACEHOLDERS = ("{conversation}", "{response_a}", "{response_b}")


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
  """The comparison prompt. ``instruction`` holds ``{conversation}``, ``{response_a}``,
  ``{response_b}`` and may hold ``{principles}`` (the principles block, empty without
  principles). The answer is the first token after ``answer_prefix`` (appended to the
  assistant's turn); ``labels`` name the two responses and are one token each."""

  system: str = "You are a careful and impartial judge of AI assistant responses."
  instruction: str = (
      "Here is a conversation between a user and an AI assistant, and two candidate replies "
      "for the assistant's next turn.\n\n"
      "Conversation:\n{conversation}\n\n"
      "Response A:\n{response_a}\n\n"
      "Response B:\n{response_b}\n\n"
      "{principles}"
      "Which response is better, A or B? Answer with the letter alone.")
  principles_block: str = "Judge the responses by these principles:\n{principles}\n\n"
  answer_prefix: str = ""
  labels: tuple = ("A", "B")

  def check(self) -> None:
    missing = [p for p in PLACEHOLDERS if p not in self.instruction]
    if missing:
      raise ValueError(f"JudgePrompt.instruction lacks {', '.join(missing)}: the judge could "
                       "not show the conversation and both responses")
    if len(self.labels) != 2 or len(set(self.labels)) != 2:
      raise ValueError(f"JudgePrompt.labels must be two different labels, got {self.labels!r}")
    for label in self.labels:
      if not re.search(rf"(?<!\w){re.escape(label)}(?!\w)", self.instruction):
        raise ValueError(f"JudgePrompt.instruction never names the answer label {label!r}: "
                         "the judge would not know which token to answer with")


def debiased_logit(logit_ab, logit_ba):
  """The judge's preference of a over b, both orders averaged.

  ``logit_ab``: ``log P(A) − log P(B)`` with a shown first (positive favours a);
  ``logit_ba``: the same with b shown first (positive favours b). A judge that prefers
  the first position by ``c`` whatever the content adds ``c`` to both, which cancels.
  """
  logit_ab, logit_ba = jnp.asarray(logit_ab), jnp.asarray(logit_ba)
  if logit_ab.shape != logit_ba.shape:
    raise ValueError(f"logit_ab has shape {logit_ab.shape}, logit_ba {logit_ba.shape}")
  return (logit_ab - logit_ba) / 2


def position_flips(logit_ab, logit_ba):
  """True where the verdict changes when the order of the two responses is swapped: a
  wins shown first (``logit_ab > 0``) but loses shown second (``logit_ba > 0``), or the
  reverse. An exact tie (0) counts as a verdict for the second position."""
  logit_ab, logit_ba = jnp.asarray(logit_ab), jnp.asarray(logit_ba)
  if logit_ab.shape != logit_ba.shape:
    raise ValueError(f"logit_ab has shape {logit_ab.shape}, logit_ba {logit_ba.shape}")
  return (logit_ab > 0) != (logit_ba < 0)


@dataclasses.dataclass
class Verdicts:
  """Per pair (a, b): both orders' logits, the debiased preference of a, and how many
  comparison prompts were shortened to fit ``max_len``."""
  logit_ab: np.ndarray
  logit_ba: np.ndarray
  truncated: int

  @property
  def logit(self) -> np.ndarray:
    """``debiased_logit``, in float64 like the logits."""
    return (np.asarray(self.logit_ab, np.float64) - np.asarray(self.logit_ba, np.float64)) / 2

  @property
  def probability(self) -> np.ndarray:
    """P(a ≻ b)."""
    return 1.0 / (1.0 + np.exp(-self.logit))

  @property
  def flips(self) -> np.ndarray:
    return np.asarray(position_flips(self.logit_ab, self.logit_ba))


@read_only_jit
def _answer_logprobs(model: Decoder, tokens_BxL, valid_BxL, last_B, labels_C):
  """``log P(label | tokens up to last)`` for each label: ``[B, C]``. Only the last layer's
  answer position and its logits are computed past the shared blocks."""
  positions = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
  hidden_Bx1xD = model(tokens_BxL, positions, causal_mask(valid_BxL),
                       read_index_BxQ=last_B[:, None])
  logp_BxV = jax.nn.log_softmax(model.logits(hidden_Bx1xD)[:, 0], axis=-1)
  return logp_BxV[:, labels_C]


class LMJudge:
  """A pretrained decoder and its vocabulary as a pairwise judge.

  ``render(system, user) -> str`` makes the text before the answer (default: the
  vocabulary's chat template when it has one, with the generation prompt; else plain
  text). Comparison prompts longer than ``max_len`` tokens keep the end of the
  conversation; ``batch_size`` prompts run together, padded to ``bucket``-sized widths.
  """

  def __init__(self, model: Decoder, vocabulary, *, prompt: JudgePrompt = JudgePrompt(),
               principles: Sequence[str] = (), max_len: int = 1024, batch_size: int = 8,
               bucket: int = 64, render: Optional[Callable[[str, str], str]] = None):
    prompt.check()
    self.model, self.vocabulary, self.prompt = model, vocabulary, prompt
    self.principles = [p.strip() for p in principles if p.strip()]
    self.max_len, self.batch_size, self.bucket = max_len, batch_size, bucket
    self.render = render or default_render(vocabulary)
    self.label_ids = np.asarray([self._label_id(label) for label in prompt.labels], np.int32)

  def _label_id(self, label: str) -> int:
    ids = list(self.vocabulary.encode(label))
    if len(ids) != 1:
      raise ValueError(f"the answer label {label!r} is {len(ids)} tokens {ids} in this "
                       "vocabulary; the judge reads one token: choose JudgePrompt.labels that "
                       "are one token each")
    return int(ids[0])

  def text(self, conversation: str, response_a: str, response_b: str) -> str:
    principles = "".join(f"{i}. {p}\n" for i, p in enumerate(self.principles, 1))
    block = self.prompt.principles_block.format(principles=principles) if principles else ""
    values = {"principles": block, "conversation": conversation.strip(),
              "response_a": response_a.strip(), "response_b": response_b.strip()}
    # One pass, so that a response quoting a placeholder is shown as written.
    user = re.sub(r"\{(principles|conversation|response_a|response_b)\}",
                  lambda m: values[m.group(1)], self.prompt.instruction)
    return self.render(self.prompt.system, user) + self.prompt.answer_prefix

  def context_ids(self, conversation: str, response_a: str, response_b: str
                  ) -> tuple[np.ndarray, bool]:
    """Token ids up to the answer position, and whether the text was shortened to fit:
    the conversation loses its beginning first, then the responses their ends."""
    ids = self.vocabulary.encode(self.text(conversation, response_a, response_b))
    if len(ids) <= self.max_len:
      return np.asarray(ids, np.int32), False
    keep = len(conversation)
    while keep > 0:
      keep = int(keep * self.max_len / len(ids) * 0.9)
      ids = self.vocabulary.encode(self.text("…" + conversation[len(conversation) - keep:],
                                             response_a, response_b))
      if len(ids) <= self.max_len:
        return np.asarray(ids, np.int32), True
    a, b = response_a, response_b
    while len(ids) > self.max_len and (a or b):
      a, b = a[:len(a) // 2], b[:len(b) // 2]
      ids = self.vocabulary.encode(self.text("…", a + "…", b + "…"))
    if len(ids) > self.max_len:
      raise ValueError(f"the judge's prompt alone is {len(ids)} tokens, over max_len="
                       f"{self.max_len}")
    return np.asarray(ids, np.int32), True

  def answer_logits(self, contexts: Sequence[np.ndarray], progress=None) -> np.ndarray:
    """``log P(label 0) − log P(label 1)`` after each context (a list of token ids)."""
    out = np.zeros(len(contexts), np.float64)
    order = sorted(range(len(contexts)), key=lambda i: len(contexts[i]))
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      rows = buckets.bucket(len(batch), 1, cap=self.batch_size)
      width = buckets.bucket(max(len(contexts[i]) for i in batch), self.bucket)
      tokens = np.full((rows, width), self.vocabulary.pad_id, np.int32)
      valid = np.zeros((rows, width), bool)
      last = np.zeros(rows, np.int32)
      for r, i in enumerate(batch):
        tokens[r, :len(contexts[i])] = contexts[i]
        valid[r, :len(contexts[i])] = True
        last[r] = len(contexts[i]) - 1
      valid[len(batch):, 0] = True   # padding rows attend to something
      logp = np.asarray(_answer_logprobs(self.model, jnp.asarray(tokens), jnp.asarray(valid),
                                         jnp.asarray(last), jnp.asarray(self.label_ids)))
      out[batch] = logp[:len(batch), 0] - logp[:len(batch), 1]
      if progress is not None:
        progress(len(batch))
    return out

  def judge(self, conversations: Sequence[str], responses_a: Sequence[str],
            responses_b: Sequence[str], progress=None) -> Verdicts:
    """Both orders of every pair (2 forward passes each). ``progress(n)`` is called as
    comparison prompts are done (2 per pair)."""
    if not len(conversations) == len(responses_a) == len(responses_b):
      raise ValueError(f"{len(conversations)} conversations, {len(responses_a)} responses A "
                       f"and {len(responses_b)} responses B")
    contexts, truncated = [], 0
    for c, a, b in zip(conversations, responses_a, responses_b):
      for first, second in ((a, b), (b, a)):
        ids, cut = self.context_ids(c, first, second)
        contexts.append(ids)
        truncated += cut
    logits = self.answer_logits(contexts, progress)
    return Verdicts(logits[0::2], logits[1::2], truncated // 2)

  def comparator(self, conversations: Sequence[str], texts: Sequence[Sequence[str]]):
    """``compare(matches)`` for ``westofn.selection.knockout``: P(i ≻ j) for rows
    (prompt, i, j), position-debiased."""
    def compare(matches):
      matches = np.asarray(matches)
      verdicts = self.judge([conversations[b] for b in matches[:, 0]],
                            [texts[b][i] for b, i, _ in matches],
                            [texts[b][j] for b, _, j in matches])
      return verdicts.probability
    return compare


def default_render(vocabulary) -> Callable[[str, str], str]:
  """The vocabulary's chat template (system and user turns, then the generation prompt),
  or plain text for a vocabulary without one."""
  template = getattr(vocabulary, "chat_template", None)
  if template:
    from rm.bpe_vocabulary import render_chat

    def render(system: str, user: str) -> str:
      return render_chat(template, [{"role": "system", "content": system},
                                    {"role": "user", "content": user}],
                         add_generation_prompt=True)
    return render
  return lambda system, user: f"{system}\n\n{user}\n\nAnswer: "


def read_principles(path: str) -> list[str]:
  """One principle per non-empty line (``#`` starts a comment line); a clear error for a
  missing file or one without principles."""
  import os
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such principles file")
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      text = line.strip()
      if text and not text.startswith("#"):
        out.append(text.lstrip("-*0123456789. ").strip() or text)
  if not out:
    raise ValueError(f"{path}: holds no principles (one per line)")
  return out
