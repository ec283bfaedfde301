"""Property-based fuzzing of the data readers: any bytes either parse into valid pairs or
raise the project's DataError naming the file and the line; never another exception."""

import gzip
import json
import re

from hypothesis import HealthCheck, given, settings, strategies as st

from rm.data import DataError, read_preference_file, read_prompt_file

GOOD = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}
HH = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"}

# Lines that are almost right: real rows with a field mangled, plus raw bytes.
_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.integers(), max_size=2))
_row = st.builds(lambda base, key, value, drop: {
    **{k: v for k, v in base.items() if k != drop}, key: value},
    st.sampled_from([GOOD, HH]),
    st.sampled_from(["prompt", "chosen", "rejected", "margin", "gold_chosen", "gold_rejected"]),
    _values, st.sampled_from([None, "prompt", "chosen", "rejected"]))
_line = st.one_of(_row.map(lambda r: json.dumps(r).encode()),
                  st.binary(max_size=40),
                  st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
                  st.just(json.dumps(GOOD).encode()), st.just(b"\xef\xbb\xbf"),
                  st.just(b"\r"), st.just(b"\x00"))
FILE_LINE = re.compile(r"^.+\.jsonl(\.gz)?(:\d+: \S+: .+|: .+)$", re.S)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=6), gz=st.booleans(),
       newline=st.sampled_from([b"\n", b"\r\n"]))
def test_readers_parse_or_raise_a_data_error_naming_file_and_line(tmp_path, lines, gz, newline):
  data = newline.join(lines)
  path = tmp_path / ("f.jsonl.gz" if gz else "f.jsonl")
  path.write_bytes(gzip.compress(data) if gz else data)
  for read in (lambda p: read_preference_file(p)[0], lambda p: read_prompt_file(p)):
    try:
      out = read(str(path))
    except DataError as e:
      assert FILE_LINE.match(str(e)), str(e)
      continue
    assert out   # a reader that returns has found something valid
    for item in out:
      if isinstance(item, str):
        assert item.strip()
      else:
        assert item.chosen != item.rejected and item.prompt is not None


# Table files (parquet, `datasets` directories): columns of any type, as tables come.
_KINDS = {
    "text": st.text(min_size=0, max_size=8),
    "huge text": st.integers(50_000, 200_000).map(lambda n: "x" * n),
    "int": st.integers(-5, 5), "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(), "null": st.none(),
    "list of text": st.lists(st.text(max_size=4), max_size=3),
    "list of int": st.lists(st.integers(), max_size=3),
    "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant",
                                                                          "tool", ""]),
                                                "content": st.text(max_size=6)}), max_size=3),
}
_COLUMNS = ("prompt", "chosen", "rejected", "margin", "subset", "gold_chosen", "gold_rejected")


@st.composite
def _table(draw):
  kinds = {c: draw(st.sampled_from(sorted(_KINDS))) for c in _COLUMNS
           if draw(st.booleans()) or c in ("chosen", "rejected")}
  rows = draw(st.integers(1, 4))
  columns = {c: [draw(st.one_of(st.none(), _KINDS[k]) if draw(st.booleans()) else _KINDS[k])
                 for _ in range(rows)] for c, k in kinds.items()}
  if draw(st.booleans()):   # some tables hold one good row among the bad ones
    for c in columns:
      columns[c][0] = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}.get(c, None)
  return columns


TABLE_ROW = re.compile(r"^.+: (row \d+: \S+: .+|.+)$", re.S)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(columns=_table(), layout=st.sampled_from(["parquet", "datasets"]),
       on_error=st.sampled_from(["raise", "skip"]))
def test_table_readers_give_a_row_error_or_a_counted_skip(tmp_path, columns, layout, on_error):
  import pyarrow as pa
  import pyarrow.parquet as pq
  try:
    table = pa.table({c: pa.array(v) for c, v in columns.items()})
  except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
    return   # a table pyarrow itself cannot build: no file to read
  if layout == "parquet":
    path = str(tmp_path / "t.parquet")
    pq.write_table(table, path)
  else:
    import datasets
    path = str(tmp_path / "ds")
    datasets.Dataset(table).save_to_disk(path)
  try:
    pairs, stats = read_preference_file(path, on_error=on_error)
  except DataError as e:
    assert TABLE_ROW.match(str(e)) and str(e).startswith(path), str(e)[:300]
    return
  assert pairs and stats.kept == len(pairs) and stats.rows == table.num_rows
  assert sum(stats.skipped.values()) == stats.rows - stats.kept
  for p in pairs:
    assert p.chosen != p.rejected and p.prompt is not None
