"""The pipeline's oracle hook on hand-made stage records; the preference-pair writer."""

import json
import subprocess
import sys

import pytest

from meta_rewarding import judge_eval
from meta_rewarding.testbed import evaluate, oracle
from meta_rewarding.testbed.evaluate import oracle_metrics
from meta_rewarding.testbed.tasks import split_of, task_from_instruction


def test_oracle_metrics_count_samples_judgments_and_battles():
  q = "Write a number from 50 to 59 whose digits add up to 10."  # 55 only
  records = {
      "actor": [{"id": 0, "prompt": q, "duplicates_dropped": 2, "responses": [
          {"text": "The answer is 55.", "samples": 3},   # sampled 3 times, kept once
          {"text": "The answer is 54.", "samples": 1}]},
          {"id": 1, "prompt": "not a testbed task", "duplicates_dropped": 0,
           "responses": [{"text": "x", "samples": 1}]}],
      "judge": [{"id": 0, "response_index": 0, "judgments": [{"score": 5.0}, {"score": 1.0}]},
                {"id": 0, "response_index": 1, "judgments": [{"score": 1.0}, {"score": None}]}],
      "meta_judge": [{"id": 0, "response": "The answer is 55.", "scores": [5.0, 1.0],
                      "battles": [{"a": 0, "b": 1, "winner": "A"},
                                  {"a": 1, "b": 0, "winner": "A"}]}],
      "actor_pairs": [{"id": 0, "chosen": "The answer is 55.", "rejected": "The answer is 54."}],
  }
  m = oracle_metrics(records)
  assert m["oracle/unknown_prompts"] == 1
  assert m["oracle/actor_accuracy"] == pytest.approx(3 / 4)  # per sample, not per kept text
  assert m["oracle/judge_accuracy"] == pytest.approx(2 / 3)  # the unparsed judgment left out
  assert m["oracle/meta_judge_accuracy"] == pytest.approx(1 / 2)
  assert m["oracle/actor_pair_chosen_correct"] == 1.0
  assert m["oracle/actor_pair_rejected_correct"] == 0.0
  # Records written before "samples" existed count each kept text once.
  for r in records["actor"][0]["responses"]:
    del r["samples"]
  assert oracle_metrics(records)["oracle/actor_accuracy"] == pytest.approx(1 / 2)


def test_the_writer_writes_rewardbench_pairs_that_judge_eval_reads(tmp_path):
  out = tmp_path / "pairs.jsonl"
  run = subprocess.run([sys.executable, "-m", "meta_rewarding.testbed.evaluate",
                        f"--pairs_out={out}", "--n=9"], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert "wrote 9 pairs" in run.stdout and "pair_sum 3" in run.stdout
  written = [json.loads(line) for line in out.read_text().splitlines()]
  assert written == evaluate.preference_pairs(9)
  for p in written:
    task = task_from_instruction(p["prompt"])
    assert split_of(p["prompt"]) == "eval" and p["subset"] == task.family
    assert oracle.is_correct(task, p["chosen"]) and not oracle.is_correct(task, p["rejected"])
  assert len(judge_eval.load_preference_pairs(str(out))) == 9
  bad = subprocess.run([sys.executable, "-m", "meta_rewarding.testbed.evaluate",
                        f"--pairs_out={out}", "--n=0"], capture_output=True, text=True)
  assert bad.returncode != 0 and "--n=0" in bad.stderr + bad.stdout
  assert "Traceback" not in bad.stderr
