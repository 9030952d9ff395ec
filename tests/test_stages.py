"""The pure stage functions: what the driver's closures used to do, and the testbed's seam.

The hand-worked pairs, schedule and metrics are checked end to end in test_pipeline.py; these tests
cover what the stages do with prompts that do not fit the context (the scripted policy there fits
everything) and that the run never imports the testbed's seed builder. That the stages and the
driver load without jax is tests/test_layering.py's.
"""

import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from meta_rewarding import prompts, stages
from meta_rewarding.recipe_types import Generation, PipelineError, sample_prompt_ids

REPO = pathlib.Path(__file__).resolve().parents[1]


# What a run imports of the testbed: its library (tasks, oracle, judging formats, templates,
# settings, responses, held-out measurement, the oracle hooks). The seed's builder (testbed/seed.py:
# demonstrations, SFT build, the build command and its README writer) is never among them.
TESTBED_RUNTIME = ("meta_rewarding.testbed", "meta_rewarding.testbed.tasks",
                   "meta_rewarding.testbed.oracle", "meta_rewarding.testbed.judging",
                   "meta_rewarding.testbed.templates", "meta_rewarding.testbed.settings",
                   "meta_rewarding.testbed.responses", "meta_rewarding.testbed.measure",
                   "meta_rewarding.testbed.evaluate", "meta_rewarding.testbed.oracle_meta_judge")
BUILDER = "meta_rewarding.testbed.seed"


def test_the_testbed_runtime_never_imports_the_seed_builder():
  # The run's own entry (run.py) and every testbed runtime module, in one process: the builder is
  # a build script, not a library.
  modules = ", ".join(TESTBED_RUNTIME + ("meta_rewarding.run",))
  code = (f"import sys, {modules}\n"
          f"assert {BUILDER!r} not in sys.modules, 'a runtime module imports the builder'\n")
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr


def actor_record(uid, prompt, texts):
  return {"uid": uid, "id": 10 + uid, "prompt": prompt,
          "responses": [{"text": t, "num_tokens": 1, "finish_reason": "stop"} for t in texts]}


def test_prompt_records_join_on_position():
  pool = [f"p{i}" for i in range(10)]
  records = stages.prompt_records(pool, 4, iteration=2, seed=3)
  ids = sample_prompt_ids(10, 4, 2, seed=3)
  assert records == [{"uid": k, "id": i, "prompt": pool[i]} for k, i in enumerate(ids)]


def test_usable_prompts_counts_or_refuses_long_ones():
  records = [{"uid": k, "id": k, "prompt": p} for k, p in enumerate("abc")]
  usable, skipped = stages.usable_prompts(records, [True, False, True], skip_long=True, iteration=1)
  assert [r["prompt"] for r in usable] == ["a", "c"] and skipped == 1
  with pytest.raises(PipelineError, match="1 prompts of iteration 1 do not fit"):
    stages.usable_prompts(records, [True, False, True], skip_long=False, iteration=1)


def test_actor_records_drop_duplicates_and_count_samples():
  prompt = {"uid": 0, "id": 7, "prompt": "P"}
  gens = [Generation("a", 1, "stop"), Generation("b", 2, "length"), Generation("a", 1, "stop")]
  (record,) = stages.actor_records([prompt], [gens])
  assert record["duplicates_dropped"] == 1
  assert [(r["text"], r["samples"], r["finish_reason"]) for r in record["responses"]] == [
      ("a", 2, "stop"), ("b", 1, "length")]


def test_judge_records_skip_items_that_do_not_fit():
  actor = [actor_record(0, "P0", ["r0", "r1"]), actor_record(1, "P1", ["r2"])]
  items = stages.judge_items(actor)
  assert [(a["uid"], i) for a, i in items] == [(0, 0), (0, 1), (1, 0)]
  rendered = stages.judge_prompts(prompts.JUDGE_TEMPLATE, items)
  assert rendered[1] == prompts.render_judge_prompt(prompts.JUDGE_TEMPLATE, "P0", "r1")
  # The generations cover only the items that fit, in order.
  gens = [[Generation("Score: 4", 2, "stop"), Generation("no score", 2, "stop")],
          [Generation("Score: 2", 2, "stop")]]
  records = stages.judge_records(items, [True, False, True], gens)
  assert [r["too_long"] for r in records] == [False, True, False]
  assert records[1]["judgments"] == [] and records[1]["score"] is None
  assert [j["score"] for j in records[0]["judgments"]] == [4.0, None]
  assert records[0]["score"] == 4.0 and records[2]["score"] == 2.0
  assert (records[2]["uid"], records[2]["id"], records[2]["response_index"]) == (1, 11, 0)


def test_meta_judge_records_skip_battles_that_do_not_fit():
  request = {"uid": 3, "id": 13, "prompt": "P", "response_index": 0, "response": "r",
             "judgments": ["J0", "J1"], "scores": [5.0, 3.0], "orders": [[0, 1], [1, 0]]}
  rendered = stages.meta_judge_prompts(prompts.META_JUDGE_TEMPLATE, [request])
  assert rendered == [prompts.render_meta_judge_prompt(prompts.META_JUDGE_TEMPLATE, "P", "r",
                                                        a, b) for a, b in (("J0", "J1"),
                                                                           ("J1", "J0"))]
  (record,) = stages.meta_judge_records([request], [False, True],
                                        [[Generation("Winner: Judgment B", 4, "stop")]])
  assert record["uid"] == 3 and record["judgments"] == ["J0", "J1"]
  assert record["battles"] == [
      {"a": 0, "b": 1, "text": None, "winner": None, "too_long": True},
      {"a": 1, "b": 0, "text": "Winner: Judgment B", "finish_reason": "stop", "winner": "B",
       "too_long": False}]


def test_schedule_and_training_pairs():
  assert stages.scheduled_pairs(("both", "actor"), 3) == "actor"  # the last entry repeats
  with pytest.raises(PipelineError, match="expected both"):
    stages.scheduled_pairs(("bth",), 1)
  meta_judge = ml_collections.ConfigDict({"enabled": True, "run_when_unused": False})
  assert stages.runs_meta_judge(meta_judge, "both") and not stages.runs_meta_judge(meta_judge,
                                                                                     "actor")
  meta_judge.run_when_unused = True
  assert stages.runs_meta_judge(meta_judge, "none")
  meta_judge.enabled = False
  assert not stages.runs_meta_judge(meta_judge, "both")
  a = [{"prompt": "p", "chosen": "c", "rejected": "r", "kind": "actor", "chosen_score": 5}]
  j = [{"prompt": "q", "chosen": "c2", "rejected": "r2", "kind": "judge", "elo": [0.0]}]
  assert [p["kind"] for p in stages.training_pairs("both", a, j)] == ["actor", "judge"]
  assert stages.training_pairs("actor", a, j) == [
      {"prompt": "p", "chosen": "c", "rejected": "r", "kind": "actor"}]
  assert [p["kind"] for p in stages.training_pairs("judge", a, j)] == ["judge"]
  assert stages.training_pairs("judge", a, None) == [] == stages.training_pairs("none", a, j)
