"""The reward-model commands (evaluate, score, export) on a SmolLM2 reward model trained on
Anthropic HH, each run as a user runs it, with checks that they agree with each other and
with transformers:

    python -m experiments.rm_commands_hh --model_dir=DIR [--data=../shared/data/hh-rlhf] \
        [--out=experiments/results/rm_commands_smollm2_hh.md]

DIR is a westofn.train MODEL_DIR with a SmolLM2 ``base_rm`` stage; without one, it is
trained first with ``gin/smollm2_hh.gin`` (about 25 minutes on 2 CPU cores).

1. ``westofn.evaluate`` on the run's own held-out pairs, rebuilt from the data files and the
   run's split settings and written twice: as explicit jsonl rows and as parquet rows in the
   conversation layout (lists of role/content messages). Both must give the accuracy the
   run's report gives (RewardBench's rule: a tie is wrong).
2. ``westofn.score --normalize`` on the chosen and rejected responses of 8 held-out prompts.
3. ``westofn.export`` to a Hugging Face directory, loaded back with transformers: its
   tokenizer (chat template + response + EOS) and its model must give the scored rewards.

The HH text stays out of the output (row indices and numbers only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, log) -> str:
  """A command as a user types it (from the repository root); its stdout."""
  start = time.time()
  proc = subprocess.run([sys.executable, "-m"] + args, cwd=REPO, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  log.append((" ".join(["python -m"] + args), time.time() - start))
  return proc.stdout


def trained_smollm2_rm(model_dir: str, data: str, log) -> str:
  """``model_dir`` (absolute) with a SmolLM2 base RM trained on HH (``gin/smollm2_hh.gin``),
  trained first if it has none."""
  model_dir = os.path.abspath(model_dir)
  if not os.path.exists(os.path.join(model_dir, "base_rm", "stage.json")):
    _run(["westofn.train", "--gin_file=gin/smollm2_hh.gin", f"--gin.MODEL_DIR={model_dir}",
          f"--gin.DATA_PATH={data}"], log)
  return model_dir


def _heldout(run):
  from rm.data import read_preference_files
  from westofn.pipeline import split_parts
  source = run.data
  paths = [os.path.join(REPO, p) for p in ([source.paths] if isinstance(source.paths, str)
                                           else source.paths)]
  pairs, _ = read_preference_files(paths, on_error=source.on_error,
                                   rating_margins=source.rating_margins, columns=source.columns)
  return split_parts(pairs, source)["heldout"]


def _untruncated(run, pairs) -> list:
  """The pairs westofn scores whole (``westofn.restore.truncated_responses``): the exported model,
  fed whole texts, reads the same tokens for them."""
  from westofn.restore import truncated_responses
  from westofn.samples import scoring_items
  items = scoring_items(run.vocabulary, [p.prompt for p in pairs],
                        [[p.chosen, p.rejected] for p in pairs])
  return [p for p, (prompt, responses) in zip(pairs, items)
          if not truncated_responses(prompt, responses, run.batching)]


def _write_sets(heldout, tmp: str) -> tuple[str, str]:
  import pyarrow as pa
  import pyarrow.parquet as pq
  from rm.bpe_vocabulary import hh_to_messages
  jsonl = os.path.join(tmp, "heldout.jsonl")
  with open(jsonl, "w") as f:
    for p in heldout:
      f.write(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n")
  conv = [{"prompt": hh_to_messages(p.prompt),
           "chosen": [{"role": "assistant", "content": p.chosen.strip()}],
           "rejected": [{"role": "assistant", "content": p.rejected.strip()}]} for p in heldout]
  parquet = os.path.join(tmp, "heldout_conversations.parquet")
  pq.write_table(pa.Table.from_pylist(conv), parquet)
  return jsonl, parquet


def _transformers_rewards(hf_dir: str, rows) -> list:
  import torch
  import transformers
  from rm.bpe_vocabulary import hh_to_messages
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      hf_dir, dtype=torch.float32).eval()
  out = []
  for row in rows:
    head = tok.apply_chat_template(hh_to_messages(row["prompt"]), add_generation_prompt=True,
                                   tokenize=False)
    batch = tok([head + r.lstrip() + tok.eos_token for r in row["responses"]],
                add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
      out.append(model(**batch).logits[:, 0].tolist())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--data", default="../shared/data/hh-rlhf")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  from experiments.protocol import host_header
  log = []
  model_dir = trained_smollm2_rm(args.model_dir, args.data, log)
  report_accuracy = json.load(open(os.path.join(model_dir, "base_rm", "eval.json")))["accuracy"]
  from westofn.restore import load_run
  run = load_run(model_dir)
  heldout = _heldout(run)
  whole = _untruncated(run, heldout)
  with tempfile.TemporaryDirectory() as tmp:
    jsonl, parquet = _write_sets(heldout, tmp)
    evaluated = _run(["westofn.evaluate", f"--model_dir={model_dir}", "--stage=base_rm",
                      f"--data=heldout={jsonl},heldout_as_conversations={parquet}",
                      f"--output={tmp}/evaluate.json"], log)
    results = json.load(open(f"{tmp}/evaluate.json"))["results"]["base_rm"]
    rows = [{"prompt": p.prompt, "responses": [p.chosen, p.rejected]} for p in whole[:8]]
    with open(f"{tmp}/responses.jsonl", "w") as f:
      f.write("".join(json.dumps(r) + "\n" for r in rows))
    _run(["westofn.score", f"--model_dir={model_dir}", "--stage=base_rm",
          f"--input={tmp}/responses.jsonl", f"--output={tmp}/scored.jsonl", "--normalize"], log)
    scored = [json.loads(line) for line in open(f"{tmp}/scored.jsonl")]
    exported = _run(["westofn.export", f"--model_dir={model_dir}", "--stage=base_rm",
                     f"--out={tmp}/hf"], log)
    theirs = _transformers_rewards(f"{tmp}/hf", rows)
    files = sorted(os.listdir(f"{tmp}/hf"))
  ours = np.array([r["rewards"] for r in scored])
  diff = float(np.abs(ours - np.array(theirs)).max())
  a, b = results["heldout"], results["heldout_as_conversations"]
  lines = [
      "# The reward-model commands on HH with SmolLM2-135M-Instruct", "",
      f"Made by `python -m experiments.rm_commands_hh --model_dir={args.model_dir}` "
      f"({time.strftime('%Y-%m-%d')}).", "", host_header(), "",
      f"The run's base RM (`{model_dir}/base_rm`): {len(heldout)} held-out HH pairs; its report "
      f"gives held-out accuracy {report_accuracy:.4f}. The base RM is CPU-sized and near "
      "chance: this file shows that the commands work and agree, not a good HH reward model.",
      "", "## Commands and wall time", ""]
  lines += [f"- `{cmd}`: {secs:.0f} s" for cmd, secs in log]
  lines += ["", "## evaluate", "", "```", evaluated.strip(), "```", "",
            f"- the held-out pairs as jsonl: accuracy {a['accuracy']:.4f}, as parquet "
            f"conversations rendered through the chat template: {b['accuracy']:.4f}; the "
            f"run's report: {report_accuracy:.4f} "
            "(" + ("equal" if a == b and abs(a["accuracy"] - report_accuracy) < 1e-9
                   else "DIFFERENT") + ")",
            "", "## score (--normalize)", "",
            f"The first 8 of the {len(whole)} held-out pairs that westofn scores without "
            "truncation (responses within "
            f"`Batching.max_response_len={run.batching.max_response_len}` tokens, prompt and response within `row_len={run.batching.row_len}`), so that "
            "the exported model, fed whole texts, reads the same tokens.", "",
            "| held-out row | reward: chosen | reward: rejected | normalised: chosen | "
            "normalised: rejected |", "|---|---|---|---|---|"]
  lines += [f"| {i} | {r['rewards'][0]:+.4f} | {r['rewards'][1]:+.4f} | "
            f"{r['rewards_normalized'][0]:+.3f} | {r['rewards_normalized'][1]:+.3f} |"
            for i, r in enumerate(scored)]
  lines += ["", "## export", "", "```", exported.strip(), "```", "",
            f"Files: {', '.join(files)}. Loaded with transformers "
            "(`AutoTokenizer`, `AutoModelForSequenceClassification`; the prompt through "
            "`apply_chat_template(..., add_generation_prompt=True)`, then the response and "
            f"the EOS token): max |reward difference| against `westofn.score` = {diff:.1e} over "
            f"{ours.size} responses."]
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    from policies.core.atomic import write_text_atomic
    write_text_atomic(args.out, text)


if __name__ == "__main__":
  main()
