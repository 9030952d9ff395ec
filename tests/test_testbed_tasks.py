"""Tests for the testbed's task generator (tasks.py) and oracle (oracle.py). Pure Python, fast."""

import math

import pytest

from meta_rewarding.testbed import oracle
from meta_rewarding.testbed.oracle import (actor_accuracy, better_judgment, extract_answer,
                                           is_correct, judge_accuracy, judgment_error,
                                           meta_judge_accuracy, oracle_score)
from meta_rewarding.testbed.tasks import (FAMILIES, capacity, Task, generate_tasks, reference_response,
                                          task_from_instruction)

ADD = task_from_instruction("What is 47 + 385?")
REVERSE = task_from_instruction("Reverse the letters of 'plant'.")
SORT = task_from_instruction("Sort in ascending order: 5, 2, 8, 1.")
COUNT = task_from_instruction("How many times does 'a' appear in 'banana'?")
UPPER = task_from_instruction("Write 'plant' in capital letters.")
REPLACE = task_from_instruction("Replace each 'a' with 'o' in 'banana'.")


# --------------------------------------------------------------------------------------------
# Tasks.

def test_hand_built_tasks():
    assert ADD == Task("add", "What is 47 + 385?", "432", {"a": 47, "b": 385})
    assert REVERSE.answer == "tnalp" and REVERSE.family == "reverse"
    assert SORT.answer == "1, 2, 5, 8" and SORT.params["numbers"] == (5, 2, 8, 1)
    assert COUNT.answer == "3" and COUNT.params == {"letter": "a", "word": "banana"}
    assert UPPER.answer == "PLANT" and UPPER.family == "edit" and UPPER.params["op"] == "upper"
    assert REPLACE.answer == "bonono" and REPLACE.params["op"] == "replace"
    assert reference_response(ADD) == "The answer is 432."
    with pytest.raises(TypeError):
        ADD.params["a"] = 1  # read-only
    assert len({ADD, task_from_instruction(ADD.instruction)}) == 1  # hashable, equal


def test_generator_is_deterministic_balanced_unique_and_short():
    a = generate_tasks(seed=3, n=500)
    assert a == generate_tasks(seed=3, n=500)
    assert a != generate_tasks(seed=4, n=500)
    assert len({t.instruction for t in a}) == 500
    assert {f: sum(t.family == f for t in a) for f in FAMILIES} == {f: 100 for f in FAMILIES}
    assert max(len(t.instruction) for t in a) <= 60
    assert max(len(t.answer) for t in a) <= 20
    # Every family varies its answers (e.g. count is not almost always 0).
    assert len({t.answer for t in a if t.family == "count"}) == 4
    assert {t.params["op"] for t in a if t.family == "edit"} == {"upper", "replace"}


def test_generator_families_and_errors():
    assert {t.family for t in generate_tasks(0, 7, families=("sort", "add"))} == {"sort", "add"}
    assert generate_tasks(0, 0) == []
    assert generate_tasks(0, 5) == generate_tasks(0, 5, families=list(FAMILIES))
    with pytest.raises(ValueError, match="only 11000 distinct"):
        generate_tasks(0, 11001, families=("sort",))
    # The capacity is exact: a family can be drawn out completely, and not one task further.
    every_sum = generate_tasks(0, capacity("add"), families=("add",))
    assert len({t.instruction for t in every_sum}) == capacity("add") == 90 * 9
    with pytest.raises(ValueError, match="only 810 distinct"):
        generate_tasks(0, capacity("add") + 1, families=("add",))
    with pytest.raises(ValueError, match="unknown task family"):
        generate_tasks(0, 3, families=("add", "divide"))
    with pytest.raises(ValueError, match="must not repeat"):
        generate_tasks(0, 3, families=("add", "add"))


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
    "What is 047 + 5?",          # non-canonical number
    "What is 4 + 5 ?",
    "what is 4 + 5?",
    "Reverse the letters of 'Plant'.",
    "Reverse the letters of plant.",
    "Sort in ascending order: 5,2,8.",
    "How many times does 'ab' appear in 'banana'?",
    "Tell me a joke.",
    "",
])
def test_task_from_instruction_rejects_other_text(text):
    assert task_from_instruction(text) is None


# --------------------------------------------------------------------------------------------
# Oracle on hand-worked cases: (task, response, oracle score).

CASES = [
    # add
    (ADD, "The answer is 432.", 5), (ADD, "432", 5), (ADD, "  432  \n", 5),
    (ADD, "the ANSWER is: 432", 5),
    (ADD, "**The answer is 432.**", 5), (ADD, "The answer is 432. Hope this helps!", 5),
    (ADD, "I added them.\nThe answer is 432.", 5),
    (ADD, "The answer is 1. No wait, the answer is 432.", 5),
    (ADD, "0432", 5),
    (ADD, "The answer is 433.", 1), (ADD, "-432", 1),
    (ADD, "The answer is 432, I think.", 0), (ADD, "four hundred", 0), (ADD, "The answer is", 0),
    (ADD, "", 0), (ADD, None, 0), (ADD, "43 2", 0), (ADD, "432abc", 0),
    # reverse (case-insensitive)
    (REVERSE, "The answer is tnalp.", 5), (REVERSE, "TNALP", 5),
    (REVERSE, "The answer is 'tnalp'.", 5),
    (REVERSE, "The answer is plant.", 1), (REVERSE, "tnal", 1),
    (REVERSE, "t n a l p", 0), (REVERSE, "The answer is tnalp7.", 0),
    # sort
    (SORT, "The answer is 1, 2, 5, 8.", 5), (SORT, "1 2 5 8", 5), (SORT, "[1,2,5,8]", 5),
    (SORT, "The answer is (1, 2, 5, 8).", 5), (SORT, " 1,  2 ,5, 8 ", 5),
    (SORT, "The answer is 8, 5, 2, 1.", 1), (SORT, "1, 2, 5", 1),
    (SORT, "1, 2, and 5, 8", 0), (SORT, "one, two", 0),
    # count
    (COUNT, "The answer is 3.", 5), (COUNT, "3", 5), (COUNT, "The answer is: 3!", 5),
    (COUNT, "The answer is 2.", 1),
    (COUNT, "three", 0), (COUNT, "The answer is 3 times.", 0),
    # edit / upper (case-sensitive)
    (UPPER, "The answer is PLANT.", 5), (UPPER, "PLANT", 5), (UPPER, "`PLANT`", 5),
    (UPPER, "The answer is plant.", 1), (UPPER, "Plant", 1),
    (UPPER, "P L A N T", 0),
    # edit / replace (case-insensitive)
    (REPLACE, "The answer is bonono.", 5), (REPLACE, "BONONO", 5),
    (REPLACE, "The answer is banana.", 1),
    (REPLACE, "bon-ono", 0),
]


@pytest.mark.parametrize("task, response, expected", CASES)
def test_oracle_hand_worked(task, response, expected):
    assert oracle_score(task, response) == expected
    assert is_correct(task, response) == (expected == 5)


def test_oracle_accepts_reference_responses_of_generated_tasks():
    for task in generate_tasks(seed=5, n=200):
        assert oracle.normalize_answer(task, task.answer) == task.answer
        assert is_correct(task, reference_response(task))
        assert is_correct(task, task.answer)


def test_extract_answer_rules():
    assert extract_answer("The answer is 432.") == "432"
    assert extract_answer("The answer is 1, 2,   5, 8.") == "1, 2, 5, 8"
    assert extract_answer("The answer is\n432") == "432"
    assert extract_answer("3.5") == "3.5"  # a dot inside a token is no sentence end
    assert extract_answer("432\ngarbage after the first line") == "432"
    assert extract_answer("Let me think.\n432") == "Let me think"
    assert extract_answer("   ") is None and extract_answer(None) is None
    assert extract_answer("The answer is .") is None


def test_judgment_error():
    assert judgment_error(ADD, "432", 4.5) == 0.5
    assert judgment_error(ADD, "431", 4.5) == 3.5
    assert judgment_error(ADD, "???", 0) == 0
    with pytest.raises(ValueError):
        judgment_error(ADD, "432", None)


# --------------------------------------------------------------------------------------------
# better_judgment truth table: (response, score A, score B, winner). Oracle scores: "432" -> 5
# (correct), "431" -> 1 (wrong), "x" -> 0 (garbled).

TRUTH_TABLE = [
    # exactly one agrees: it wins, however far its score is from the oracle's
    ("432", 3, 2.5, "A"), ("432", 1, 3, "B"), ("431", 2.5, 3, "A"), ("431", 5, 0, "B"),
    ("x", 4, 2, "B"),
    # both agree: the smaller |score - oracle| wins
    ("432", 4, 5, "B"), ("432", 4.5, 3, "A"), ("431", 0, 1, "B"), ("431", 2, 0, None),
    ("x", 0, 2, "A"), ("x", 1, 1, None),
    # neither agrees: the smaller |score - oracle| wins
    ("432", 2, 0, "A"), ("432", 1, 1, None), ("431", 3, 5, "A"), ("x", 5, 3, "B"),
    # floating-point ties are ties
    ("431", 0.9, 1.1, None),
    # unparseable judgments
    ("432", None, 0, "B"), ("432", 5, None, "A"), ("432", None, None, None),
]


@pytest.mark.parametrize("response, a, b, winner", TRUTH_TABLE)
def test_better_judgment_truth_table(response, a, b, winner):
    assert better_judgment(ADD, response, a, b) == winner
    swapped = {"A": "B", "B": "A", None: None}[winner]
    assert better_judgment(ADD, response, b, a) == swapped


# --------------------------------------------------------------------------------------------
# Aggregates.

def test_actor_accuracy():
    assert actor_accuracy([ADD, SORT, COUNT, UPPER], ["432", "1 2 5 8", "2", None]) == 0.5
    assert math.isnan(actor_accuracy([], []))
    with pytest.raises(ValueError, match="equal lengths"):
        actor_accuracy([ADD], [])


def test_judge_accuracy():
    tasks_ = [ADD, ADD, ADD, ADD, SORT]
    responses = ["432", "432", "431", "431", "x"]
    scores = [5, 2, 1, 4, None]  # agree, disagree, agree, disagree, invalid (excluded)
    assert judge_accuracy(tasks_, responses, scores) == 0.5
    assert math.isnan(judge_accuracy([ADD], ["432"], [None]))


def test_meta_judge_accuracy():
    tasks_ = [ADD] * 5
    responses = ["432", "432", "431", "432", "431"]
    score_pairs = [(5, 1), (1, 5), (2, 0), (4, 4), (1, 5)]
    # oracle prefers:  A       B       None    None    A
    winners = ["A", "A", "B", "A", None]
    # counted battles: 1 (right) and 2 (wrong); 3-4 have no oracle preference, 5 no winner.
    assert meta_judge_accuracy(tasks_, responses, score_pairs, winners) == 0.5
    assert math.isnan(meta_judge_accuracy(tasks_[2:4], responses[2:4], score_pairs[2:4],
                                          winners[2:4]))
