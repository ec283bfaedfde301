"""MkDocs hook: the docs' figures come from the recorded result files, never retyped.

* Every file of ``benchmarks/results/`` (speed against peers) and ``experiments/results/`` (the
  research protocol's studies) (``.md`` as it is, ``.txt`` as a code block) becomes a page under
  ``results/``, listed on a generated ``results/index.md``; its plots come along.
* In any page, a line ``<!-- recorded-table: experiments/results/F.md#K -->`` is replaced by the
  K-th table (from 1) of that file, and ``<!-- recorded: experiments/results/F.md -->`` by the
  whole file less its title. A missing file or table fails the build.
"""

from __future__ import annotations

import os
import re

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = {"benchmarks/results": "Benchmarks: speed and load against peers",
           "experiments/results": "Experiments: the research protocol's studies"}
DIRECTIVE = re.compile(r"^<!-- recorded(-table)?: (\S+?)(?:#(\d+))? -->$", re.M)


def _tables(text: str) -> list[str]:
  """The markdown tables of ``text`` (outside code fences), each as its lines."""
  tables, current, fence = [], [], False
  for line in text.split("\n") + [""]:
    if line.startswith("```"):
      fence = not fence
    if not fence and line.startswith("|"):
      current.append(line)
    else:
      if len(current) >= 2:
        tables.append("\n".join(current))
      current = []
  return tables


def _read(path: str, page: str) -> str:
  full = os.path.join(REPO, path)
  if os.path.dirname(path) not in RESULTS or not os.path.isfile(full):
    raise PluginError(f"{page}: {path}: not a recorded result file under "
                      f"{' or '.join(RESULTS)}")
  return open(full, encoding="utf-8").read()


def _replace(match, page: str) -> str:
  is_table, path, index = match.group(1), match.group(2), match.group(3)
  text = _read(path, page)
  link = f"*(Recorded in `{path}`.)*"
  if is_table:
    tables = _tables(text)
    k = int(index or 1)
    if not 1 <= k <= len(tables):
      raise PluginError(f"{page}: {path} has {len(tables)} tables, not a table {k}")
    return tables[k - 1] + "\n\n" + link
  body = re.sub(r"\A# .*\n", "", text)
  return re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M) + "\n" + link


def _result_page(folder: str, name: str) -> str:
  text = open(os.path.join(REPO, folder, name), encoding="utf-8").read()
  if name.endswith(".md"):
    return text if text.startswith("# ") else f"# {name}\n\n{text}"
  return f"# {name}\n\n```text\n{text}\n```\n"


def on_files(files, config):
  index = ["# Recorded results", "",
           "Every file the benchmark and experiment scripts wrote, as they wrote it. Each names "
           "the command that made it; the raw results beside it rebuild it with `--report_only`.",
           ""]
  seen = {}
  for folder, title in RESULTS.items():
    index += [f"## {title}", "", f"`{folder}/`", ""]
    names = sorted(os.listdir(os.path.join(REPO, folder)))
    for name in names:
      if name in seen:   # one flat results/ on the site: a name may live in one folder only
        raise PluginError(f"{folder}/{name}: the same name as {seen[name]}/{name}")
      seen[name] = folder
      if name.endswith(".png"):
        files.append(File.generated(config, f"results/{name}",
                                    abs_src_path=os.path.join(REPO, folder, name)))
      elif name.endswith((".md", ".txt")):
        page = _result_page(folder, name)
        stem = name.rsplit(".", 1)[0]
        files.append(File.generated(config, f"results/{stem}.md", content=page))
        index.append(f"* [{page.split(chr(10), 1)[0].lstrip('# ').strip()}]({stem}.md)")
    index.append("")
  files.append(File.generated(config, "results/index.md", content="\n".join(index)))
  return files


def on_page_markdown(markdown, page, config, files):
  return DIRECTIVE.sub(lambda m: _replace(m, page.file.src_uri), markdown)
