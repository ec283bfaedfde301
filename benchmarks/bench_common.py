"""What the speed benchmarks share, so that a ratio means the same on any host:

* ``host_header``: the CPU (model, cores, the flags that decide matmul speed: AVX-512,
  AVX-512 BF16, AMX) and the versions of both sides' packages;
* ``alternate``: each configuration of each side in its own child process, the
  configurations alternating, repeated; ``summarize`` gives the median and min-max;
* ``matmul_peak``: the host's dense matmul FLOP/s in float32 and bfloat16 (the best of JAX
  and PyTorch), the roof each side's achieved FLOP/s is read against (``matmul_flops`` also
  measures int8, for ``matmul_dtypes.py``).

Run alone, it prints the host line and its matmul speeds: the check before a long CPU run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
PACKAGES = ("jax", "jaxlib", "flax", "torch", "transformers", "trl", "datasets", "accelerate")


def hh_file(name: str) -> str:
  """An HH-RLHF file of ``$WESTOFN_HH_DIR`` (a machine where the data lies elsewhere, e.g. a
  GPU machine it was carried to), by default ``../shared/data/hh-rlhf``."""
  folder = os.environ.get("WESTOFN_HH_DIR", os.path.join(REPO, "..", "shared", "data", "hh-rlhf"))
  return os.path.join(folder, name)


def cpu_info() -> dict:
  """The CPU's name, with its family and model numbers: a virtual machine's "AMD EPYC" names
  several generations, and hosts of that name have differed twofold in speed."""
  model, flags, fields = platform.processor() or platform.machine(), set(), {}
  if os.path.exists("/proc/cpuinfo"):
    for line in open("/proc/cpuinfo"):
      key, _, value = line.partition(":")
      fields.setdefault(key.strip(), value.strip())
      if key.strip() == "flags":   # the first processor's fields end here
        break
    model = fields.get("model name", model)
    flags = set(fields.get("flags", "").split())
    if "cpu family" in fields and "model" in fields:
      model += f" (family {fields['cpu family']}, model {fields['model']})"
  return {"model": model, "cores": os.cpu_count(), "flags": [f for f in FLAGS if f in flags]}


def has_fast_bf16() -> bool:
  """Whether the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); without it bf16 is
  emulated and slower than float32."""
  return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]))


def versions(packages=PACKAGES) -> dict:
  out = {}
  for p in packages:
    try:
      out[p] = importlib.metadata.version(p)
    except importlib.metadata.PackageNotFoundError:
      out[p] = "not installed"
  return out


def host_header() -> str:
  cpu = cpu_info()
  flags = " ".join(cpu["flags"]) or "none of " + "/".join(FLAGS)
  return (f"host: {cpu['model']}, {cpu['cores']} cores; CPU flags: {flags}; python "
          f"{platform.python_version()}; " + ", ".join(f"{k} {v}" for k, v in versions().items()))


def result_header(title: str, command: str) -> list[str]:
  """The first lines of a recorded result: its title, the command that made it and when,
  and the host."""
  import time
  return [f"# {title}", "", f"Made by `{command}` ({time.strftime('%Y-%m-%d')}).", "",
          host_header(), ""]


def run_child(script: str, args) -> dict:
  """``python script --_child ...`` from the repository root; the dict it prints as RESULT."""
  proc = subprocess.run([sys.executable, script] + [str(a) for a in args], capture_output=True,
                        text=True, cwd=REPO)
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode or not line:
    sys.exit(f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  return json.loads(line[-1][len("RESULT "):])


def alternate(script: str, configs, repeats: int, args_of) -> dict:
  """``{config: [result per repeat]}``: every config once per round, rounds repeated, so a
  drift in the host's speed (another process, thermal) hits every config alike."""
  runs = {c: [] for c in configs}
  for r in range(repeats):
    for c in configs:
      start = time.time()
      runs[c].append(run_child(script, args_of(c)))
      print(f"  round {r + 1}/{repeats}: {c} ({time.time() - start:.0f} s)", file=sys.stderr)
  return runs


def summarize(results, key: str) -> dict:
  """The median run (by ``key``) with ``min``/``max`` of ``key`` over the runs."""
  rs = sorted(results, key=lambda r: r[key])
  return dict(rs[len(rs) // 2], min=rs[0][key], max=rs[-1][key], runs=len(rs))


PEAK_SHAPE = (2048, 2048, 2048)   # [m, k, n] of matmul_peak's matmul


def matmul_flops(which: str, dtype: str, shape=PEAK_SHAPE, reps: int = 10) -> float:
  """FLOP/s (for int8, integer op/s) of an [m, k] @ [k, n] matmul in ``dtype``: float32,
  bfloat16 (float32 accumulation) or int8 (int32 accumulation)."""
  m, k, n = shape
  if which == "jax":
    import jax
    import jax.numpy as jnp
    out = jnp.int32 if dtype == "int8" else jnp.float32
    a, b = jnp.ones((m, k), getattr(jnp, dtype)), jnp.ones((k, n), getattr(jnp, dtype))
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=out))
    mm = lambda: f(a, b).block_until_ready()
  else:
    import torch
    a, b = torch.ones((m, k), dtype=getattr(torch, dtype)), torch.ones((k, n),
                                                                       dtype=getattr(torch, dtype))
    mm = (lambda: torch._int_mm(a, b)) if dtype == "int8" else (lambda: torch.mm(a, b))
  mm()
  t0 = time.perf_counter()
  for _ in range(reps):
    mm()
  return 2 * m * k * n * reps / (time.perf_counter() - t0)


def matmul_peak(script: str) -> dict:
  """``{'float32': FLOP/s, 'bfloat16': FLOP/s}``: the best of JAX and PyTorch on a 2048³
  matmul, each measured in a child process (``script --_child peak:<lib>:<dtype>``)."""
  out = {}
  for dtype in ("float32", "bfloat16"):
    out[dtype] = max(run_child(script, ["--_child", f"peak:{lib}:{dtype}"])["flops"]
                     for lib in ("jax", "torch"))
  return out


def print_and_write(lines, out=None) -> None:
  """Prints the result; with ``out``, also writes it there (atomically: a killed run leaves
  the recorded result as it was)."""
  text = "\n".join(lines)
  print(text)
  if out:
    with open(out + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(out + ".tmp", out)


def mark_invocation(path: str, event: str) -> list[float]:
  """Appends ``event`` (start or end) to a job's invocation log (one JSON line each); the start
  times of the invocations the job has taken since it last ended. More than one: it was killed
  part way (a session's end) and resumed. A job that resumes calls this with "start" first and
  with "end" once it has its result."""
  if event not in ("start", "end"):
    raise ValueError(f"{path}: event must be start or end, not {event!r}")
  events = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
  now = time.time()
  with open(path, "a") as f:
    f.write(json.dumps({"event": event, "time": now}) + "\n")
  ends = [i for i, e in enumerate(events) if e["event"] == "end"]
  since = events[ends[-1] + 1:] if ends else events
  return [e["time"] for e in since if e["event"] == "start"] + ([now] if event == "start" else [])


def maybe_peak_child(child: str):
  """Handles ``--_child peak:<lib>:<dtype>[:m,k,n]``; True if it did."""
  if not child.startswith("peak:"):
    return False
  _, lib, dtype, *shape = child.split(":")
  shape = tuple(int(x) for x in shape[0].split(",")) if shape else PEAK_SHAPE
  print("RESULT " + json.dumps({"flops": matmul_flops(lib, dtype, shape)}))
  return True


if __name__ == "__main__":
  # ``python benchmarks/bench_common.py``: this host and its matmul speed, to check before a
  # long CPU run (hosts of one CPU model and flags have differed twofold between sessions).
  print(host_header())
  for lib in ("jax", "torch"):
    print(lib, ", ".join(f"{dtype} {matmul_flops(lib, dtype) / 1e9:.0f} GFLOP/s"
                         for dtype in ("float32", "bfloat16")))
