"""judge_eval: the pairwise verdict parser, pair scores in both orders (ties 0.5), RewardBench's
section weighting, bad input, resume, and the command on a tiny saved checkpoint."""

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
  assert summary["parse_rate"] == 0.75 and summary["position_consistency"] == 0.5
  # No RewardBench subset: the score is the mean pair score.
  plain = judge_eval.summarize([{"subset": "pair_sum", "score": 1.0, "parsed": [True]},
                                {"subset": "digit_sum", "score": 0.0, "parsed": [True]}])
  assert plain["sections"] == {} and plain["score"] == 0.5


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
  from meta_rewarding import defaults
  from meta_rewarding.stages import Generation
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

  config = defaults.get_base_config()
  config.evaluate.judge_pairs = path
  hook = judge_eval.pipeline_evaluator(config)
  metrics = hook(ShorterAnswerPolicy(), "M_0")
  records, _ = judge_eval.evaluate(judge_eval.load_preference_pairs(path), _length_judge,
                                   protocol="pairwise", num_samples=1)
  assert metrics["judge_eval/score"] == pytest.approx(sum(r["score"] for r in records) / 12)
  assert {"judge_eval/pair_sum", "judge_eval/digit_sum", "judge_eval/letter_after",
          "judge_eval/position_consistency", "judge_eval/parse_rate"} <= set(metrics)
