"""``python -m westofn.evaluate``: the evaluate command, ``westofn.cli.evaluate``."""

from westofn.cli.common import run_cli
from westofn.cli.evaluate import main

if __name__ == "__main__":
  run_cli(main)
