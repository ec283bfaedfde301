"""The pairwise-conversation layout of preference rows, as TRL and OpenRLHF read them:
``chosen`` / ``rejected`` are lists of ``{"role", "content"}`` messages that share every
message but the last (the assistant's answer), or ``prompt`` is that shared list and
``chosen`` / ``rejected`` hold the answer alone.

A conversation becomes the pipeline's plain pair: the prompt as a transcript of
``"\\n\\nHuman:"`` / ``"\\n\\nAssistant:"`` (and ``"\\n\\nSystem:"``) turns ending in the
assistant's turn, which a chat vocabulary (``rm.bpe_vocabulary``) renders through the
model's chat template, and the final answer as the response.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from rm.row_sources import RowError

ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def is_conversation(value) -> bool:
  return isinstance(value, (list, tuple))


def messages(value, field: str) -> list[dict]:
  if not is_conversation(value) or not value:
    raise RowError(field, "must be a non-empty list of {role, content} messages",
                   "bad conversation")
  out = []
  for i, m in enumerate(value):
    where = f"{field}[{i}]"
    if not isinstance(m, Mapping):
      raise RowError(where, f"must be a {{role, content}} object, got {type(m).__name__}",
                     "bad conversation")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
      raise RowError(f"{where}.role", f"must be one of {sorted(ROLES)}, got {role!r}",
                     "bad conversation")
    if not isinstance(content, str):
      raise RowError(f"{where}.content", f"must be a string, got {type(content).__name__}",
                     "bad conversation")
    out.append({"role": role, "content": content})
  return out


def to_transcript(messages: Sequence[dict]) -> str:
  """Messages → ``"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nAssistant:"``, ready for the
  assistant's next turn."""
  return "".join(f"\n\n{ROLES[m['role']]}: {m['content'].strip()}" for m in messages) + (
      "\n\nAssistant:")


def _answer(messages: list[dict], field: str) -> str:
  last = messages[-1]
  if last["role"] != "assistant":
    raise RowError(f"{field}[{len(messages) - 1}].role",
                   f"the last message must be the assistant's answer, got {last['role']!r}",
                   "bad conversation")
  if not last["content"].strip():
    raise RowError(f"{field}[{len(messages) - 1}].content", "is empty", "empty field")
  return last["content"]


def parse_conversation_row(row: Mapping) -> tuple[str, str, str]:
  """``(prompt transcript, chosen answer, rejected answer)`` of a conversation row."""
  chosen = messages(row.get("chosen"), "chosen")
  rejected = messages(row.get("rejected"), "rejected")
  chosen_answer, rejected_answer = _answer(chosen, "chosen"), _answer(rejected, "rejected")
  if row.get("prompt") is not None:
    prompt = messages(row["prompt"], "prompt")
    for field, answer in (("chosen", chosen), ("rejected", rejected)):
      if len(answer) != 1:
        raise RowError(field, "with a conversation prompt it must hold the answer alone "
                       f"(one assistant message), got {len(answer)} messages",
                       "bad conversation")
  else:
    prompt = chosen[:-1]
    if rejected[:-1] != prompt:
      raise RowError("rejected", "its messages before the last answer differ from chosen's, so "
                     "the pair has no shared prompt", "prompts differ")
  if not prompt:
    raise RowError("chosen", "has no message before the answer, so the pair has no prompt",
                   "bad conversation")
  return to_transcript(prompt), chosen_answer, rejected_answer
