"""The real stack end to end: a random-weight tiny Llama through the real sampler and trainer."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from meta_rewarding.config import base as config_base
from meta_rewarding import artifacts, run
from meta_rewarding.config.base import get_base_config
from meta_rewarding.policy import JaxPolicy

# Short templates keep the test fast; they go through exactly the pipeline's rendering and parsing.
JUDGE = "Judge.\nQ: {instruction}\nA: {response}\nEnd with Score: <0-5>."
META = "Q: {instruction}\nA: {response}\nJudgment A: {judgment_a}\nJudgment B: {judgment_b}\nWinner?"


def tiny_config(num_iterations=2) -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.tokenizer = "train:400"
  c.model.chat_format = "llama2"
  c.model.architecture = ml_collections.ConfigDict(dict(
      vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512))
  c.model.dtype = c.model.param_dtype = "float32"
  c.data.prompts = "testbed:64"
  c.sampling.batch_size = 8
  c.sampling.prompt_buckets = (64, 128)
  c.actor.num_responses = 2
  c.actor.max_new_tokens = 8
  c.judge.num_judgments = 2
  c.judge.max_new_tokens = 8
  c.judge.template = JUDGE
  c.meta_judge.max_new_tokens = 6
  c.meta_judge.template = META
  c.pipeline.num_iterations = num_iterations
  c.pipeline.prompts_per_iteration = 3
  c.pipeline.chunk_size = 2
  from meta_rewarding import train
  c.train = config_base.train_config()
  c.train.batch_size = 8  # a multiple of the 8 fake devices the tests run on
  c.train.num_epochs = 1
  c.train.max_length = 192
  c.train.learning_rate = 1e-3
  c.evaluate.oracle = "testbed"
  return c


def test_two_iterations_of_a_random_model_report_what_happened(tmp_path):
  results = run.run(tiny_config(), str(tmp_path))
  assert [r["iteration"] for r in results] == [1, 2]
  for r in results:
    # A random model writes no parseable judgment: the metrics say so; nothing is invented.
    assert r["actor/responses"] > 0
    assert r["judge/judgments"] > 0
    assert r["judge/parse_failures"] + (r["judge/judgments"] - r["judge/parse_failures"]) == r["judge/judgments"]
    if r["judge/parse_failures"] == r["judge/judgments"]:
      assert r["judge/score_mean"] is None and r["pairs/actor"] == 0
    assert "oracle/actor_accuracy" in r
  lines = artifacts.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert len(lines) == 2
  for it in (1, 2):
    d = tmp_path / f"iter_{it}"
    for name in ("prompts", "actor", "judge", "actor_pairs", "dpo"):
      assert (d / f"{name}.jsonl").exists(), name
    assert (d / "model" / "model.safetensors").exists()
    assert (d / "model" / "tokenizer.model").exists()
  judged = artifacts.read_jsonl(str(tmp_path / "iter_1" / "judge.jsonl"))
  assert all(len(j["judgments"]) == 2 for j in judged)  # every raw judgment is kept
  # Running the same command again resumes everything and changes nothing.
  again = run.run(tiny_config(), str(tmp_path))
  strip = lambda ms: [{k: v for k, v in m.items() if k != "wall_seconds"} for m in ms]
  assert strip(again) == strip(results)


def test_policy_trains_on_pairs_and_round_trips_through_hf(tmp_path):
  config = tiny_config()
  pool = run.load_pool(config)
  policy = JaxPolicy.from_config(config, str(tmp_path), pool)
  before = jax.tree.map(np.asarray, policy.params)
  pairs = [{"prompt": pool[i], "chosen": "The answer is 7.", "rejected": "no", "kind": "actor"}
           for i in range(4)]
  steps = policy.train_dpo(pairs, checkpoint_dir=str(tmp_path / "ckpt"), seed=0)
  assert steps and all(np.isfinite(s["loss"]) for s in steps)
  assert steps[0]["data/pairs_skipped_too_long"] == 0
  after = jax.tree.map(np.asarray, policy.params)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
  policy.save(str(tmp_path / "model"))
  fresh = JaxPolicy.from_config(config, str(tmp_path), pool)
  fresh.load(str(tmp_path / "model"))
  jax.tree.map(np.testing.assert_array_equal, after, jax.tree.map(np.asarray, fresh.params))
  # The trained policy samples through the sampler.
  out = fresh.generate(pool[:2], n=2, max_new_tokens=4, seed=1, share_prefix=False, desc="t")
  assert len(out) == 2 and all(len(row) == 2 for row in out)


def test_artifacts_do_not_depend_on_the_batching(tmp_path):
  """config.sampling.batching: continuous (the default) and static write the same stage files."""
  files = {}
  for batching in ("continuous", "static"):
    config = tiny_config(num_iterations=1)
    config.sampling.batching = batching
    run.run(config, str(tmp_path / batching))
    d = tmp_path / batching / "iter_1"
    files[batching] = {name: artifacts.read_jsonl(str(d / f"{name}.jsonl"))
                       for name in ("prompts", "actor", "judge", "actor_pairs")}
  assert files["continuous"] == files["static"]
  assert files["static"]["actor"] and files["static"]["judge"]
