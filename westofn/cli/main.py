"""``westofn <command> [flags]``: the console script (installed by ``pip install``) beside
``python -m westofn.<command>``; both run the same command module, ``westofn.<command>``."""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from westofn.cli.common import run_cli

COMMANDS = {
    "train": "train the pipeline's stages in a MODEL_DIR (--gin_file=..., --gin.NAME=VALUE)",
    "evaluate": "a trained RM's metrics on preference files, RewardBench's rules",
    "score": "score responses with a trained RM (jsonl / parquet in, jsonl out)",
    "export": "a trained RM as a Hugging Face sequence-classification directory",
    "serve": "an HTTP reward server for RL trainers (OpenRLHF's /get_reward, /score)",
    "label": "label response pairs with an LM judge (AI feedback)",
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  return ("usage: westofn <command> [flags]   (westofn <command> --help: its flags)\n\n"
          "commands:\n" + "\n".join(f"  {c:<{width}}  {what}" for c, what in COMMANDS.items()))


def main(argv: Optional[Sequence[str]] = None) -> None:
  args = list(sys.argv[1:] if argv is None else argv)
  if not args or args[0] in ("-h", "--help"):
    print(usage())
    raise SystemExit(0 if args else 2)
  command, rest = args[0], args[1:]
  if command not in COMMANDS:
    print(f"westofn: error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    raise SystemExit(2)
  run_cli(importlib.import_module(f"westofn.{command}").main, rest)


if __name__ == "__main__":
  main()
