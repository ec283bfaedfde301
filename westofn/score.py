r"""Scores responses with a trained reward model:
``python -m westofn.score --model_dir=DIR --input=responses.jsonl --output=scored.jsonl``.

Input rows (jsonl(.gz), parquet or a ``datasets`` directory): ``{"prompt", "response"}`` or
``{"prompt", "responses": [...]}`` (the prompt is computed once per row); a prompt is text
(an HH transcript or plain) or a list of chat messages. The output repeats each row with
``reward`` (or ``rewards``), and with ``--normalize`` also ``reward_normalized``
(``(r - mean) / std`` with the RM's held-out mean and std stored in its checkpoint).
The output file is written atomically; a progress bar counts rows.
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from policies.core.atomic import write_jsonl_atomic
from rm.data import row_prompt
from rm.row_sources import DataError, iter_rows, text_field
from westofn.cli.common import configure_logging, parser, run_cli
from westofn.errors import ConfigError
from westofn.judges import RewardModelJudge
from westofn.restore import load_run, restore_reward_model, truncated_responses
from westofn.settings import ScoringRows
from westofn.samples import scoring_items

log = logging.getLogger("westofn")


def read_score_rows(path: str) -> list[tuple[dict, str, list[str], bool]]:
  """``(row, prompt, responses, many)`` per row; ``many``: the row had ``responses``."""
  out = []
  for where, row in iter_rows(path):
    prompt = row_prompt(where, row)
    if "responses" in row:
      if not isinstance(row["responses"], (list, tuple)) or not row["responses"]:
        raise DataError(f"{where}: responses: must be a non-empty list of strings")
      responses = [text_field(r, where, f"responses[{i}]")
                   for i, r in enumerate(row["responses"])]
      out.append((row, prompt, responses, True))
    elif "response" in row:
      out.append((row, prompt, [text_field(row["response"], where, "response")], False))
    else:
      raise DataError(f"{where}: response: missing (give 'response' or 'responses')")
  if not out:
    raise DataError(f"{path}: contains no rows")
  return out


def score(*, model_dir: str, input_path: str, output_path: str, stage: Optional[str] = None,
          normalize: bool = False, chunk: int = 64, progress: bool = True) -> list[dict]:
  run = load_run(model_dir)
  rm = restore_reward_model(run, stage)
  if rm.pairwise:
    raise ConfigError(f"{rm.name} is a pairwise model: it compares two responses and gives no "
                      "reward of one; score with a pointwise RM stage (e.g. base_rm)")
  mean, std = rm.metadata.get("reward_mean"), rm.metadata.get("reward_std")
  if normalize and (mean is None or not std or not math.isfinite(std)):
    raise ConfigError(f"{rm.name}: its checkpoint stores no held-out reward mean/std to "
                      "normalise with; score without --normalize")
  rows = read_score_rows(input_path)
  b = run.batching
  judge = RewardModelJudge([rm.model], run.vocabulary, scoring=ScoringRows.for_batching(b))
  out, truncated = [], 0
  with tqdm(total=len(rows), desc=f"scoring with {rm.name}", unit="row",
            disable=not progress) as bar:
    for start in range(0, len(rows), chunk):
      part = rows[start:start + chunk]
      items = scoring_items(run.vocabulary, [p for _, p, _, _ in part],
                            [r for _, _, r, _ in part])
      truncated += sum(truncated_responses(prompt, responses, b) > 0
                       for prompt, responses in items)
      rewards_BxN = judge.item_rewards(items)[0]
      for (row, _, responses, many), r in zip(part, rewards_BxN):
        r = np.asarray(r[:len(responses)], np.float64)
        scored = dict(row)
        if many:
          scored["rewards"] = [float(x) for x in r]
          if normalize:
            scored["rewards_normalized"] = [float(x) for x in (r - mean) / std]
        else:
          scored["reward"] = float(r[0])
          if normalize:
            scored["reward_normalized"] = float((r[0] - mean) / std)
        out.append(scored)
      bar.update(len(part))
  write_jsonl_atomic(output_path, out)
  if truncated:
    log.warning("%d of %d rows were longer than the RM reads (Batching.max_response_len=%d "
                "tokens a response, row_len=%d in all): their rewards are of the responses' "
                "start and the prompt's end", truncated, len(rows), b.max_response_len,
                b.row_len)
  print(f"scored {len(out)} rows with {rm.name} (step {rm.step}) → {output_path}")
  return out


def main(argv: Sequence[str]) -> list:
  p = parser("westofn.score", __doc__)
  p.add_argument("--input", required=True)
  p.add_argument("--output", required=True)
  p.add_argument("--stage", default=None,
                 help="the RM stage (default: the newest West-of-N student, else base_rm)")
  p.add_argument("--normalize", action="store_true")
  args = p.parse_args(argv)
  configure_logging()
  return score(model_dir=args.model_dir, input_path=args.input, output_path=args.output,
               stage=args.stage, normalize=args.normalize)


if __name__ == "__main__":
  run_cli(main)
