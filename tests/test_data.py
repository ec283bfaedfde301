"""rm/data.py and rm/row_sources.py: preference files in every format read, bad rows named by file,
line and field, the prompt split, atomic writes, the real HH files."""

import gzip
import json
import os

import pytest

from policies.core.atomic import write_jsonl_atomic
from rm.data import DataError, read_preference_file, split_by_prompt, split_hh_transcript


def write_lines(path, lines, mode="w"):
  with open(path, mode) as f:
    for line in lines:
      f.write(line if isinstance(line, (str, bytes)) else json.dumps(line))
      f.write("\n" if mode == "w" else b"\n")


GOOD = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}


def test_explicit_format_with_margin(tmp_path):
  p = tmp_path / "pairs.jsonl"
  write_lines(p, [GOOD, dict(GOOD, margin=1.5)])
  pairs, stats = read_preference_file(str(p))
  assert [x.margin for x in pairs] == [0.0, 1.5]
  assert pairs[1].source.endswith("pairs.jsonl:2")
  assert stats.kept == 2


def test_soft_labels(tmp_path):
  p = tmp_path / "pairs.jsonl"
  write_lines(p, [GOOD, dict(GOOD, label=0.75), dict(GOOD, label=None)])
  assert [x.label for x in read_preference_file(str(p))[0]] == [1.0, 0.75, 1.0]
  for bad, why in [(1.5, "must be a probability in \\[0, 1\\]"),
                   ("high", "must be a finite number")]:
    write_lines(p, [GOOD, dict(GOOD, label=bad)])
    with pytest.raises(DataError, match=f"pairs.jsonl:2: label: {why}"):
      read_preference_file(str(p))


def test_hh_format_splits_at_last_assistant_turn(tmp_path):
  dialogue = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"
  row = {"chosen": dialogue + " fine, thanks", "rejected": dialogue + " go away"}
  p = tmp_path / "hh.jsonl.gz"
  with gzip.open(p, "wt") as f:
    f.write(json.dumps(row) + "\n")
  (pair,), _ = read_preference_file(str(p))
  assert pair.prompt == dialogue
  assert (pair.chosen, pair.rejected) == (" fine, thanks", " go away")
  assert split_hh_transcript(dialogue + " x") == (dialogue, " x")


def test_rating_to_margin_table(tmp_path):
  p = tmp_path / "r.jsonl"
  write_lines(p, [dict(GOOD, rating="significantly better"), dict(GOOD, rating="slightly better")])
  pairs, _ = read_preference_file(str(p), rating_margins={"significantly better": 1.0,
                                                          "slightly better": 1 / 3})
  assert [x.margin for x in pairs] == pytest.approx([1.0, 1 / 3])
  with pytest.raises(DataError, match=r"r.jsonl:1: rating: 'significantly better' is not in"):
    read_preference_file(str(p), rating_margins={"x": 0.0})


@pytest.mark.parametrize("bad,match", [
    ('{"prompt": "a", "chosen": "b", ', r":2: <line>: malformed JSON"),
    ({"prompt": "a", "chosen": "b"}, r":2: rejected: missing field"),
    ({"prompt": "a", "chosen": "  ", "rejected": "c"}, r":2: chosen: is empty"),
    ({"prompt": "a", "chosen": 3, "rejected": "c"}, r":2: chosen: must be a string"),
    ({"prompt": "a", "chosen": "same", "rejected": "same"}, r":2: rejected: is identical to chosen"),
    (dict(GOOD, margin="big"), r":2: margin: must be a finite number"),
    ([1, 2], r":2: <row>: must be a JSON object"),
    ({"chosen": "no turns", "rejected": "x"}, r":2: chosen: no '\\n\\nAssistant:' turn"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, bad, match):
  p = tmp_path / "bad.jsonl"
  write_lines(p, [GOOD, bad, GOOD])
  with pytest.raises(DataError, match="bad.jsonl" + match):
    read_preference_file(str(p))
  pairs, stats = read_preference_file(str(p), on_error="skip")
  assert len(pairs) == 2 and sum(stats.skipped.values()) == 1
  assert "skipped 1" in stats.summary()


def test_non_utf8_line(tmp_path):
  p = tmp_path / "latin1.jsonl"
  with open(p, "wb") as f:
    f.write(json.dumps(GOOD).encode() + b"\n")
    f.write(b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
  with pytest.raises(DataError, match=r"latin1.jsonl:2: <line>: is not valid UTF-8"):
    read_preference_file(str(p))


def test_empty_and_missing_files(tmp_path):
  p = tmp_path / "empty.jsonl"
  p.write_text("\n\n")
  with pytest.raises(DataError, match="empty.jsonl: contains no valid preference pairs"):
    read_preference_file(str(p), on_error="skip")
  with pytest.raises(DataError, match="no such file"):
    read_preference_file(str(tmp_path / "nope.jsonl"))


def test_split_by_prompt_is_deterministic_disjoint_and_proportional():
  items = [f"prompt {i % 3000}" for i in range(9000)]
  a = split_by_prompt(items, {"train": 0.5, "unlabeled": 0.3, "heldout": 0.2}, prompt_of=str)
  b = split_by_prompt(items, {"train": 0.5, "unlabeled": 0.3, "heldout": 0.2}, prompt_of=str)
  assert a == b
  sets = {k: set(v) for k, v in a.items()}
  assert not (sets["train"] & sets["heldout"]) and not (sets["train"] & sets["unlabeled"])
  assert not (sets["unlabeled"] & sets["heldout"])
  assert abs(len(a["heldout"]) / 9000 - 0.2) < 0.03
  c = split_by_prompt(items, {"train": 0.5, "unlabeled": 0.3, "heldout": 0.2}, prompt_of=str,
                      salt="other")
  assert c != a
  reordered = split_by_prompt(items, {"heldout": 0.2, "unlabeled": 0.3, "train": 0.5},
                              prompt_of=str)
  assert reordered == a
  with pytest.raises(ValueError, match="sum to 1"):
    split_by_prompt(items, {"train": 0.5}, prompt_of=str)


def test_atomic_write_round_trip(tmp_path):
  p = str(tmp_path / "out.jsonl")
  write_jsonl_atomic(p, [GOOD, dict(GOOD, margin=2.0)])
  pairs, _ = read_preference_file(p)
  assert len(pairs) == 2 and not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_real_hh_harmless_file(hh_dir):
  path = os.path.join(hh_dir, "harmless-base-test.jsonl.gz")
  with pytest.raises(DataError, match=r"harmless-base-test.jsonl.gz:\d+: "):
    read_preference_file(path)  # the file has a few pairs without a shared prompt
  pairs, stats = read_preference_file(path, on_error="skip")
  assert stats.rows == 2312 and 2250 < len(pairs) < 2312
  assert all(p.prompt.endswith("\n\nAssistant:") for p in pairs)
  parts = split_by_prompt(pairs, {"train": 0.8, "heldout": 0.2})
  assert not {p.prompt for p in parts["train"]} & {p.prompt for p in parts["heldout"]}
  assert 0.15 < len(parts["heldout"]) / len(pairs) < 0.25


def test_prompt_file_reads_distinct_prompts_and_names_bad_lines(tmp_path):
  from rm.data import read_prompt_file
  good = tmp_path / "prompts.jsonl"
  good.write_text('{"prompt": "a?"}\n\n{"prompt": "b?"}\n{"prompt": "a?"}\n')
  assert read_prompt_file(str(good)) == ["a?", "b?"]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "a?"}\n{"text": "b?"}\n')
  with pytest.raises(DataError, match=r"bad.jsonl:2: prompt: missing"):
    read_prompt_file(str(bad))
  bad.write_text('{"prompt": "a?"}\n{oops\n')
  with pytest.raises(DataError, match=r"bad.jsonl:2: <line>: malformed JSON"):
    read_prompt_file(str(bad))


def test_a_byte_order_mark_is_read_not_rejected(tmp_path):
  p = tmp_path / "bom.jsonl"
  p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n" + json.dumps(GOOD).encode())
  pairs, _ = read_preference_file(str(p))
  assert len(pairs) == 2 and pairs[0].prompt == GOOD["prompt"]
  # only at the start of the file: a BOM inside is bad JSON, named by line
  p.write_bytes(json.dumps(GOOD).encode() + b"\n\xef\xbb\xbf" + json.dumps(GOOD).encode())
  with pytest.raises(DataError, match=r"bom.jsonl:2: <line>: malformed JSON"):
    read_preference_file(str(p))
