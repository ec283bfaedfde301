"""What the ``evaluate``, ``score`` and ``export`` commands share: restoring a run's stage
from ``--model_dir`` and ``--stage``, and the argument parser they start from."""

from __future__ import annotations

import argparse
from typing import Optional

from westofn.errors import ConfigError


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model_dir", required=True, help="a westofn.train MODEL_DIR")
  return p


def parse_columns(text: Optional[str]) -> Optional[dict]:
  """``prompt:question,chosen:good`` → ``{'prompt': 'question', 'chosen': 'good'}``."""
  if not text:
    return None
  out = {}
  for item in text.split(","):
    ours, sep, theirs = item.partition(":")
    if not sep or not ours.strip() or not theirs.strip():
      raise ConfigError(f"--columns: {item!r} is not FIELD:COLUMN (e.g. prompt:question)")
    out[ours.strip()] = theirs.strip()
  return out
