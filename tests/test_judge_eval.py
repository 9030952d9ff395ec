"""judge_eval: the pairwise verdict parser, pair scores in both orders or one random order (ties
0.5), RewardBench's leaderboard weighting, bad input, resume keyed by the inputs, and the command
on a tiny saved checkpoint. The command's error lines: test_judge_eval_cli.py."""

import json

import pytest

from meta_rewarding import artifacts, judge_eval, prompts
from meta_rewarding.judge_eval import (JudgeEvalError, pairwise_pair_score, pointwise_pair_score,
                                       section_scores)


@pytest.mark.parametrize("text,verdict", [
    ("Assistant A is more precise. [[A]]", "A"),
    ("[[B]]", "B"),
    ("My final verdict: [[B]]. (Not [A] or A.)", "B"),
    ("A is better than B. [[A]] ... on reflection [[B]]", None),  # both tags: no verdict
    ("Assistant A is better.", None),                             # no tag
    ("It is a tie: [[C]]", None),
    ("[A] [[a]] [B]", None),
])
def test_pairwise_verdict_parser(text, verdict):
  assert prompts.parse_pairwise_verdict(text) == verdict


def test_pair_scores_both_orders_and_ties():
  # Chosen is A in the first order and B in the second.
  right = pairwise_pair_score(["A"], ["B"])
  assert right["score"] == 1.0 and right["consistent"] and right["order_scores"] == [1.0, 1.0]
  # Always "A": position bias cancels to 0.5, and the two orders disagree about the pair.
  biased = pairwise_pair_score(["A"], ["A"])
  assert biased["score"] == 0.5 and not biased["consistent"]
  wrong = pairwise_pair_score(["B"], ["A"])
  assert wrong["score"] == 0.0 and wrong["consistent"]
  # No verdict in one order scores that order 0.5.
  assert pairwise_pair_score([None], ["B"])["score"] == 0.75
  # Majority of k verdicts per order; a tie of votes is no verdict.
  assert pairwise_pair_score(["A", "B", "A"], ["B", None, "B"])["score"] == 1.0
  tie = pairwise_pair_score(["A", "B"], ["B", "B"])
  assert tie["verdicts"] == [None, "B"] and tie["score"] == 0.75
  assert tie["parsed"] == [True, True, True, True]
  # Pointwise: the mean of each response's scores; equal means or no score: 0.5.
  assert pointwise_pair_score([5, 4], [2, None])["score"] == 1.0
  assert pointwise_pair_score([3], [4])["score"] == 0.0
  assert pointwise_pair_score([4, 2], [3, 3])["score"] == 0.5
  assert pointwise_pair_score([None, None], [1])["score"] == 0.5


def test_example_counts_are_rewardbench_leaderboard_weights():
  # rewardbench/constants.py EXAMPLE_COUNTS (allenai/reward-bench), subset by subset.
  assert judge_eval.EXAMPLE_COUNTS == {
      "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95,
      "mt-bench-easy": 28, "mt-bench-med": 40, "mt-bench-hard": 37,
      "math-prm": 984,
      "refusals-dangerous": 100, "refusals-offensive": 100,
      "llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
      "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
      "xstest-should-refuse": 250, "xstest-should-respond": 154,
      "donotanswer": 136,
      "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164,
      "hep-rust": 164,
  }
  # Every weighted subset belongs to exactly one section (constants.py SUBSET_MAPPING).
  in_sections = [s for subsets in judge_eval.SECTIONS.values() for s in subsets]
  assert sorted(in_sections) == sorted(judge_eval.EXAMPLE_COUNTS)
  # The Safety score moves by the refuse/respond weights: all refusals right, all responses wrong.
  safety = section_scores({"xstest-should-refuse": 1.0, "xstest-should-respond": 0.0})["Safety"]
  assert safety == pytest.approx(250 / (250 + 154))


def test_section_scores_weigh_subsets_as_rewardbench_does():
  scores = section_scores({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.5,
                           "hep-cpp": 1.0, "hep-go": 0.0, "not-a-rewardbench-subset": 0.0})
  assert set(scores) == {"Chat", "Reasoning"}
  assert scores["Chat"] == pytest.approx((100 * 1.0 + 28 * 0.5) / 128)
  # math-prm counts as 984 examples, as much as the six code subsets together.
  assert scores["Reasoning"] == pytest.approx((984 * 0.5 + 164 * 1.0 + 164 * 0.0) / (984 + 328))
  summary = judge_eval.summarize([
      {"subset": "alpacaeval-easy", "score": 1.0, "parsed": [True, True], "consistent": True},
      {"subset": "hep-go", "score": 0.5, "parsed": [True, False], "consistent": False}])
  assert summary["score"] == pytest.approx((1.0 + 0.5) / 2)  # the mean of the sections present
  assert summary["weighting"] == ("rewardbench-leaderboard (rewardbench/constants.py "
                                  "EXAMPLE_COUNTS)")
  summary["subset_pairs"] = {"alpacaeval-easy": 1, "hep-go": 1}
  assert "weighting: rewardbench-leaderboard" in judge_eval.table(summary)
  assert summary["parse_rate"] == 0.75 and summary["position_consistency"] == 0.5
  # No RewardBench subset: the score is the mean pair score.
  plain = judge_eval.summarize([{"subset": "pair_sum", "score": 1.0, "parsed": [True]},
                                {"subset": "digit_sum", "score": 0.0, "parsed": [True]}])
  assert plain["sections"] == {} and plain["score"] == 0.5
  assert plain["weighting"] == judge_eval.MEAN_WEIGHTING


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


PAIRS = [
    {"id": "p0", "subset": "s1", "prompt": "What is 2+2?", "chosen": "4", "rejected": "five"},
    {"id": "p1", "subset": "s1", "prompt": "Capital of France?", "chosen": "Paris",
     "rejected": "Lyon is the capital of France, surely."},
    {"id": "p2", "subset": "s2", "prompt": [{"role": "user", "content": "Say hi."}],
     "chosen": [{"role": "assistant", "content": "hi"}], "rejected": "no"},
]


def test_bad_rows_name_file_and_line(tmp_path):
  path = _write(tmp_path / "pairs.jsonl", PAIRS[:1] + [{"id": "x", "prompt": "q", "chosen": "c"}])
  with pytest.raises(JudgeEvalError, match=r"pairs\.jsonl:2.*rejected"):
    judge_eval.load_preference_pairs(path)
  path = _write(tmp_path / "dup.jsonl", PAIRS[:1] * 2)
  with pytest.raises(JudgeEvalError, match=r"dup\.jsonl:2: id 'p0' appears twice"):
    judge_eval.load_preference_pairs(path)
  loaded = judge_eval.load_preference_pairs(_write(tmp_path / "ok.jsonl", PAIRS))
  assert [(p["id"], p["subset"], p["chosen"]) for p in loaded] == [
      ("p0", "s1", "4"), ("p1", "s1", "Paris"), ("p2", "s2", "hi")]


def _length_judge(requests, n):
  """A scripted pairwise judge that prefers the shorter answer (right on p0, p1; p2 too)."""
  out = []
  for messages in requests:
    text = messages[-1]["content"]
    a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
    b = text.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
    out.append([f"Shorter wins. [[{'A' if len(a) <= len(b) else 'B'}]]"] * n)
  return out


def test_evaluate_in_both_orders_and_resume(tmp_path):
  pairs = judge_eval.load_preference_pairs(_write(tmp_path / "pairs.jsonl", PAIRS))
  calls = []

  def judge(requests, n):
    calls.append(len(requests))
    return _length_judge(requests, n)
  out = str(tmp_path / "out")
  records, summary = judge_eval.evaluate(pairs, judge, protocol="pairwise", num_samples=1,
                                         output=out, chunk_size=1)
  assert calls == [2, 2, 2]  # both orders of a pair in one chunk
  assert [r["score"] for r in records] == [1.0, 1.0, 0.5]  # "hi" vs "no": equal length, A twice
  assert summary["subsets"] == {"s1": 1.0, "s2": 0.5} and summary["position_consistency"] == 2 / 3
  first_request = judge_eval.pairwise_requests(pairs[:1], prompts.PAIRWISE_TEMPLATE,
                                               prompts.PAIRWISE_SYSTEM_PROMPT)
  assert first_request[0][0] == {"role": "system", "content": prompts.PAIRWISE_SYSTEM_PROMPT}
  assert "{input}" not in first_request[0][1]["content"]

  def must_not_run(requests, n):
    raise AssertionError("resumed run generated again")
  again, _ = judge_eval.evaluate(pairs, must_not_run, protocol="pairwise", num_samples=1,
                                 output=out, chunk_size=1)
  assert again == records
  assert artifacts.exists(str(tmp_path / "out" / "judgments.jsonl"))


@pytest.mark.parametrize("protocol", ["pairwise", "pointwise"])
def test_command_on_a_tiny_checkpoint(llama3_checkpoint, tmp_path, protocol, capsys):
  checkpoint = llama3_checkpoint
  pairs = _write(tmp_path / "pairs.jsonl", PAIRS)
  out = str(tmp_path / "out")
  options = judge_eval.Options(checkpoint=checkpoint, pairs=pairs, protocol=protocol,
                               max_new_tokens=4, batch_size=8, dtype="float32", output=out)
  summary = judge_eval.run(options)
  records = artifacts.read_jsonl(str(tmp_path / "out" / "pairs.jsonl"))
  assert [r["id"] for r in records] == ["p0", "p1", "p2"]
  assert all(r["score"] in (0.0, 0.25, 0.5, 0.75, 1.0) for r in records)
  scores = json.loads((tmp_path / "out" / "scores.json").read_text())
  assert scores["subsets"].keys() == {"s1", "s2"} and scores["score"] == summary["score"]
  assert "score" in capsys.readouterr().out
  with pytest.raises(JudgeEvalError, match="--temperature"):
    judge_eval.run(judge_eval.Options(checkpoint=checkpoint, pairs=pairs, num_samples=3))


def test_testbed_pairs_and_the_pipeline_hook(tmp_path):
  from meta_rewarding.config import base
  from meta_rewarding.recipe_types import Generation
  from meta_rewarding.testbed import evaluate as testbed_evaluate, oracle
  from meta_rewarding.testbed.tasks import task_from_instruction

  pairs = testbed_evaluate.preference_pairs(12)
  assert pairs == testbed_evaluate.preference_pairs(12)  # deterministic
  for p in pairs:
    task = task_from_instruction(p["prompt"])
    assert p["subset"] == task.family
    assert oracle.is_correct(task, p["chosen"]) and not oracle.is_correct(task, p["rejected"])
  path = _write(tmp_path / "testbed_pairs.jsonl", pairs)

  class ShorterAnswerPolicy:  # judges like _length_judge, as a pipeline policy would
    def generate(self, prompts, *, n, max_new_tokens, seed, share_prefix, desc):
      return [[Generation(t, 3, "stop") for t in row] for row in _length_judge(prompts, n)]

  config = base.get_base_config()
  config.evaluate.judge_pairs = path
  hook = judge_eval.pipeline_evaluator(config)
  metrics = hook(ShorterAnswerPolicy(), "M_0")
  records, _ = judge_eval.evaluate(judge_eval.load_preference_pairs(path), _length_judge,
                                   protocol="pairwise", num_samples=1)
  assert metrics["judge_eval/score"] == pytest.approx(sum(r["score"] for r in records) / 12)
  assert {"judge_eval/pair_sum", "judge_eval/digit_sum", "judge_eval/letter_after",
          "judge_eval/position_consistency", "judge_eval/parse_rate"} <= set(metrics)


def _chosen_position(messages, pair):
  """Where the scripted judge sees `pair`'s chosen response in a request: "A" or "B"."""
  text = messages[-1]["content"]
  a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
  chosen = pair["chosen"] if isinstance(pair["chosen"], str) else pair["chosen"][0]["content"]
  return "A" if a == chosen else "B"


def test_random_orders_judge_each_pair_once_at_a_seeded_position(tmp_path):
  many = [{"id": f"q{k}", "subset": "s", "prompt": f"Question {k}?", "chosen": f"right {k}",
           "rejected": f"a wrong answer to {k}"} for k in range(40)]
  pairs = judge_eval.load_preference_pairs(_write(tmp_path / "many.jsonl", many))
  positions = judge_eval.chosen_positions(pairs, "random", seed=3)
  assert all(p in (("A",), ("B",)) for p in positions)
  assert 5 < sum(p == ("A",) for p in positions) < 35  # both positions drawn
  # Drawn from (seed, id) alone: a reversed file gives every pair the same position.
  assert judge_eval.chosen_positions(pairs[::-1], "random", seed=3) == positions[::-1]
  assert judge_eval.chosen_positions(pairs, "random", seed=4) != positions
  assert judge_eval.chosen_positions(pairs, "both") == [("A", "B")] * 40

  seen = []

  def judge(requests, n):
    seen.extend(requests)
    return _length_judge(requests, n)
  records, summary = judge_eval.evaluate(pairs, judge, protocol="pairwise", num_samples=1,
                                         orders="random", order_seed=3)
  assert len(seen) == 40  # one order per pair
  assert [_chosen_position(m, p) for m, p in zip(seen, pairs)] == [p[0] for p in positions]
  # The shorter answer is the chosen one everywhere: right whichever position it stood at.
  assert [r["score"] for r in records] == [1.0] * 40
  assert [tuple(r["chosen_as"]) for r in records] == positions
  assert "position_consistency" not in summary and summary["orders"] == "random"
  assert "consistent" not in records[0] and len(records[0]["judgments"]) == 1

  # An always-"A" judge is right exactly where the chosen response stood at A.
  always_a, _ = judge_eval.evaluate(pairs, lambda r, n: [["[[A]]"] * n for _ in r],
                                    protocol="pairwise", num_samples=1, orders="random",
                                    order_seed=3)
  assert [r["score"] for r in always_a] == [float(p == ("A",)) for p in positions]


def test_random_orders_resume_from_their_own_chunks(tmp_path):
  pairs = judge_eval.load_preference_pairs(_write(tmp_path / "pairs.jsonl", PAIRS))
  out = str(tmp_path / "out")
  calls = []

  def judge(requests, n):
    calls.append(len(requests))
    return _length_judge(requests, n)
  records, _ = judge_eval.evaluate(pairs, judge, protocol="pairwise", num_samples=1,
                                   orders="random", order_seed=1, output=out, chunk_size=2)
  assert calls == [2, 1]  # chunks of two pairs, one request each

  def must_not_run(requests, n):
    raise AssertionError("resumed run generated again")
  again, _ = judge_eval.evaluate(pairs, must_not_run, protocol="pairwise", num_samples=1,
                                 orders="random", order_seed=1, output=out, chunk_size=2)
  assert again == records


@pytest.mark.parametrize("orders", ["both", "random"])
def test_a_judgment_with_both_tags_is_no_verdict_and_counted(tmp_path, orders):
  pairs = judge_eval.load_preference_pairs(_write(tmp_path / "pairs.jsonl", PAIRS))
  hedging = "A is good [[A]], but B is good too [[B]]"
  records, summary = judge_eval.evaluate(pairs, lambda r, n: [[hedging] * n for _ in r],
                                         protocol="pairwise", num_samples=1, orders=orders)
  # RewardBench's process_judgement reads such a judgment as "A" (1 where chosen is A); here it
  # has no verdict, and the pair scores 0.5 (module doc).
  assert [r["score"] for r in records] == [0.5] * 3
  assert summary["parse_rate"] == 0.0
  judged = 3 * (2 if orders == "both" else 1)
  assert summary["both_verdict_tags"] == judged
  summary_line = judge_eval.table(summary).splitlines()
  assert (f"{judged} judgments named both [[A]] and [[B]] (no verdict here; RewardBench's parser "
          "reads them as [[A]])") in summary_line
