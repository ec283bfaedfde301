"""The bodies of the server's two protocols, parsed and checked: ``/score``
(``{"prompt", "responses"}`` or a list of them) and OpenRLHF's ``/get_reward``
(``{"query": [prompt + response], "prompts": [...]}``). A body this server cannot score
raises ``BadRequest``, whose message the client gets back with a 400."""

from __future__ import annotations


class BadRequest(ValueError):
  """A request this server cannot score; its message goes back as the 400's error."""


def _text(value, field: str) -> str:
  if not isinstance(value, str) or not value:
    raise BadRequest(f"{field}: must be a non-empty string")
  return value


def parse_score_request(body) -> tuple[list, bool]:
  """``([(prompt, [responses])], many)`` from a ``/score`` body (one item or a list)."""
  from westofn.rewards import prompt_text
  many = isinstance(body, list)
  entries = body if many else [body]
  if not entries:
    raise BadRequest("body: an empty list")
  items = []
  for i, e in enumerate(entries):
    where = f"[{i}]." if many else ""
    if not isinstance(e, dict):
      raise BadRequest(f"{where or 'body'}: must be an object with prompt and responses")
    try:
      prompt = prompt_text(e.get("prompt"))
    except (TypeError, ValueError) as err:
      raise BadRequest(f"{where}prompt: {err}") from None
    if not prompt.strip():
      raise BadRequest(f"{where}prompt: missing or empty")
    responses = e.get("responses")
    if not isinstance(responses, list) or not responses:
      raise BadRequest(f"{where}responses: must be a non-empty list of strings")
    items.append((prompt, [_text(r, f"{where}responses[{j}]") for j, r in enumerate(responses)]))
  return items, many


def parse_get_reward_request(body) -> list:
  """``[(prompt, response)]`` from OpenRLHF's ``{"query", "prompts", "labels"}``: each query is
  its prompt followed by the response."""
  if not isinstance(body, dict):
    raise BadRequest("body: must be an object with query and prompts")
  queries, prompts = body.get("query"), body.get("prompts")
  if not isinstance(queries, list):
    raise BadRequest("query: must be a list of strings")
  if not isinstance(prompts, list) or len(prompts) != len(queries):
    raise BadRequest(f"prompts: must be a list of strings as long as query ({len(queries)})")
  out = []
  for i, (q, p) in enumerate(zip(queries, prompts)):
    q, p = _text(q, f"query[{i}]"), _text(p, f"prompts[{i}]")
    if not q.startswith(p):
      raise BadRequest(f"query[{i}]: does not start with prompts[{i}]")
    if len(q) == len(p):
      raise BadRequest(f"query[{i}]: holds no response after its prompt")
    out.append((p, q[len(p):]))
  return out
