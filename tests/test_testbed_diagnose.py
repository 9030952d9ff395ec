"""The clause-by-clause judge diagnosis (testbed/diagnose.py): hand-worked cases, then the seed."""

import collections
import os
import random

import pytest

from meta_rewarding.testbed import diagnose, judging, oracle
from meta_rewarding.testbed import measure, responses, settings
from meta_rewarding.testbed.settings import seed_dir
from meta_rewarding.testbed.tasks import generate_tasks, task_from_instruction

PAIR = task_from_instruction("Pick two of 7, 2, 9, 4, 6 that add up to 13.")


@pytest.mark.parametrize("fact, kind", [
    ("13-9=4, 4-4=0", "sum vs target"), ("9-4=5, 6-5=1", "sum vs target"),
    ("3-9=-6, 2--6=8", "sum vs target"), ("1+0+0=1, target 9", "sum vs target"),
    ("9 in 7, 2, 9: 9-9=0", "membership"), ("t in q, b, f, a, t: 20-20=0", "membership"),
    ("5 in 7, 2, 9, 4, 6: 5-6=-1", "membership"),
    ("45>=30: 4-3=1", "at least low"), ("35<=32: 3-3=0, 2-5=-3", "at most high"), ("9>=30", "at least low"),
    ("t after m: 20>=14: 2-1=1", "letter order"), ("n after m: 14>=14: 1-1=0, 4-4=0", "letter order"),
    ("3 used twice", "distinct"), ("3 used once", "distinct")])
def test_clause_kind_hand_worked(fact, kind):
  assert diagnose.clause_kind(fact) == kind


def test_clause_kind_of_every_true_clause_and_junk_raises():
  rng = random.Random(0)
  for task in generate_tasks(1, 60):
    answer = responses.random_answer(task, rng)
    for clause in judging.true_check(task, f"The answer is {answer}.").clauses:
      diagnose.clause_kind(diagnose.split_clause(clause.text)[0])   # never raises
  with pytest.raises(ValueError):
    diagnose.clause_kind("So the response is right")


def test_split_and_written_clauses():
  assert diagnose.split_clause("45>=30: 4-3=1: ok") == ("45>=30: 4-3=1", "ok")
  assert diagnose.split_clause("9 in 7, 2: no") == ("9 in 7, 2", "no")
  assert diagnose.split_clause("9 in 7, 2") == ("9 in 7, 2", None)
  assert diagnose.written_clauses(
      "Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok. So the response is right. Score: 5") == [
          "9-4=5, 5-5=0: ok", "45>=30: 4-3=1: ok"]
  assert diagnose.written_clauses("Score: 5") is None


def test_random_answers_are_well_formed_and_fail_clauses_often():
  rng = random.Random(1)
  marks = collections.Counter()
  for task in generate_tasks(2, 300):
    answer = responses.random_answer(task, rng)
    assert oracle.normalize_answer(task, answer) is not None, (task, answer)
    for clause in judging.true_check(task, f"The answer is {answer}.").clauses:
      fact, mark = diagnose.split_clause(clause.text)
      marks[(diagnose.clause_kind(fact), mark)] += 1
  # Every clause kind but "distinct" fails at least 10% of the time on random answers.
  for kind in ("sum vs target", "membership", "at least low", "at most high", "letter order"):
    assert marks[(kind, "no")] >= 0.1 * (marks[(kind, "no")] + marks[(kind, "ok")]), marks


def test_cases_cover_the_three_response_kinds_with_the_oracle_s_verdicts():
  tasks = generate_tasks(3, 30)
  cases = diagnose.cases(tasks, seed=0)
  assert cases == diagnose.cases(tasks, seed=0)                 # deterministic
  assert {c.kind for c in cases} == set(diagnose.RESPONSE_KINDS)
  for c in cases:
    if c.kind == "right":
      assert oracle.is_correct(c.task, c.response) and c.check.verdict == "right"
    if c.kind == "plausible":
      assert not oracle.is_correct(c.task, c.response) and c.check.verdict == "wrong"


def test_compare_written_separates_a_wrong_fact_from_a_wrong_mark():
  response = "The answer is 7 and 2."   # true: 13-7=6, 2-6=-4: no; 7 in 7: ...: ok; 2 in 7, 2: ...: ok
  case = diagnose.Case(PAIR, "plausible", response, judging.true_check(PAIR, response))
  written = ("Check: 13-7=6, 2-6=-4: ok; 7 in 7: 7-7=0: ok; 2 in 7, 9, 4, 6: 2-6=-4: no. "
             "So the response is right. Score: 5")
  rows = diagnose.compare_written(case, written)
  assert [r["clause"] for r in rows] == ["sum vs target", "membership", "membership"]
  assert [r["true_mark"] for r in rows] == ["no", "ok", "ok"]
  assert [r["fact_right"] for r in rows] == [True, True, False]
  assert [r["mark_right"] for r in rows] == [False, True, None]   # no mark judged on a wrong fact
  # A judgment with no check: every fact missing.
  assert all(not r["fact_right"] for r in diagnose.compare_written(case, "Score: 1"))


def test_markdown_table_has_one_row_per_group():
  table = [{"clause": "membership", "true_mark": "no", "response": "random", "n": 4,
            "forced_mark_accuracy": 0.25, "greedy_fact_accuracy": 0.5,
            "greedy_mark_accuracy_given_fact": None}]
  text = diagnose.markdown(table)
  assert text.splitlines()[2] == "| membership | no | random | 4 | 25% | 50% | - |"


@pytest.mark.skipif(not os.path.exists(os.path.join(seed_dir(), "model.safetensors")),
                    reason="the shipped seed is not there")
def test_diagnosis_of_the_shipped_seed():
  from meta_rewarding import checkpoints
  from meta_rewarding.tokenizer import load_tokenizer
  config, params = checkpoints.load_hf(seed_dir(), dtype="float32")
  tokenizer = load_tokenizer(seed_dir(), chat_format=settings.CHAT_FORMAT)
  tasks = measure.eval_task_list(6)
  table = diagnose.diagnose(config, params, tokenizer, tasks, batch_size=8)
  n_clauses = sum(len(c.check.clauses) for c in diagnose.cases(tasks))
  assert sum(r["n"] for r in table) == n_clauses
  for r in table:
    assert 0 <= r["forced_mark_accuracy"] <= 1 and 0 <= r["greedy_fact_accuracy"] <= 1
  # The seed judges right answers' clauses "ok", given the true fact (what the full table shows).
  right = [r for r in table if r["response"] == "right"]
  assert right and sum(r["forced_mark_accuracy"] * r["n"] for r in right) >= 0.9 * sum(
      r["n"] for r in right)
