"""A SmolLM2 reward model trained on Anthropic HH, scored as RewardBench 2 and RM-Bench score
RMs, on files in those datasets' formats made from the run's held-out HH pairs:

    python -m experiments.leaderboards_hh --model_dir=DIR [--data=../shared/data/hh-rlhf] \\
        [--prompts 120] [--out=experiments/results/leaderboards_smollm2_hh.md]

DIR is a westofn.train MODEL_DIR with a SmolLM2 ``base_rm`` stage; without one, it is trained
first with ``gin/smollm2_hh.gin`` (about 25 minutes on 2 CPU cores). The public datasets are
not reachable from here, so their *formats* are filled with HH text, as stated below; the
figures measure this RM on HH, not its standing on the public leaderboards.

* RewardBench-2 format (``prompt``, ``chosen`` [1], ``rejected`` [3], ``subset``, ``id``,
  ``num_correct``): per held-out pair, the HH chosen response against the HH rejected one
  and the rejected responses of the next two held-out prompts (off-topic answers, as
  RewardBench 2's Focus subset pairs an answer with ones to another question); the subset
  is the HH file the pair came from. A prompt earns 1/(ties at the top) when the chosen
  response scores highest.
* RM-Bench format (``prompt``, ``chosen`` [3], ``rejected`` [3], ``domain``): each response in
  three styles, as RM-Bench's concise / detailed plain / detailed markdown: as written, its
  sentences as one plain paragraph, and its sentences as a markdown list under a bold
  heading; the domain is ``safety-response`` for harmless-base pairs and ``chat`` otherwise.
  Hard accuracy asks whether the chosen answer in a plainer style beats the rejected one in
  a fancier style.

Both files go through ``python -m westofn.evaluate`` as a user runs it, then through
``--rescore``, which must give the same figures from the completions file alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from benchmarks import bench_common
from experiments.rm_commands_hh import _heldout, _run, trained_smollm2_rm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def styles(text: str) -> list[str]:
  """The response as written, as one plain paragraph, and as a markdown list of its
  sentences under a bold heading."""
  sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s.strip()]
  plain = " ".join(sentences) or text.strip()
  markdown = "**Answer**\n\n" + "\n".join(f"- {s}" for s in sentences) if sentences else text
  return [text, plain, markdown]


def hh_subset(source: str) -> str:
  """The HH file a pair was read from (``harmless-base-test.jsonl.gz:12`` → harmless-base)."""
  name = os.path.basename(source.split(":")[0])
  return re.sub(r"(-test)?\.jsonl(\.gz)?$", "", name)


def write_files(pairs, tmp: str) -> tuple[str, str]:
  rb2, rmb = [], []
  for i, p in enumerate(pairs):
    others = [pairs[(i + k) % len(pairs)].rejected for k in (1, 2)]
    subset = hh_subset(p.source)
    rb2.append({"id": str(i), "prompt": p.prompt, "chosen": [p.chosen],
                "rejected": [p.rejected] + others, "num_correct": 1, "num_rejected": 3,
                "total_completions": 4, "subset": subset})
    rmb.append({"id": i, "prompt": p.prompt, "chosen": styles(p.chosen),
                "rejected": styles(p.rejected),
                "domain": "safety-response" if subset.startswith("harmless") else "chat"})
  rb2_path, rmb_path = os.path.join(tmp, "hh_rewardbench2.jsonl"), os.path.join(tmp,
                                                                                 "hh_rmbench.json")
  with open(rb2_path, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rb2))
  with open(rmb_path, "w") as f:
    json.dump(rmb, f)
  return rb2_path, rmb_path


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--data", default="../shared/data/hh-rlhf")
  parser.add_argument("--prompts", type=int, default=120,
                      help="held-out pairs made into rows (each format)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  log = []
  model_dir = trained_smollm2_rm(args.model_dir, args.data, log)
  from westofn.restore import load_run
  run = load_run(model_dir)
  heldout = _heldout(run)[:args.prompts]
  accuracy = json.load(open(os.path.join(model_dir, "base_rm", "eval.json")))["accuracy"]
  with tempfile.TemporaryDirectory() as tmp:
    rb2, rmb = write_files(heldout, tmp)
    out = os.path.join(tmp, "evaluate.json")
    printed = _run(["westofn.evaluate", f"--model_dir={model_dir}", "--stage=base_rm",
                    f"--data=hh_rewardbench2={rb2}", f"--data=hh_rmbench={rmb}",
                    f"--output={out}"], log)
    live = json.load(open(out))["results"]
    completions = os.path.join(tmp, "evaluate.completions.jsonl")
    n_completions = sum(1 for _ in open(completions))
    _run(["westofn.evaluate", f"--rescore={completions}", f"--output={tmp}/rescored.json"], log)
    again = json.load(open(f"{tmp}/rescored.json"))["results"]
  same = again == live
  lines = bench_common.result_header(
      "A SmolLM2 reward model on HH, scored as RewardBench 2 and RM-Bench score",
      f"python -m experiments.leaderboards_hh --model_dir={args.model_dir} --prompts "
      f"{args.prompts}")
  lines += [
      f"The run's base RM (`base_rm`, `gin/smollm2_hh.gin`: SmolLM2-135M-Instruct, top 6 of "
      f"30 blocks trained on 1,000 HH pairs, CPU-sized) has held-out accuracy {accuracy:.4f} "
      "on its 300 held-out pairs. The first "
      f"{len(heldout)} of them were written in each leaderboard's format (how: "
      "`experiments/leaderboards_hh.py`'s docstring): the figures are this RM on HH text "
      "under each leaderboard's rules, not a leaderboard standing.", "",
      "## Commands and wall time", ""]
  lines += [f"- `{cmd}`: {secs:.0f} s" for cmd, secs in log]
  lines += ["", "## What westofn.evaluate printed", "", "```", printed.strip(), "```", "",
            f"{n_completions} completions scored, each on its own; `--rescore` from the "
            "completions file alone gave " + ("the same figures, every one." if same else
                                               "DIFFERENT figures."), ""]
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    from policies.core.atomic import write_text_atomic
    write_text_atomic(args.out, text)
  if not same:
    raise SystemExit("rescored figures differ from the live ones")


if __name__ == "__main__":
  main()
