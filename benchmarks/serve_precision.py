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

Two more rows say where the served call's time goes, against the serving peer's kernels
(``serve_load.py``'s peer: transformers in bfloat16). They are measurements, not models:

* the served configuration with attention taken out (each layer's attention output replaced
  by its queries; the keys' and values' projections still run, and everything else as
  served): what attention costs in a served call;
* PyTorch: transformers' ``LlamaForSequenceClassification`` of SmolLM2's shape in bfloat16 (the
  peer's fastest configuration), one forward over the same 4 rows of 384 tokens, causal (its
  default attention, SDPA): the same tokens through the peer's kernels. The peer itself runs
  each response with its prompt, so it computes more tokens for the same responses.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import bench_common

CONFIGS = {
    "float32": "float32 (as trained)",
    "mixed_before": "mixed: bf16 dense matmuls, float32 weights and attention (before)",
    "stored": "+ dense weights stored in bf16",
    "attention": "+ bf16 attention dots (nnx.jit, as served before)",
    "served": "+ read-only program, read_only_jit (what --matmul_dtype=bfloat16 serves)",
    "no_attention": "the served configuration with attention taken out (not a model: its cost)",
    "torch_bf16": "PyTorch: transformers in bfloat16, the same 4 x 384 tokens, causal (the peer)",
}
MODELS = ("float32", "mixed_before", "stored", "attention", "served")   # score the RM
SMOLLM2 = dict(vocab_size=49152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
               ffn_dim=1536)


def torch_child(seconds: float) -> dict:
  """One forward of transformers' Llama RM of SmolLM2's shape in bfloat16 over 4 x 384
  tokens, timed as ``child`` times a served call."""
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=SMOLLM2["vocab_size"], hidden_size=SMOLLM2["d_model"],
      intermediate_size=SMOLLM2["ffn_dim"], num_hidden_layers=SMOLLM2["num_layers"],
      num_attention_heads=SMOLLM2["num_heads"], num_key_value_heads=SMOLLM2["num_kv_heads"],
      tie_word_embeddings=True, num_labels=1, pad_token_id=0)
  model = transformers.LlamaForSequenceClassification(cfg).to(torch.bfloat16).eval()
  tokens = torch.randint(5, 40000, (4, 384))
  with torch.inference_mode():
    model(input_ids=tokens)   # warm-up
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
      model(input_ids=tokens)
      calls += 1
  return {"ms": 1000 * (time.perf_counter() - start) / calls, "calls": calls}


def child(config: str, seconds: float) -> dict:
  if config == "torch_bf16":
    return torch_child(seconds)
  import jax.numpy as jnp
  import numpy as np
  from policies.transformer import TransformerConfig, store_dense_weights_in
  from rm.model import make_reward_model
  from flax import nnx
  from rm.response_rewards import _rewards, pack_prompt_responses
  if config == "no_attention":   # each layer's attention output is its queries: no attention
    import policies.transformer
    # (the keys and values are summed into it at weight 0, so their projections still run)
    policies.transformer.block_causal_attention = (
        lambda q, k, v, *args, **kwargs: q + 0.0 * (jnp.sum(k) + jnp.sum(v)))
  served = config in ("served", "no_attention")
  low = None if config == "float32" else "bfloat16"
  cfg = TransformerConfig(**SMOLLM2, matmul_dtype=low, attention_dtype=(
      "bfloat16" if config == "attention" or served else None))
  model = make_reward_model(cfg, seed=0)
  if not served:   # the program nnx.jit makes, as every configuration used before
    _rewards = nnx.jit(_rewards.__wrapped__)
  if config in ("stored", "attention") or served:
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
  for k, c in enumerate(MODELS):
    diff = np.abs(np.asarray(res[c]["rewards"]) - exact).max()
    step = f"{ms(MODELS[k - 1]) / ms(c):.2f}x" if k else "—"
    lines.append(f"| {CONFIGS[c]} | {ms(c):.0f} [{res[c]['min']:.0f}-{res[c]['max']:.0f}] | "
                 f"{ms('float32') / ms(c):.2f}x | {ms('mixed_before') / ms(c):.2f}x | {step} | "
                 f"{diff:.4f} |")
  lines += ["", "Where the served call's time goes (measurements, not models: no rewards):", "",
            "| configuration | ms per batch, median [min-max] | against the served call |",
            "|---|---|---|"]
  for c in CONFIGS:
    if c not in MODELS:
      lines.append(f"| {CONFIGS[c]} | {ms(c):.0f} [{res[c]['min']:.0f}-{res[c]['max']:.0f}] | "
                   f"{ms(c) / ms('served'):.2f} of its time |")
  lines += ["", f"- Attention's share of the served call: "
            f"{1 - ms('no_attention') / ms('served'):.0%}.",
            f"- PyTorch in bfloat16 runs the same tokens {ms('served') / ms('torch_bf16'):.2f}x "
            "as fast as the served call (the kernels' gap; the peer spends it on more tokens)."]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
