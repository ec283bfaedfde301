"""The README's headline table points at recorded result files that exist, and each figure it
quotes for West-of-N and TRL parity stands in the file it names (a figure is copied from a
results file, never typed from memory); a report and a config a script writes from its committed
raw results are what it writes from them now."""

import json
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = ("benchmarks/results", "experiments/results")


def headline_rows() -> list:
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = text.split("## Headline results", 1)[1].split("\n## ", 1)[0]
  rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
  return [[c.strip() for c in row.strip("|").split("|")] for row in rows]


def find(name: str) -> str:
  for folder in RESULTS:
    if os.path.exists(os.path.join(REPO, folder, name)):
      return os.path.join(REPO, folder, name)
  raise AssertionError(f"README names {name}, which is in neither of {RESULTS}")


def test_every_headline_row_names_recorded_files_that_exist():
  rows = headline_rows()
  assert len(rows) >= 5
  for what, figure, recorded in rows:
    for name in re.findall(r"`([\w.]+\.(?:md|txt))`", recorded):
      find(name)


def test_the_signed_figures_the_readme_quotes_stand_in_their_files():
  """Points (+2.93, −0.06, ...) are the kind of figure a table is read for; each must appear in
  one of the files its row names."""
  checked = 0
  for what, figure, recorded in headline_rows():
    files = [open(find(n), encoding="utf-8").read()
             for n in re.findall(r"`([\w.]+\.md)`", recorded)]
    if not files:
      continue
    for number in re.findall(r"[+−-]\d+\.\d\d", figure):
      plain = number.replace("−", "-")
      assert any(plain in f or number in f for f in files), (what, number)
      checked += 1
  assert checked >= 4


def test_hh_best_rm_report_and_config_are_what_the_script_writes_from_its_raw_results(tmp_path):
  """``benchmarks/hh_best_rm.py --report_only`` from a copy of the committed raw results gives
  the committed report and, once the final westofn run is recorded, gin/smollm2_hh_best.gin
  (its header quotes the run's figures)."""
  results = os.path.join(REPO, "benchmarks", "results")
  shutil.copy(os.path.join(results, "hh_best_rm.json"), tmp_path / "hh_best_rm.json")
  proc = subprocess.run([sys.executable, "benchmarks/hh_best_rm.py", "--report_only",
                         f"--out={tmp_path / 'hh_best_rm'}",
                         f"--config_out={tmp_path / 'best.gin'}"],
                        cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  committed = open(os.path.join(results, "hh_best_rm.md"), encoding="utf-8").read()
  assert (tmp_path / "hh_best_rm.md").read_text(encoding="utf-8") == committed
  config = os.path.join(REPO, "gin", "smollm2_hh_best.gin")
  if "westofn" in json.load(open(tmp_path / "hh_best_rm.json")).get("final", {}):
    assert (tmp_path / "best.gin").read_text() == open(config).read()
  else:
    assert not (tmp_path / "best.gin").exists() and not os.path.exists(config)
