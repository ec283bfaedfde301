"""What each number format buys a CPU matmul on this host, in JAX (XLA) and in PyTorch.

    python benchmarks/matmul_dtypes.py [--repeats 3] [--out benchmarks/results/matmul_dtypes.txt]

The reward server (#29) is compute-bound on CPU: its throughput follows the matmul speed of
the format it runs in. This measures float32, bfloat16 (float32 accumulation) and int8 (int32
accumulation) at two shapes: 2048³, and SmolLM2-135M's feed-forward input projection over a
batch of 2,048 tokens ([2048, 576] @ [576, 1536]), each in its own child process, the
configurations alternating, ``--repeats`` rounds, the median reported with its min-max. Which
format is fastest depends on the CPU (AVX-512 BF16, AMX), so the host's flags head the result.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402

SHAPES = {"2048^3": (2048, 2048, 2048), "SmolLM2 FFN, 2048 tokens": (2048, 576, 1536)}
DTYPES = ("float32", "bfloat16", "int8")
LIBS = ("jax", "torch")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=None)
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    bench_common.maybe_peak_child(args._child)
    return
  script = os.path.abspath(__file__)
  configs = [(s, lib, d) for s in SHAPES for lib in LIBS for d in DTYPES]
  child = lambda c: f"peak:{c[1]}:{c[2]}:{','.join(map(str, SHAPES[c[0]]))}"
  runs = bench_common.alternate(script, configs, args.repeats, lambda c: ["--_child", child(c)])
  res = {c: bench_common.summarize(rs, "flops") for c, rs in runs.items()}
  lines = bench_common.result_header(
      "Matmul speed by number format: JAX against PyTorch on this host",
      f"python benchmarks/matmul_dtypes.py --repeats {args.repeats}") + [
      "G(FL)OP/s, median of the runs [min-max]; int8 counts integer multiply-adds as FLOPs do.",
      "", "| shape | library | float32 | bfloat16 | int8 | bfloat16 / float32 | int8 / bfloat16 |",
      "|---|---|---|---|---|---|---|"]
  cell = lambda r: f"{r['flops'] / 1e9:.0f} [{r['min'] / 1e9:.0f}-{r['max'] / 1e9:.0f}]"
  for shape in SHAPES:
    for lib in LIBS:
      r = {d: res[(shape, lib, d)] for d in DTYPES}
      lines.append(f"| {shape} | {lib} | " + " | ".join(cell(r[d]) for d in DTYPES) +
                   f" | {r['bfloat16']['flops'] / r['float32']['flops']:.2f}x"
                   f" | {r['int8']['flops'] / r['bfloat16']['flops']:.2f}x |")
  lines.append("")
  for shape in SHAPES:
    flops = lambda lib, d: res[(shape, lib, d)]["flops"]
    best_bf16 = max(flops(lib, "bfloat16") for lib in LIBS)
    lines.append(f"- {shape}: JAX int8 against the faster library's bfloat16: "
                 f"{flops('jax', 'int8') / best_bf16:.2f}x; JAX bfloat16 against PyTorch "
                 f"bfloat16: {flops('jax', 'bfloat16') / flops('torch', 'bfloat16'):.2f}x")
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
