"""Rows of a preference file, whatever its format: jsonl (optionally ``.gz``), a ``.json`` file
holding one JSON array, parquet, or a directory written by Hugging Face ``datasets``
(``Dataset.save_to_disk``: Arrow files and a ``state.json``).

Every row comes with its location for error messages: ``path:LINE`` for jsonl,
``path: row N`` (1-based) for the table formats and JSON arrays. A row that cannot be decoded
(bad UTF-8, malformed JSON) comes as a ``RowError`` in place of the row, so the reader
can raise or skip it like any other bad row.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Iterator, Union

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


class DataError(ValueError):
  """Bad input, with the file, line and field it concerns in the message."""


class RowError(Exception):
  """What is wrong with one row: the field, the message and a short reason to count."""

  def __init__(self, field: str, message: str, reason: str):
    super().__init__(message)
    self.field, self.message, self.reason = field, message, reason


def text_field(value, where: str, field: str) -> str:
  """``value`` if it is a non-empty string; else a ``DataError`` naming file, row and field."""
  if not isinstance(value, str) or not value.strip():
    raise DataError(f"{where}: {field}: must be a non-empty string, got {value!r}"[:300])
  return value


def is_datasets_directory(path: str) -> bool:
  return os.path.isdir(path) and (os.path.exists(os.path.join(path, "state.json")) or
                                  os.path.exists(os.path.join(path, "dataset_dict.json")))


def is_table_file(path: str) -> bool:
  return path.endswith(PARQUET_SUFFIXES) or is_datasets_directory(path)


def _decode_line(raw: bytes, lineno: int) -> str:
  """UTF-8 text of a line; a byte-order mark opening the file (as Windows tools write
  one) is dropped rather than taken for malformed JSON."""
  if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
    raw = raw[3:]
  return raw.decode("utf-8")


def open_lines(path: str):
  opener = gzip.open if path.endswith(".gz") else open
  return opener(path, "rb")


def _starts_json_array(path: str) -> bool:
  """Whether a ``.json`` file holds one JSON array (as RM-Bench ships its data) rather than
  an object a line."""
  if not path.endswith((".json", ".json.gz")):
    return False
  try:
    with open_lines(path) as f:
      head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: cannot be read: {e}") from None
  return head.startswith(b"[")


def _json_array_rows(path: str) -> Iterator[tuple[str, Union[dict, RowError]]]:
  try:
    with open_lines(path) as f:
      rows = json.loads(f.read().decode("utf-8-sig"))
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: is not valid UTF-8 ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: <file>: malformed JSON array: {e.msg} at column "
                    f"{e.colno}") from None
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: cannot be read: {e}") from None
  for n, row in enumerate(rows, start=1):
    yield f"{path}: row {n}", row


def _jsonl_rows(path: str) -> Iterator[tuple[str, Union[dict, RowError]]]:
  if _starts_json_array(path):
    yield from _json_array_rows(path)
    return
  with open_lines(path) as f:
    try:
      for lineno, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        where = f"{path}:{lineno}"
        try:
          text = _decode_line(raw, lineno)
        except UnicodeDecodeError as e:
          yield where, RowError("<line>", f"is not valid UTF-8 ({e.reason} at byte {e.start})",
                                "not UTF-8")
          continue
        try:
          yield where, json.loads(text)
        except json.JSONDecodeError as e:
          yield where, RowError("<line>", f"malformed JSON: {e.msg} at column {e.colno}",
                                "malformed JSON")
    except (OSError, EOFError) as e:  # truncated or corrupt gzip
      raise DataError(f"{path}: cannot be read: {e}") from None


def _arrow_tables(path: str):
  """The Arrow tables of a parquet file or a ``save_to_disk`` directory, in row order."""
  try:
    import pyarrow as pa
    import pyarrow.parquet as pq
  except ImportError:  # pragma: no cover - pyarrow comes with tensorflow-datasets (seqio)
    raise DataError(f"{path}: reading parquet / datasets directories needs pyarrow "
                    "(pip install pyarrow)") from None
  if not os.path.isdir(path):
    try:
      return [pq.read_table(path)]
    except (OSError, pa.ArrowException) as e:
      raise DataError(f"{path}: cannot be read as parquet: {e}") from None
  if os.path.exists(os.path.join(path, "dataset_dict.json")):
    splits = json.load(open(os.path.join(path, "dataset_dict.json"))).get("splits", [])
    raise DataError(f"{path}: is a DatasetDict with splits {splits}: give one split's "
                    f"directory, e.g. {os.path.join(path, (splits or ['train'])[0])}")
  try:
    state = json.load(open(os.path.join(path, "state.json")))
    files = [os.path.join(path, f["filename"]) for f in state["_data_files"]]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f"{path}/state.json: not a datasets save_to_disk state ({e!r})") from None
  tables = []
  for f in files:
    try:
      with pa.memory_map(f) as source:
        try:
          tables.append(pa.ipc.open_stream(source).read_all())
        except pa.ArrowInvalid:   # older writers used the Arrow file format
          source.seek(0)
          tables.append(pa.ipc.open_file(source).read_all())
    except (OSError, pa.ArrowException) as e:
      raise DataError(f"{f}: cannot be read as Arrow: {e}") from None
  return tables


def _table_rows(path: str) -> Iterator[tuple[str, dict]]:
  n = 0
  for table in _arrow_tables(path):
    for batch in table.to_batches(max_chunksize=1024):
      for row in batch.to_pylist():
        n += 1
        yield f"{path}: row {n}", row


def iter_rows(path: str) -> Iterator[tuple[str, Union[dict, RowError]]]:
  """``(location, row)`` for every row of the file or directory at ``path``."""
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  if is_table_file(path):
    return _table_rows(path)
  if os.path.isdir(path):
    raise DataError(f"{path}: a directory that is neither a datasets save_to_disk directory "
                    "(state.json) nor one of preference files")
  return _jsonl_rows(path)
