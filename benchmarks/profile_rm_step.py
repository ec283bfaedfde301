"""Where one reward-model training step spends its time: a ``jax.profiler`` trace of the
step of ``rm_throughput.py`` (same model, batches and precision), each XLA operation's time
summed over the timed steps and put in a class read from the optimized HLO. ``--sampling``
profiles one SmolLM2 sampling call of ``sampling_throughput.py --size smollm2`` instead.

    python benchmarks/profile_rm_step.py [--size smollm2] [--matmul_dtype bfloat16] [--out F]
    python benchmarks/profile_rm_step.py --sampling [--out F]

Classes: dense matmuls by operand dtype (bf16 or float32), attention (the dots whose both
operands are activations: scores and the weighted sum of values), the rest by kind
(elementwise and reduction fusions: norms, softmax, rotary, loss, AdamW; copies and
transposes; everything else). Each class's share of the traced time, and its FLOP/s where
it does matmuls, says where the gap to the host's matmul peak is.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile


STEPS = 2


def hlo_classes(dump_dir: str) -> dict:
  """``{instruction name: class}`` for the largest optimized module (the train step)."""
  files = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
  text = open(max(files, key=os.path.getsize)).read()
  bodies, current = {}, None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head:
      current = head.group(1)
      bodies[current] = []
    elif current is not None:
      bodies[current].append(line)
  define = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[[^=]*? ([\w\-]+)\(")
  dtypes = {m.group(1): m.group(2) for lines in bodies.values() for ln in lines
            if (m := define.match(ln))}
  out = {}
  for lines in bodies.values():
    for line in lines:
      m = define.match(line)
      if not m:
        continue
      name, _, op = m.groups()
      called = re.search(r"calls=%?([\w.\-]+)", line)
      body = "\n".join(bodies.get(called.group(1), [])) if called else line
      out[name] = classify(op, body, dtypes)
  return out


def classify(op: str, body: str, dtypes: dict) -> str:
  dots = [ln for ln in body.splitlines() if re.search(r" (dot|convolution)\(", ln)]
  if dots:
    operands = re.findall(r"%([\w.\-]+)", dots[0].split("(", 1)[1].split(")")[0])
    dtype = "bf16" if any(dtypes.get(o) == "bf16" for o in operands) else "float32"
    # attention: batched dots (heads, query blocks) of two activations
    if any("lhs_batch_dims={" in ln and "lhs_batch_dims={}" not in ln for ln in dots):
      return f"attention dots ({dtype})"
    return f"dense matmuls ({dtype})"
  if op in ("copy", "transpose", "bitcast", "copy-start", "copy-done"):
    return "copies and transposes"
  if op in ("fusion", "add", "multiply", "reduce", "exponential", "select", "divide"):
    return "elementwise / reduction fusions"
  return f"other ({op})"


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="smollm2")
  parser.add_argument("--matmul_dtype", default="bfloat16")
  parser.add_argument("--sampling", action="store_true",
                      help="profile one sampling call of sampling_throughput.py --size smollm2 "
                           "(the real SmolLM2 weights) instead of a training step")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  dump = tempfile.mkdtemp(prefix="rm_hlo_")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_dump_to={dump} --xla_dump_hlo_as_text")
  import jax
  import bench_common
  if args.sampling:
    import sampling_throughput
    size = dict(sampling_throughput.SIZES["smollm2"], calls=1)
    run = lambda: sampling_throughput.run_westofn(size, args.matmul_dtype == "bfloat16")
    warm_up, timed = 1, 1   # one compiling call, one timed call
  else:
    import rm_throughput
    cfg = dict(rm_throughput.SIZES[args.size], steps=STEPS,
               matmul_dtype=None if args.matmul_dtype == "float32" else args.matmul_dtype)
    run = lambda: rm_throughput.run_westofn(cfg)
    warm_up, timed = 2, STEPS   # run_westofn compiles on 2 warm-up batches
  trace_dir = tempfile.mkdtemp(prefix="rm_trace_")
  # Trace it all and keep the events of the timed calls (each operation's last ones).
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0   # XLA's operations only, not every Python call
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True, profiler_options=options):
    result = run()
  trace = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  events = json.load(gzip.open(trace[0]))
  events = events["traceEvents"] if isinstance(events, dict) else events
  classes = hlo_classes(dump)
  per_op = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and e.get("name") in classes:
      per_op[e["name"]].append((e["ts"], e["dur"] / 1e6))
  totals, named = collections.Counter(), collections.Counter()
  for name, calls in per_op.items():
    per_call = max(1, len(calls) // (warm_up + timed))
    t = sum(d for _, d in sorted(calls)[-per_call * timed:]) / timed
    totals[classes[name]] += t
    named[name] = t
  traced = sum(totals.values())
  threads = "summed over the threads that run them side by side"
  if args.sampling:
    tokens = size["prompts"] * size["samples"] * size["new_tokens"]
    what = (f"one sampling call, SmolLM2-135M-Instruct, {size['prompts']} prompts x "
            f"{size['samples']} samples x {size['new_tokens']} tokens, matmul dtype "
            f"{args.matmul_dtype}: {tokens / result['tokens_per_sec']:.2f} s wall, {traced:.2f} s "
            f"in traced XLA operations ({threads}; {result['tokens_per_sec']:.0f} tokens/s)")
  else:
    what = (f"one training step, size={args.size}, matmul dtype {args.matmul_dtype}: "
            f"{result['pairs_per_step'] / result['pairs_per_sec']:.2f} s wall, {traced:.2f} s "
            f"in traced XLA operations ({threads}; {result['pairs_per_sec']:.2f} pairs/s)")
  lines = [bench_common.host_header(), what, "",
           f"{'class':36s} {'s/call':>8s} {'share':>7s}"]
  for cls, t in totals.most_common():
    lines.append(f"{cls:36s} {t:>8.3f} {t / traced:>7.1%}")
  lines += ["", "largest operations:"] + [f"  {n:40s} {classes[n]:32s} {t:.3f} s"
                                          for n, t in named.most_common(12)]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
