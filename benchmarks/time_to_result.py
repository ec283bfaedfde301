"""Time to result: where a run's wall time goes (XLA compilation or compute), stage by stage,
for the commands a user runs first, with this tree's code and with an earlier commit's.

    git worktree add /tmp/before <commit>           # the code to compare against
    python benchmarks/time_to_result.py --before /tmp/before \\
        [--workloads demo,west_of_n_demo,hh_quick] [--out benchmarks/results/time_to_result.md]
        [--report_only]

Workloads (each ``python -m westofn.train`` as a user types it, in a fresh MODEL_DIR):

* ``demo``: ``gin/demo.gin`` (the base RM on the embedded task);
* ``west_of_n_demo``: ``gin/west_of_n_demo.gin`` (base RM, SFT policy, a West-of-N round and
  its student, RM(human 100%));
* ``hh_quick``: ``python -m experiments.west_of_n_hh --size gpu --quick``'s run: the GPU-sized HH
  protocol with SmolLM2 on a few pairs for 2 steps an RM (one seed of ``won``).

Each runs in its own child process, in this order: the earlier commit's code; this code with
an empty persistent compilation cache (a first run); this code again with the cache the first
run filled (every later run, seed or variant). The child meters every stage function of the
pipeline (``westofn.stages``, the report) with ``policies.core.compile_meter`` from this tree,
so both codes are measured the same way, and prints the process's wall time (imports
included). The header names the host (CPU flags) and the package versions.

A workload is the command a user types, so each code runs it with its own gin files, and those
change as defaults do (the West-of-N demo now trains by validation selection and draws 16
samples a prompt). The report lists, per workload, the gin bindings the two trees set
differently, so a wall that measures different work says so. The raw results are kept beside
the report (``.json``): ``--report_only`` rebuilds the report from them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import bench_common

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

STAGE_FUNCTIONS = ("base_rm", "pairwise_judge", "policy_sft", "west_of_n", "human_100",
                   "rest", "dpo", "evaluate_named_sets")
WORKLOADS = ("demo", "west_of_n_demo", "hh_quick")


GIN_FILES = {"demo": "gin/demo.gin", "west_of_n_demo": "gin/west_of_n_demo.gin",
             "hh_quick": "gin/smollm2_hh_gpu_west_of_n.gin"}
_INCLUDE = re.compile(r"^include\s+['\"](.+)['\"]")
_BINDING = re.compile(r"^(?:([\w/]+)/)?([A-Za-z_][\w.]*)\s*=\s*(.*)$")
_MODULE_PATH = re.compile(r"@(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def workload_bindings(tree: str, name: str) -> dict:
  """The workload's gin bindings in ``tree``, ``{Configurable.parameter: value}`` with its
  includes read in place (a later binding wins, as in gin). Module paths are dropped from
  names and references, so a configurable that moved to another module compares equal."""
  bindings = {}

  def read(rel: str) -> None:
    with open(os.path.join(tree, rel)) as f:
      lines = [ln.split("#", 1)[0].rstrip() for ln in f]
    key = None
    for line in lines:
      if not line.strip() or line.startswith(("import ", "from ")):
        continue
      include = _INCLUDE.match(line)
      binding = _BINDING.match(line)
      if include:
        beside = os.path.join(os.path.dirname(rel), include.group(1))
        read(beside if os.path.exists(os.path.join(tree, beside))
             else os.path.join("gin", include.group(1)))
        key = None
      elif binding and not line[0].isspace():
        scope, name_path, value = binding.groups()
        key = (scope + "/" if scope else "") + ".".join(name_path.split(".")[-2:])
        bindings[key] = value
      elif key is not None:        # a value continued on the next line
        bindings[key] += " " + line.strip()

  read(GIN_FILES[name])
  return {k: " ".join(_MODULE_PATH.sub(r"@\1", v).split()) for k, v in sorted(bindings.items())}


def binding_changes(configs: dict) -> tuple[list, list]:
  """What the two codes (``configs``: code -> ``workload_bindings``) set differently:
  ``(renamed, changed)``. ``renamed``: ``(before's name, after's name)`` of a binding set only
  by one code each, to the same value, on the same configurable (a keyword renamed);
  ``changed``: ``(name, before, after)`` of the rest, ``—`` where a code sets nothing."""
  before, after = configs.get("before"), configs.get("after")
  if before is None or after is None:
    return [], []
  only_before = [k for k in before if k not in after]
  only_after = [k for k in after if k not in before]
  renamed = []
  for old in only_before:
    matches = [new for new in only_after if after[new] == before[old]
               and new.rsplit(".", 1)[0] == old.rsplit(".", 1)[0]]
    if len(matches) == 1:
      renamed.append((old, matches[0]))
      only_after.remove(matches[0])
  gone = {old for old, _ in renamed} | {new for _, new in renamed}
  changed = [(k, before.get(k, "—"), after.get(k, "—")) for k in sorted(set(before) | set(after))
             if before.get(k) != after.get(k) and k not in gone]
  return renamed, changed


def workload_args(name: str, model_dir: str) -> list:
  if name in ("demo", "west_of_n_demo"):
    return [f"--gin_file={GIN_FILES[name]}", f"--gin.MODEL_DIR={model_dir}"]
  if name == "hh_quick":
    from experiments.west_of_n_hh import QUICK
    return ([f"--gin_file={GIN_FILES[name]}", f"--gin.MODEL_DIR={model_dir}",
             f"--gin.DATA_PATH={bench_common.hh_file('')}", "--gin.RunSettings.seed=0",
             "--gin.RunSettings.save_every=1000"] + QUICK)
  raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def child(tree: str, workload: str, model_dir: str, cache: str) -> None:
  """Runs one workload with ``tree``'s code; prints ``RESULT {...}``."""
  t0 = time.perf_counter()
  os.chdir(tree)   # (run_child puts the tree first on the child's PYTHONPATH)
  spec = importlib.util.spec_from_file_location(
      "compile_meter", os.path.join(REPO, "policies", "core", "compile_meter.py"))
  meter_lib = importlib.util.module_from_spec(spec)
  sys.modules["compile_meter"] = meter_lib   # (dataclasses look their module up there)
  spec.loader.exec_module(meter_lib)
  rows = []

  def metered(name, fn):
    def run(*args, **kwargs):
      with meter_lib.CompileMeter() as m:
        out = fn(*args, **kwargs)
      rows.append({"stage": name, **m.cost.as_dict()})
      return out
    return run

  from westofn import report, stages, train
  for name in STAGE_FUNCTIONS:
    if hasattr(stages, name):
      setattr(stages, name, metered(name, getattr(stages, name)))
  # (write_report at b18bea8: it wrote report.md itself)
  for name in ("make_report", "write_report"):
    if hasattr(report, name):
      setattr(report, name, metered("report", getattr(report, name)))
  cli = getattr(train, "cli", None)     # westofn/train.py holds the command,
  if cli is None:                       # except in the commits that kept it in westofn/cli/
    from westofn.cli.train import cli
  argv = workload_args(workload, model_dir)
  if cache != "none":
    argv.append(f"--compilation_cache={cache}")
  with meter_lib.CompileMeter() as whole:
    try:
      cli(argv)
    except SystemExit as e:
      if e.code:
        raise
  print("RESULT " + json.dumps({"stages": rows, "run": whole.cost.as_dict(),
                                "process_wall_s": round(time.perf_counter() - t0, 2)}))


def run_child(tree: str, workload: str, cache: str) -> dict:
  model_dir = tempfile.mkdtemp(prefix=f"ttr_{workload}_")
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "WESTOFN_COMPIL"))}
  # The tree's code before the installed one; this tree's experiments (the HH workload's flags).
  env["PYTHONPATH"] = os.pathsep.join([tree, REPO])
  try:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", tree,
                           workload, model_dir, cache], capture_output=True, text=True, env=env)
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  if proc.returncode or not line:
    raise SystemExit(f"{workload} with {tree} failed:\n{proc.stdout[-3000:]}\n"
                     f"{proc.stderr[-3000:]}")
  return json.loads(line[-1][len("RESULT "):])


def _row(label: str, r: dict) -> str:
  run = r["run"]
  share = run["compile_s"] / run["wall_s"] if run["wall_s"] else 0.0
  return (f"| {label} | {r['process_wall_s']:.0f} | {run['wall_s']:.0f} | {run['compiles']} "
          f"({run['cache_hits']}) | {run['compile_s']:.0f} | {share:.0%} | "
          f"{run['compute_s']:.0f} |")


def report(results: dict, header: str, before_label: str) -> str:
  lines = [
      "# Time to result: compile and compute, stage by stage", "",
      "`python benchmarks/time_to_result.py` (" + header + ")", "",
      "Each run is one child process. *Process wall* includes Python and JAX imports; "
      "*pipeline wall* is `westofn.train.train`. Compilations are XLA backend compilations "
      "counted from `jax.monitoring` events (a persistent-cache read counts as one; hits in "
      "brackets); *compile s* is trace + lower + compile; *compute s* is the rest of the "
      "pipeline wall (running programs, data, checkpoints, host work).", ""]
  labels = {"before": f"before ({before_label})", "cold": "after, first run (empty cache)",
            "warm": "after, again (cache filled by the first run)"}
  for workload, entry in results.items():
    by_code = entry["runs"]
    lines += [f"## {workload}", "",
              "| code | process wall s | pipeline wall s | XLA compilations (cache hits) | "
              "compile s | compile share | compute s |", "|---|---|---|---|---|---|---|"]
    lines += [_row(labels[k], r) for k, r in by_code.items()]
    renamed, changed = binding_changes(entry["configs"])
    if "before" in by_code:
      b = by_code["before"]["process_wall_s"]
      speedups = ", ".join(f"{labels[k].split(',')[0] if k == 'cold' else labels[k]}: "
                           f"{b / r['process_wall_s']:.2f}x"
                           for k, r in by_code.items() if k != "before")
      lines += ["", "Speed-up of the process wall against before"
                + (" (of work configured differently, below)" if changed else "")
                + ": " + speedups]
    if renamed:
      lines += ["", "Keywords renamed between the codes, set to the same values: " + ", ".join(
          f"`{old}` → `{new}`" for old, new in renamed) + "."]
    if changed:
      lines += ["", "The two codes configure this workload differently (its gin files and "
                "their includes, module paths aside), so their walls measure different work "
                "where these bindings change it; defaults set in code may differ too:", "",
                "| binding | before | after |", "|---|---|---|"]
      lines += [f"| `{k}` | `{b}` | `{a}` |" for k, b, a in changed]
    elif "before" in by_code:
      lines += ["", "The two codes set this workload's gin bindings alike (module paths and "
                "renamed keywords aside); defaults set in code may differ."]
    lines += ["", "Stage by stage (wall s / compilations / compile s):", "",
              "| stage | " + " | ".join(labels[k] for k in by_code) + " |",
              "|---" * (len(by_code) + 1) + "|"]
    stage_names = []
    for r in by_code.values():
      for s in r["stages"]:
        if s["stage"] not in stage_names:
          stage_names.append(s["stage"])
    for name in stage_names:
      cells = []
      for r in by_code.values():
        s = [x for x in r["stages"] if x["stage"] == name]
        cells.append("—" if not s else " + ".join(
            f"{x['wall_s']:.1f} / {x['compiles']} / {x['compile_s']:.1f}" for x in s))
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--_child":
    child(*sys.argv[2:6])
    return
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--before", default=None,
                      help="a checkout of the code to compare against (git worktree add)")
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--out", default=None)
  parser.add_argument("--report_only", action="store_true",
                      help="rebuild the report from the raw results beside --out")
  args = parser.parse_args()
  raw_path = os.path.splitext(args.out)[0] + ".json" if args.out else None
  if args.report_only:
    if not raw_path or not os.path.exists(raw_path):
      raise SystemExit(f"--report_only needs the raw results of a run: {raw_path} is missing")
    with open(raw_path) as f:
      raw = json.load(f)
    text = report(raw["results"], raw["header"], raw["before_label"])
    write_report(args.out, text)   # the raw results stay as the run wrote them
    print(text)
    return
  before_label = "—"
  if args.before:
    before_label = subprocess.run(["git", "-C", args.before, "log", "-1", "--format=%h"],
                                  capture_output=True, text=True).stdout.strip() or args.before
  header = bench_common.host_header()
  results = {}
  for workload in args.workloads.split(","):
    workload_args(workload, "x")   # an unknown name fails before anything runs
    configs = {"after": workload_bindings(REPO, workload)}
    if args.before:
      configs["before"] = workload_bindings(args.before, workload)
    by_code = {}
    cache = tempfile.mkdtemp(prefix="ttr_xla_")
    try:
      if args.before:
        by_code["before"] = run_child(args.before, workload, "none")
      by_code["cold"] = run_child(REPO, workload, cache)
      by_code["warm"] = run_child(REPO, workload, cache)
    finally:
      shutil.rmtree(cache, ignore_errors=True)
    results[workload] = {"runs": by_code, "configs": configs}
    for k, r in by_code.items():
      print(f"{workload} {k}: {r['process_wall_s']:.0f} s, {r['run']['compiles']} compilations,"
            f" {r['run']['compile_s']:.0f} s compiling", flush=True)
    text = report(results, header, before_label)
    if args.out:
      write_report(args.out, text, raw_path, {"header": header, "before_label": before_label,
                                              "results": results})
  print(text)


def write_report(out: str, text: str, raw_path: str = None, raw: dict = None) -> None:
  """The report at ``out``; with ``raw``, the raw results at ``raw_path`` too."""
  from policies.core.atomic import write_text_atomic
  if raw is not None:
    write_text_atomic(raw_path, json.dumps(raw, indent=1) + "\n")
  write_text_atomic(out, text + "\n")


if __name__ == "__main__":
  main()
