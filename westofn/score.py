"""``python -m westofn.score``: the score command, ``westofn.cli.score``."""

from westofn.cli.common import run_cli
from westofn.cli.score import main

if __name__ == "__main__":
  run_cli(main)
