"""The ``westofn`` console script that ``pip install`` puts beside the interpreter runs the
same commands as ``python -m westofn.<command>``: the same flags, the same one-line errors and
exit codes."""

import os
import subprocess
import sys

import pytest

from westofn.cli.main import COMMANDS

pytestmark = pytest.mark.slow   # several processes: see pytest.ini

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "westofn")


def run(args, cwd):
  proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
  return proc.returncode, proc.stdout, proc.stderr


def test_the_console_script_lists_every_command_and_refuses_an_unknown_one(tmp_path):
  assert os.path.exists(SCRIPT), "pip install -e . installs the westofn console script"
  code, out, _ = run([SCRIPT, "--help"], tmp_path)
  assert code == 0 and all(f"  {c} " in out for c in COMMANDS)
  for command in COMMANDS:   # one home each: the module python -m westofn.<command> runs
    assert os.path.exists(os.path.join(REPO, "westofn", f"{command}.py"))
    assert not os.path.exists(os.path.join(REPO, "westofn", "cli", f"{command}.py"))
  code, _, err = run([SCRIPT, "nope"], tmp_path)
  assert code == 2 and "unknown command 'nope'" in err
  assert run([SCRIPT], tmp_path)[0] == 2


@pytest.mark.parametrize("command,flags,message", [
    ("score", ["--model_dir=missing", "--input=x.jsonl", "--output=y.jsonl"], "no config.gin"),
    ("train", ["--gin_file=nope.gin", "--gin.MODEL_DIR=run"], "Unable to open file: nope.gin"),
])
def test_the_console_script_and_python_m_give_the_same_errors(tmp_path, command, flags,
                                                             message):
  script = run([SCRIPT, command, *flags], tmp_path)
  module = run([sys.executable, "-m", f"westofn.{command}", *flags], tmp_path)
  assert script[0] == module[0] == 2
  last = lambda err: err.strip().splitlines()[-1]
  assert last(script[2]) == last(module[2]) and message in last(script[2])
  assert last(script[2]).startswith("westofn: error: ")
  code, out, _ = run([SCRIPT, command, "--help"], tmp_path)
  assert code == 0 and "--" in out   # its own flags
