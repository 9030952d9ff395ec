"""The decode loop: a jitted prefill, then a `lax.while_loop` decode, entirely on device.

Axis letters as in `model/llama.py` (B prompts, R = B·n decode rows, T/S lengths, V vocab, L layers,
K kv heads, H head dim), plus C (sampling candidates), M (max new tokens), G (shared prefixes).

Cache slot layout of one batch (S = P1 + P2 + M slots; P1 = 0 without a shared prefix):

    [ shared prefix, left-padded (P1) | own prompt tokens, left-padded (P2) | generated tokens (M) ]

Row b attends to slots [P1 - prefix_len_b, P1) (its group's prefix) and [P1 + P2 - len_b, now]
(its own tokens); positions continue from the prefix through the prompt into the generation, so a
row's computation is the same as if its whole prompt had been prefilled alone. Every row writes its
new key at the same slot each step (the model's cache takes one scalar `cache_index`), which is why
prompts are left-padded.

Entry points: `generate_tokens` (the jitted core: `PromptBatch` in, `SampleOutput` out) and
`make_batch` (left-padded prompts and shared prefixes into a `PromptBatch`). The strategy that picks
each token is `strategies.py`'s; the host side (tokenization, buckets, batching, too-long prompts,
`Completion`s) is `sampling.Sampler`. Per-row keys come from (seed, prompt index, sample index),
folded with the step, so a prompt's samples do not depend on the batch it lands in.

Log-probs are those of the model itself (log-softmax of the raw logits, temperature 1, unfiltered)
at the chosen token, whatever the strategy.
"""

from __future__ import annotations

import collections
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig
from meta_rewarding.strategies import Greedy, Strategy

Array = jax.Array

# Incremented in the body of the jitted core, i.e. once per trace (compile), never per call: tests
# use it to check that two batches of the same bucket share one program.
TRACE_COUNTS: collections.Counter = collections.Counter()


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
