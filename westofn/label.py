"""``python -m westofn.label``: the label command, ``westofn.cli.label``."""

from westofn.cli.common import run_cli
from westofn.cli.label import main

if __name__ == "__main__":
  run_cli(main)
