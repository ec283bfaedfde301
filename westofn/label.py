r"""Labels preference pairs with a judge: AI feedback from a prompted LM (``rm.lm_judge``),
``python -m westofn.label [--judge=PRETRAINED] [--principles=FILE] --input=pairs.jsonl
--output=labelled.jsonl``, or a trained reward model, ``python -m westofn.label
--model_dir=DIR [--stage=STAGE] --input=... --output=...``; either through the one judge
interface (``westofn.judges``: ``compare_pairs``).

``--judge``: a GGUF file or a Hugging Face Llama/Qwen2 directory (default SmolLM2-135M-
Instruct). ``--model_dir``: a westofn run; its RM stage (default: the newest West-of-N
student, else base_rm) labels each pair by σ(r_a − r_b). Input rows (jsonl(.gz), a JSON
array, parquet or a ``datasets`` directory), two responses per prompt: ``{"prompt",
"response_a", "response_b"}``, ``{"prompt", "responses": [a, b]}``, or a labelled pair in
any form the trainer reads (``prompt`` / ``chosen`` / ``rejected``, HH transcripts, chat
messages), which is labelled again and compared with its label. Each output row is a pair
the trainer reads (``prompt``, ``chosen``, ``rejected``) with ``judge_probability`` (the
judge's P(chosen ≻ rejected)) and the judge's own numbers: an LM's logits in both orders (the
probability averages them) and whether its verdict flipped with the order; a reward model's
rewards of ``a`` and ``b``.

The output appears atomically when every row is labelled; until then finished rows go to
``OUTPUT.partial`` (a line each, flushed), from which a killed run resumes. A progress bar
counts pairs. Comparison prompts and answer labels are
gin-settable (``--gin_file``, ``--gin.JudgePrompt.instruction=...``, ``--gin.
LMJudgeSettings.max_len=...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from typing import Callable, Optional, Sequence

from tqdm import tqdm

from policies.core.atomic import complete_lines
from rm.data import parse_pair_row, row_prompt
from rm.row_sources import DataError, RowError, iter_rows, text_field
from westofn.ai_feedback import build_lm_judge
from westofn.errors import ConfigError
from westofn.cli.common import configure_logging, gin_bindings, run_cli
from westofn.judges import Judge, PairVerdicts, PromptedLMJudge
from westofn.settings import LMJudgeSettings

log = logging.getLogger("westofn")


@dataclasses.dataclass(frozen=True)
class Unlabeled:
  where: str
  prompt: str
  a: str
  b: str
  label: Optional[str]   # 'a': the input said a ≻ b (a labelled pair); None: unlabeled

  @property
  def key(self) -> str:
    text = json.dumps([self.prompt, self.a, self.b])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_unlabeled(path: str) -> list[Unlabeled]:
  """Two responses per prompt from any reader format (see the module docstring)."""
  out = []
  for where, row in iter_rows(path):
    if isinstance(row, dict) and ("response_a" in row or "responses" in row):
      prompt = row_prompt(where, row)
      if "responses" in row:
        rs = row["responses"]
        if not isinstance(rs, (list, tuple)) or len(rs) != 2:
          raise DataError(f"{where}: responses: must be a list of two responses, got "
                          f"{rs!r}"[:300])
        a, b = (text_field(r, where, f"responses[{i}]") for i, r in enumerate(rs))
      else:
        a = text_field(row["response_a"], where, "response_a")
        b = text_field(row.get("response_b"), where, "response_b")
      if a == b:
        raise DataError(f"{where}: response_b: is identical to response_a")
      out.append(Unlabeled(where, prompt, a, b, None))
      continue
    try:
      if isinstance(row, RowError):
        raise row
      prompt, chosen, rejected = parse_pair_row(row)
    except RowError as e:
      raise DataError(f"{where}: {e.field}: {e.message} (give response_a and response_b, "
                      "responses, or chosen and rejected)") from None
    out.append(Unlabeled(where, prompt, chosen, rejected, "a"))
  if not out:
    raise DataError(f"{path}: contains no rows")
  return out


def output_row(pair: Unlabeled, verdicts: PairVerdicts, i: int, judge: str) -> dict:
  """The ``i``-th verdict on ``pair`` as a training pair with the judge's numbers."""
  a_wins = bool(verdicts.prefers_a_B[i])
  p_a = float(verdicts.probability_B[i])
  row = {"prompt": pair.prompt, "chosen": pair.a if a_wins else pair.b,
         "rejected": pair.b if a_wins else pair.a,
         "judge_probability": p_a if a_wins else 1.0 - p_a,
         **{name: values[i].item() for name, values in verdicts.details.items()},
         "judge": judge, "source": pair.where, "input_key": pair.key}
  if pair.label is not None:
    row["agrees_with_input"] = a_wins
  return row


def _resume(partial: str, pairs: Sequence[Unlabeled], judge: str) -> list[dict]:
  """The rows a killed run finished (a torn last line is dropped), checked against the
  input and the judge: a partial file of other input or by another judge is an error, not
  silently mixed in."""
  rows = []
  for i, raw in enumerate(complete_lines(partial)):
    line = raw.decode("utf-8", "replace")
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ConfigError(f"{partial}: line {i + 1}: malformed JSON ({e.msg}); delete {partial} "
                        "to start again") from None
    if i >= len(pairs) or row.get("input_key") != pairs[i].key:
      raise ConfigError(f"{partial}: line {i + 1}: input_key: was labelled from other input "
                        f"than {pairs[min(i, len(pairs) - 1)].where}; delete {partial} to "
                        "start again")
    if row.get("judge") != judge:
      raise ConfigError(f"{partial}: line {i + 1}: judge: was labelled by {row.get('judge')!r}, "
                        f"not {judge!r}; delete {partial} to start again")
    rows.append(row)
  if rows:
    log.info("resuming: %d of %d pairs were labelled in %s", len(rows), len(pairs), partial)
  return rows


def lm_judge(settings: LMJudgeSettings) -> tuple[str, Callable[[], Judge]]:
  """A prompted LM as the label command's judge: its name (what a resumed run checks) and
  how to build it (the LM loads only if a pair is left to label)."""
  return settings.describe(), lambda: PromptedLMJudge(lambda: build_lm_judge(settings))


def reward_model_judge(model_dir: str, stage: Optional[str] = None
                       ) -> tuple[str, Callable[[], Judge]]:
  """A trained run's pointwise RM stage as the label command's judge, reading the
  responses in the rows its run trained on."""
  from westofn.judges import RewardModelJudge
  from westofn.restore import load_run, resolve_stage, restore_reward_model
  from westofn.settings import ScoringRows
  run = load_run(model_dir)
  name = resolve_stage(model_dir, stage)[0]

  def make() -> Judge:
    rm = restore_reward_model(run, stage)
    if rm.pairwise:
      raise ConfigError(f"{rm.name} is a pairwise model; label with a pointwise RM stage "
                        "(e.g. base_rm)")
    return RewardModelJudge([rm.model], run.vocabulary,
                            scoring=ScoringRows.for_batching(run.batching))
  return f"reward model {name} of {os.path.abspath(model_dir)}", make


def label(*, input_path: str, output_path: str, settings: Optional[LMJudgeSettings] = None,
          judge: Optional[tuple[str, Callable[[], Judge]]] = None, chunk: int = 32,
          progress: bool = True) -> list[dict]:
  """Labels every pair of ``input_path`` into ``output_path`` (see the module docstring) with
  ``judge`` (``(name, make)``: ``lm_judge``, ``reward_model_judge``), by default the LM judge
  of ``settings``."""
  if judge is not None and settings is not None:
    raise ValueError("label takes an LM judge's settings or a judge, not both")
  pairs = read_unlabeled(input_path)
  partial = output_path + ".partial"
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  name, build = judge or lm_judge(settings or LMJudgeSettings())
  rows = _resume(partial, pairs, name)
  active = build() if len(rows) < len(pairs) else None
  with open(partial, "a", encoding="utf-8") as out, \
       tqdm(total=len(pairs), initial=len(rows), desc="judging", unit="pair",
            disable=not progress) as bar:
    for start in range(len(rows), len(pairs), chunk):
      part = pairs[start:start + chunk]
      verdicts = active.compare_pairs(prompts=[p.prompt for p in part],
                                      responses_a=[p.a for p in part],
                                      responses_b=[p.b for p in part], progress=bar.update)
      for i, p in enumerate(part):
        row = output_row(p, verdicts, i, name)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        rows.append(row)
      out.flush()
      os.fsync(out.fileno())
  os.replace(partial, output_path)
  agree = [r["agrees_with_input"] for r in rows if "agrees_with_input" in r]
  flips = [r["position_flip"] for r in rows if "position_flip" in r]
  log.info("labelled %d pairs into %s%s%s", len(rows), output_path,
           f"; verdict flipped with the order for {100 * sum(flips) / len(flips):.1f}%"
           if flips else "",
           f"; agrees with the input's labels on {100 * sum(agree) / len(agree):.1f}%"
           if agree else "")
  return rows


def settings_from_flags(*, judge: Optional[str], principles: Optional[str],
                        max_len: Optional[int], batch_size: Optional[int],
                        matmul_dtype: Optional[str], gin_files: Sequence[str] = (),
                        bindings: Sequence[str] = ()) -> LMJudgeSettings:
  """``LMJudgeSettings`` from gin (``JudgePrompt.*``, ``LMJudgeSettings.*``), then the
  flags, which win."""
  settings = LMJudgeSettings()
  if gin_files or bindings:
    import gin
    from rm.lm_judge import JudgePrompt
    gin.clear_config()
    prompt = gin.external_configurable(JudgePrompt, module="rm.lm_judge")
    configurable = gin.external_configurable(LMJudgeSettings, module="westofn.settings")
    try:
      gin.parse_config_files_and_bindings(list(gin_files), list(bindings), finalize_config=True)
      settings = dataclasses.replace(configurable(), prompt=prompt())
      settings.prompt.check()
    except (ValueError, TypeError, KeyError, OSError) as e:
      raise ConfigError(f"gin config: {e}".replace("\n", " ")) from e
  pretrained = dataclasses.replace(settings.pretrained,
                                   path=judge or settings.pretrained.path,
                                   matmul_dtype=matmul_dtype or settings.pretrained.matmul_dtype)
  return dataclasses.replace(settings, pretrained=pretrained,
                             principles_file=principles or settings.principles_file,
                             max_len=max_len or settings.max_len,
                             batch_size=batch_size or settings.batch_size)


def main(argv: Sequence[str]) -> None:
  p = argparse.ArgumentParser(prog="python -m westofn.label", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--judge", default=None,
                 help="a GGUF file or Hugging Face directory (default SmolLM2-135M-Instruct)")
  p.add_argument("--model_dir", default=None,
                 help="label with this run's reward model instead of an LM")
  p.add_argument("--stage", default=None,
                 help="with --model_dir: the RM stage (default: the newest West-of-N student, "
                      "else base_rm)")
  p.add_argument("--principles", default=None, help="one principle per line")
  p.add_argument("--input", required=True)
  p.add_argument("--output", required=True)
  p.add_argument("--max_len", type=int, default=None)
  p.add_argument("--batch_size", type=int, default=None)
  p.add_argument("--matmul_dtype", default=None, choices=("bfloat16",))
  p.add_argument("--gin_file", action="append", default=[])
  p.add_argument("--no_progress", action="store_true")
  args, rest = p.parse_known_args(argv)
  bindings = gin_bindings(rest, p)
  configure_logging()
  if args.model_dir is not None:
    lm_only = [f for f in ("judge", "principles", "max_len", "batch_size", "matmul_dtype")
               if getattr(args, f) is not None] + (["gin"] if args.gin_file or bindings else [])
    if lm_only:
      p.error(f"--model_dir labels with a reward model: --{', --'.join(lm_only)} "
              "set an LM judge")
    judge = reward_model_judge(args.model_dir, args.stage)
  else:
    if args.stage is not None:
      p.error("--stage names a reward-model stage of --model_dir")
    judge = lm_judge(settings_from_flags(
        judge=args.judge, principles=args.principles, max_len=args.max_len,
        batch_size=args.batch_size, matmul_dtype=args.matmul_dtype, gin_files=args.gin_file,
        bindings=bindings))
  label(input_path=args.input, output_path=args.output, judge=judge,
        progress=not args.no_progress)


if __name__ == "__main__":
  run_cli(main)
