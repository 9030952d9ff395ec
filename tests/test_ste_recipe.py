"""The Self-Taught Evaluator as RAM runs it (issue 30): judgments for both orders with rejection
sampling per order, RAM's evaluation-plan judge prompt, the instruction selection made once up
front with the seed, and SFT on the accumulated judgments. Scripted stand-in models only (fast)."""

import os
import sys

import pytest

import configs
from meta_rewarding import artifacts, config_check, prompts, ste
from meta_rewarding.recipe_types import Generation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_ste import NO_MATCH, POOL, ScriptedSTEPolicy, _run, make_config  # noqa: E402

# facebookresearch/RAM projects/self_taught_evaluator/data/prompts/eval_plan.prompt, as published
# (its own placeholder names; the backslashes before the quotes and the typo are the file's).
RAM_EVAL_PLAN = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows "
    "the user's instructions and answers the user's question better. Begin your evaluation by "
    "first verifying whether each response contains any obvious or subtle errors. Then propose an "
    "appropriate evaluaiton rubric, e.g. 1-5 criteria that are important for evaluating responses "
    "to this specific user question. Continue your evaluation by checking each response carefully "
    "along those criteria. Based on the analysis in previous steps, choose which response is "
    "better overall. Avoid any position biases and ensure that the order in which the responses "
    "were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your evaluation, output your final verdict by strictly following "
    'this format: \\"[[A]]\\" if assistant A is better, \\"[[B]]\\" if assistant B is better. \n\n'
    "[User Question]\n{input}\n\n[The Start of Assistant A's Answer]\n{generation}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{generation2}\n"
    "[The End of Assistant B's Answer]\n")


# ---------------------------------------------------------------------------------------------
# Both orders, rejection sampling per order (pure).

def _pair(uid):
  return {"uid": uid, "id": uid, "prompt": f"Q{uid}", "chosen": f"good{uid}",
          "rejected": f"bad{uid}"}


def _judge(requests, verdicts_by_key):
  """judge_records with scripted verdicts per (uid, order)."""
  rows = [[Generation(f"plan ... [[{v}]]" if v else "plan, no verdict", 4, "stop")
           for v in verdicts_by_key[ste.request_key(r)]] for r in requests]
  return ste.judge_records(requests, [True] * len(requests), rows)


def test_both_orders_judge_each_pair_with_y_w_as_a_and_as_b():
  requests = ste.judge_requests([_pair(0), _pair(1)], prompts.PAIRWISE_TEMPLATE, order_seed=3,
                                orders="both")
  assert [(r["uid"], r["order"], r["chosen_position"]) for r in requests] == [
      (0, "0_1", "A"), (0, "1_0", "B"), (1, "0_1", "A"), (1, "1_0", "B")]
  for r in requests:
    a = r["judge_prompt"].split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
    assert a.startswith("good") == (r["chosen_position"] == "A")
  # "random": one order per pair, the seeded one the loop used before.
  one = ste.judge_requests([_pair(0), _pair(1)], prompts.PAIRWISE_TEMPLATE, 3, orders="random")
  assert [r["chosen_position"] for r in one] == [ste.chosen_position(3, 0),
                                                 ste.chosen_position(3, 1)]
  with pytest.raises(ValueError, match="ste.orders"):
    ste.judge_requests([_pair(0)], prompts.PAIRWISE_TEMPLATE, 3, orders="one")


def test_rejection_sampling_keeps_a_judgment_per_order_when_its_verdict_matches():
  requests = ste.judge_requests([_pair(0), _pair(1), _pair(2)], prompts.PAIRWISE_TEMPLATE, 0)
  verdicts = {(0, "0_1"): ["B", "A", None],   # one match (index 1): kept, label A
              (0, "1_0"): ["B", "A", "B"],    # matches at 0 and 2: one of them, label B
              (1, "0_1"): ["B", "B", None],   # none names y_w (A): dropped
              (1, "1_0"): ["B", None, "A"],   # label B: kept
              (2, "0_1"): ["A", "A", "A"],    # label A
              (2, "1_0"): [None, None, "A"]}  # none: dropped
  judged = _judge(requests, verdicts)
  data = ste.sft_records(judged, seed=7, balance=False)
  assert [(e["uid"], e["order"], e["label"]) for e in data] == [
      (0, "0_1", "A"), (0, "1_0", "B"), (1, "1_0", "B"), (2, "0_1", "A")]
  for e in data:  # the kept judgment gives its order's label
    assert verdicts[(e["uid"], e["order"])][e["judgment_index"]] == e["label"]
    assert prompts.parse_pairwise_verdict(e["response"]) == e["label"]
  assert data[0]["judgment_index"] == 1
  # One judgment per order, a seeded random one of the matching ones (RAM: shuffle, first match).
  picks = {ste.sft_records(judged, seed=s, balance=False)[1]["judgment_index"] for s in range(30)}
  assert picks == {0, 2}
  assert ste.sft_records(judged, 7, balance=False) == ste.sft_records(judged, 7, balance=False)
  # Balancing: 2 of each label here, so all four stay.
  assert sorted(e["label"] for e in ste.sft_records(judged, 7, balance=True)) == list("AABB")
  m = ste.iteration_metrics(1, [{}] * 3, None, [], [], judged, data, [], 0, 7)
  assert m["ste/judged"] == 6 and m["ste/with_match"] == 4 and m["ste/dropped_no_match"] == 2
  assert m["ste/pairs_matched_both_orders"] == 1
  assert m["ste/matched_label_a"] == 2 and m["ste/matched_label_b"] == 2


def test_both_orders_in_the_loop(tmp_path):
  (metrics,), policy = _run(tmp_path, make_config())   # ste.orders defaults to "both"
  judged = artifacts.read_jsonl(str(tmp_path / "iter_1" / "judge.jsonl"))
  worse = artifacts.read_jsonl(str(tmp_path / "iter_1" / "worse.jsonl"))
  pairs = [w for w in worse if w["status"] == "ok"]
  assert len(judged) == 2 * len(pairs)
  assert sorted(ste.request_key(r) for r in judged) == sorted(
      (w["uid"], o) for w in pairs for o in ("0_1", "1_0"))
  data = artifacts.read_jsonl(str(tmp_path / "iter_1" / "sft_data.jsonl"))
  matched = [w for w in pairs if w["prompt"] not in NO_MATCH]
  # The scripted judge names y_w in both orders of every matched pair: two examples per pair,
  # labels balanced without dropping any.
  assert len(data) == 2 * len(matched) and metrics["ste/dropped_balance"] == 0
  assert [e["label"] for e in data].count("A") == len(matched)
  assert metrics["ste/pairs_matched_both_orders"] == len(matched)
  assert policy.trained[0][1] == data


# ---------------------------------------------------------------------------------------------
# The evaluation-plan prompt.

def test_eval_plan_prompt_is_rams_verbatim_and_its_verdicts_parse():
  assert prompts.EVAL_PLAN_TEMPLATE == RAM_EVAL_PLAN.replace(
      "{generation2}", "{response_b}").replace("{generation}", "{response_a}")
  assert prompts.EVAL_PLAN_SYSTEM_PROMPT == ""
  prompts.validate_pairwise_template(prompts.EVAL_PLAN_TEMPLATE)
  rendered = prompts.render_pairwise_prompt(prompts.EVAL_PLAN_TEMPLATE, "2+2?", "4", "5")
  assert rendered.startswith("Please act as an impartial judge")
  assert "[User Question]\n2+2?\n\n[The Start of Assistant A's Answer]\n4\n" in rendered
  # What the prompt asks for: errors, a rubric, checks along it, then the verdict tag.
  plan = ("**Step 1: errors.** Response A is correct. Response B states 2+2=5, an obvious error.\n"
          "**Step 2: rubric.** 1. Correctness 2. Clarity\n"
          "**Step 3: checks.** A meets both criteria; B fails correctness.\n\n"
          "Final verdict: [[A]]")
  assert prompts.parse_pairwise_verdict(plan) == "A"
  assert prompts.parse_pairwise_verdict(plan.replace("[[A]]", '\\"[[B]]\\"')) == "B"
  # RAM's parse_judgement: both tags (e.g. quoting the format) or neither is no verdict; [[C]]
  # (a tie) is no A/B verdict either.
  assert prompts.parse_pairwise_verdict('The format is "[[A]]" or "[[B]]". [[A]]') is None
  assert prompts.parse_pairwise_verdict("Both are fine. [[C]]") is None


def test_paper_scale_config_uses_the_eval_plan_prompt_and_both_orders():
  c = configs.load("ste_tpu_v4")
  assert c.ste.pairwise_template == prompts.EVAL_PLAN_TEMPLATE and c.ste.system_prompt == ""
  assert c.ste.orders == "both" and c.ste.train_on == "iteration"
  assert configs.load("ste_testbed").ste.orders == "both"
  assert configs.load("ste_testbed", "random_order").ste.orders == "random"


# ---------------------------------------------------------------------------------------------
# The instruction selection: once, up front, with the seed.

def _categorise(task_number):
  kind = "Mathematical reasoning" if task_number % 2 else "Coding"
  return f"Category: {kind}\nComplexity: {task_number}/10\nLength: (a)"


class Categorising(ScriptedSTEPolicy):
  def __init__(self, fail_after_category_calls=None, **kwargs):
    super().__init__(**kwargs)
    self.category_calls = []        # (model version, instruction)
    self.fail_after_category_calls = fail_after_category_calls

  def generate(self, batch, **kwargs):
    if batch and isinstance(batch[0], str) and batch[0].startswith("I have an instruction"):
      out = []
      for request in batch:
        if (self.fail_after_category_calls is not None
            and len(self.category_calls) >= self.fail_after_category_calls):
          raise KeyboardInterrupt("simulated kill during categorisation")
        task = request.split("<instruction>")[1].split("</instruction>")[0]
        self.category_calls.append((self.version, task))
        out.append([Generation(_categorise(int(task.split()[1].rstrip(":"))), 9, "stop")])
      return out
    return super().generate(batch, **kwargs)


def test_select_instructions_filters_and_caps_per_category():
  def rec(uid, category, complexity, too_long=False):
    return {"uid": uid, "id": 100 + uid, "prompt": f"p{uid}", "category": category,
            "complexity": complexity, "too_long": too_long}
  categorized = [rec(0, "Coding", 9), rec(1, "Mathematical reasoning", 8),
                 rec(2, "mathematical reasoning", 2), rec(3, "Knowledge and Reasoning", 7),
                 rec(4, "Mathematical reasoning", 9), rec(5, None, None),
                 rec(6, None, None, too_long=True), rec(7, "Mathematical Reasoning", 6),
                 rec(8, "Knowledge and Reasoning", None)]
  wanted = ("Knowledge and Reasoning", "Mathematical reasoning")
  everything = ste.select_instructions(categorized, wanted, min_complexity=0, max_per_category=0,
                                       seed=0)
  assert [r["candidate"] for r in everything] == [1, 2, 3, 4, 7, 8]
  assert [r["uid"] for r in everything] == list(range(6)) and everything[0]["id"] == 101
  hard = ste.select_instructions(categorized, wanted, min_complexity=5, max_per_category=0, seed=0)
  assert [r["candidate"] for r in hard] == [1, 3, 4, 7]     # 2 too easy, 8 gave no score
  capped = ste.select_instructions(categorized, wanted, min_complexity=5, max_per_category=2,
                                   seed=0)
  maths = [r["candidate"] for r in capped if r["category"].lower() == "mathematical reasoning"]
  assert len(maths) == 2 and set(maths) <= {1, 4, 7} and 3 in [r["candidate"] for r in capped]
  m = ste.selection_metrics(categorized, capped, wanted, 5)
  assert m == {"ste/selection_candidates": 9, "skipped/long_category_prompts": 1,
               "ste/selection_unparsed": 1, "ste/selection_other_category": 1,
               "ste/selection_too_easy": 2, "ste/selection_dropped_balance": 1,
               "ste/selected": 3, "ste/selected/Knowledge and Reasoning": 1,
               "ste/selected/Mathematical reasoning": 2}


def _selection_config(**overrides):
  config = make_config(categorize=True, **overrides)
  config.pipeline.num_iterations = 2
  config.pipeline.prompts_per_iteration = 3
  return config


def test_categorisation_runs_once_with_the_seed_and_every_iteration_draws_from_it(tmp_path):
  policy = Categorising()
  metrics, _ = _run(tmp_path, _selection_config(), policy)
  # Every pool instruction categorised once, all by the seed (version 0), before iteration 1.
  assert sorted(task for _, task in policy.category_calls) == sorted(POOL)
  assert {version for version, _ in policy.category_calls} == {0}
  selected = artifacts.read_jsonl(str(tmp_path / "ste_selection" / "selected.jsonl"))
  assert sorted(r["prompt"] for r in selected) == [p for k, p in enumerate(POOL) if k % 2]
  for t in (1, 2):
    drawn = artifacts.read_jsonl(str(tmp_path / f"iter_{t}" / "prompts.jsonl"))
    assert len(drawn) == 3
    assert {(r["id"], r["prompt"]) for r in drawn} <= {(r["id"], r["prompt"]) for r in selected}
    assert not (tmp_path / f"iter_{t}" / "categorize.jsonl").exists()
  assert metrics[0]["ste/selected"] == metrics[1]["ste/selected"] == 4
  assert metrics[1]["ste/selection_other_category"] == 4


def test_selection_killed_then_resumed_equals_uninterrupted(tmp_path):
  config = _selection_config()
  _run(tmp_path / "clean", config, Categorising())
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", config, Categorising(fail_after_category_calls=3))
  selection = tmp_path / "killed" / "ste_selection"
  assert (selection / "categorize.jsonl.chunks").exists()
  assert not (selection / "selected.jsonl").exists()
  resumed = Categorising()
  _run(tmp_path / "killed", config, resumed)
  # The finished chunk (chunk_size 2) was kept; the rest was categorised by the seed.
  assert len(resumed.category_calls) == len(POOL) - 2
  assert {version for version, _ in resumed.category_calls} == {0}
  files = ["ste_selection/categorize.jsonl", "ste_selection/selected.jsonl"] + [
      f"iter_{t}/{name}.jsonl" for t in (1, 2)
      for name in ("prompts", "actor", "worse", "judge", "sft_data", "sft")] + ["metrics.jsonl"]
  for name in files:
    assert ((tmp_path / "clean" / name).read_bytes()
            == (tmp_path / "killed" / name).read_bytes()), name


def test_selection_missing_at_a_later_iteration_is_made_with_the_seed(tmp_path):
  config = _selection_config()
  config.pipeline.num_iterations = 1
  config.ste.categorize = False
  _run(tmp_path, config, Categorising())
  config.pipeline.num_iterations = 2
  config.ste.categorize = True
  config.allow_config_change = True
  policy = Categorising()
  _run(tmp_path, config, policy)
  assert policy.category_calls and {v for v, _ in policy.category_calls} == {0}  # the seed
  # ... and iteration 2's data came from M_1 again (version 10), not from the seed.
  assert 10 in policy.generated_by
  selected = {r["id"] for r in artifacts.read_jsonl(str(tmp_path / "ste_selection" /
                                                        "selected.jsonl"))}
  assert {r["id"] for r in artifacts.read_jsonl(str(tmp_path / "iter_2" / "prompts.jsonl"))} \
      <= selected


# ---------------------------------------------------------------------------------------------
# SFT on the accumulated judgments.

def test_accumulated_training_data_is_the_union_of_the_iterations(tmp_path):
  config = make_config(train_on="accumulated")
  config.pipeline.num_iterations = 3
  metrics, policy = _run(tmp_path, config)
  data = [artifacts.read_jsonl(str(tmp_path / f"iter_{t}" / "sft_data.jsonl")) for t in (1, 2, 3)]
  assert all(data)
  assert [records for _, records, _ in policy.trained] == [
      data[0], data[0] + data[1], data[0] + data[1] + data[2]]
  assert [v for v, _, _ in policy.trained] == [0, 0, 0]          # still from the seed
  assert [m["sft/trained_on"] for m in metrics] == [
      len(data[0]), len(data[0]) + len(data[1]), sum(map(len, data))]
  assert [m["ste/kept"] for m in metrics] == [len(d) for d in data]
  # "iteration" (the default) trains on iteration t's only.
  per_iteration, policy = _run(tmp_path / "each", make_config())
  assert policy.trained[0][1] == artifacts.read_jsonl(
      str(tmp_path / "each" / "iter_1" / "sft_data.jsonl"))


def test_new_ste_keys_are_checked():
  c = make_config(orders="one", train_on="all", min_complexity=11, max_per_category=-1,
                  selection_candidates=-2)
  c.model.architecture = {"vocab_size": 8}
  c.data.prompts = "testbed:10"
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_pipeline_config(c)
  problems = "\n".join(e.value.problems)
  for key in ("ste.orders='one'", "ste.train_on='all'", "ste.min_complexity=11",
              "ste.max_per_category=-1", "ste.selection_candidates=-2"):
    assert key in problems, problems
