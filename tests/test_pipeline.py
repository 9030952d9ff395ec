"""The iteration driver with a scripted stand-in model: hand-worked pairs, schedule, resume."""

import json
import os
import re

import numpy as np
import pytest

from meta_rewarding import artifacts, pipeline, prompts, stage_runner, stages
from meta_rewarding.config.base import get_base_config
from meta_rewarding.recipe_types import TOO_LONG, Generation, PipelineError, sample_prompt_ids

# Prompt -> the actor's possible responses (the scripted actor draws K of them by seed).
RESPONSES = {
    "P1": ["short good", "a much longer good answer", "bad"],
    "P2": ["x", "y"],
}
# Response -> its scripted judgments (the judge returns them in order).
JUDGMENTS = {
    "short good": ["Fine. Score: 5", "Mostly right. Score: 4", "Meh. Score: 3"],
    "a much longer good answer": ["Score: 5", "**Score: 5**", "Score: 5."],
    "bad": ["Score: 1", "Score: 2", "I cannot tell."],
    "x": ["Score: 3", "no score", "none"],
    "y": ["Score: 3", "nothing", "?"],
}


def meta_winner(a: str, b: str) -> str:
  """Scripted meta-judge: the 4-point judgment beats all; a 3-point one beats a 5-point one."""
  rank = {"4": 2, "3": 1, "5": 0}
  sa, sb = (re.findall(r"Score: \**(\d)", x)[-1] for x in (a, b))
  return "A" if rank[sa] > rank[sb] else "B"


class ScriptedPolicy:
  """Deterministic canned actor / judge / meta-judge; training only records what it was given."""

  def __init__(self, fail_after_judge_calls=None):
    self.version = 0
    self.trained = []
    self.judge_calls = 0
    self.fail_after_judge_calls = fail_after_judge_calls

  def generate(self, batch, *, n, max_new_tokens, seed, share_prefix, desc):
    out = []
    for k, text in enumerate(batch):
      if text in RESPONSES:  # actor: all responses, then repeats (duplicates get dropped)
        options = RESPONSES[text]
        out.append([Generation(options[i % len(options)], len(options[i % len(options)].split()),
                               "stop") for i in range(n)])
      elif "Judgment A:" in text:
        a = text.split("Judgment A: ")[1].split("\nJudgment B: ")[0]
        b = text.split("Judgment B: ")[1].split("\n")[0]
        out.append([Generation(f"Judgment {meta_winner(a, b)} applies the rubric. "
                               f"Winner: Judgment {meta_winner(a, b)}", 9, "stop")])
      else:
        if self.fail_after_judge_calls is not None and self.judge_calls >= self.fail_after_judge_calls:
          raise KeyboardInterrupt("simulated kill during judging")
        self.judge_calls += 1
        response = text.split("<response>")[1].split("</response>")[0]
        out.append([Generation(j, 3, "stop") for j in JUDGMENTS[response][:n]])
    return out

  def train_dpo(self, pairs, *, checkpoint_dir, seed):
    self.trained.append(list(pairs))
    self.version += 1
    return [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.5, "rewards/margins": 0.0,
             "tokens_per_second": 100.0}]

  def save(self, path):
    os.makedirs(path + ".tmp", exist_ok=True)
    with open(os.path.join(path + ".tmp", "version.json"), "w") as f:
      json.dump({"version": self.version}, f)
    os.replace(path + ".tmp", path)

  def load(self, path):
    with open(os.path.join(path, "version.json")) as f:
      self.version = json.load(f)["version"]


def make_config(**pipeline_overrides):
  c = get_base_config()
  c.actor.num_responses = 3
  c.judge.num_judgments = 3
  c.pipeline.num_iterations = 1
  c.pipeline.prompts_per_iteration = 2
  c.pipeline.chunk_size = 1
  c.pipeline.rho = (0.0,)
  c.pipeline.train_pairs = ("both",)
  for k, v in pipeline_overrides.items():
    setattr(c.pipeline, k, v)
  return c


POOL = ["P1", "P2"]


def _run(tmp_path, config, policy=None):
  policy = policy or ScriptedPolicy()
  return pipeline.run(config, str(tmp_path), policy, POOL), policy


def test_one_iteration_hand_worked(tmp_path):
  (metrics,), policy = _run(tmp_path, make_config())
  it = tmp_path / "iter_1"
  judge = {(j["id"], j["response_index"]): j for j in artifacts.read_jsonl(str(it / "judge.jsonl"))}
  p1 = POOL.index("P1")
  # Every record carries its prompt's per-iteration uid (position in prompts.jsonl) and pool id.
  prompt_records = artifacts.read_jsonl(str(it / "prompts.jsonl"))
  assert [r["uid"] for r in prompt_records] == [0, 1]
  uid = {r["id"]: r["uid"] for r in prompt_records}
  for name in ("actor", "judge", "actor_pairs", "meta_judge", "judge_pairs"):
    for record in artifacts.read_jsonl(str(it / f"{name}.jsonl")):
      assert record["uid"] == uid[record["id"]], name
  assert judge[(p1, 0)]["score"] == pytest.approx(4.0)
  assert judge[(p1, 1)]["score"] == pytest.approx(5.0)
  assert judge[(p1, 2)]["score"] == pytest.approx(1.5)  # "I cannot tell." is a parse failure
  # rho = 0: best vs worst.
  (pair,) = artifacts.read_jsonl(str(it / "actor_pairs.jsonl"))
  assert (pair["chosen"], pair["rejected"]) == ("a much longer good answer", "bad")
  # P2: S_max == S_min -> no actor pair; < 2 valid scores per response -> no meta-judge.
  (meta,) = artifacts.read_jsonl(str(it / "meta_judge.jsonl"))
  assert meta["id"] == p1 and meta["response_index"] == 0  # highest variance (5, 4, 3)
  assert [(b["a"], b["b"], b["winner"]) for b in meta["battles"]] == [
      (0, 1, "B"), (1, 0, "A"), (0, 2, "B"), (2, 0, "A"), (1, 2, "A"), (2, 1, "B")]
  (jpair,) = artifacts.read_jsonl(str(it / "judge_pairs.jsonl"))
  assert (jpair["chosen"], jpair["rejected"]) == ("Mostly right. Score: 4", "Fine. Score: 5")
  assert jpair["prompt"] == prompts.render_judge_prompt(prompts.JUDGE_TEMPLATE, "P1", "short good")
  assert [p["kind"] for p in policy.trained[0]] == ["actor", "judge"]
  # Metrics of 4.3, by hand.
  assert metrics["actor/responses"] == 5 and metrics["actor/duplicates_dropped"] == 1
  assert metrics["judge/judgments"] == 15 and metrics["judge/parse_failures"] == 5
  assert metrics["judge/score_mean"] == pytest.approx(np.mean([5, 4, 3, 5, 5, 5, 1, 2, 3, 3]))
  assert metrics["pairs/actor"] == 1 and metrics["pairs/judge"] == 1
  assert metrics["pairs/judge_identical_dropped"] == 0
  # Timings are not metrics: they go to timings.jsonl (and iter_1/timings.json), not metrics.jsonl.
  assert not set(stage_runner.TIMING_KEYS) & set(metrics)
  (timings,) = artifacts.read_jsonl(str(tmp_path / "timings.jsonl"))
  assert timings["iteration"] == 1 and timings["wall_seconds"] >= 0
  assert timings["dpo/tokens_per_second"] == timings["dpo/final_tokens_per_second"] == 100.0
  assert "tokens_per_second" not in artifacts.read_jsonl(str(it / "dpo.jsonl"))[0]
  assert metrics["meta/battles"] == 6 and metrics["meta/first_position_win_rate"] == 0.5
  assert metrics["meta/position_weight_first"] == 0.5
  assert metrics["meta/picks_higher_score_rate"] == pytest.approx(2 / 6)
  assert metrics["meta/same_score_battles_skipped"] == 0    # the paper's rule: every pair
  for name in ("metrics.jsonl", "plots/pair_counts.png", "config.json"):
    assert (tmp_path / name).exists() or name == "config.json"
  assert list((tmp_path / "tensorboard").iterdir())


class TooLongPolicy(ScriptedPolicy):
  """Reports P2 (as the actor's prompt) and the judge prompts about "bad" as not fitting the
  context, the way the sampler does: TOO_LONG generations with no text."""

  def generate(self, batch, *, n, max_new_tokens, seed, share_prefix, desc):
    fitting = [x for x in batch if x != "P2" and "<response>bad</response>" not in x]
    rows = iter(super().generate(fitting, n=n, max_new_tokens=max_new_tokens, seed=seed,
                                 share_prefix=share_prefix, desc=desc))
    return [next(rows) if x in fitting else [Generation("", 0, TOO_LONG)] * n
            for x in batch]


def test_prompts_that_do_not_fit_are_dropped_and_counted(tmp_path):
  config = make_config()
  (metrics,), _ = _run(tmp_path / "skip", config, TooLongPolicy())
  it = tmp_path / "skip" / "iter_1"
  actor = artifacts.read_jsonl(str(it / "actor.jsonl"))
  assert [r["prompt"] for r in actor] == ["P1"]
  judge = artifacts.read_jsonl(str(it / "judge.jsonl"))
  bad = [j for j in judge if actor[0]["responses"][j["response_index"]]["text"] == "bad"]
  assert bad and all(j["too_long"] and not j["judgments"] for j in bad)
  assert metrics["skipped/long_prompts"] == 1
  assert metrics["skipped/long_judge_prompts"] == len(bad)
  # Not skipping: an error naming the prompt, before any pair is built.
  config.data.skip_long_prompts = False
  with pytest.raises(PipelineError, match=r"1 prompts of iteration 1 do not fit the "
                     r"context \(pool ids 1\)"):
    _run(tmp_path / "strict", config, TooLongPolicy())
  assert not (tmp_path / "strict" / "iter_1" / "actor_pairs.jsonl").exists()


def test_length_control_picks_shorter_chosen(tmp_path):
  _run(tmp_path, make_config(rho=(0.32,)))
  (pair,) = artifacts.read_jsonl(str(tmp_path / "iter_1" / "actor_pairs.jsonl"))
  # Upper bound 0.68·5 + 0.32·1.5 = 3.88: "short good" (4.0) now qualifies and is shorter.
  assert (pair["chosen"], pair["rejected"]) == ("short good", "bad")


def test_self_rewarding_has_no_judge_pairs(tmp_path):
  config = make_config()
  config.meta_judge.enabled = False
  (metrics,), policy = _run(tmp_path, config)
  assert not (tmp_path / "iter_1" / "meta_judge.jsonl").exists()
  assert metrics["pairs/judge"] == 0 and [p["kind"] for p in policy.trained[0]] == ["actor"]


def test_iteration_schedule(tmp_path):
  config = make_config(num_iterations=3, rho=(0.0, 0.32), train_pairs=("both", "actor"))
  results, policy = _run(tmp_path, config)
  assert [r["rho"] for r in results] == [0.0, 0.32, 0.32]  # the last entry repeats
  assert [[p["kind"] for p in t] for t in policy.trained] == [["actor", "judge"], ["actor"], ["actor"]]
  assert policy.version == 3
  # Iterations that train on actor pairs only skip the (costly) meta-judge.
  assert (tmp_path / "iter_1" / "meta_judge.jsonl").exists()
  assert not (tmp_path / "iter_2" / "meta_judge.jsonl").exists()
  assert len(artifacts.read_jsonl(str(tmp_path / "metrics.jsonl"))) == 3


def test_prompt_sampling_does_not_repeat_until_the_pool_runs_out():
  ids = [sample_prompt_ids(10, 4, t, seed=3) for t in (1, 2, 3)]
  assert len(set(ids[0] + ids[1])) == 8
  assert sorted(ids[0] + ids[1] + ids[2][:2]) == list(range(10))
  assert ids == [sample_prompt_ids(10, 4, t, seed=3) for t in (1, 2, 3)]
  assert ids[0] != sample_prompt_ids(10, 4, 1, seed=4)


@pytest.mark.parametrize("pool_size,per_iteration,iterations", [
    (12000, 5000, 7),  # the reproduction: the old slicing repeated 492 ids in an iteration
    (10, 4, 15), (7, 3, 14), (6, 6, 3), (5, 1, 11), (2, 2, 3)])
def test_no_prompt_twice_in_an_iteration(pool_size, per_iteration, iterations):
  stream = []
  for t in range(1, iterations + 1):
    ids = sample_prompt_ids(pool_size, per_iteration, t, seed=0)
    assert len(ids) == per_iteration and len(set(ids)) == per_iteration, t
    stream += ids
  # Every epoch of the stream is still a whole permutation of the pool: each prompt is used once
  # before any is used again, and equally often over a run.
  for start in range(0, len(stream) - pool_size + 1, pool_size):
    assert sorted(stream[start:start + pool_size]) == list(range(pool_size)), start


def test_more_prompts_per_iteration_than_the_pool_is_refused():
  with pytest.raises(PipelineError, match="larger than the prompt pool"):
    sample_prompt_ids(3, 4, 1, seed=0)


def _twin_records():
  """Two prompts of one iteration that share a pool id (7) but not responses or scores.

  uid 0: "good" scores 5, "bad" scores 1. uid 1: the same pool prompt with its responses in the
  other order. Joined by pool id, one copy's scores land on the other copy's responses.
  """
  actor = [{"uid": u, "id": 7, "prompt": "Q", "duplicates_dropped": 0,
            "responses": [{"text": t, "num_tokens": 1, "finish_reason": "stop", "samples": 1}
                          for t in texts]}
           for u, texts in ((0, ["good", "bad"]), (1, ["bad", "good"]))]
  judgment = lambda k, s: {"text": f"Check {k}. Score: {s:g}", "num_tokens": 4,
                           "finish_reason": "stop", "score": s}
  scores = {(0, 0): [5.0, 5.0, 4.0], (0, 1): [1.0, 1.0, 2.0],
            (1, 0): [1.0, 2.0, 2.0], (1, 1): [5.0, 4.0, 3.0]}
  judge = [{"uid": u, "id": 7, "response_index": i, "too_long": False,
            "judgments": [judgment(k, s) for k, s in enumerate(ss)], "score": float(np.mean(ss))}
           for (u, i), ss in scores.items()]
  return actor, judge


def test_records_are_joined_by_uid_not_pool_id():
  actor, judge = _twin_records()
  pairs = stages.actor_pairs(actor, judge, rho=0.0, length_unit="chars")
  assert [(p["uid"], p["id"], p["chosen"], p["rejected"]) for p in pairs] == [
      (0, 7, "good", "bad"), (1, 7, "good", "bad")]
  assert [(p["chosen_score"], p["rejected_score"]) for p in pairs] == [
      (pytest.approx(14 / 3), pytest.approx(4 / 3)), (4.0, pytest.approx(5 / 3))]
  requests = stages.meta_judge_requests(actor, judge)
  # Highest judge-score variance: uid 0's "bad" (1, 1, 2) and "good" (5, 5, 4) tie -> index 0;
  # uid 1's "good" (5, 4, 3).
  assert [(r["uid"], r["response"], r["scores"]) for r in requests] == [
      (0, "good", [5.0, 5.0, 4.0]), (1, "good", [5.0, 4.0, 3.0])]
  # A meta-judge that prefers the higher score (A on equal scores): chosen = judgment 0 (the first
  # of the highest), rejected = judgment 2 in both.
  winner = lambda r, a, b: "A" if r["scores"][a] >= r["scores"][b] else "B"
  meta = [{**r, "battles": [{"a": a, "b": b, "winner": winner(r, a, b), "text": "", "too_long": False}
                            for a, b in r["orders"]]} for r in requests]
  j_pairs, _, _ = stages.judge_pairs(meta, prompts.JUDGE_TEMPLATE, None, 1e-3)
  assert [(p["uid"], p["id"], p["chosen"], p["rejected"], p["prompt"]) for p in j_pairs] == [
      (u, 7, "Check 0. Score: 5", f"Check 2. Score: {low}",
       prompts.render_judge_prompt(prompts.JUDGE_TEMPLATE, "Q", "good"))
      for u, low in ((0, 4), (1, 3))]


def test_skip_same_score_battles_leaves_judgments_with_one_score_level():
  actor, judge = _twin_records()
  # uid 0's "good" has scores (5, 5, 4): of its 3 pairs of judgments only {0, 2} and {1, 2} differ.
  every = stages.meta_judge_requests(actor, judge)
  skipped = stages.meta_judge_requests(actor, judge, skip_same_score=True)
  assert every[0]["orders"] == [[0, 1], [1, 0], [0, 2], [2, 0], [1, 2], [2, 1]]
  assert skipped[0]["orders"] == [[0, 2], [2, 0], [1, 2], [2, 1]]
  assert skipped[1]["orders"] == every[1]["orders"]     # (5, 4, 3): every pair differs
  # A coin-flip meta-judge on the same-score battle (judgment 1 beats 0 in both orders) decides
  # the chosen judgment when those battles are run; without them 0 and 1 stay level and the
  # chosen one is the first of them.
  def judged(requests):
    winner = lambda r, a, b: ("B" if (a, b) == (0, 1) else "A") if r["scores"][a] == r["scores"][b] \
        else ("A" if r["scores"][a] > r["scores"][b] else "B")
    return [{**r, "battles": [{"a": a, "b": b, "winner": winner(r, a, b), "text": "",
                               "too_long": False} for a, b in r["orders"]]} for r in requests]
  chosen = lambda requests: [p["chosen_index"] for p in stages.judge_pairs(
      judged(requests), prompts.JUDGE_TEMPLATE, None, 1e-3)[0]]
  assert chosen(every)[0] == 1 and chosen(skipped)[0] == 0
  # All scores equal: no battle is left, and the request is dropped.
  for j in judge:
    for x in j["judgments"]:
      x["score"] = 3.0
  assert stages.meta_judge_requests(actor, judge, skip_same_score=True) == []
  assert len(stages.meta_judge_requests(actor, judge)) == 2


def test_skip_same_score_in_a_run_counts_the_battles_it_left_out(tmp_path, monkeypatch):
  # "short good" judged (5, 5, 3): the highest variance; its two 5s do not battle each other.
  monkeypatch.setitem(JUDGMENTS, "short good", ["Fine. Score: 5", "Again. Score: 5", "Meh. Score: 3"])
  config = make_config()
  config.meta_judge.skip_same_score = True
  (metrics,), _ = _run(tmp_path, config)
  (meta,) = artifacts.read_jsonl(str(tmp_path / "iter_1" / "meta_judge.jsonl"))
  assert meta["scores"] == [5.0, 5.0, 3.0]
  assert [(b["a"], b["b"]) for b in meta["battles"]] == [(0, 2), (2, 0), (1, 2), (2, 1)]
  assert metrics["meta/battles"] == 4 and metrics["meta/same_score_battles_skipped"] == 2
  # The scripted meta-judge prefers a 3 to a 5; the two 5s stay level, so the first is rejected.
  (jpair,) = artifacts.read_jsonl(str(tmp_path / "iter_1" / "judge_pairs.jsonl"))
  assert (jpair["chosen_index"], jpair["rejected_index"]) == (2, 0)


def test_oracle_metrics_join_by_uid(monkeypatch):
  from meta_rewarding.testbed import evaluate
  actor, judge = _twin_records()
  # The two copies stand for different tasks; a response is right iff it is its task's answer.
  actor[0]["prompt"], actor[1]["prompt"] = "task good", "task bad"
  seen = {}

  class Oracle:
    @staticmethod
    def is_correct(task, response):
      return task == "task " + response

    @staticmethod
    def actor_accuracy(tasks, responses):
      seen["actor"] = sorted(zip(tasks, responses))
      return 0.5

    @staticmethod
    def judge_accuracy(tasks, responses, scores):
      seen["judge"] = sorted(zip(tasks, responses, scores))
      return 0.5

  monkeypatch.setattr(evaluate, "task_from_instruction", lambda prompt: prompt)
  monkeypatch.setattr(evaluate, "oracle", Oracle)
  a_pairs = stages.actor_pairs(actor, judge, rho=0.0, length_unit="chars")
  out = evaluate.oracle_metrics({"actor": actor, "judge": judge, "meta_judge": [],
                                 "actor_pairs": a_pairs})
  assert seen["actor"] == [("task bad", "bad"), ("task bad", "good"),
                           ("task good", "bad"), ("task good", "good")]
  assert seen["judge"] == sorted(
      [("task good", "good", s) for s in (5.0, 5.0, 4.0)] +
      [("task good", "bad", s) for s in (1.0, 1.0, 2.0)] +
      [("task bad", "bad", s) for s in (1.0, 2.0, 2.0)] +
      [("task bad", "good", s) for s in (5.0, 4.0, 3.0)])
  # Both pairs choose "good": right for uid 0's task only.
  assert out["oracle/actor_pair_chosen_correct"] == 0.5
  assert out["oracle/actor_pair_rejected_correct"] == 0.5


def test_judge_pair_with_identical_texts_is_dropped_and_counted():
  same, other = "Same check. Score: 4", "Other check. Score: 2"
  # Judgments 0 and 1 are one text sampled twice; the (sampled) meta-judge still split them:
  # 0 won both of their battles, so Elo puts 0 first and 1 last. Judgment 2 ties with both.
  battles = [(0, 1, "A"), (1, 0, "B"), (0, 2, "A"), (2, 0, "A"), (1, 2, "A"), (2, 1, "A")]
  meta = [{"uid": 0, "id": 3, "prompt": "Q", "response_index": 0, "response": "R",
           "judgments": [same, same, other], "scores": [4.0, 4.0, 2.0],
           "battles": [{"a": a, "b": b, "winner": w, "text": w, "too_long": False}
                       for a, b, w in battles]}]
  pairs, _, dropped = stages.judge_pairs(meta, prompts.JUDGE_TEMPLATE, None, 1e-3)
  assert pairs == [] and dropped == 1
  meta[0]["judgments"][1] = "Another check. Score: 4"  # distinct texts: the same battles give a pair
  pairs, _, dropped = stages.judge_pairs(meta, prompts.JUDGE_TEMPLATE, None, 1e-3)
  assert dropped == 0 and [(p["uid"], p["chosen_index"], p["rejected_index"]) for p in pairs] == [
      (0, 0, 1)]


class DuplicateJudgmentPolicy(ScriptedPolicy):
  """The judge samples one judgment of "short good" twice; the meta-judge, sampling, sends the first
  of two identical battle prompts to A and the second to B (distinct prompts all go to A)."""

  JUDGMENTS = {**JUDGMENTS, "short good": ["Same. Score: 4", "Same. Score: 4", "Score: 1"]}

  def __init__(self):
    super().__init__()
    self.seen = set()

  def generate(self, batch, *, n, max_new_tokens, seed, share_prefix, desc):
    if batch and "Judgment A:" in batch[0]:
      out = []
      for text in batch:
        winner = "B" if text in self.seen else "A"
        self.seen.add(text)
        out.append([Generation(f"Winner: Judgment {winner}", 3, "stop")])
      return out
    if batch and "<response>" in batch[0]:
      return [[Generation(j, 3, "stop") for j in self.JUDGMENTS[
          t.split("<response>")[1].split("</response>")[0]][:n]] for t in batch]
    return super().generate(batch, n=n, max_new_tokens=max_new_tokens, seed=seed,
                            share_prefix=share_prefix, desc=desc)


def test_identical_judge_pair_dropped_in_a_run_and_recounted_on_resume(tmp_path):
  (metrics,), policy = _run(tmp_path, make_config(), DuplicateJudgmentPolicy())
  assert metrics["pairs/judge"] == 0 and metrics["pairs/judge_identical_dropped"] == 1
  assert [p["kind"] for p in policy.trained[0]] == ["actor"]
  assert artifacts.read_jsonl(str(tmp_path / "iter_1" / "judge_pairs.jsonl")) == []
  # Recomputed from the stored meta-judge records when the iteration is evaluated again.
  os.remove(tmp_path / "iter_1" / "metrics.json")
  (again,), _ = _run(tmp_path, make_config(), DuplicateJudgmentPolicy())
  assert again["pairs/judge_identical_dropped"] == 1


def test_kill_during_judging_then_resume_equals_uninterrupted(tmp_path):
  config = make_config(num_iterations=2)
  _run(tmp_path / "clean", config)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", config, ScriptedPolicy(fail_after_judge_calls=3))
  chunks = tmp_path / "killed" / "iter_1" / "judge.jsonl.chunks"
  assert chunks.exists() and not (tmp_path / "killed" / "iter_1" / "judge.jsonl").exists()
  finished_chunk = (chunks / "000000-000003.jsonl").read_text()  # items [0, 3): P1's responses
  resumed = ScriptedPolicy()
  _run(tmp_path / "killed", config, resumed)
  assert resumed.judge_calls == 2 + 5  # the finished chunk (3 responses) was not judged again
  for name in ("prompts", "actor", "judge", "actor_pairs", "meta_judge", "judge_pairs", "dpo"):
    for it in (1, 2):
      a = (tmp_path / "clean" / f"iter_{it}" / f"{name}.jsonl").read_text()
      b = (tmp_path / "killed" / f"iter_{it}" / f"{name}.jsonl").read_text()
      assert a == b, (name, it)
  assert finished_chunk in (tmp_path / "killed" / "iter_1" / "judge.jsonl").read_text()
  # No timing fields in the metrics: byte-identical.
  assert ((tmp_path / "clean" / "metrics.jsonl").read_bytes() ==
          (tmp_path / "killed" / "metrics.jsonl").read_bytes())


def test_changed_config_is_refused_on_resume(tmp_path):
  config = make_config()
  pipeline.check_config(str(tmp_path), config.to_json(), allow_change=False)
  config.pipeline.rho = (0.4,)
  with pytest.raises(PipelineError, match="pipeline.rho"):
    pipeline.check_config(str(tmp_path), config.to_json(), allow_change=False)
  pipeline.check_config(str(tmp_path), config.to_json(), allow_change=True)


def test_no_valid_judgments_means_no_pairs_and_no_crash(tmp_path):
  class Mute(ScriptedPolicy):
    def generate(self, batch, *, n, **kw):
      return [[Generation("?!", 1, "length")] * n for _ in batch]
  (metrics,), policy = _run(tmp_path, make_config(), Mute())
  assert metrics["judge/parse_failure_rate"] == 1.0 and metrics["judge/score_mean"] is None
  assert metrics["pairs/actor"] == 0 and metrics["pairs/judge"] == 0 and metrics["dpo/steps"] == 0
  assert policy.trained == [] and (tmp_path / "iter_1" / "model").exists()


def test_model_evaluation_hook_gives_m0_and_each_trained_model_once(tmp_path):
  """evaluate_model measures M_0 before iteration 1 and M_t after iteration t; the results are
  kept in iter_<t>/heldout.json, so a resumed run does not measure again."""
  calls = []

  def evaluate_model(policy, label):
    calls.append((label, policy.version))
    return {"heldout/actor_accuracy": 0.5 + 0.1 * policy.version, "heldout/tasks": 3}

  config = make_config(num_iterations=2)
  policy = ScriptedPolicy()
  metrics = pipeline.run(config, str(tmp_path), policy, POOL, evaluate_model=evaluate_model)
  assert calls == [("M_0", 0), ("M_1", 1), ("M_2", 2)]
  assert [m["iteration"] for m in metrics] == [0, 1, 2]
  assert metrics[0] == {"iteration": 0, "heldout/actor_accuracy": 0.5, "heldout/tasks": 3}
  assert metrics[2]["heldout/actor_accuracy"] == pytest.approx(0.7)
  assert "pairs/actor" in metrics[2]  # the iteration's own metrics stay next to them
  lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
  assert lines == json.loads(json.dumps(metrics))
  assert os.path.exists(tmp_path / "iter_0" / "heldout.json")
  # Resume: nothing is measured again, the records are the same.
  calls.clear()
  again = pipeline.run(config, str(tmp_path), ScriptedPolicy(), POOL,
                       evaluate_model=evaluate_model)
  assert calls == []
  # (timings are not results: they are in timings.jsonl, where iteration 2 keeps its first time)
  assert again == metrics


def test_model_evaluation_of_the_last_model_only(tmp_path):
  calls = []
  config = make_config(num_iterations=3)
  config.evaluate.heldout_every_iteration = False
  metrics = pipeline.run(config, str(tmp_path), ScriptedPolicy(), POOL,
                         evaluate_model=lambda policy, label: calls.append(label) or {"heldout/x": 1})
  assert calls == ["M_0", "M_3"]
  assert ["heldout/x" in m for m in metrics] == [True, False, False, True]
