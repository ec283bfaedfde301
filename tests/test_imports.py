"""The layering of the packages, read from every module's imports (those inside functions and
``__main__`` blocks too): no module imports another that imports it back, ``policies/core``
imports nothing above it, the libraries (``rm``, ``policies``) import nothing of ``westofn``
and never import gin, and no module or script edits ``sys.path``."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("rm", "policies", "westofn", "benchmarks", "experiments", "tests")


def python_files() -> dict:
  """``{module name: path}`` of every Python file of the packages, scripts and tests."""
  modules = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
          modules[rel.removesuffix(".__init__")] = os.path.join(root, f)
  return modules


def module_imports() -> dict:
  """``{module: {modules of this repository or 'gin' it imports, anywhere in it}}``.
  ``from package import name`` counts as importing ``package.name`` where that is a module
  (the package's own ``__init__`` runs, but none of its functions)."""
  modules = python_files()
  graph = {}
  for name, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        subs = [f"{node.module}.{a.name}" for a in node.names]
        targets = [t for t in subs if t in modules] or [node.module]
      else:
        continue
      found |= {t for t in targets if t in modules and t != name}
      found |= {"gin" for t in targets if t.split(".")[0] == "gin"}
    graph[name] = found
  return graph


def cycles(graph: dict) -> list:
  """Every module that can reach itself, with one such path."""
  out = []
  for start in graph:
    stack, seen = [(start, [start])], set()
    while stack:
      node, path = stack.pop()
      for nxt in graph.get(node, ()):
        if nxt == start:
          out.append(path + [start])
          stack = []
          break
        if nxt not in seen:
          seen.add(nxt)
          stack.append((nxt, path + [nxt]))
  return out


def test_cycle_finder_finds_a_cycle_and_only_one():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
      ["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.fixture(scope="module")
def graph():
  return module_imports()


def test_no_module_imports_one_that_imports_it_back(graph):
  assert len(graph) > 50 and "westofn.model_dir" in graph
  # lazy imports count: westofn.train's command imports the pipeline it is part of, not a
  # second home of it
  assert "westofn.cli.common" in graph["westofn.train"]
  assert "experiments.protocol" in graph["experiments.west_of_n_claims"]
  assert cycles(graph) == []


def test_no_module_or_script_edits_sys_path():
  """Scripts import the installed package (and their own folder's modules, or
  ``experiments.*`` run from the root); only the tests' conftest puts the repository first."""
  edits = []
  for name, path in python_files().items():
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
          and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
          and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
        edits.append(f"{name}:{node.lineno}")
  assert len(edits) == 1 and edits[0].startswith("tests.conftest:"), edits


def test_the_core_and_the_libraries_import_nothing_above_them(graph):
  above_core = {m: sorted(t for t in deps if t != "gin" and not t.startswith("policies.core"))
                for m, deps in graph.items() if m.startswith("policies.core")}
  assert {m: d for m, d in above_core.items() if d} == {}
  libraries = {m: sorted(t for t in deps if t == "gin" or t.startswith("westofn"))
               for m, deps in graph.items() if m.split(".")[0] in ("rm", "policies")}
  assert {m: d for m, d in libraries.items() if d} == {}
