"""``python -m westofn.serve``: the serve command, ``westofn.cli.serve``."""

from westofn.cli.common import run_cli
from westofn.cli.serve import main

if __name__ == "__main__":
  run_cli(main)
