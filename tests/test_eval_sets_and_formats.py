"""RewardBench scoring rules (pure functions vs numpy), named evaluation sets, and the data
formats besides jsonl: parquet, ``datasets`` directories, column mapping, conversations."""

import json
import math

import jax
import numpy as np
import pytest

from rm.bpe_vocabulary import hh_to_messages
from rm.conversations import to_transcript
from rm.data import DataError, expand_paths, read_preference_file, read_preference_files
from rm.leaderboard_rules import (REWARDBENCH_COUNT_OVERRIDES, REWARDBENCH_SECTIONS, section_scores,
                                  strictly_correct, subset_accuracies)
from rm.tasks import byte_vocabulary
from westofn.eval_sets import read_eval_sets, score_pairs

ROWS = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


# --- pure scoring functions ------------------------------------------------------------------

@pytest.mark.parametrize("jit", [False, True])
def test_strictly_correct_counts_a_tie_as_wrong(jit):
  c = np.array([1.0, 0.5, 0.5, -2.0], np.float32)
  r = np.array([0.0, 0.5, 0.7, -3.0], np.float32)
  fn = jax.jit(strictly_correct) if jit else strictly_correct
  np.testing.assert_array_equal(np.asarray(fn(c, r)), (c > r).astype(np.float32))
  assert np.asarray(fn(c, r)).tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("jit", [False, True])
def test_subset_accuracies_match_numpy(jit):
  rng = np.random.default_rng(0)
  correct = (rng.random(200) < 0.6).astype(np.float32)
  ids = rng.integers(0, 5, 200).astype(np.int32)
  ids[ids == 3] = 4   # subset 3 has no rows
  fn = jax.jit(subset_accuracies, static_argnums=2) if jit else subset_accuracies
  acc, count = map(np.asarray, fn(correct, ids, 5))
  for s in range(5):
    rows = correct[ids == s]
    assert count[s] == len(rows)
    if len(rows):
      np.testing.assert_allclose(acc[s], rows.mean(), rtol=1e-6)
    else:
      assert math.isnan(acc[s])


def test_scoring_functions_reject_wrong_shapes():
  with pytest.raises(ValueError, match="vectors of one length"):
    strictly_correct(np.zeros(3), np.zeros(4))
  with pytest.raises(ValueError, match="vectors of one length"):
    strictly_correct(np.zeros((2, 3)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match="vectors of one length"):
    subset_accuracies(np.zeros(3), np.zeros(2, np.int32), 2)
  with pytest.raises(ValueError, match="integers"):
    subset_accuracies(np.zeros(3), np.zeros(3, np.float32), 2)


def test_rewardbench_sections_on_a_file_with_known_answers(tmp_path):
  # subset: (rows, how many the rewards below get right); row 'tie' has equal rewards.
  layout = [("alpacaeval-easy", [1, 1, 1, 0]), ("mt-bench-easy", ["tie", 0]),
            ("llmbar-natural", [1, 1]), ("math-prm", [1, 0]), ("hep-python", [1, 1])]
  rows, chosen, rejected = [], [], []
  for subset, outcomes in layout:
    for j, o in enumerate(outcomes):
      rows.append({"prompt": f"{subset} {j}", "chosen": "a", "rejected": "b", "subset": subset})
      chosen.append(1.0 if o == 1 else 0.3 if o == "tie" else -1.0)
      rejected.append(0.3 if o == "tie" else 0.0)
  sets = read_eval_sets({"rb": write_jsonl(tmp_path / "rb.jsonl", rows)},
                        vocabulary=byte_vocabulary())
  m = score_pairs(sets["rb"], chosen=np.array(chosen), rejected=np.array(rejected),
                  sections=REWARDBENCH_SECTIONS, count_overrides=REWARDBENCH_COUNT_OVERRIDES)
  assert m["accuracy"] == pytest.approx(8 / 12)        # the tie counts as wrong
  assert m["subsets"]["alpacaeval-easy"] == {"accuracy": 0.75, "count": 4}
  assert m["subsets"]["mt-bench-easy"] == {"accuracy": 0.0, "count": 2}
  assert m["sections"]["Chat"] == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)
  assert m["sections"]["Chat Hard"] == 1.0
  # RewardBench weighs math-prm as 984 rows against the code subsets' own counts
  assert m["sections"]["Reasoning"] == pytest.approx((984 * 0.5 + 2 * 1.0) / 986)
  assert "Safety" not in m["sections"]                # no Safety subset in the file
  assert m["overall"] == pytest.approx((0.5 + 1.0 + (984 * 0.5 + 2) / 986) / 3)
  plain = section_scores({k: v["accuracy"] for k, v in m["subsets"].items()},
                         {k: v["count"] for k, v in m["subsets"].items()}, REWARDBENCH_SECTIONS)
  assert plain["sections"]["Reasoning"] == pytest.approx(0.75)   # example counts alone


def test_score_pairs_gold_accuracy_drops_gold_ties(tmp_path):
  rows = [dict(r, gold_chosen=g[0], gold_rejected=g[1])
          for r, g in zip(ROWS[:4], [(1, 0), (0, 1), (2, 2), (5, 1)])]
  sets = read_eval_sets({"g": write_jsonl(tmp_path / "g.jsonl", rows)},
                        vocabulary=byte_vocabulary())
  m = score_pairs(sets["g"], chosen=np.array([1.0, 1.0, 1.0, 0.0]),
                  rejected=np.array([0.0, 0.0, 0.0, 1.0]))
  # pair 0: gold agrees; pair 1: gold prefers rejected; pair 2: gold tie (dropped); pair 3: wrong
  assert m["gold_pairs"] == 3 and m["gold_accuracy"] == pytest.approx(1 / 3)
  assert m["accuracy"] == 0.75 and m["margin_mean"] == pytest.approx(0.5)
  assert m["accuracy_se"] == pytest.approx(np.std([1, 1, 1, 0], ddof=1) / 2)


# --- formats --------------------------------------------------------------------------------

def test_parquet_reads_like_jsonl_and_names_the_row(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  want, _ = read_preference_file(write_jsonl(tmp_path / "a.jsonl", ROWS))
  pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
  got, stats = read_preference_file(str(tmp_path / "a.parquet"))
  assert [(p.prompt, p.chosen, p.rejected) for p in got] == [
      (p.prompt, p.chosen, p.rejected) for p in want]
  assert got[2].source.endswith("a.parquet: row 3") and stats.kept == 6
  bad = [dict(r) for r in ROWS]
  bad[3]["chosen"] = " "
  pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
  with pytest.raises(DataError, match=r"bad\.parquet: row 4: chosen: is empty"):
    read_preference_file(str(tmp_path / "bad.parquet"))
  pairs, stats = read_preference_file(str(tmp_path / "bad.parquet"), on_error="skip")
  assert len(pairs) == 5 and stats.skipped == {"empty field": 1}
  (tmp_path / "junk.parquet").write_bytes(b"not parquet")
  with pytest.raises(DataError, match="junk.parquet: cannot be read as parquet"):
    read_preference_file(str(tmp_path / "junk.parquet"))


def test_datasets_save_to_disk_directories(tmp_path):
  datasets = pytest.importorskip("datasets")
  rows = [dict(r, subset="s1" if i % 2 else "s2") for i, r in enumerate(ROWS)]
  datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
  pairs, _ = read_preference_files(str(tmp_path / "ds"))
  assert [p.prompt for p in pairs] == [r["prompt"] for r in ROWS]
  assert [p.subset for p in pairs] == [r["subset"] for r in rows]
  assert expand_paths(str(tmp_path / "ds")) == [str(tmp_path / "ds")]
  datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]),
                        "test": datasets.Dataset.from_list(rows[3:])}).save_to_disk(
                            str(tmp_path / "dd"))
  with pytest.raises(DataError, match=r"DatasetDict with splits .*give one split's directory"):
    read_preference_files(str(tmp_path / "dd"))
  pairs, _ = read_preference_files(str(tmp_path / "dd" / "test"))
  assert [p.prompt for p in pairs] == ["p3", "p4", "p5"]


def test_column_mapping_and_errors_name_the_files_own_column(tmp_path):
  rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
  columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
  pairs, _ = read_preference_file(write_jsonl(tmp_path / "c.jsonl", rows), columns=columns)
  assert (pairs[1].prompt, pairs[1].chosen, pairs[1].rejected) == ("p1", "good 1", "bad 1")
  rows[2] = {"question": "p2", "bad": "x"}
  with pytest.raises(DataError, match=r"c2\.jsonl:3: good: missing field"):
    read_preference_file(write_jsonl(tmp_path / "c2.jsonl", rows), columns=columns)


def test_conversation_rows_in_both_layouts(tmp_path):
  sys_msg = {"role": "system", "content": "Be brief."}
  user = {"role": "user", "content": "Hi?"}
  implicit = {"chosen": [sys_msg, user, {"role": "assistant", "content": "Hello."}],
              "rejected": [sys_msg, user, {"role": "assistant", "content": "Go away."}]}
  explicit = {"prompt": [user], "chosen": [{"role": "assistant", "content": "Hello."}],
              "rejected": [{"role": "assistant", "content": "No."}]}
  pairs, _ = read_preference_file(write_jsonl(tmp_path / "conv.jsonl", [implicit, explicit]))
  assert pairs[0].prompt == "\n\nSystem: Be brief.\n\nHuman: Hi?\n\nAssistant:"
  assert (pairs[0].chosen, pairs[0].rejected) == ("Hello.", "Go away.")
  assert pairs[1].prompt == "\n\nHuman: Hi?\n\nAssistant:" and pairs[1].rejected == "No."
  # what a chat vocabulary renders through the model's template: the same messages
  assert hh_to_messages(pairs[0].prompt) == [sys_msg, user]
  bad_cases = [
      ({"chosen": [user, user], "rejected": implicit["rejected"]},
       r":1: chosen\[1\]\.role: the last message must be the assistant's answer"),
      ({"chosen": implicit["chosen"], "rejected": [user, implicit["rejected"][2]]},
       r":1: rejected: its messages before the last answer differ"),
      ({"chosen": [{"role": "robot", "content": "x"}], "rejected": implicit["rejected"]},
       r":1: chosen\[0\]\.role: must be one of"),
      ({"prompt": [user], "chosen": implicit["chosen"], "rejected": explicit["rejected"]},
       r":1: chosen: with a conversation prompt it must hold the answer alone"),
  ]
  for i, (row, message) in enumerate(bad_cases):
    with pytest.raises(DataError, match=message):
      read_preference_file(write_jsonl(tmp_path / f"bad{i}.jsonl", [row]))


def test_transcripts_round_trip_to_messages():
  msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
          {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
  assert hh_to_messages(to_transcript(msgs)) == msgs


def test_conversation_prompts_render_through_the_chat_template(tmp_path):
  from rm.bpe_vocabulary import pretrained_vocabulary, render_chat
  from rm.tasks import register_preference_task, tokenized_pairs
  vocab = pretrained_vocabulary()
  msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
  row = {"chosen": msgs + [{"role": "assistant", "content": "Hello."}],
         "rejected": msgs + [{"role": "assistant", "content": "No."}]}
  pairs, _ = read_preference_file(write_jsonl(tmp_path / "c.jsonl", [row]))
  tok = tokenized_pairs(register_preference_task("conv_test", {"x": pairs}, vocab), "x")[0]
  want = vocab.encode(render_chat(vocab.chat_template, msgs, add_generation_prompt=True))
  assert tok.prompt.tolist() == list(want)
  assert vocab.decode(tok.chosen) == "Hello."
