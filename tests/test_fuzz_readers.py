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
