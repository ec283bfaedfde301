"""The README's headline table points at recorded result files that exist, and each figure it
quotes for West-of-N and TRL parity stands in the file it names (a figure is copied from a
results file, never typed from memory)."""

import os
import re

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
