"""The jitted sampler: exactness against full forwards and transformers, sharding, shared prefixes,
strategy distributions, stop handling, determinism, compile reuse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_models import save_hf_model
from meta_rewarding import checkpoints, decode, sampling, sharding, strategies
from meta_rewarding.config import rules as config_rules
from meta_rewarding.model.llama import padded_forward
from meta_rewarding.sampling import Sampler
from meta_rewarding.strategies import Greedy, Sampling

M = 8  # new tokens in the model tests
BUCKETS = (8, 16, 32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """The GQA 'llama3' test model (vocab 300, 3 layers) as (config, params, torch model)."""
  directory = tmp_path_factory.mktemp("llama3")
  torch_model = save_hf_model("llama3", directory)
  config, params = checkpoints.load_hf(str(directory), dtype="float32")
  return config, params, torch_model


def _prompts(lengths, vocab=300, seed=0):
  rng = np.random.default_rng(seed)
  return [[int(t) for t in rng.integers(3, vocab, size=n)] for n in lengths]


RAGGED = _prompts((3, 11, 7, 16))


@pytest.fixture(scope="module")
def greedy_run(model):
  config, params, _ = model
  batch = decode.make_batch(RAGGED, length=16)
  out = decode.generate_tokens(config, params, batch, strategy=Greedy(), max_new_tokens=M)
  return jax.device_get(out)


def _full_forward_logprobs(config, params, sequences):
  """Log-softmax of a plain (cache-free) forward over left-padded sequences, right-aligned."""
  width = max(map(len, sequences))
  tokens = np.zeros((len(sequences), width), np.int32)
  valid = np.zeros((len(sequences), width), bool)
  for b, s in enumerate(sequences):
    tokens[b, width - len(s):] = s
    valid[b, width - len(s):] = True
  logits = jax.jit(padded_forward, static_argnums=0)(config, params, tokens, valid)
  return np.asarray(jax.nn.log_softmax(logits, axis=-1)), width


def test_greedy_equals_argmax_of_repeated_full_forwards(model, greedy_run):
  config, params, _ = model
  out = greedy_run
  assert (out.lengths == M).all() and not out.stopped.any()
  sequences = [p + [int(t) for t in out.tokens[b]] for b, p in enumerate(RAGGED)]
  logprobs, width = _full_forward_logprobs(config, params, sequences)
  for b, p in enumerate(RAGGED):
    for t in range(M):
      # The logits that predicted token t sit at the position before it (right-aligned rows).
      row = logprobs[b, width - M - 1 + t]
      assert out.tokens[b, t] == np.argmax(row), (b, t)
      np.testing.assert_allclose(out.logprobs[b, t], row[out.tokens[b, t]], atol=1e-4)


def test_greedy_equals_transformers_generate(model, greedy_run):
  config, params, torch_model = model
  eos = 2
  batch = decode.make_batch(RAGGED, length=16)
  ours = jax.device_get(decode.generate_tokens(config, params, batch, strategy=Greedy(),
                                               max_new_tokens=M, stop_ids=[eos]))
  ids = torch.as_tensor(np.asarray(batch.tokens), dtype=torch.long)
  mask = torch.as_tensor((np.arange(16)[None] >= 16 - batch.lengths[:, None]).astype(np.int64))
  with torch.no_grad():
    theirs = torch_model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=M,
                                  eos_token_id=eos, pad_token_id=0).numpy()[:, 16:]
  for b in range(len(RAGGED)):
    n = int(ours.lengths[b])
    np.testing.assert_array_equal(ours.tokens[b, :n], theirs[b, :n])
    assert bool(ours.stopped[b]) == (eos in theirs[b].tolist())
  np.testing.assert_array_equal(ours.tokens, greedy_run.tokens)  # eos never came up: same run


def test_stop_ids_lengths_and_finish_reasons(model, greedy_run):
  config, params, _ = model
  ref = greedy_run.tokens
  stops = [int(ref[0, 3]), int(ref[2, 5])]
  batch = decode.make_batch(RAGGED, length=16)
  out = jax.device_get(decode.generate_tokens(config, params, batch, strategy=Greedy(),
                                              max_new_tokens=M, stop_ids=stops, pad_id=0))
  for b in range(len(RAGGED)):
    hits = [t for t in range(M) if ref[b, t] in stops]
    n = hits[0] + 1 if hits else M
    assert out.lengths[b] == n and bool(out.stopped[b]) == bool(hits), b
    np.testing.assert_array_equal(out.tokens[b, :n], ref[b, :n])      # the stop token included
    assert (out.tokens[b, n:] == 0).all() and (out.logprobs[b, n:] == 0).all()
  # Every row stops after its second token: the loop ends early and the rest stays padding.
  out = jax.device_get(decode.generate_tokens(config, params, batch, strategy=Greedy(),
                                              max_new_tokens=M, stop_ids=set(ref[:, 1].tolist())))
  assert (out.lengths <= 2).all() and out.stopped.all()


# ------------------------------------------------------------------------------------------------
# The driver: sharding, shared prefixes, n samples, determinism, buckets.

@pytest.fixture(scope="module")
def sampler(model):
  config, params, _ = model
  return Sampler(config, params, None, batch_size=8, prompt_buckets=BUCKETS, min_shared_prefix=8)


# Diverse enough that samples differ; exercises temperature, top-k and top-p together. Most driver
# tests reuse one compiled program: 6-8 prompts of 9-16 tokens, n=1 (batch bucket 8, length 16).
STRATEGY = Sampling(temperature=1.5, top_k=40, top_p=0.95)


def _flat(results):
  return [(c.token_ids, c.finish_reason, c.num_tokens) for cs in results for c in cs]


def _logprobs(results):
  return np.array([c.logprob for cs in results for c in cs])


@pytest.fixture(scope="module")
def sampled(sampler):
  prompts = _prompts((9, 13, 16, 10, 15, 12), seed=1)
  return prompts, sampler.generate(prompts, n=1, strategy=STRATEGY, max_new_tokens=M, seed=3,
                                   progress=False)


@pytest.mark.parametrize("mesh_shape", [{"fsdp": 4, "tensor": 2}, {"data": 4, "tensor": 2}])
def test_sharded_equals_unsharded(model, sampled, mesh_shape):
  config, params, _ = model
  prompts, reference = sampled
  mesh = sharding.make_mesh(mesh_shape)
  sharded = Sampler(config, params, None, mesh=mesh, rules=config_rules.DECODE_RULES,
                    batch_size=8, prompt_buckets=BUCKETS)
  q = sharded.params["layers_0"]["attn"]["q"]
  assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated
  results = sharded.generate(prompts, n=1, strategy=STRATEGY, max_new_tokens=M, seed=3,
                             progress=False)
  assert _flat(results) == _flat(reference)
  np.testing.assert_allclose(_logprobs(results), _logprobs(reference), atol=1e-4)


def test_same_seed_same_output_whatever_the_batch_composition(model, sampler, sampled):
  config, params, _ = model
  prompts, reference = sampled
  again = sampler.generate(prompts, n=1, strategy=STRATEGY, max_new_tokens=M, seed=3, progress=False)
  assert _flat(again) == _flat(reference)
  # Batches of 2 instead of one of 6 (bucket 8): every prompt keeps its own key.
  small = Sampler(config, params, None, batch_size=2, prompt_buckets=BUCKETS)
  assert _flat(small.generate(prompts, n=1, strategy=STRATEGY, max_new_tokens=M, seed=3,
                              progress=False)) == _flat(reference)
  other = sampler.generate(prompts, n=1, strategy=STRATEGY, max_new_tokens=M, seed=4, progress=False)
  assert _flat(other) != _flat(reference)


def test_no_recompilation_between_batches_of_one_bucket(sampler, sampled):
  before = decode.TRACE_COUNTS["generate"]
  sampler.generate(_prompts((10, 12, 15, 11, 9, 16, 14), seed=7), n=1, strategy=STRATEGY,
                   max_new_tokens=M, progress=False)
  sampler.generate(_prompts((9, 16, 13, 12, 10), seed=8), n=1, strategy=STRATEGY, max_new_tokens=M,
                   seed=1, progress=False)
  assert decode.TRACE_COUNTS["generate"] == before


def test_shared_prefix_results_equal_unshared_and_n_samples_differ(sampler):
  rubric, rubric2 = _prompts((18, 20), seed=2)
  tails = _prompts((1, 4, 6, 2, 9, 3, 5, 7), seed=3)
  prompts = [rubric + t for t in tails[:3]] + [rubric2 + t for t in tails[3:]]
  plans = sampler._plans(sampler.encode(prompts), 2, sampler._buckets(M), share_prefix=True)
  assert all(p.prefix_length for p in plans) and sorted(len(p.prefixes) for p in plans) == [1, 2]
  plain = sampler.generate(prompts, n=2, strategy=STRATEGY, max_new_tokens=M, seed=5,
                           progress=False)
  reused = sampler.generate(prompts, n=2, strategy=STRATEGY, max_new_tokens=M, seed=5,
                            share_prefix=True, progress=False)
  assert _flat(reused) == _flat(plain)
  np.testing.assert_allclose(_logprobs(reused), _logprobs(plain), atol=1e-4)
  assert [len(r) for r in plain] == [2] * len(prompts)
  assert sum(r[0].token_ids != r[1].token_ids for r in plain) >= len(prompts) // 2


def test_n_samples_share_one_prefill(model):
  config, params, _ = model
  # The prefill runs at the prompt batch B = 2; only the decode sees B·n = 8 rows.
  batch = jax.tree.map(jnp.asarray, decode.make_batch(_prompts((6, 10)), length=16))
  jaxpr = str(jax.make_jaxpr(lambda b: decode.generate_tokens(
      config, params, b, strategy=Greedy(), max_new_tokens=M, num_samples=4))(batch))
  D = config.hidden_size
  assert f"f32[2,16,{D}]" in jaxpr and f"f32[8,16,{D}]" not in jaxpr and f"f32[8,1,{D}]" in jaxpr


def test_find_shared_prefixes_groups_by_the_longest_useful_prefix():
  # Meta-judge-like prompts: rubric + response r + judgment A + judgment B.
  def prompts(judgment_a_length):
    return [list(range(100, 130)) + [r] * 10 + [50 + a] * judgment_a_length + [70 + b] * 5
            for r in range(2) for a in range(3) for b in range(3) if a != b]
  # Long judgments: sharing through judgment A (2 prompts each) saves the most prefill.
  groups = sampling.find_shared_prefixes(prompts(50), min_length=8)
  assert sorted((len(rows), shared) for rows, shared in groups) == [(2, 90)] * 6
  # Short ones: one group per response (6 prompts), sharing rubric + response.
  groups = sampling.find_shared_prefixes(prompts(5), min_length=8)
  assert sorted((len(rows), shared) for rows, shared in groups) == [(6, 40)] * 2
  for rows, shared in groups:
    assert all(prompts(5)[i][:shared] == prompts(5)[rows[0]][:shared] for i in rows)
  # Identical prompts share all but their last token; short common prefixes are not shared.
  groups = sampling.find_shared_prefixes([[1, 2, 3] * 4, [1, 2, 3] * 4, [9] * 5, [1, 2, 4]],
                                         min_length=4)
  assert sorted((len(r), s) for r, s in groups) == [(1, 0), (1, 0), (2, 11)]


def test_prompt_length_errors_and_too_long(sampler):
  assert sampler.max_prompt_length(M) == 32
  # A prompt over the limit comes back as n empty "too_long" completions; the others are sampled
  # exactly as without it (its presence changes no batch or key of theirs).
  out = sampler.generate([[5, 6], [7] * 33, list(range(3, 35))], n=2, max_new_tokens=M,
                         progress=False, seed=4)
  alone = sampler.generate([[5, 6], list(range(3, 35))], n=2, max_new_tokens=M, progress=False,
                           seed=4)
  assert [c.finish_reason for c in out[1]] == ["too_long"] * 2
  assert out[1][0].num_tokens == 0 and out[1][0].text == "" and out[1][0].prompt_tokens == 33
  assert [c.prompt_tokens for c in out[0] + out[2]] == [2, 2, 32, 32]
  assert out[0] == alone[0] and [c.finish_reason for c in out[2]] != ["too_long"] * 2
  with pytest.raises(ValueError, match=r"prompt 1 has 40 tokens"):
    sampler.generate([[5, 6], [7] * 40], max_new_tokens=M, progress=False, too_long="raise")
  with pytest.raises(ValueError, match="prompt 0 is empty"):
    sampler.generate([[]], max_new_tokens=M, progress=False)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    sampler.generate([[5, 300]], max_new_tokens=M, progress=False)
  with pytest.raises(ValueError, match="no tokenizer"):
    sampler.generate(["text"], max_new_tokens=M, progress=False)
  # max_cache_length clips the buckets: prompt + new tokens never exceed it.
  assert sampler.max_prompt_length(120) == 8


# ------------------------------------------------------------------------------------------------
# Strategies, without a model.

def _reference(logits, s: Sampling):
  """Dense [R,V] filtered distribution, straight from the definitions (numpy, float64)."""
  out = []
  for row in np.asarray(logits, np.float64) / s.temperature:
    p = np.exp(row - row.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros_like(p, bool)
    C = s.num_candidates(len(p)) or len(p)
    keep[order[:C]] = True
    if s.top_p < 1:
      q = np.where(keep, p, 0) / p[keep].sum()
      mass_before = np.cumsum(q[order]) - q[order]
      keep = np.zeros_like(p, bool)
      keep[order[mass_before < s.top_p]] = True
      keep &= q > 0
    f = np.where(keep, p, 0)
    out.append(f / f.sum())
  return np.array(out)


def _dense(s: Sampling, logits):
  probs, ids = jax.device_get(jax.jit(s.distribution)(logits))
  dense = np.zeros(logits.shape)
  np.put_along_axis(dense, ids, probs, axis=1)
  return dense / dense.sum(1, keepdims=True)


STRATEGIES = [Sampling(temperature=0.7), Sampling(top_k=5), Sampling(top_p=0.8, nucleus_candidates=0),
              Sampling(top_p=0.8), Sampling(temperature=1.3, top_k=10, top_p=0.9),
              Sampling(top_p=0.95, nucleus_candidates=8)]


@pytest.mark.parametrize("s", STRATEGIES, ids=str)
def test_filtered_distribution_is_exactly_the_definition(s):
  logits = np.random.default_rng(0).standard_normal((6, 50)).astype(np.float32) * 2
  dense = _dense(s, logits)
  np.testing.assert_allclose(dense, _reference(logits, s), atol=1e-5)
  if s.top_p < 1 and not s.top_k and s.nucleus_candidates == 0:
    base = _dense(Sampling(temperature=s.temperature), logits)
    for row, p in zip(dense, base):
      kept = row > 0
      assert p[kept].sum() >= s.top_p - 1e-6                    # enough mass
      assert p[kept].sum() - p[kept].min() < s.top_p             # and no token more than needed


@pytest.mark.parametrize("s, V", [(Sampling(temperature=0.9), 1000), (Sampling(top_k=6), 50),
                                  (Sampling(top_p=0.7), 50)], ids=str)
def test_samples_follow_the_filtered_distribution(s, V):
  N = 40000
  row = np.random.default_rng(1).standard_normal(V).astype(np.float32) * 1.5
  logits = jnp.broadcast_to(jnp.asarray(row), (N, V))
  u = 1.0 - jax.random.uniform(jax.random.key(0), (N,))
  draws = np.asarray(jax.jit(s.sample)(logits, u))
  expected = _reference(row[None], s)[0]
  freq = np.bincount(draws, minlength=V) / N
  assert (freq[expected == 0] == 0).all()                      # filtered tokens never drawn
  assert np.abs(freq - expected).max() < 0.01                   # ~4 standard errors at N=40000


@pytest.mark.parametrize("V, k, block", [(1003, 5, 8), (1024, 7, 16), (50, 5, 8), (640, 64, 4)])
def test_top_k_by_blocks_equals_lax_top_k(V, k, block):
  rng = np.random.default_rng(V)
  x = rng.standard_normal((4, V)).astype(np.float32)
  x[1, rng.permutation(V)[: V - 3]] = -np.inf                  # fewer finite values than k
  x[2] = rng.integers(0, 4, V)                                   # ties everywhere
  x[3, -1] = 100.0                                               # the best in the ragged last block
  values, ids = jax.device_get(strategies.top_k(jnp.asarray(x), k, block=block))
  want_values, want_ids = jax.device_get(jax.lax.top_k(jnp.asarray(x), k))
  np.testing.assert_array_equal(values, want_values)
  assert ((ids >= 0) & (ids < V)).all()
  np.testing.assert_array_equal(np.take_along_axis(x, ids, 1), values)  # ids point at the values
  for r in (0, 3):  # no ties: the same ids too
    np.testing.assert_array_equal(ids[r], want_ids[r])
  assert len(set(ids[2].tolist())) == k                         # tied values, distinct ids


def test_inverse_cdf_edges_and_greedy_ties():
  probs = np.zeros((3, 300), np.float32)
  probs[:, 5], probs[:, 130], probs[:, 131] = 0.5, 0.25, 0.25  # blocked path (C > 256)
  u = jnp.asarray([1.0, 0.5, 1e-9])
  assert np.asarray(strategies._inverse_cdf(jnp.asarray(probs), u)).tolist() == [131, 5, 5]
  small = jnp.asarray([[0.0, 1.0, 0.0, 0.0]] * 2)
  assert np.asarray(strategies._inverse_cdf(small, jnp.asarray([1.0, 1e-9]))).tolist() == [1, 1]
  tie = jnp.asarray([[0.0, 3.0, 1.0, 3.0]])
  assert int(Greedy().sample(tie)[0]) == 1


def test_strategy_config_round_trip():
  from meta_rewarding.config import base
  cfg = base.get_base_config().sampling
  assert sampling.strategy_from_config(cfg) == Sampling(temperature=0.8, top_p=0.95, top_k=64)
  cfg.temperature = 0.0
  assert sampling.strategy_from_config(cfg) == Greedy()
  with pytest.raises(ValueError, match="top_p"):
    Sampling(top_p=0.0)


def test_decoding_weights_are_compute_dtype_unstacked_and_sample_the_same(model):
  """The sampler reads `decoding_params`: a scanned float32 model's weights unstacked (and cast
  to the compute dtype); its samples equal the scanned model's own."""
  config, params, _ = model
  scanned = config.replace(scan_layers=True)
  from meta_rewarding.model import llama
  stacked = jax.jit(lambda p: llama.init_params(scanned, jax.random.key(1)))(None)
  batch = decode.make_batch(RAGGED, length=16)
  direct = decode.generate_tokens(scanned, stacked, batch, strategy=Greedy(), max_new_tokens=M)
  decoded = sampling.decoding_params(scanned, stacked)
  dc = sampling.decoding_config(scanned)
  assert not dc.scan_layers and dc.remat_policy == "none"
  assert set(decoded) >= {f"layers_{i}" for i in range(config.num_hidden_layers)}
  via_copy = decode.generate_tokens(dc, decoded, batch, strategy=Greedy(), max_new_tokens=M)
  np.testing.assert_array_equal(np.asarray(direct.tokens), np.asarray(via_copy.tokens))
  np.testing.assert_allclose(np.asarray(direct.logprobs), np.asarray(via_copy.logprobs), atol=1e-5)
  # bfloat16 compute: the copy is bfloat16, the master weights stay float32.
  bf16 = scanned.replace(dtype="bfloat16")
  leaves = jax.tree.leaves(sampling.decoding_params(bf16, stacked))
  assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(stacked)} == {jnp.dtype(jnp.float32)}
  # Nothing to change: the params themselves, no copy.
  assert sampling.decoding_params(config, params) is not None
  same = sampling.decoding_params(config, params)
  assert all(a is b for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)))
