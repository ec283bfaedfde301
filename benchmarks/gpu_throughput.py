"""GPU throughput: reward-model training pairs/s and MFU at the SmolLM2-135M shape and a
1B-parameter Llama shape, and policy sampling tokens/s, each against PyTorch on the same GPU.

    WESTOFN_HH_DIR=../shared/data/hh-rlhf python benchmarks/gpu_throughput.py \\
        [--out benchmarks/results/gpu_throughput.txt]

Random weights (the issue allows it: speed does not depend on them), byte tokens of real HH
pairs and prompts (``benchmarks/rm_throughput.py`` and ``sampling_throughput.py`` make the
batches; their CPU tables are the same code on the CPU). bf16 everywhere: westofn in mixed
precision (float32 master weights, bf16 matmul operands, dense attention: one block), the
peer a plain PyTorch loop under bf16 autocast over the same model and padded batches (the
fastest peer configuration on the CPU; TRL, which wraps the same forward and backward in its
Trainer, is not on the GPU image) and HF ``generate`` with the model in bf16 returning
per-token log-probs. Every configuration runs in its own child process (GPU
memory starts empty), one after another; MFU is 6 x non-embedding parameters x computed
tokens per second (attention's own FLOPs left out, so it is a lower bound) over the GPU's
bf16 matmul peak measured here (8192³) and over its datasheet dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import bench_common
import rm_throughput  # noqa: E402
import sampling_throughput  # noqa: E402

# Dense bf16 datasheet peaks (FLOP/s, no sparsity).
DATASHEET = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}
RM_SIZES = {
    "smollm2": dict(d_model=576, num_layers=30, num_heads=9, num_kv_heads=3, ffn_dim=1536,
                    seq_len=256, trl_batch=64, rows=64, row_len=384, pairs_per_row=1, steps=10),
    # Llama-3.2-1B's blocks (16 x 2048 wide, 32/8 heads, FFN 8192), byte vocabulary.
    "llama1b": dict(d_model=2048, num_layers=16, num_heads=32, num_kv_heads=8, ffn_dim=8192,
                    seq_len=256, trl_batch=32, rows=32, row_len=384, pairs_per_row=1, steps=10),
}
SAMPLING = dict(model=dict(d_model=576, num_layers=30, num_heads=9, num_kv_heads=3, ffn_dim=1536,
                           vocab_size=49152, attention_block=0),
                prompts=64, samples=8, new_tokens=64, prompt_len=None, calls=2)
CONFIGS = ["peak:jax", "peak:torch"] + [f"rm:{s}:{side}" for s in RM_SIZES
                                        for side in ("westofn", "torch")] + [
    "sample:westofn", "sample:hf"]


def _peak(lib: str, n: int = 8192, reps: int = 20) -> float:
  if lib == "jax":
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), jnp.bfloat16)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
      out = f(a, a)
    out.block_until_ready()
  else:
    import torch
    a = torch.ones((n, n), dtype=torch.bfloat16, device="cuda")
    torch.mm(a, a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
      torch.mm(a, a)
    torch.cuda.synchronize()
  return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def run_child(config: str) -> dict:
  kind, *rest = config.split(":")
  if kind == "peak":
    import jax
    return {"flops": _peak(rest[0]), "device": jax.devices()[0].device_kind}
  if kind == "rm":
    size, side = rest
    cfg = dict(RM_SIZES[size])
    if side == "westofn":
      return rm_throughput.run_westofn(dict(cfg, matmul_dtype="bfloat16", attention_block=0))
    return rm_throughput.run_torch(cfg, True, device="cuda")
  if rest[0] == "westofn":
    return sampling_throughput.run_westofn(SAMPLING, True)
  return sampling_throughput.run_hf(SAMPLING, True, device="cuda")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=None, help="also write the output here")
  parser.add_argument("--from_log", default=None,
                      help="make the table from the per-configuration lines a run printed "
                           "('CONFIG {json}'), e.g. one cut short by a time limit")
  parser.add_argument("--_child", default=None)
  args = parser.parse_args()
  if args._child:
    print("RESULT " + json.dumps(run_child(args._child)))
    return
  if args.from_log:
    res, header = {}, []
    for line in open(args.from_log):
      name, _, rest = line.strip().partition(" ")
      if name in CONFIGS and rest.startswith("{"):
        res[name] = json.loads(rest)
      elif not res:
        header.append(line.strip())
    bench_common.print_and_write(
        [f"from the lines of {os.path.basename(args.from_log)} (a run on the GPU machine, "
         f"versions there: {'; '.join(header)}):"] + table(res), args.out)
    return
  script = os.path.abspath(__file__)
  res = {}
  for c in CONFIGS:
    try:
      res[c] = bench_common.run_child(script, ["--_child", c])
    except (Exception, SystemExit) as e:  # noqa: BLE001 - one failure must not hide the rest
      res[c] = {"error": "failed: " + str(e)[-400:]}
    print(c, json.dumps(res[c]), flush=True)
  bench_common.print_and_write([bench_common.host_header()] + table(res), args.out)


def table(res: dict) -> list:
  """The report's lines from ``{configuration: result}``; a configuration that is missing
  (a run cut short) or failed says so."""
  res = {c: res.get(c, {"error": "not measured: the run ended before it"}) for c in CONFIGS}
  device = res["peak:jax"].get("device", "unknown GPU")
  measured = max(res[p].get("flops", 0.0) for p in ("peak:jax", "peak:torch"))
  sheet = next((v for k, v in DATASHEET.items() if k in device), None)
  lines = [f"device: {device}",
           f"bf16 matmul peak measured here (8192^3, best of JAX and PyTorch): "
           f"{measured / 1e12:.0f} TFLOP/s; datasheet dense bf16: "
           + (f"{sheet / 1e12:.0f} TFLOP/s" if sheet else "unknown"), "",
           "reward-model training (bf16, random weights, HH byte tokens, "
           f"{RM_SIZES['smollm2']['steps']} timed steps after 2 warm-up steps):",
           f"{'size':8s} {'configuration':28s} {'params':>13s} {'pairs/step':>10s} "
           f"{'tokens/pair':>11s} {'pairs/s':>9s} {'TFLOP/s':>8s} {'MFU meas.':>9s} "
           f"{'MFU sheet':>9s}"]
  for size in RM_SIZES:
    for side, label in (("westofn", "westofn mixed bf16"),
                        ("torch", "PyTorch loop bf16 autocast")):
      r = res[f"rm:{size}:{side}"]
      if "error" in r:
        lines.append(f"{size:8s} {label:28s} {r['error']}")
        continue
      flops = 6 * r["nonembedding_params"] * r["tokens_per_pair"] * r["pairs_per_sec"]
      lines.append(f"{size:8s} {label:28s} {r['params']:>13,d} {r['pairs_per_step']:>10.1f} "
                   f"{r['tokens_per_pair']:>11.0f} {r['pairs_per_sec']:>9.1f} "
                   f"{flops / 1e12:>8.1f} {flops / measured:>9.1%} "
                   + (f"{flops / sheet:>9.1%}" if sheet else ""))
    a, b = res[f"rm:{size}:westofn"], res[f"rm:{size}:torch"]
    if "error" not in a and "error" not in b:
      lines.append(f"{size:8s} ratio westofn / PyTorch loop: "
                   f"{a['pairs_per_sec'] / b['pairs_per_sec']:.2f}x")
  s = SAMPLING
  lines += ["", f"sampling (bf16, SmolLM2-135M shape with its 49,152-token vocabulary, random "
            f"weights): {s['prompts']} HH prompts x {s['samples']} samples x {s['new_tokens']} "
            "new tokens, temperature 1, per-token log-probs returned"]
  for c, label in (("sample:westofn", "westofn mixed bf16"), ("sample:hf", "HF generate bf16")):
    r = res[c]
    lines.append(f"{label:28s} " + (r["error"] if "error" in r else
                                    f"{r['tokens_per_sec']:>10.0f} tokens/s"))
  if "error" not in res["sample:westofn"] and "error" not in res["sample:hf"]:
    lines.append(f"ratio westofn / HF generate: "
                 f"{res['sample:westofn']['tokens_per_sec'] / res['sample:hf']['tokens_per_sec']:.2f}x")
  return lines


if __name__ == "__main__":
  main()
