"""``python -m westofn.export``: the export command, ``westofn.cli.export``."""

from westofn.cli.common import run_cli
from westofn.cli.export import main

if __name__ == "__main__":
  run_cli(main)
