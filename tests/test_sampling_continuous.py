"""Continuous batching (decode.prefill / insert / decode_block through Sampler): the same
completions as static batching, one program per bucket, and fuller decode rows on a length-skewed
workload."""

import jax
import numpy as np
import pytest

from meta_rewarding import decode, sharding
from meta_rewarding.config import rules as config_rules
from meta_rewarding.model.config import tiny_config
from meta_rewarding.model.llama import init_params
from meta_rewarding.sampling import Sampler
from meta_rewarding.strategies import Greedy, Sampling

M = 12
BUCKETS = (8, 16, 32)
STRATEGY = Sampling(temperature=1.5, top_k=40, top_p=0.95)


@pytest.fixture(scope="module")
def model():
  config = tiny_config(vocab_size=300, max_position_embeddings=128)
  return config, init_params(config, jax.random.key(0))


def _prompts(lengths, vocab=300, seed=0):
  rng = np.random.default_rng(seed)
  return [[int(t) for t in rng.integers(3, vocab, size=n)] for n in lengths]


def _sampler(model, batching, **kw):
  config, params = model
  kw.setdefault("batch_size", 4)
  return Sampler(config, params, None, prompt_buckets=BUCKETS, batching=batching,
                 min_shared_prefix=8, **kw)


def _flat(results):
  return [(c.token_ids, c.finish_reason, c.num_tokens, c.prompt_tokens)
          for cs in results for c in cs]


def _logprobs(results):
  return np.array([c.logprob for cs in results for c in cs])


# Mixed lengths over two buckets (8, 16), more prompts than the 4 decode rows.
PROMPTS = _prompts((3, 11, 7, 16, 5, 9, 14, 2, 12))


def _early_stops(model, strategy, n):
  """Stop ids that end some rows early: tokens the rows produce at steps 1-2 without stops."""
  free = _sampler(model, "static").generate(PROMPTS, n=n, strategy=strategy, max_new_tokens=M,
                                            seed=3, stop_ids=(), progress=False)
  return sorted({free[0][0].token_ids[1], free[4][-1].token_ids[2]})


@pytest.mark.parametrize("strategy,n", [(Greedy(), 1), (Greedy(), 2), (STRATEGY, 3)],
                         ids=["greedy-n1", "greedy-n2", "sampled-n3"])
def test_continuous_equals_static(model, strategy, n):
  stops = _early_stops(model, strategy, n)
  run = lambda batching: _sampler(model, batching).generate(
      PROMPTS, n=n, strategy=strategy, max_new_tokens=M, seed=3, stop_ids=stops, progress=False)
  static, continuous = run("static"), run("continuous")
  assert _flat(continuous) == _flat(static)
  np.testing.assert_allclose(_logprobs(continuous), _logprobs(static), atol=1e-4)
  reasons = {c.finish_reason for cs in static for c in cs}
  assert reasons == {"stop", "length"}  # some rows end early, the others run to M
  assert [len(cs) for cs in continuous] == [n] * len(PROMPTS)
  if strategy.needs_rng:  # the n samples of a prompt differ (their keys do)
    assert sum(cs[0].token_ids != cs[1].token_ids for cs in continuous) >= len(PROMPTS) // 2


def test_continuous_with_shared_prefixes_and_too_long(model):
  rubric = _prompts((18,), seed=2)[0]
  tails = _prompts((1, 4, 6, 2, 9, 3), seed=3)
  prompts = [rubric + t for t in tails] + [[7] * 40] + _prompts((5, 13), seed=4)
  run = lambda batching, share: _sampler(model, batching).generate(
      prompts, n=2, strategy=STRATEGY, max_new_tokens=M, seed=5, share_prefix=share,
      stop_ids=(), progress=False)
  static = run("static", False)
  shared = run("continuous", True)
  assert _flat(shared) == _flat(static)
  np.testing.assert_allclose(_logprobs(shared), _logprobs(static), atol=1e-4)
  assert [c.finish_reason for c in shared[6]] == ["too_long"] * 2


def test_keys_do_not_depend_on_slots_or_offset(model):
  """A prompt's samples are the same whichever row it lands in and whatever shares the rows."""
  reference = _sampler(model, "continuous").generate(PROMPTS, n=2, strategy=STRATEGY,
                                                     max_new_tokens=M, seed=3, progress=False)
  wide = _sampler(model, "continuous", batch_size=16, decode_block=3).generate(
      PROMPTS, n=2, strategy=STRATEGY, max_new_tokens=M, seed=3, progress=False)
  assert _flat(wide) == _flat(reference)
  tail = _sampler(model, "continuous").generate(PROMPTS[4:], n=2, strategy=STRATEGY,
                                                max_new_tokens=M, seed=3, index_offset=4,
                                                progress=False)
  assert _flat(tail) == _flat(reference[4:])


def test_sharded_equals_unsharded(model):
  """On a mesh (rows over data x fsdp: 4-prompt prefills): the completions of unsharded static."""
  config, params = model
  reference = _sampler(model, "static").generate(PROMPTS, n=2, strategy=STRATEGY,
                                                 max_new_tokens=M, seed=3, progress=False)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  sharded = Sampler(config, params, None, mesh=mesh, rules=config_rules.DECODE_RULES,
                    batch_size=4, prompt_buckets=BUCKETS)
  results = sharded.generate(PROMPTS, n=2, strategy=STRATEGY, max_new_tokens=M, seed=3,
                             progress=False)
  assert sharded.batching == "continuous" and sharded.last_stats.slots == 8
  assert _flat(results) == _flat(reference)
  np.testing.assert_allclose(_logprobs(results), _logprobs(reference), atol=1e-4)


def test_no_recompilation_within_a_bucket(model):
  sampler = _sampler(model, "continuous")
  generate = lambda seed: sampler.generate(_prompts((9, 12, 15, 10, 16, 11, 13), seed=seed), n=1,
                                           strategy=STRATEGY, max_new_tokens=M, seed=seed,
                                           progress=False)
  generate(7)
  before = dict(decode.TRACE_COUNTS)
  generate(8)
  generate(9)
  assert dict(decode.TRACE_COUNTS) == before


@pytest.mark.parametrize("max_new_tokens,n,batch_size", [(1, 2, 4), (5, 6, 4)],
                         ids=["one-token", "more-samples-than-rows"])
def test_edge_shapes_equal_static(model, max_new_tokens, n, batch_size):
  run = lambda batching: _sampler(model, batching, batch_size=batch_size).generate(
      PROMPTS[:5], n=n, strategy=STRATEGY, max_new_tokens=max_new_tokens, seed=2, progress=False)
  static, continuous = run("static"), run("continuous")
  assert _flat(continuous) == _flat(static)
  assert all(c.num_tokens <= max_new_tokens for cs in continuous for c in cs)


def test_bad_switches():
  config = tiny_config()
  with pytest.raises(ValueError, match="batching must be one of"):
    Sampler(config, None, batching="dynamic")
  with pytest.raises(ValueError, match="decode_block"):
    Sampler(config, None, decode_block=0)


def test_slot_utilisation_is_higher_for_continuous_on_a_skewed_workload(model):
  # Half the rows stop after 2 tokens (their second token is a stop id), the rest mostly run to M:
  # static batches hold their short rows' slots until the longest row ends.
  prompts = _prompts([6 + i % 9 for i in range(16)], seed=11)
  free = _sampler(model, "static").generate(prompts, n=1, strategy=Greedy(), max_new_tokens=M,
                                            stop_ids=(), progress=False)
  stops = sorted({cs[0].token_ids[1] for cs in free[::2]})
  stats, results = {}, {}
  for batching in ("static", "continuous"):
    sampler = _sampler(model, batching, decode_block=4)
    results[batching] = sampler.generate(prompts, n=1, strategy=Greedy(), max_new_tokens=M,
                                         stop_ids=stops, progress=False)
    stats[batching] = sampler.last_stats
    kept = sum(max(c.num_tokens - 1, 0) for cs in results[batching] for c in cs)
    assert stats[batching].kept_tokens == kept and stats[batching].batching == batching
    assert 0 < stats[batching].utilisation <= 1
  assert _flat(results["continuous"]) == _flat(results["static"])
  assert stats["continuous"].slots == stats["static"].slots == 4
  assert stats["continuous"].utilisation > stats["static"].utilisation
  assert stats["continuous"].slot_steps < stats["static"].slot_steps


def test_samples_enter_as_rows_free_up_all_from_one_prefill(model):
  # n = the row count (one prompt per static batch): had a prompt waited for n free rows, this
  # would be static batching again. Sample 0 of every prompt stops after 2 tokens.
  prompts = PROMPTS[:6]
  free = _sampler(model, "static").generate(prompts, n=4, strategy=STRATEGY, max_new_tokens=M,
                                            seed=1, stop_ids=(), progress=False)
  stops = sorted({cs[0].token_ids[1] for cs in free})
  stats, results = {}, {}
  for batching in ("static", "continuous"):
    sampler = _sampler(model, batching, decode_block=4)
    results[batching] = sampler.generate(prompts, n=4, strategy=STRATEGY, max_new_tokens=M,
                                         seed=1, stop_ids=stops, progress=False)
    stats[batching] = sampler.last_stats
  assert _flat(results["continuous"]) == _flat(results["static"])
  assert stats["continuous"].slots == 4 and stats["continuous"].prefills == len(prompts)
  assert stats["continuous"].utilisation > stats["static"].utilisation
