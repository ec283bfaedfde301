"""The one rule that turns a variable size into a compiled shape.

A jitted program is compiled once per input shape. A size (prompt tokens, sequence length,
rows in a batch) is rounded up to ``base · 2^k``: sizes from 1 to 1024 tokens take at most
6 shapes with base 32, where plain multiples of the base would take 32. Every sampler,
scorer and evaluation pads to ``bucket``, so a run compiles a handful of programs and a
later stage or run reuses them.
"""

from __future__ import annotations


def bucket(n: int, base: int = 1, cap: int | None = None) -> int:
  """The smallest ``base · 2^k >= n`` (``k >= 0``), or ``cap`` if that is smaller (a batch
  never grows past its configured size)."""
  if n < 0 or base < 1:
    raise ValueError(f"bucket needs n >= 0 and base >= 1, got n={n}, base={base}")
  size = base
  while size < n:
    size *= 2
  return size if cap is None else min(size, cap)
