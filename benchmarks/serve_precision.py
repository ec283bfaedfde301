"""What each part of the served RM's mixed precision buys one scoring call, side by side:

    python benchmarks/serve_precision.py [--repeats 3] [--seconds 8] \\
        [--out benchmarks/results/serve_precision_smollm2.md]

The reward server (``westofn.serve --matmul_dtype=bfloat16``) scores batches of the RM's rows.
This times one such batch (4 rows of 384 tokens, SmolLM2-135M's shape with random weights: the
speed does not depend on them; 4 requests of a 150-token prompt and 4 responses of 50 tokens,
one per row, packed as the server packs them) under five configurations, each in its own
child process, alternating, ``--repeats`` rounds, the median reported with its min-max:

* float32: the RM as trained;
* mixed, as before: the dense layers' matmuls with bf16 operands and float32 accumulation,
  the weights kept float32 (so every call rounds all of them again), attention in float32;
* + the dense weights stored in bf16 once (``store_dense_weights_in``);
* + attention's two dots with bf16 operands (``attention_dtype``), the program made by
  ``nnx.jit``, which hands every parameter back (XLA copies each one per call);
* + the program made by ``read_only_jit`` (``policies/core/read_only_jit.py``): the model's
  state goes in and only the rewards come out. What ``--matmul_dtype`` serves now
  (``westofn.rewards.with_matmul_dtype``).

Each configuration's rewards are compared with float32's (max |difference| over the batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402

CONFIGS = {
    "float32": "float32 (as trained)",
    "mixed_before": "mixed: bf16 dense matmuls, float32 weights and attention (before)",
    "stored": "+ dense weights stored in bf16",
    "attention": "+ bf16 attention dots (nnx.jit, as served before)",
    "served": "+ read-only program, read_only_jit (what --matmul_dtype=bfloat16 serves)",
}
SMOLLM2 = dict(vocab_size=49152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
               ffn_dim=1536)


def child(config: str, seconds: float) -> dict:
  import jax.numpy as jnp
  import numpy as np
  from policies.transformer import TransformerConfig, store_dense_weights_in
  from rm.model import make_reward_model
  from flax import nnx
  from rm.response_rewards import _rewards, pack_prompt_responses
  low = None if config == "float32" else "bfloat16"
  cfg = TransformerConfig(**SMOLLM2, matmul_dtype=low, attention_dtype=(
      "bfloat16" if config in ("attention", "served") else None))
  model = make_reward_model(cfg, seed=0)
  if config != "served":   # the program nnx.jit makes, as every configuration used before
    _rewards = nnx.jit(_rewards.__wrapped__)
  if config in ("stored", "attention", "served"):
    store_dense_weights_in(model.backbone, "bfloat16")
  rng = np.random.default_rng(0)
  items = [(rng.integers(5, 40000, 150), [rng.integers(5, 40000, 50) for _ in range(4)])
           for _ in range(4)]
  batch, = pack_prompt_responses(items, rows=4, row_len=384, max_response_len=256,
                                 max_per_row=16, eos_id=2, share_rows=True)
  args = [jnp.asarray(batch[k]) for k in ("tokens", "positions", "group", "segment", "ends")]
  rewards = np.asarray(_rewards(model, *args))   # compiles
  start, calls = time.perf_counter(), 0
  while time.perf_counter() - start < seconds:
    _rewards(model, *args).block_until_ready()
    calls += 1
  read = batch["ids"][..., 0] >= 0
  return {"ms": 1000 * (time.perf_counter() - start) / calls, "calls": calls,
          "rewards": rewards[read].tolist(), "responses": int(read.sum())}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seconds", type=float, default=8.0)
  parser.add_argument("--out", default=None)
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    print("RESULT " + json.dumps(child(args._child, args.seconds)))
    return
  import numpy as np
  runs = bench_common.alternate(os.path.abspath(__file__), list(CONFIGS), args.repeats,
                                lambda c: ["--_child", c, "--seconds", args.seconds])
  res = {c: bench_common.summarize(rs, "ms") for c, rs in runs.items()}
  exact = np.asarray(res["float32"]["rewards"])
  lines = bench_common.result_header(
      "One served scoring call by precision: SmolLM2-135M's shape, 4 rows x 384 tokens",
      f"python benchmarks/serve_precision.py --repeats {args.repeats} --seconds "
      f"{args.seconds:g}") + [
      f"One batch: 4 requests of a 150-token prompt and 4 responses of 50 tokens "
      f"({res['float32']['responses']} responses, a request per row), packed as the server "
      "packs them; SmolLM2-135M's shape with random weights.", "",
      "| configuration | ms per batch, median [min-max] | speed vs float32 | speed vs mixed "
      "as before | speed vs the row above | max abs reward difference vs float32 |",
      "|---|---|---|---|---|---|"]
  ms = lambda c: res[c]["ms"]
  names = list(CONFIGS)
  for k, (c, label) in enumerate(CONFIGS.items()):
    diff = np.abs(np.asarray(res[c]["rewards"]) - exact).max()
    step = f"{ms(names[k - 1]) / ms(c):.2f}x" if k else "—"
    lines.append(f"| {label} | {ms(c):.0f} [{res[c]['min']:.0f}-{res[c]['max']:.0f}] | "
                 f"{ms('float32') / ms(c):.2f}x | {ms('mixed_before') / ms(c):.2f}x | {step} | "
                 f"{diff:.4f} |")
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
