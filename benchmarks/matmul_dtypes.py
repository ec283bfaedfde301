"""What each number format buys a CPU matmul on this host, in JAX (XLA) and in PyTorch.

    python benchmarks/matmul_dtypes.py [--repeats 3] [--out benchmarks/results/matmul_dtypes.md]

The reward server (#29) is compute-bound on CPU: its throughput follows the matmul speed of
the format it runs in. This measures float32, bfloat16 (float32 accumulation) and int8 (int32
accumulation) at two shapes: 2048³, and SmolLM2-135M's feed-forward input projection over a
batch of 2,048 tokens ([2048, 576] @ [576, 1536]), each in its own child process, the
configurations alternating, ``--repeats`` rounds, the median reported with its min-max. Which
format is fastest depends on the CPU (AVX-512 BF16, AMX), so the host's flags head the result.

A second table runs the bfloat16 matmul at the feed-forward shape through each CPU matmul
library this jaxlib can route a dot to, chosen with ``XLA_FLAGS`` (YNNPACK, XLA's default;
oneDNN's fusion; oneDNN's custom call; none, XLA's own emitter), beside PyTorch's bfloat16,
and reads back from the compiled program which library ran it: a flag that this jaxlib's
build ignores shows as the library that did run.
"""

from __future__ import annotations

import argparse
import json
import os

import bench_common

SHAPES = {"2048^3": (2048, 2048, 2048), "SmolLM2 FFN, 2048 tokens": (2048, 576, 1536)}
DTYPES = ("float32", "bfloat16", "int8")
LIBS = ("jax", "torch")
FFN = "SmolLM2 FFN, 2048 tokens"
# XLA's CPU matmul libraries (DebugOptions in XLA's xla.proto), each as the XLA_FLAGS that
# route a dot to it; the empty YNN list turns off the default library.
XLA_DOT_LIBRARIES = {
    "YNNPACK (XLA's default)": "",
    "oneDNN fusion": "--xla_cpu_use_onednn=true --xla_cpu_experimental_ynn_fusion_type= "
                     "--xla_cpu_experimental_onednn_fusion_type=dot",
    "oneDNN custom call": "--xla_cpu_experimental_onednn_custom_call=true "
                          "--xla_cpu_experimental_ynn_fusion_type=",
    "none (XLA's own dot emitter)": "--xla_cpu_experimental_ynn_fusion_type=",
}


def _library_child(name: str, shape) -> dict:
  """bfloat16 FLOP/s at ``shape`` with the dot routed by ``XLA_DOT_LIBRARIES[name]``, and
  what the compiled program calls: its library fusions and custom-call targets."""
  import re
  os.environ["XLA_FLAGS"] = XLA_DOT_LIBRARIES[name]
  import jax
  import jax.numpy as jnp
  m, k, n = shape
  a, b = jnp.ones((m, k), jnp.bfloat16), jnp.ones((k, n), jnp.bfloat16)
  hlo = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32)).lower(
      a, b).compile().as_text()
  ran = sorted(set(re.findall(r'"kind":"(__\w+)"', hlo))
               | set(re.findall(r'custom_call_target="([^"]+)"', hlo)))
  return {"flops": bench_common.matmul_flops("jax", "bfloat16", shape),
          "ran": ", ".join(ran) or "XLA's dot emitter"}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=None)
  parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._child:
    if args._child.startswith("library:"):
      _, name, shape = args._child.split(":")
      print("RESULT " + json.dumps(_library_child(name, tuple(map(int, shape.split(","))))))
    else:
      bench_common.maybe_peak_child(args._child)
    return
  script = os.path.abspath(__file__)
  ffn = ",".join(map(str, SHAPES[FFN]))
  configs = [(s, lib, d) for s in SHAPES for lib in LIBS for d in DTYPES] + [
      ("library", name) for name in XLA_DOT_LIBRARIES]
  child = lambda c: (f"library:{c[1]}:{ffn}" if c[0] == "library" else
                     f"peak:{c[1]}:{c[2]}:{','.join(map(str, SHAPES[c[0]]))}")
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
  torch_bf16 = res[(FFN, "torch", "bfloat16")]
  lines += ["", f"XLA's CPU matmul libraries, bfloat16 (float32 accumulation), {FFN} "
            "([2048, 576] @ [576, 1536]): the library chosen by `XLA_FLAGS`, what the compiled "
            "program called, and the speed against PyTorch's bfloat16 in the same run.", "",
            "| library asked for | `XLA_FLAGS` | what ran | GFLOP/s | / PyTorch bfloat16 |",
            "|---|---|---|---|---|"]
  for name, flags in XLA_DOT_LIBRARIES.items():
    r = res[("library", name)]
    lines.append(f"| {name} | `{flags or '(none)'}` | {r['ran']} | {cell(r)} | "
                 f"{r['flops'] / torch_bf16['flops']:.2f}x |")
  lines.append(f"| PyTorch (oneDNN) | — | — | {cell(torch_bf16)} | 1.00x |")
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
