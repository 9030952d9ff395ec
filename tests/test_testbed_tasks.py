"""Tests for the testbed's task generator (tasks.py) and oracle (oracle.py). Pure Python, fast."""

import math

import ml_collections
import pytest

from meta_rewarding.testbed import oracle
from meta_rewarding.testbed.oracle import (actor_accuracy, better_judgment, extract_answer,
                                           is_correct, judge_accuracy, judgment_error,
                                           meta_judge_accuracy, oracle_score)
from meta_rewarding.testbed.tasks import (FAMILIES, SPLITS, Task, capacity, generate_tasks,
                                          reference_response, split_of, task_from_instruction,
                                          valid_answers)

PAIR = task_from_instruction("Pick two of 7, 2, 9, 4, 6 that add up to 13.")
DIGITS = task_from_instruction("Write a number from 30 to 59 whose digits add up to 9.")
LETTER = task_from_instruction("Write a letter from q, b, f, a, t that comes after m.")


# --------------------------------------------------------------------------------------------
# Tasks.

def test_hand_built_tasks():
    assert PAIR == Task("pair_sum", "Pick two of 7, 2, 9, 4, 6 that add up to 13.", "7 and 6",
                        {"numbers": (7, 2, 9, 4, 6), "target": 13})
    assert valid_answers(PAIR) == ["7 and 6", "9 and 4"]
    assert DIGITS.answer == "36" and DIGITS.params == {"low": 30, "high": 59, "target": 9}
    assert valid_answers(DIGITS) == ["36", "45", "54"]
    assert LETTER.answer == "q" and LETTER.params == {"letters": "qbfat", "pivot": "m"}
    assert valid_answers(LETTER) == ["q", "t"]
    assert reference_response(PAIR) == "The answer is 7 and 6."
    with pytest.raises(TypeError):
        PAIR.params["target"] = 1  # read-only
    assert len({PAIR, task_from_instruction(PAIR.instruction)}) == 1  # hashable, equal


def test_generator_is_deterministic_balanced_unique_and_short():
    a = generate_tasks(seed=3, n=600)
    assert a == generate_tasks(seed=3, n=600)
    assert a != generate_tasks(seed=4, n=600)
    assert len({t.instruction for t in a}) == 600
    assert {f: sum(t.family == f for t in a) for f in FAMILIES} == {f: 200 for f in FAMILIES}
    assert max(len(t.instruction) for t in a) <= 60
    assert max(len(t.answer) for t in a) <= 8
    # Finding an answer is a search: most candidates are wrong, and tasks vary in how many
    # answers are right (letter_after: 1-2 of 4-5 letters; pair_sum: usually 1-2 of 6-10 pairs).
    assert {len(valid_answers(t)) for t in a if t.family == "letter_after"} == {1, 2}
    assert {len(t.params["letters"]) for t in a if t.family == "letter_after"} == {4, 5}
    assert max(len(valid_answers(t)) for t in a if t.family == "pair_sum") >= 2
    assert all(t.params["pivot"] not in t.params["letters"] for t in a
               if t.family == "letter_after")


def test_generator_families_and_errors():
    assert {t.family for t in generate_tasks(0, 7, families=("digit_sum", "pair_sum"))} == {
        "digit_sum", "pair_sum"}
    assert generate_tasks(0, 0) == []
    assert generate_tasks(0, 5) == generate_tasks(0, 5, families=list(FAMILIES))
    n = capacity("digit_sum", "eval")
    with pytest.raises(ValueError, match=f"only {n} distinct"):
        generate_tasks(0, n + 1, families=("digit_sum",), split="eval")
    # The capacity is exact: a split of a family can be drawn out completely.
    every = generate_tasks(0, n, families=("digit_sum",), split="eval")
    assert len({t.instruction for t in every}) == n
    with pytest.raises(ValueError, match="unknown task family"):
        generate_tasks(0, 3, families=("pair_sum", "divide"))
    with pytest.raises(ValueError, match="must not repeat"):
        generate_tasks(0, 3, families=("pair_sum", "pair_sum"))
    with pytest.raises(ValueError, match="unknown split"):
        generate_tasks(0, 3, split="train")


def test_capacities_add_up_over_splits():
    for family in ("pair_sum", "digit_sum"):  # enumerated exactly
        assert sum(capacity(family, s) for s in SPLITS) == capacity(family)
    # letter_after by formula: 26 pivots x sets of 4-5 letters with 1-2 after the pivot x orders.
    assert capacity("letter_after") > 10**7
    assert sum(capacity("letter_after", s) for s in SPLITS) <= capacity("letter_after")


def test_splits_are_disjoint_by_construction():
    """The seed's SFT tasks, every pool the configs can ask for and the evaluation set never share
    an instruction: each instruction's split is a hash of its text, and each is drawn from one."""
    from meta_rewarding import run as run_lib
    from meta_rewarding.testbed import measure, seed
    evaluation = {t.instruction for t in measure.eval_task_list(400)}
    assert all(split_of(x) == "eval" for x in evaluation)
    sft = {d.instruction for kind in ("actor", "judge", "meta")
           for d in seed.demonstrations(0, kind, 1500)}
    assert all(split_of(x) == "sft" for x in sft)
    largest = max(_testbed_pool_sizes())
    for config_seed in (0, 1, 9):
        config = ml_collections.ConfigDict({"seed": config_seed, "data": {
            "prompts": f"testbed:{largest}", "field": "prompt"}})
        pool = run_lib.load_pool(config)
        assert len(pool) == len(set(pool)) == largest
        assert all(split_of(x) == "pool" for x in pool)
        assert not set(pool) & evaluation and not set(pool) & sft
    assert not evaluation & sft


def _testbed_pool_sizes():
    """The `testbed:<n>` pool sizes of every config file and variant (tests/test_configs.py
    loads them all; here only their prompt sources matter)."""
    import configs
    sizes = []
    for name in configs.NAMES:
        for variant in getattr(configs.module(name), "VARIANTS", ("",)):
            config = configs.load(name, variant)
            source = config.get("data", {}).get("prompts", "") if "data" in config else ""
            if isinstance(source, str) and source.startswith("testbed:"):
                sizes.append(int(source.split(":", 1)[1]))
    assert sizes, "no config uses the testbed pool"
    return sizes


def test_generator_does_not_touch_global_random_state():
    import random
    random.seed(123)
    before = random.random()
    random.seed(123)
    generate_tasks(0, 20)
    assert random.random() == before


def test_task_from_instruction_round_trip_every_family():
    generated = generate_tasks(seed=11, n=300)
    assert {t.family for t in generated} == set(FAMILIES)
    for task in generated:
        assert task_from_instruction(task.instruction) == task
        assert task_from_instruction(f"  {task.instruction}\n") == task


@pytest.mark.parametrize("text", [
    "Pick two of 7, 2, 9 that add up to 30.",              # no pair adds up to 30
    "Pick two of 7, 7, 9 that add up to 16.",              # repeated entry
    "Pick two of 7,2,9 that add up to 9.",                 # non-canonical spacing
    "Write a number from 030 to 59 whose digits add up to 9.",   # leading zero
    "Write a number from 30 to 39 whose digits add up to 20.",   # nothing in range
    "Write a number from 59 to 30 whose digits add up to 9.",    # empty range
    "Write a letter from q, b, f, a, t that comes after z.",   # no letter after z
    "Write a letter from q, b, f, a, t that comes after q.",   # the pivot is listed
    "Write a letter from Q, B, F, A, T that comes after m.",
    "Tell me a joke.",
    "",
])
def test_task_from_instruction_rejects_other_text(text):
    assert task_from_instruction(text) is None


# --------------------------------------------------------------------------------------------
# Oracle on hand-worked cases: (task, response, oracle score).

CASES = [
    # pair_sum: 7, 2, 9, 4, 6 -> 13 (7+6, 9+4)
    (PAIR, "The answer is 7 and 6.", 5), (PAIR, "6 and 7", 5), (PAIR, "The answer is 9, 4.", 5),
    (PAIR, "4+9", 5), (PAIR, "**The answer is 4 & 9.**", 5), (PAIR, "9 4", 5),
    (PAIR, "The answer is 7 and 2.", 1),      # listed, but 9 != 13
    (PAIR, "The answer is 5 and 8.", 1),      # 13, but neither is listed
    (PAIR, "The answer is 7 and 6 and 2.", 0), (PAIR, "The answer is 13.", 0),
    (PAIR, "The answer is 7 and 6 or 9 and 4.", 0), (PAIR, "seven and six", 0),
    (PAIR, "", 0), (PAIR, None, 0),
    # digit_sum: 30-59, digits add up to 9 (36, 45, 54)
    (DIGITS, "The answer is 45.", 5), (DIGITS, "36", 5), (DIGITS, "the ANSWER is: 54", 5),
    (DIGITS, "The answer is 045.", 5), (DIGITS, "The answer is 54. Hope this helps!", 5),
    (DIGITS, "The answer is 46.", 1),         # in range, digits add up to 10
    (DIGITS, "The answer is 63.", 1),         # digits add up to 9, out of range
    (DIGITS, "The answer is 27.", 1), (DIGITS, "-45", 0),
    (DIGITS, "The answer is 45 or 54.", 0), (DIGITS, "forty-five", 0),
    # letter_after: 'qbfat' after 'm' (q, t)
    (LETTER, "The answer is t.", 5), (LETTER, "Q", 5), (LETTER, "The answer is 'q'.", 5),
    (LETTER, "The answer is b.", 1),          # listed, before m
    (LETTER, "The answer is z.", 1),          # after m, not listed
    (LETTER, "The answer is m.", 1),          # the pivot itself
    (LETTER, "The answer is qt.", 0), (LETTER, "The answer is t maybe.", 0),
]


@pytest.mark.parametrize("task, response, expected", CASES)
def test_oracle_hand_worked(task, response, expected):
    assert oracle_score(task, response) == expected
    assert is_correct(task, response) == (expected == 5)


def test_oracle_accepts_every_valid_answer_of_generated_tasks():
    for task in generate_tasks(seed=5, n=300):
        assert oracle.normalize_answer(task, task.answer) == task.answer
        assert is_correct(task, reference_response(task))
        for answer in valid_answers(task):
            assert is_correct(task, answer)


def test_extract_answer_rules():
    assert extract_answer("The answer is 432.") == "432"
    assert extract_answer("The answer is 4,   9.") == "4, 9"
    assert extract_answer("The answer is\n432") == "432"
    assert extract_answer("3.5") == "3.5"  # a dot inside a token is no sentence end
    assert extract_answer("432\ngarbage after the first line") == "432"
    assert extract_answer("Let me think.\n432") == "Let me think"
    assert extract_answer("   ") is None and extract_answer(None) is None
    assert extract_answer("The answer is .") is None


def test_judgment_error():
    assert judgment_error(DIGITS, "45", 4.5) == 0.5
    assert judgment_error(DIGITS, "46", 4.5) == 3.5
    assert judgment_error(DIGITS, "???", 0) == 0
    with pytest.raises(ValueError):
        judgment_error(DIGITS, "45", None)


# --------------------------------------------------------------------------------------------
# better_judgment truth table: (response, score A, score B, winner), on DIGITS. Oracle scores:
# "45" -> 5 (correct), "46" -> 1 (wrong), "x" -> 0 (garbled).

TRUTH_TABLE = [
    # exactly one agrees: it wins, however far its score is from the oracle's
    ("45", 3, 2.5, "A"), ("45", 1, 3, "B"), ("46", 2.5, 3, "A"), ("46", 5, 0, "B"),
    ("x", 4, 2, "B"),
    # both agree: the smaller |score - oracle| wins
    ("45", 4, 5, "B"), ("45", 4.5, 3, "A"), ("46", 0, 1, "B"), ("46", 2, 0, None),
    ("x", 0, 2, "A"), ("x", 1, 1, None),
    # neither agrees: the smaller |score - oracle| wins
    ("45", 2, 0, "A"), ("45", 1, 1, None), ("46", 3, 5, "A"), ("x", 5, 3, "B"),
    # floating-point ties are ties
    ("46", 0.9, 1.1, None),
    # unparseable judgments
    ("45", None, 0, "B"), ("45", 5, None, "A"), ("45", None, None, None),
]


@pytest.mark.parametrize("response, a, b, winner", TRUTH_TABLE)
def test_better_judgment_truth_table(response, a, b, winner):
    assert better_judgment(DIGITS, response, a, b) == winner
    swapped = {"A": "B", "B": "A", None: None}[winner]
    assert better_judgment(DIGITS, response, b, a) == swapped


# --------------------------------------------------------------------------------------------
# Aggregates.

def test_actor_accuracy():
    assert actor_accuracy([PAIR, DIGITS, LETTER, PAIR], ["9 and 4", "45", "b", None]) == 0.5
    assert math.isnan(actor_accuracy([], []))
    with pytest.raises(ValueError, match="equal lengths"):
        actor_accuracy([PAIR], [])


def test_judge_accuracy():
    tasks_ = [DIGITS, DIGITS, DIGITS, DIGITS, PAIR]
    responses = ["45", "45", "46", "46", "x"]
    scores = [5, 2, 1, 4, None]  # agree, disagree, agree, disagree, invalid (excluded)
    assert judge_accuracy(tasks_, responses, scores) == 0.5
    assert math.isnan(judge_accuracy([DIGITS], ["45"], [None]))


def test_meta_judge_accuracy():
    tasks_ = [DIGITS] * 5
    responses = ["45", "45", "46", "45", "46"]
    score_pairs = [(5, 1), (1, 5), (2, 0), (4, 4), (1, 5)]
    # oracle prefers:  A       B       None    None    A
    winners = ["A", "A", "B", "A", None]
    # counted battles: 1 (right) and 2 (wrong); 3-4 have no oracle preference, 5 no winner.
    assert meta_judge_accuracy(tasks_, responses, score_pairs, winners) == 0.5
    assert math.isnan(meta_judge_accuracy(tasks_[2:4], responses[2:4], score_pairs[2:4],
                                          winners[2:4]))


def test_modified_tasks_have_an_answer_right_for_them_and_wrong_for_the_original():
  import random
  from meta_rewarding.testbed.tasks import modified_task
  # Hand-worked: 7, 2, 9, 4, 6 with target 13 -> another pair sum of the list.
  new, answer = modified_task(PAIR, random.Random(0))
  assert new.family == "pair_sum" and new.params["numbers"] == PAIR.params["numbers"]
  assert new.params["target"] != 13 and sum(map(int, answer.split(" and "))) == new.params["target"]
  # q, b, f, a, t after m -> an earlier pivot with f (the only listed letter between) after it.
  new, answer = modified_task(LETTER, random.Random(0))
  assert answer == "f" and new.params["pivot"] < "f" and new.params["pivot"] not in "qbfat"
  rng = random.Random(1)
  for task in generate_tasks(2, 300):
    new, answer = modified_task(task, rng)
    response = f"The answer is {answer}."
    assert new.family == task.family and new.instruction != task.instruction
    assert task_from_instruction(new.instruction) == new
    assert oracle.is_correct(new, response) and not oracle.is_correct(task, response)
