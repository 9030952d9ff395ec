"""Data: reading with located errors, chat-template tokenization, truncation counts, batching."""

import json

import numpy as np
import pytest

from meta_rewarding import data


def _jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
  return str(path)


PAIR = {"prompt": "What is 2 + 2?", "chosen": "The answer is 4.", "rejected": "5"}


# ------------------------------------------------------------------------------------------------
# Reading.

def test_load_prompts_from_jsonl_parquet_and_dataset(tmp_path):
  import datasets
  import pyarrow as pa
  import pyarrow.parquet as pq
  rows = [{"prompt": "a", "x": 1}, {"prompt": "b", "x": 2}]
  path = _jsonl(tmp_path / "p.jsonl", rows[:1] + ["", "   "] + rows[1:])  # blank lines are fine
  assert data.load_prompts(path) == ["a", "b"]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
  assert data.load_prompts(str(tmp_path / "p.parquet")) == ["a", "b"]
  assert data.load_prompts(datasets.Dataset.from_list(rows)) == ["a", "b"]
  with open(tmp_path / "arr.json", "w") as f:
    json.dump([{"question": "q1"}, {"question": "q2"}], f)
  assert data.load_prompts(str(tmp_path / "arr.json"), field="question") == ["q1", "q2"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
  path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, "", '{"prompt": "x",,}'])
  with pytest.raises(data.DataError, match=r"bad\.jsonl:3: malformed JSON"):
    data.load_prompts(path)
  path = _jsonl(tmp_path / "list.jsonl", [{"prompt": "ok"}, "[1, 2]"])
  with pytest.raises(data.DataError, match=r"list\.jsonl:2: expected a JSON object, got list"):
    data.load_prompts(path)


def test_missing_or_bad_field_names_file_and_line(tmp_path):
  path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"text": "b"}])
  with pytest.raises(data.DataError, match=r"p\.jsonl:2: missing field 'prompt' .*\['text'\]"):
    data.load_prompts(path)
  path = _jsonl(tmp_path / "q.jsonl", [{"prompt": 3}])
  with pytest.raises(data.DataError, match=r"q\.jsonl:1: field 'prompt' must be a non-empty string"):
    data.load_prompts(path)
  path = _jsonl(tmp_path / "pairs.jsonl", [PAIR, PAIR, {"prompt": "p", "chosen": "c"}])
  with pytest.raises(data.DataError, match=r"pairs\.jsonl:3: missing field 'rejected'"):
    data.load_pairs(path)
  path = _jsonl(tmp_path / "ref.jsonl", [dict(PAIR, ref_chosen_logp=-3.0)])
  with pytest.raises(data.DataError, match=r"ref\.jsonl:1: has 'ref_chosen_logp' but not"):
    data.load_pairs(path)
  path = _jsonl(tmp_path / "nan.jsonl", [PAIR, dict(PAIR, ref_chosen_logp="x", ref_rejected_logp=1)])
  with pytest.raises(data.DataError, match=r"nan\.jsonl:2: field 'ref_chosen_logp' must be a finite"):
    data.load_pairs(path)


def test_parquet_errors_name_the_row(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.Table.from_pylist([PAIR, dict(PAIR, chosen=None)]), tmp_path / "p.parquet")
  with pytest.raises(data.DataError, match=r"p\.parquet row 1: missing field 'chosen'"):
    data.load_pairs(str(tmp_path / "p.parquet"))


def test_missing_files_and_unreachable_hub(tmp_path):
  with pytest.raises(data.DataError, match="no such file"):
    data.load_pairs(str(tmp_path / "nope.jsonl"))
  with pytest.raises(data.DataError, match="is a directory"):
    data.load_pairs(str(tmp_path))
  # Tests run offline (HF_HUB_OFFLINE=1): a hub name fails with a message, not a traceback.
  with pytest.raises(data.DataError, match="could not load dataset 'someone/no-such-dataset'"):
    data.load_prompts("someone/no-such-dataset")


def test_load_pairs_accepts_refs_and_trl_conversational_form(tmp_path):
  conversational = {"prompt": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi?"}],
                    "chosen": [{"role": "assistant", "content": "Hello."}],
                    "rejected": [{"role": "assistant", "content": "Go away."}]}
  path = _jsonl(tmp_path / "pairs.jsonl",
                [dict(PAIR, ref_chosen_logp=-1.5, ref_rejected_logp=-2), conversational])
  pairs = data.load_pairs(path)
  assert pairs[0]["ref_chosen_logp"] == -1.5 and pairs[0]["ref_rejected_logp"] == -2.0
  assert pairs[0]["source"].endswith("pairs.jsonl:1")
  assert pairs[1]["prompt"][0]["role"] == "system" and pairs[1]["chosen"] == "Hello."
  sft = data.load_sft(_jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": "c"}]),
                      response_field="completion")
  assert sft[0]["response"] == "c"


# ------------------------------------------------------------------------------------------------
# Tokenization and truncation.

@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  from tiny_tokenizers import build_llama3_hf
  from meta_rewarding.tokenizer import load_tokenizer
  return load_tokenizer(build_llama3_hf(str(tmp_path_factory.mktemp("tok"))))


def test_tokenize_pairs_uses_the_chat_template(tokenizer):
  pairs = [dict(PAIR, ref_chosen_logp=-1.0, ref_rejected_logp=-2.0, source="f.jsonl:1")]
  examples, report = data.tokenize_pairs(pairs, tokenizer, max_length=256)
  ex = examples[0]
  messages = [{"role": "user", "content": PAIR["prompt"]}]
  assert list(ex["prompt_ids"]) == tokenizer.encode_chat(messages, add_generation_prompt=True)
  full = tokenizer.encode_chat(messages + [{"role": "assistant", "content": PAIR["chosen"]}],
                               add_generation_prompt=False)
  assert list(ex["prompt_ids"]) + list(ex["chosen_ids"]) == full
  assert ex["chosen_ids"][-1] == ex["rejected_ids"][-1] == tokenizer.token_to_id("<|eot_id|>")
  assert ex["prompt_ids"].dtype == np.int32
  assert ex["ref_chosen_logp"] == -1.0 and ex["source"] == "f.jsonl:1"
  assert (report.total, report.kept, report.truncated, report.skipped) == (1, 1, 0, 0)
  with_system, _ = data.tokenize_pairs(pairs, tokenizer, max_length=256, system_prompt="Be brief.")
  assert len(with_system[0]["prompt_ids"]) > len(ex["prompt_ids"])
  sft, _ = data.tokenize_sft([{"prompt": PAIR["prompt"], "response": PAIR["chosen"]}], tokenizer,
                             max_length=256)
  np.testing.assert_array_equal(sft[0]["response_ids"], ex["chosen_ids"])


def _ex(p, c, r, **extra):
  return dict(prompt_ids=np.arange(p), chosen_ids=np.arange(c), rejected_ids=np.arange(r), **extra)


def test_truncation_policies_count_everything():
  examples = [_ex(4, 3, 3), _ex(4, 8, 2, ref_chosen_logp=-1.0, ref_rejected_logp=-2.0),
              _ex(12, 2, 2), _ex(5, 5, 5, source="pairs.jsonl:4")]
  kept, report = data.truncate_examples(examples, max_length=10, policy="skip")
  assert [len(e["prompt_ids"]) for e in kept] == [4, 5]
  assert (report.total, report.kept, report.truncated, report.skipped) == (4, 2, 0, 2)
  assert "2 skipped" in str(report)

  kept, report = data.truncate_examples(examples, max_length=10, policy="truncate_response")
  assert (report.kept, report.truncated, report.skipped, report.ref_logps_dropped) == (3, 1, 1, 1)
  assert [(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in kept] == [(3, 3), (6, 2), (5, 5)]
  assert "ref_chosen_logp" not in kept[1]  # the log-probs were of the whole response
  assert all(data.example_length(e) <= 10 for e in kept)

  with pytest.raises(data.DataError, match=r"pairs\.jsonl:4: 10 tokens .* exceed max_length=9"):
    data.truncate_examples(examples[3:], max_length=9, policy="error")
  with pytest.raises(data.DataError, match="truncation must be one of"):
    data.truncate_examples(examples, max_length=10, policy="drop")
  sft = [dict(prompt_ids=np.arange(3), response_ids=np.arange(9))]
  kept, report = data.truncate_examples(sft, max_length=8, policy="truncate_response")
  assert len(kept[0]["response_ids"]) == 5 and report.truncated == 1


def test_validate_examples():
  with pytest.raises(data.DataError, match="no training examples"):
    data.validate_examples([], kind="dpo")
  with pytest.raises(data.DataError, match=r"example 0: missing \['chosen_ids', 'rejected_ids'\]"):
    data.validate_examples([dict(prompt_ids=np.arange(2), response_ids=np.arange(2))], kind="dpo")
  with pytest.raises(data.DataError, match="token id 9 is outside the model's vocabulary"):
    data.validate_examples([_ex(2, 10, 2)], kind="dpo", vocab_size=9)


# ------------------------------------------------------------------------------------------------
# Order and batches.

def test_epoch_order_is_a_function_of_seed_and_epoch():
  a = data.epoch_order(3, 0, 10)
  assert sorted(a) == list(range(10))
  np.testing.assert_array_equal(a, data.epoch_order(3, 0, 10))
  assert not np.array_equal(a, data.epoch_order(3, 1, 10))
  assert not np.array_equal(a, data.epoch_order(4, 0, 10))


def test_step_indices_cover_each_example_once_per_epoch_and_pad_the_last_step():
  n, g = 10, 4
  assert data.steps_per_epoch(n, g) == 3
  for epoch in range(2):
    rows = [data.step_indices(5, epoch * 3 + k, n, g) for k in range(3)]
    assert all(e == epoch for e, _ in rows)
    flat = np.concatenate([idx for _, idx in rows])
    assert sorted(flat[flat >= 0]) == list(range(n)) and (flat < 0).sum() == 2
    np.testing.assert_array_equal(flat[flat >= 0], data.epoch_order(5, epoch, n))


def test_bucket_length():
  assert data.bucket_length(5, (8, 16), 32) == 8
  assert data.bucket_length(9, (16, 8), 32) == 16
  assert data.bucket_length(17, (8, 16), 32) == 32
  assert data.bucket_length(17, (8, 16, 64), 32) == 32  # buckets past the limit are ignored
  with pytest.raises(data.DataError, match="exceeds the length limit 32"):
    data.bucket_length(33, (8,), 32)


def test_collate_packs_prompt_once_then_chosen_then_rejected():
  examples = [dict(prompt_ids=np.array([1, 2, 3]), chosen_ids=np.array([4, 5]),
                   rejected_ids=np.array([6]), ref_chosen_logp=-1.0, ref_rejected_logp=-2.0),
              dict(prompt_ids=np.array([7]), chosen_ids=np.array([8, 9, 10]),
                   rejected_ids=np.array([11, 12]), ref_chosen_logp=-3.0, ref_rejected_logp=-4.0)]
  b = data.collate(examples, np.array([1, 0, -1, -1]), kind="dpo", num_micro=2,
                   length_buckets=(4, 8), max_length=16, pad_id=99)
  # A=2 microbatches of M=2 rows; rows of 6 tokens -> bucket 8; responses of 5 and 3 -> bucket 8.
  assert b["tokens"].shape == (2, 2, 8) and b["resp_tgt"].shape == (2, 2, 8)
  row = lambda k, r: b[k].reshape(4, -1)[r]
  np.testing.assert_array_equal(row("tokens", 0), [7, 8, 9, 10, 11, 12, 99, 99])
  np.testing.assert_array_equal(row("segment", 0), [0, 1, 1, 1, 2, 2, -1, -1])
  # Both responses continue the prompt: rejected restarts at position 1, after the 1-token prompt.
  np.testing.assert_array_equal(row("positions", 0)[:6], [0, 1, 2, 3, 1, 2])
  # Token 8 is predicted from position 0 (the prompt), 9 from 1, 10 from 2, 11 from 0 again, ...
  np.testing.assert_array_equal(row("resp_src", 0)[:5], [0, 1, 2, 0, 4])
  np.testing.assert_array_equal(row("resp_tgt", 0)[:5], [8, 9, 10, 11, 12])
  np.testing.assert_array_equal(row("resp_seg", 0), [1, 1, 1, 2, 2, 0, 0, 0])
  np.testing.assert_array_equal(row("tokens", 1)[:6], [1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(row("positions", 1)[:6], [0, 1, 2, 3, 4, 3])
  np.testing.assert_array_equal(row("resp_src", 1)[:3], [2, 3, 2])
  assert (row("segment", 2) == -1).all() and not row("resp_seg", 3).any()   # padding rows
  np.testing.assert_array_equal(b["weight"], [[1, 1], [0, 0]])
  np.testing.assert_array_equal(b["ref_chosen"], [[-3, -1], [0, 0]])
  np.testing.assert_array_equal(b["ref_rejected"], [[-4, -2], [0, 0]])
  assert b["num_tokens"] == 6 + 6  # each prompt once


def test_collate_sft_layout():
  examples = [dict(prompt_ids=np.array([1, 2]), response_ids=np.array([3, 4, 5]))]
  b = data.collate(examples, np.array([0, -1]), kind="sft", num_micro=1, length_buckets=(),
                   max_length=6, pad_id=0)
  assert b["tokens"].shape == (1, 2, 6) and "ref_chosen" not in b
  np.testing.assert_array_equal(b["segment"][0, 0], [0, 0, 1, 1, 1, -1])
  np.testing.assert_array_equal(b["resp_src"][0, 0, :3], [1, 2, 3])
  np.testing.assert_array_equal(b["resp_seg"][0, 0], [1, 1, 1, 0, 0, 0])
  assert b["num_tokens"] == 5


def test_fingerprint_tracks_token_ids_only():
  a = [_ex(3, 2, 2)]
  b = [_ex(3, 2, 2, ref_chosen_logp=1.0, ref_rejected_logp=1.0)]
  assert data.fingerprint(a) == data.fingerprint(b)
  assert data.fingerprint(a) != data.fingerprint([_ex(3, 2, 3)])
