"""Batched generation: a jitted prefill, then a `lax.while_loop` decode, entirely on device.

Axis letters as in `model/llama.py` (B prompts, R = B·n decode rows, T/S lengths, V vocab, L layers,
K kv heads, H head dim), plus C (sampling candidates), M (max new tokens), G (shared prefixes).

Cache slot layout of one batch (S = P1 + P2 + M slots; P1 = 0 without a shared prefix):

    [ shared prefix, left-padded (P1) | own prompt tokens, left-padded (P2) | generated tokens (M) ]

Row b attends to slots [P1 - prefix_len_b, P1) (its group's prefix) and [P1 + P2 - len_b, now]
(its own tokens); positions continue from the prefix through the prompt into the generation, so a
row's computation is the same as if its whole prompt had been prefilled alone. Every row writes its
new key at the same slot each step (the model's cache takes one scalar `cache_index`), which is why
prompts are left-padded.

Pieces:
  * `Greedy`, `Sampling`: the strategies (frozen dataclasses, hence jit-static). `Sampling` restricts
    to the top-k candidates (k = `top_k`, or `nucleus_candidates` = 64 when only `top_p` < 1) with
    `top_k` (`lax.top_k` over the k blocks with the highest maxima) before nucleus filtering,
    instead of sorting the whole vocabulary (a 16 x 32000 sort costs about as much as the model's
    forward on CPU, and XLA:GPU sorts whole rows for `lax.top_k` with k > 16), and draws with
    inverse-CDF sampling: one uniform number per row per step, so the PRNG costs O(rows), not
    O(rows x vocab) as Gumbel-max or `jax.random.categorical` do. The uniforms come from threefry
    keys derived per row from (seed, prompt index, sample index) and folded with the step: results
    do not depend on which other prompts share the batch (up to float round-off of different
    padding).
  * `generate_tokens`: the jitted core on token ids (`PromptBatch` in, `SampleOutput` out).
  * `Sampler`: the driver the pipeline calls: strings / messages / ids in, `Completion`s out;
    tokenization with the chat template, length sorting, prompt-length and batch buckets (a run
    compiles a handful of programs), shared-prefix detection, tqdm progress.

Log-probs are those of the model itself (log-softmax of the raw logits, temperature 1, unfiltered)
at the chosen token: what length normalisation and reference scoring want, whatever the strategy.
A completion stopped by a stop token includes that token in `token_ids`, `num_tokens` and
`logprob` (the probability of ending there is part of the sequence's probability); its `text` does
not.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from meta_rewarding import prompt_length, sharding as sharding_lib
from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig

Array = jax.Array

# Incremented in the body of the jitted core, i.e. once per trace (compile), never per call: tests
# use it to check that two batches of the same bucket share one program.
TRACE_COUNTS: collections.Counter = collections.Counter()

DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)


# ------------------------------------------------------------------------------------------------
# Strategies.

@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding (the lowest id among exact ties)."""
  needs_rng = False

  def sample(self, logits: Array, uniforms: Array | None = None) -> Array:
    del uniforms
    return _argmax(logits)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Ancestral sampling: temperature, then top-k, then top-p (nucleus), as transformers orders them.

  top_k = 0 means no top-k. top_p < 1 without top_k keeps the nucleus among the `nucleus_candidates`
  most likely tokens (if those hold less than top_p of the mass, all of them are kept); set
  `nucleus_candidates=0` for the exact nucleus over the whole vocabulary (a full sort: slow on CPU).
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  nucleus_candidates: int = 64
  needs_rng = True

  def __post_init__(self):
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0 (use Greedy() for 0), got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0 or self.nucleus_candidates < 0:
      raise ValueError(f"top_k and nucleus_candidates must be >= 0, got {self.top_k}, "
                       f"{self.nucleus_candidates}")

  def num_candidates(self, vocab_size: int) -> int | None:
    """C: how many top tokens the draw is restricted to (None: the whole vocabulary)."""
    k = self.top_k or (self.nucleus_candidates if self.top_p < 1 else 0)
    return min(k, vocab_size) if k else None

  def distribution(self, logits: Array) -> tuple[Array, Array]:
    """The (unnormalised) filtered distribution: probs [R,C] >= 0 over token ids [R,C].

    Tokens outside the candidates have probability zero. The exact nucleus keeps, in decreasing
    probability, every token whose preceding mass is < top_p: the smallest set with mass >= top_p.
    """
    logits = logits.astype(jnp.float32) / self.temperature
    R, V = logits.shape
    C = self.num_candidates(V)
    if C is None:
      if self.top_p < 1:  # nucleus_candidates=0: exact, full sort.
        C = V
      else:
        ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
        return jnp.exp(logits - logits.max(-1, keepdims=True)), ids
    values, ids = top_k(logits, C)  # sorted, most likely first
    # A max, not values[:, :1]: slicing the result makes XLA:CPU turn TopK into a full sort (~100x).
    probs = jnp.exp(values - values.max(-1, keepdims=True))
    if self.top_p < 1:
      probs = probs / probs.sum(-1, keepdims=True)
      mass_before = jnp.cumsum(probs, -1) - probs
      probs = jnp.where(mass_before < self.top_p, probs, 0.0)
    return probs, ids.astype(jnp.int32)

  def sample(self, logits: Array, uniforms: Array) -> Array:
    probs, ids = self.distribution(logits)
    choice = _inverse_cdf(probs, uniforms)
    return jnp.take_along_axis(ids, choice[:, None], axis=1)[:, 0]


Strategy = Greedy | Sampling


def top_k(x: Array, k: int, block: int = 128) -> tuple[Array, Array]:
  """`lax.top_k` over the last axis of [R,V], searching only the k blocks with the highest maxima.

  The same values (and, but for the order among exact ties, the same ids) as `lax.top_k`: the k-th
  largest value is at least the k-th largest block maximum (those k blocks hold k values that
  large), so every top-k entry lies in one of the k best blocks. Why: XLA:GPU runs `lax.top_k`
  with k > 16 as a sort of the whole row (~1 ms per decode step for 64 rows of a 128256 vocabulary,
  as long as the model's step); this sorts [R, V/block] block maxima and [R, k·block] candidates.
  """
  R, V = x.shape
  nb = -(-V // block)
  if nb <= 2 * k:  # too few blocks to leave many out
    return jax.lax.top_k(x, k)
  blocks = jnp.pad(x, ((0, 0), (0, nb * block - V)), constant_values=-jnp.inf).reshape(R, nb, block)
  _, best = jax.lax.top_k(blocks.max(-1), k)                                  # [R,k] block ids
  candidates = jnp.take_along_axis(blocks, best[:, :, None], axis=1).reshape(R, k * block)
  values, j = jax.lax.top_k(candidates, k)
  ids = jnp.take_along_axis(best, j // block, axis=1) * block + j % block
  return values, jnp.minimum(ids, V - 1)  # a padding id (only with -inf values) stays in range


def _argmax(x: Array) -> Array:
  # max + first index equal to it: ~3x faster than jnp.argmax's variadic reduce on XLA:CPU.
  m = x.max(-1, keepdims=True)
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(x == m, iota, x.shape[-1]), axis=-1)


def _inverse_cdf(probs: Array, uniforms: Array, block: int = 128) -> Array:
  """Index i with CDF[i-1] < u·total <= CDF[i] for unnormalised probs [R,C]; u in (0, 1].

  Zero-probability entries are never chosen. Blocked (a cumsum over C/block block sums, then one
  within the chosen block) because XLA:CPU's cumsum over a 32000-long row is ~10x slower.
  """
  R, C = probs.shape
  if C <= 2 * block:
    cdf = jnp.cumsum(probs, -1)
    target = uniforms[:, None] * cdf[:, -1:]
    return jnp.minimum(jnp.sum(cdf < target, -1), C - 1).astype(jnp.int32)
  nb = -(-C // block)
  p = jnp.pad(probs, ((0, 0), (0, nb * block - C))).reshape(R, nb, block)
  block_sums = p.sum(-1)
  block_cdf = jnp.cumsum(block_sums, -1)
  target = uniforms * block_cdf[:, -1]
  b = jnp.minimum(jnp.sum(block_cdf < target[:, None], -1), nb - 1)
  before = (jnp.take_along_axis(block_cdf, b[:, None], 1) -
            jnp.take_along_axis(block_sums, b[:, None], 1))
  inner = jnp.take_along_axis(p, b[:, None, None], 1)[:, 0]
  cdf = jnp.cumsum(inner, -1) + before
  j = jnp.sum(cdf < target[:, None], -1)
  # Round-off can put the target past the block's last non-zero entry: step back onto it.
  last_nonzero = block - 1 - _argmax((inner[:, ::-1] > 0).astype(jnp.int32))
  j = jnp.minimum(j, last_nonzero)
  return jnp.minimum(b * block + j, C - 1).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------
# The jitted core on token ids.

@struct.dataclass
class PromptBatch:
  """Host-built inputs of one batch (all int32 unless noted).

  tokens [B,P2]: each prompt's own tokens, left-padded (with a shared prefix: the part after it).
  lengths [B]: own token counts (>= 1 for active rows).
  prompt_ids [B]: the prompt's index in the caller's list (the sampling key derives from it).
  active [B] bool: False for rows that only fill the batch bucket.
  prefix_tokens [G,P1], prefix_lengths [G]: shared prefixes, left-padded (P1 = 0: none).
  group [B]: which prefix row each prompt extends (ignored where prefix_lengths[group] = 0).
  """
  tokens: Array
  lengths: Array
  prompt_ids: Array
  active: Array
  prefix_tokens: Array
  prefix_lengths: Array
  group: Array


@struct.dataclass
class SampleOutput:
  """tokens [R,M] (pad after the end), logprobs [R,M] (0 after the end), lengths [R] (generated
  tokens, the stop token included), stopped [R] bool (True: ended by a stop id, else by length).
  Row r is sample r % n of prompt r // n."""
  tokens: Array
  logprobs: Array
  lengths: Array
  stopped: Array


@struct.dataclass
class DecodeState:
  """The while_loop carry. `step` tokens have been sampled; the next forward feeds token step-1."""
  step: Array
  tokens: Array
  logprobs: Array
  lengths: Array
  done: Array
  stopped: Array
  cache: llama.KVCache


def _constrain_cache(config: LlamaConfig, cache):
  return jax.tree.map(nn.with_logical_constraint, cache, llama.cache_logical_axes(config))


def _mask(prefix_start: Array, P1: int, start: Array, query_slots: Array, S: int) -> Array:
  """[B,T,S] visibility: the row's prefix window [prefix_start, P1) and its own [start, query]."""
  s = jnp.arange(S, dtype=jnp.int32)[None, None, :]
  in_prefix = (s >= prefix_start[:, None, None]) & (s < P1)
  own = (s >= start[:, None, None]) & (s <= query_slots[None, :, None])
  return in_prefix | own


def _row_keys(seed: Array, prompt_ids: Array, n: int) -> Array:
  base = jax.random.key(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(prompt_ids)              # [B]
  return jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(
      jnp.arange(n, dtype=jnp.int32)))(keys).reshape(-1)                           # [B·n]


def _step_uniforms(keys: Array, steps: int) -> Array:
  """[R, steps] uniforms in [0, 1): row r's draw at step s comes from fold_in(keys[r], s).

  Drawn for all steps before the decode loop: threefry inside the loop body costs ~1 ms per step on
  CPU (its rounds run as nested loops), more than the draw itself is worth."""
  return jax.vmap(lambda k: jax.vmap(lambda s: jax.random.uniform(jax.random.fold_in(k, s)))(
      jnp.arange(steps, dtype=jnp.int32)))(keys)


def _select(strategy, logits: Array, uniforms: Array | None, step: Array):
  """(token [R], model log-prob [R]) for logits [R,V]; uniforms [R,M] from `_step_uniforms`."""
  logits = logits.astype(jnp.float32)
  if strategy.needs_rng:
    u = jax.lax.dynamic_index_in_dim(uniforms, step, axis=1, keepdims=False)
    tokens = strategy.sample(logits, 1.0 - u)  # (0, 1]: never a zero-probability token
  else:
    tokens = strategy.sample(logits, None)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, tokens[:, None], axis=1)[:, 0]
  return tokens, picked - lse


@functools.partial(jax.jit, static_argnames=("config", "strategy", "max_new_tokens", "num_samples"))
def _generate(config: LlamaConfig, params, batch: PromptBatch, seed: Array, stop_ids: Array,
              pad_id: Array, *, strategy, max_new_tokens: int, num_samples: int) -> SampleOutput:
  TRACE_COUNTS["generate"] += 1
  model = llama.Llama(config)
  B, P2 = batch.tokens.shape
  G, P1 = batch.prefix_tokens.shape
  M, n = max_new_tokens, num_samples
  R = B * n

  # 1. Shared prefixes: prefilled once per group, at batch G, then gathered onto their rows.
  if P1:
    pvalid = jnp.arange(P1)[None, :] >= (P1 - batch.prefix_lengths)[:, None]
    ppos = jnp.maximum(jnp.cumsum(pvalid, axis=1) - 1, 0)
    pcache = _constrain_cache(config, llama.init_cache(config, G, P1))
    _, pcache = model.apply({"params": params}, batch.prefix_tokens, ppos,
                            llama.causal_mask(pvalid), cache=pcache, cache_index=0,
                            return_hidden=True)
    plen = batch.prefix_lengths[batch.group]
    row_prefix = jax.tree.map(lambda x: jnp.take(x, batch.group, axis=-4), pcache)
    empty = llama.init_cache(config, B, P2)
    cache = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=-2), row_prefix, empty)
  else:
    plen = jnp.zeros((B,), jnp.int32)
    cache = llama.init_cache(config, B, P2)
  cache = _constrain_cache(config, cache)
  prefix_start = P1 - plen
  start = P1 + P2 - batch.lengths

  # 2. Each prompt's own tokens, at batch B; only the last position's logits are computed.
  t = jnp.arange(P2, dtype=jnp.int32)[None, :]
  positions = jnp.maximum(plen[:, None] + t - (P2 - batch.lengths)[:, None], 0)
  mask = _mask(prefix_start, P1, start, P1 + jnp.arange(P2, dtype=jnp.int32), P1 + P2)
  hidden, cache = model.apply({"params": params}, batch.tokens, positions, mask, cache=cache,
                              cache_index=P1, return_hidden=True)
  logits = jnp.einsum("BD,DV->BV", hidden[:, -1], llama.unembedding(config, params).astype(
      hidden.dtype), preferred_element_type=jnp.float32)

  # 3. n samples per prompt share that prefill: repeat rows on device, then room for M tokens.
  rep = lambda x: jnp.repeat(x, n, axis=0)
  logits, prefix_start, start, active = map(rep, (logits, prefix_start, start, batch.active))
  next_position = rep(plen + batch.lengths)
  # Cache leaves: batch axis -4, slot axis -2 (llama.init_cache).
  cache = jax.tree.map(lambda x: jnp.concatenate(
      [jnp.repeat(x, n, axis=-4), jnp.zeros(x.shape[:-4] + (R,) + x.shape[-3:-2] + (M,)
                                            + x.shape[-1:], x.dtype)], axis=-2), cache)
  cache = _constrain_cache(config, cache)
  uniforms = _step_uniforms(_row_keys(seed, batch.prompt_ids, n), M) if strategy.needs_rng \
      else None
  S = P1 + P2 + M

  def record(state: DecodeState, logits: Array) -> DecodeState:
    token, logprob = _select(strategy, logits, uniforms, state.step)
    live = ~state.done
    token = jnp.where(live, token, pad_id)
    logprob = jnp.where(live, logprob, 0.0)
    hit_stop = live & jnp.isin(token, stop_ids)
    step = state.step + 1
    return state.replace(
        step=step,
        tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], state.step, 1),
        logprobs=jax.lax.dynamic_update_slice_in_dim(state.logprobs, logprob[:, None], state.step, 1),
        lengths=state.lengths + live,
        stopped=state.stopped | hit_stop,
        done=state.done | hit_stop | (step >= M))

  state = DecodeState(step=jnp.zeros((), jnp.int32), tokens=jnp.full((R, M), pad_id, jnp.int32),
                      logprobs=jnp.zeros((R, M), jnp.float32), lengths=jnp.zeros((R,), jnp.int32),
                      done=~active, stopped=jnp.zeros((R,), jnp.bool_), cache=cache)
  state = record(state, logits)

  def cond(state: DecodeState):
    return (state.step < M) & ~jnp.all(state.done)

  def body(state: DecodeState):
    slot = P1 + P2 + state.step - 1
    token = jax.lax.dynamic_slice_in_dim(state.tokens, state.step - 1, 1, axis=1)  # [R,1]
    positions = (next_position + state.step - 1)[:, None]
    mask = _mask(prefix_start, P1, start, slot[None], S)
    logits, cache = model.apply({"params": params}, token, positions, mask, cache=state.cache,
                                cache_index=slot)
    return record(state.replace(cache=_constrain_cache(config, cache)), logits[:, 0])

  state = jax.lax.while_loop(cond, body, state)
  return SampleOutput(tokens=state.tokens, logprobs=state.logprobs, lengths=state.lengths,
                      stopped=state.stopped)


def generate_tokens(config: LlamaConfig, params, batch: PromptBatch, *, strategy: Strategy = Greedy(),
                    max_new_tokens: int, num_samples: int = 1, seed: int = 0,
                    stop_ids: Sequence[int] = (), pad_id: int = 0) -> SampleOutput:
  """Samples `num_samples` continuations of every prompt of `batch` (see `PromptBatch`).

  Compiles once per (config, strategy, max_new_tokens, num_samples) and input shapes. With a mesh,
  call it inside `sharding.activate(mesh, rules)` with params in their shardings; B (and G) must
  be divisible by the number of devices the "batch" axis is sharded over.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  stops = np.asarray(sorted(set(int(s) for s in stop_ids)) or [-1], np.int32)
  stops = np.pad(stops, (0, -len(stops) % 4), constant_values=-1)  # fewer distinct shapes
  return _generate(config, params, batch, jnp.asarray(seed, jnp.uint32), jnp.asarray(stops),
                   jnp.asarray(pad_id, jnp.int32), strategy=strategy,
                   max_new_tokens=int(max_new_tokens), num_samples=int(num_samples))


def make_batch(prompts: Sequence[Sequence[int]], *, length: int, batch: int | None = None,
               prompt_ids: Sequence[int] | None = None, pad_id: int = 0,
               prefixes: Sequence[Sequence[int]] = (), group: Sequence[int] | None = None,
               prefix_length: int = 0, num_prefixes: int | None = None) -> PromptBatch:
  """Left-pads token lists into a `PromptBatch` of `batch` rows (default len(prompts)).

  With `prefixes` (shared prefixes, left-padded to `prefix_length`, `num_prefixes` rows), prompt i
  holds only the tokens after `prefixes[group[i]]`.
  """
  B = len(prompts) if batch is None else batch
  if len(prompts) > B:
    raise ValueError(f"{len(prompts)} prompts do not fit a batch of {B}")
  tokens = np.full((B, length), pad_id, np.int32)
  lengths = np.zeros((B,), np.int32)
  for b, p in enumerate(prompts):
    if not 0 < len(p) <= length:
      raise ValueError(f"prompt {b}: {len(p)} tokens do not fit a bucket of {length}")
    tokens[b, length - len(p):] = p
    lengths[b] = len(p)
  ids = np.zeros((B,), np.int32)
  ids[:len(prompts)] = np.arange(len(prompts)) if prompt_ids is None else prompt_ids
  active = np.arange(B) < len(prompts)
  G = max(len(prefixes), 1) if num_prefixes is None else num_prefixes
  ptokens = np.full((G, prefix_length), pad_id, np.int32)
  plengths = np.zeros((G,), np.int32)
  for g, p in enumerate(prefixes):
    if len(p) > prefix_length:
      raise ValueError(f"prefix {g}: {len(p)} tokens do not fit a bucket of {prefix_length}")
    if len(p):
      ptokens[g, prefix_length - len(p):] = p
    plengths[g] = len(p)
  grp = np.zeros((B,), np.int32)
  if group is not None:
    grp[:len(group)] = group
  return PromptBatch(tokens=tokens, lengths=lengths, prompt_ids=ids, active=active,
                     prefix_tokens=ptokens, prefix_lengths=plengths, group=grp)


# ------------------------------------------------------------------------------------------------
# Shared-prefix detection.

def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
  m = min(len(a), len(b))
  diff = np.flatnonzero(a[:m] != b[:m])
  return int(diff[0]) if len(diff) else m


def find_shared_prefixes(prompts: Sequence[Sequence[int]], min_length: int
                         ) -> list[tuple[list[int], int]]:
  """Groups prompts by common token prefix: [(prompt indices, shared prefix length)], prefix
  length 0 for prompts left alone.

  Prompts are sorted lexicographically, so prompts sharing a prefix are adjacent; a group's prefix
  is the minimum common prefix of its neighbours, capped so that every member keeps >= 1 token of
  its own (its last token's logits start the generation). A prompt joins the current group when the
  prefill tokens that saves exceed what the shrinking shared prefix costs the members already in
  it (|g|·L' > (|g|-1)·L), and the prefix stays >= min_length. So meta-judge prompts are never
  merged on the rubric alone: they group by (rubric, question, response), or by (..., judgment A)
  where judgments are long enough for that to save more.
  """
  arrays = [np.asarray(p, np.int64) for p in prompts]
  order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
  groups: list[tuple[list[int], int]] = []
  current: list[int] = []
  shared = 0
  for i in order:
    if current:
      prev = arrays[current[-1]]
      lcp = min(_common_prefix(prev, arrays[i]), len(prev) - 1, len(arrays[i]) - 1)
      new = lcp if len(current) == 1 else min(shared, lcp)
      if new >= max(min_length, 1) and len(current) * new > (len(current) - 1) * shared:
        current.append(i)
        shared = new
        continue
      groups.append((current, shared if len(current) > 1 else 0))
    current, shared = [i], 0
  if current:
    groups.append((current, shared if len(current) > 1 else 0))
  return groups


# ------------------------------------------------------------------------------------------------
# The driver.

@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  token_ids: tuple[int, ...]
  logprob: float
  num_tokens: int
  finish_reason: str  # "stop" | "length" | "too_long" (the prompt did not fit: nothing generated)
  prompt_tokens: int = 0  # the prompt's length in tokens (chat template included)


DEFAULT_STRATEGY = Sampling(temperature=0.8, top_p=0.95)


@dataclasses.dataclass
class _Plan:
  rows: list[int]                   # prompt indices
  own: list[list[int]]              # their tokens after the shared prefix (all, without one)
  prefixes: list[list[int]]         # distinct shared prefixes of the batch
  group: list[int]                  # per row: index into prefixes
  length: int                       # P2 bucket
  prefix_length: int                # P1 bucket (0: no sharing)
  batch: int                        # B bucket
  num_prefixes: int                 # G bucket


class Sampler:
  """Turns prompts into completions with the jitted sampler.

  Args:
    model_config, params: the model (params already in their shardings when `mesh` is given, or
      they are moved there).
    tokenizer: a `meta_rewarding.tokenizer.Tokenizer` (None: prompts must be token ids and texts
      come back empty).
    mesh, rules: optional device mesh and logical rules (`sharding.DECODE_RULES`).
    batch_size: decode rows per batch: prompts per batch = max(1, batch_size // n).
    prompt_buckets: prompt lengths are padded up to one of these (with a shared prefix, both the
      prefix and the rest are); batches of fewer prompts are padded to a power of two.
    max_cache_length: the most tokens (prompt + generated) one sequence may hold, i.e. the largest
      position; default `model_config.max_position_embeddings`. Buckets are clipped to
      max_cache_length - max_new_tokens.
    min_shared_prefix: with share_prefix, the shortest common prefix worth sharing.
  """

  def __init__(self, model_config: LlamaConfig, params, tokenizer=None, *, mesh=None,
               rules=sharding_lib.DECODE_RULES, batch_size: int = 16,
               prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
               max_cache_length: int | None = None, min_shared_prefix: int = 16):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompt_buckets or min(prompt_buckets) < 1:
      raise ValueError(f"prompt_buckets must be positive lengths, got {prompt_buckets}")
    self.config = model_config
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.rules = sharding_lib.rules_from_config(rules)
    self.batch_size = int(batch_size)
    self.prompt_buckets = tuple(sorted({int(b) for b in prompt_buckets}))
    self.max_cache_length = prompt_length.cache_length(max_cache_length or 0,
                                                       model_config.max_position_embeddings)
    self.min_shared_prefix = int(min_shared_prefix)
    self._batch_multiple = 1
    if mesh is not None:
      params = sharding_lib.shard_params(
          params, sharding_lib.param_shardings(model_config, mesh, self.rules))
      axes = dict(self.rules).get("batch")
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      self._batch_multiple = math.prod(mesh.shape[a] for a in axes)
    self.params = params

  # -- lengths ------------------------------------------------------------------------------------

  def encode(self, prompts: Sequence[Any], *, chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt: a string (chat: one user message in the chat template; else raw
    text with BOS), a list of {"role", "content"} messages, or a list of token ids (as is)."""
    out = []
    texts, text_rows = [], []
    for i, p in enumerate(prompts):
      if isinstance(p, str):
        texts.append(p)
        text_rows.append(i)
        out.append(None)
      elif isinstance(p, Sequence) and p and isinstance(p[0], Mapping):
        out.append(self._tok(i).encode_chat(list(p)))
      elif isinstance(p, (Sequence, np.ndarray)) and all(
          isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in p):
        ids = [int(t) for t in p]
        bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
        if bad:
          raise ValueError(f"prompt {i}: token id {bad[0]} is outside the vocabulary "
                           f"[0, {self.config.vocab_size})")
        out.append(ids)
      else:
        raise ValueError(f"prompt {i}: expected a string, a list of messages or a list of token "
                         f"ids, got {type(p).__name__}")
    if texts:
      tok = self._tok(text_rows[0])
      if chat:
        encoded = [tok.encode_chat([{"role": "user", "content": t}]) for t in texts]
      else:
        # The tokenizer's own BOS rule, as `tokenizer(text)` encodes raw text (Llama 2 and 3 add
        # one, SmolLM2 does not): a forced BOS is a token such a model never saw there.
        encoded = tok.encode_batch(texts)
      for i, ids in zip(text_rows, encoded):
        out[i] = list(ids)
    return out

  def _tok(self, i: int):
    if self.tokenizer is None:
      raise ValueError(f"prompt {i} is text but the Sampler has no tokenizer; pass token ids")
    return self.tokenizer

  def _buckets(self, max_new_tokens: int) -> tuple[int, ...]:
    return prompt_length.limits(self.prompt_buckets, max_new_tokens, self.max_cache_length,
                                self.config.max_position_embeddings)[0]

  def max_prompt_length(self, max_new_tokens: int = 256) -> int:
    """The longest prompt (in tokens) `generate` samples from with this `max_new_tokens`
    (`prompt_length.limits`); longer ones come back as `finish_reason="too_long"`."""
    return self._buckets(max_new_tokens)[-1]

  # -- planning -----------------------------------------------------------------------------------

  def _round_batch(self, count: int, cap: int) -> int:
    b = min(1 << max(count - 1, 0).bit_length(), cap)
    m = self._batch_multiple
    return -(-max(b, count) // m) * m

  def _plans(self, ids: list[list[int]], n: int, buckets: tuple[int, ...],
             share_prefix: bool, keep: Sequence[int] | None = None) -> list[_Plan]:
    """Batches of the prompts `keep` (indices into `ids`; default all) and how each is laid out."""
    keep = list(range(len(ids))) if keep is None else list(keep)
    per_batch = max(1, self.batch_size // n)
    bucket = lambda length: next(b for b in buckets if b >= length)
    plans = []
    alone = list(keep)
    if share_prefix:
      groups = [([keep[r] for r in rows], shared) for rows, shared in
                find_shared_prefixes([ids[i] for i in keep], self.min_shared_prefix)]
      alone = [i for rows, shared in groups if not shared for i in rows]
      stream = [(i, g) for g, (rows, shared) in enumerate(groups) if shared for i in rows]
      for k in range(0, len(stream), per_batch):
        chunk = stream[k:k + per_batch]
        local: dict[int, int] = {}
        for _, g in chunk:
          local.setdefault(g, len(local))
        prefixes = [ids[groups[g][0][0]][:groups[g][1]] for g in local]
        own = [ids[i][groups[g][1]:] for i, g in chunk]
        plans.append(_Plan(
            rows=[i for i, _ in chunk], own=own, prefixes=prefixes,
            group=[local[g] for _, g in chunk], length=bucket(max(map(len, own))),
            prefix_length=bucket(max(map(len, prefixes))),
            batch=self._round_batch(len(chunk), per_batch),
            num_prefixes=self._round_batch(len(prefixes), per_batch)))
    # Sorting by length keeps padding (and the buckets used) small.
    alone.sort(key=lambda i: (len(ids[i]), i))
    for k in range(0, len(alone), per_batch):
      rows = alone[k:k + per_batch]
      own = [ids[i] for i in rows]
      plans.append(_Plan(rows=rows, own=own, prefixes=[], group=[0] * len(rows),
                         length=bucket(max(map(len, own))), prefix_length=0,
                         batch=self._round_batch(len(rows), per_batch),
                         num_prefixes=self._batch_multiple))
    return plans

  # -- generation ---------------------------------------------------------------------------------

  def generate(self, prompts: Sequence[Any], *, n: int = 1, strategy: Strategy = DEFAULT_STRATEGY,
               max_new_tokens: int = 256, seed: int = 0, chat: bool = True,
               share_prefix: bool = False, desc: str | None = None, progress: bool = True,
               stop_ids: Sequence[int] | None = None, index_offset: int = 0,
               too_long: str = "report") -> list[list[Completion]]:
    """`n` completions for every prompt, in input order (see `encode` for what a prompt is).

    Deterministic for a given seed: prompt i's samples use keys derived from (seed, index_offset + i,
    sample), so a slice of a prompt list sampled with its start as offset gets the same samples.
    share_prefix=True prefills prompts' common prefixes once (same results, less prefill work).
    stop_ids default to the tokenizer's (else the model config's EOS ids).
    A prompt longer than `max_prompt_length(max_new_tokens)` (the one rule: prompt_length.py) gets
    `n` empty completions with finish_reason "too_long" (too_long="report"; each prompt is
    tokenized once, here), or a ValueError naming the first such prompts (too_long="raise").
    """
    if n < 1:
      raise ValueError(f"n must be >= 1, got {n}")
    if too_long not in ("report", "raise"):
      raise ValueError(f"too_long must be 'report' or 'raise', got {too_long!r}")
    if not prompts:
      return []
    buckets = self._buckets(max_new_tokens)
    ids = self.encode(prompts, chat=chat)
    limit = buckets[-1]
    empty = [i for i, p in enumerate(ids) if not p]
    if empty:
      raise ValueError(f"prompt {empty[0]} is empty (no tokens)")
    long = [i for i, p in enumerate(ids) if not prompt_length.fits(len(p), limit)]
    if long and too_long == "raise":
      listed = ", ".join(f"prompt {i} has {len(ids[i])} tokens" for i in long[:5])
      raise ValueError(
          f"{len(long)} prompt(s) exceed the longest prompt bucket of {limit} tokens "
          f"(prompt_buckets={self.prompt_buckets}, max_cache_length={self.max_cache_length}, "
          f"max_new_tokens={max_new_tokens}): {listed}{' ...' if len(long) > 5 else ''}")
    if stop_ids is None:
      stop_ids = self.tokenizer.stop_ids if self.tokenizer is not None else self.config.eos_token_ids
    pad_id = self.tokenizer.pad_id if self.tokenizer is not None else (self.config.pad_token_id or 0)
    stop_set = frozenset(int(s) for s in stop_ids)
    results: list[list[Completion] | None] = [None] * len(ids)
    for i in long:
      results[i] = [Completion(text="", token_ids=(), logprob=0.0, num_tokens=0,
                               finish_reason="too_long", prompt_tokens=len(ids[i]))] * n
    skipped = set(long)
    plans = self._plans(ids, n, buckets, share_prefix,
                        keep=[i for i in range(len(ids)) if i not in skipped])

    from tqdm.auto import tqdm
    bar = tqdm(total=len(ids) - len(long), desc=desc or "sampling", disable=not progress,
               unit="prompt")
    pending = None
    try:
      for plan in plans:
        batch = make_batch(plan.own, length=plan.length, batch=plan.batch,
                           prompt_ids=[index_offset + i for i in plan.rows],
                           pad_id=pad_id, prefixes=plan.prefixes, group=plan.group,
                           prefix_length=plan.prefix_length, num_prefixes=plan.num_prefixes)
        out = self._run(batch, strategy, max_new_tokens, n, seed, stop_ids, pad_id)
        if pending is not None:  # dispatch is async: fetch the previous batch while this one runs
          self._collect(*pending, n, stop_set, results, ids)
          bar.update(len(pending[0].rows))
        pending = (plan, out)
      if pending is not None:
        self._collect(*pending, n, stop_set, results, ids)
        bar.update(len(pending[0].rows))
    finally:
      bar.close()
    return results  # type: ignore[return-value]

  def _run(self, batch, strategy, max_new_tokens, n, seed, stop_ids, pad_id) -> SampleOutput:
    call = functools.partial(generate_tokens, self.config, self.params, strategy=strategy,
                             max_new_tokens=max_new_tokens, num_samples=n, seed=seed,
                             stop_ids=stop_ids, pad_id=pad_id)
    if self.mesh is None:
      return call(jax.tree.map(jnp.asarray, batch))
    with sharding_lib.activate(self.mesh, self.rules):
      placed = jax.tree.map(
          lambda x: jax.device_put(x, sharding_lib.batch_sharding(self.mesh, self.rules, x.ndim)),
          batch)
      return call(placed)

  def _collect(self, plan: _Plan, out: SampleOutput, n: int, stop_set, results, ids):
    tokens, logprobs, lengths, stopped = jax.device_get(
        (out.tokens, out.logprobs, out.lengths, out.stopped))
    for b, i in enumerate(plan.rows):
      completions = []
      for j in range(n):
        r = b * n + j
        k = int(lengths[r])
        token_ids = tuple(int(t) for t in tokens[r, :k])
        stop = bool(stopped[r])
        body = token_ids[:-1] if stop and token_ids and token_ids[-1] in stop_set else token_ids
        text = self.tokenizer.decode(body) if self.tokenizer is not None else ""
        completions.append(Completion(text=text, token_ids=token_ids,
                                      logprob=float(np.sum(logprobs[r, :k], dtype=np.float64)),
                                      num_tokens=k, finish_reason="stop" if stop else "length",
                                      prompt_tokens=len(ids[i])))
      results[i] = completions


# ------------------------------------------------------------------------------------------------
# Config glue.

def strategy_from_config(cfg) -> Strategy:
  """`Greedy()` for temperature 0, else `Sampling(temperature, top_k, top_p)`."""
  get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
  temperature = float(get("temperature", 1.0))
  if temperature == 0:
    return Greedy()
  return Sampling(temperature=temperature, top_k=int(get("top_k", 0) or 0),
                  top_p=float(get("top_p", 1.0)),
                  nucleus_candidates=int(get("nucleus_candidates", 64)))
