"""Held-out accuracy of the base RM on HH harmless-base (deterministic 80/20 split by prompt).

Runs the real entry point with ``gin/hh_harmless.gin`` (byte-level vocabulary, a
0.6M-parameter model trained from scratch, sized for a 2-core CPU) and prints
held-out accuracy as it grows with training steps, and the wall-clock time::

    python -m experiments.hh_harmless_accuracy [--model_dir DIR] [--steps N]
"""

import argparse
import json
import os
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "..", "shared", "data", "hh-rlhf", "harmless-base-test.jsonl.gz")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model_dir", default=None)
  parser.add_argument("--steps", type=int, default=1500)
  args = parser.parse_args()
  model_dir = args.model_dir or tempfile.mkdtemp(prefix="hh_harmless_")
  from westofn import train as train_script
  os.chdir(REPO)
  t0 = time.time()
  metrics = train_script.main([
      "--gin_file=gin/hh_harmless.gin", f"--gin.MODEL_DIR={model_dir}",
      f"--gin.DATA_PATH={os.path.abspath(DATA)}", f"--gin.RewardModelRecipe.num_steps={args.steps}",
      "--gin.RunSettings.progress=False"])
  wall = time.time() - t0
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "base_rm", "metrics.jsonl"))]
  print(f"\nHH harmless-base, 80/20 split by prompt; {os.cpu_count()} CPU cores; "
        f"wall time {wall / 60:.1f} min (data, compile, training and evaluation)")
  print(f"{'step':>6s} {'held-out acc':>13s} {'held-out loss':>14s} {'train loss (last 50)':>21s}")
  train_loss = {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
  for r in rows:
    if r["split"] == "eval":
      print(f"{r['step']:>6d} {r['accuracy']:>13.4f} {r['loss']:>14.4f} "
            f"{train_loss.get(r['step'], float('nan')):>21.4f}")
  print(f"final held-out accuracy: {metrics['base_rm']['accuracy']:.4f} "
        f"on {metrics['base_rm']['num_pairs']} pairs")


if __name__ == "__main__":
  main()
