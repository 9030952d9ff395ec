"""The decode loop: a jitted prefill, then a `lax.while_loop` decode, entirely on device.

Axis letters as in `model/llama.py` (B prompts, R = B·n decode rows, T/S lengths, V vocab, L layers,
K kv heads, H head dim), plus C (sampling candidates), M (max new tokens), G (shared prefixes).

Cache slot layout of one batch (S = P1 + P2 + M slots; P1 = 0 without a shared prefix):

    [ shared prefix, left-padded (P1) | own prompt tokens, left-padded (P2) | generated tokens (M) ]

Row b attends to slots [P1 - prefix_len_b, P1) (its group's prefix) and [P1 + P2 - len_b, now]
(its own tokens); positions continue from the prefix through the prompt into the generation, so a
row's computation is the same as if its whole prompt had been prefilled alone. Every row writes its
new key at the same slot each step (the model's cache takes one scalar `cache_index`), which is why
prompts are left-padded. Sliding-window layers also need the position each slot holds
(`key_positions`, `_key_positions` for this layout): the window is counted in positions, not slots,
so it is the same whatever the padding, the prefix sharing or (below) the ring's wrap-around.

Entry points: `generate_tokens` (the jitted core of static batching: `PromptBatch` in,
`SampleOutput` out), `init_slots` / `refill` / `decode_block` (continuous batching: a fixed set of
decode rows that prompts enter between blocks of steps; see that section) and `make_batch`
(left-padded prompts and shared prefixes into a `PromptBatch`). The strategy that picks
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


def _key_positions(prefix_start: Array, P1: int, start: Array, plen: Array, S: int) -> Array:
  """[B,S] the position each slot of the static layout holds: the prefix's from 0 at
  `prefix_start`, then the row's own tokens and its generation continuing from `plen` at `start`
  (values at slots the row does not see are unused)."""
  s = jnp.arange(S, dtype=jnp.int32)[None, :]
  return jnp.where(s < P1, s - prefix_start[:, None], plen[:, None] + s - start[:, None])


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


def _select(strategy, logits: Array, uniforms: Array | None, count: Array):
  """(token [R], model log-prob [R]) for logits [R,V], this step's uniforms [R] (None: greedy) and
  each row's count [R] of tokens generated before this one (for strategies with `needs_count`)."""
  logits = logits.astype(jnp.float32)
  u = 1.0 - uniforms if strategy.needs_rng else None  # (0, 1]: never a zero-probability token
  if getattr(strategy, "needs_count", False):
    tokens = strategy.sample(logits, u, count)
  else:
    tokens = strategy.sample(logits, u)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, tokens[:, None], axis=1)[:, 0]
  return tokens, picked - lse


def _prefill(config: LlamaConfig, params, batch: PromptBatch):
  """Prefills a `PromptBatch` at its B prompts (shared prefixes once per group, at G).

  Returns (logits [B,V] f32 of each prompt's last token, its cache of W = P1 + P2 slots laid out as
  in the module docstring, visible [B,W] bool: the slots each prompt attends to, next_position [B]:
  the position of the first generated token, key_positions [B,W]: the position each slot holds)."""
  model = llama.Llama(config)
  B, P2 = batch.tokens.shape
  G, P1 = batch.prefix_tokens.shape

  # 1. Shared prefixes: prefilled once per group, at batch G, then gathered onto their rows.
  if P1:
    pvalid = jnp.arange(P1)[None, :] >= (P1 - batch.prefix_lengths)[:, None]
    ppos = jnp.maximum(jnp.cumsum(pvalid, axis=1) - 1, 0)
    pcache = _constrain_cache(config, llama.init_cache(config, G, P1))
    _, pcache = model.apply({"params": params}, batch.prefix_tokens, ppos,
                            llama.causal_mask(pvalid), cache=pcache, cache_index=0,
                            key_positions=ppos, return_hidden=True)
    # The rows' pass uses the weights again. Without this barrier XLA gives both passes the same
    # weight all-gathers when the weights are sharded over the batch axes (pure FSDP), and keeps
    # every layer's gathered weights alive from the prefix pass to the rows' pass: the whole
    # model per chip (the compile check: the v5e-32's pure-FSDP meta-judge prefill needed 15.96
    # GiB of temporaries). Through the barrier each pass gathers its own, layer by layer.
    params, pcache = jax.lax.optimization_barrier((params, pcache))
    # Each prompt's prefix length, as a select over the G groups rather than a gather: with the
    # prompts and groups sharded over the batch axes the partitioner turns that gather into a
    # table lookup whose pattern aborts libtpu 0.0.42's compiler (collective_opt_utils.cc:79,
    # the compile check of Qwen2.5-1.5B on a v4-32, fsdp=8 x tensor=2).
    plen = jnp.sum(jnp.where(batch.group[:, None] == jnp.arange(G, dtype=batch.group.dtype),
                             batch.prefix_lengths[None, :], 0), axis=1, dtype=jnp.int32)
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
  key_positions = _key_positions(prefix_start, P1, start, plen, P1 + P2)
  hidden, cache = model.apply({"params": params}, batch.tokens, positions, mask, cache=cache,
                              cache_index=P1, key_positions=key_positions, return_hidden=True)
  logits = llama.final_logits(config, jnp.einsum(
      "BD,DV->BV", hidden[:, -1], llama.unembedding(config, params).astype(hidden.dtype),
      preferred_element_type=jnp.float32))
  visible = mask[:, -1, :]  # the last query sees exactly the prompt's own slots
  return logits, cache, visible, plen + batch.lengths, key_positions


@functools.partial(jax.jit, static_argnames=("config", "strategy", "max_new_tokens", "num_samples"))
def _generate(config: LlamaConfig, params, batch: PromptBatch, seed: Array, stop_ids: Array,
              pad_id: Array, *, strategy, max_new_tokens: int, num_samples: int) -> SampleOutput:
  TRACE_COUNTS["generate"] += 1
  model = llama.Llama(config)
  B, P2 = batch.tokens.shape
  G, P1 = batch.prefix_tokens.shape
  M, n = max_new_tokens, num_samples
  R = B * n

  logits, cache, visible, next_position, _ = _prefill(config, params, batch)
  plen = next_position - batch.lengths
  prefix_start = P1 - plen
  start = P1 + P2 - batch.lengths

  # 3. n samples per prompt share that prefill: repeat rows on device, then room for M tokens.
  rep = lambda x: jnp.repeat(x, n, axis=0)
  logits, prefix_start, start, active = map(rep, (logits, prefix_start, start, batch.active))
  next_position, plen = rep(next_position), rep(plen)
  del visible  # the static layout's intervals (`_mask`) say the same
  # Cache leaves: batch axis -4, slot axis -2 (llama.init_cache).
  cache = jax.tree.map(lambda x: jnp.concatenate(
      [jnp.repeat(x, n, axis=-4), jnp.zeros(x.shape[:-4] + (R,) + x.shape[-3:-2] + (M,)
                                            + x.shape[-1:], x.dtype)], axis=-2), cache)
  cache = _constrain_cache(config, cache)
  uniforms = _step_uniforms(_row_keys(seed, batch.prompt_ids, n), M) if strategy.needs_rng \
      else None
  S = P1 + P2 + M
  key_positions = _key_positions(prefix_start, P1, start, plen, S)

  def record(state: DecodeState, logits: Array) -> DecodeState:
    u = None if uniforms is None else jax.lax.dynamic_index_in_dim(uniforms, state.step, axis=1,
                                                                    keepdims=False)
    token, logprob = _select(strategy, logits, u, jnp.full((R,), state.step))
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
                                cache_index=slot, key_positions=key_positions)
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
  return _generate(config, params, batch, jnp.asarray(seed, jnp.uint32),
                   jnp.asarray(stop_array(stop_ids)),
                   jnp.asarray(pad_id, jnp.int32), strategy=strategy,
                   max_new_tokens=int(max_new_tokens), num_samples=int(num_samples))


# ------------------------------------------------------------------------------------------------
# Continuous batching: a fixed set of R decode rows ("slots") that prompts enter and leave.
#
# The static loop above decodes a batch until its longest row ends. Here decoding runs in blocks of
# steps (`decode_block`); between blocks the host hands the rows that finished to waiting samples:
# `prefill` computes their prompts' caches (`_prefill`: shared prefixes as above, once per prompt)
# and `insert` puts samples of prefilled prompts into free rows, as many as rows are free (a
# prompt's n samples may enter over several blocks, all from its one prefill). The model's cache
# takes one scalar write index, and rows that entered at different times are at different steps,
# so the cache is a ring of S slots: decode step t writes every row's new key at slot t % S, and a
# row inserted before step t0 has its W prefilled slots placed at [t0 - W, t0) mod S. Attention
# does not care where a key sits (its position is in its rotary embedding), only whether it is
# visible, so each row carries its own visible [R,S] mask. S >= W + M keeps a row's window from
# wrapping onto itself.

@struct.dataclass
class SlotState:
  """The decode rows between blocks.

  clock: decode steps run so far (scalar); the next step writes at slot clock % S.
  cache: the ring, [R,K,S,H] per layer. visible [R,S] bool: the slots each row attends to.
  key_positions [R,S]: the position each slot holds (for sliding-window layers).
  position [R]: position of the row's last token (the one the next step feeds).
  count [R]: tokens generated; tokens / logprobs [R,M] as in `SampleOutput`.
  done [R] bool: finished (or never filled); the host collects and refills these rows.
  stopped [R] bool: ended by a stop id. uniforms [R,M]: the row's draws (`_step_uniforms`).
  """
  clock: Array
  cache: llama.KVCache
  visible: Array
  key_positions: Array
  position: Array
  count: Array
  done: Array
  stopped: Array
  tokens: Array
  logprobs: Array
  uniforms: Array


@functools.partial(jax.jit, static_argnames=("config", "rows", "ring", "max_new_tokens"))
def init_slots(config: LlamaConfig, pad_id: Array, *, rows: int, ring: int,
               max_new_tokens: int) -> SlotState:
  """R = `rows` empty (done) decode rows over a ring of `ring` cache slots."""
  R, S, M = rows, ring, max_new_tokens
  return SlotState(
      clock=jnp.zeros((), jnp.int32),
      cache=_constrain_cache(config, llama.init_cache(config, R, S)),
      visible=jnp.zeros((R, S), jnp.bool_), key_positions=jnp.zeros((R, S), jnp.int32),
      position=jnp.zeros((R,), jnp.int32),
      count=jnp.zeros((R,), jnp.int32), done=jnp.ones((R,), jnp.bool_),
      stopped=jnp.zeros((R,), jnp.bool_), tokens=jnp.full((R, M), pad_id, jnp.int32),
      logprobs=jnp.zeros((R, M), jnp.float32), uniforms=jnp.zeros((R, M), jnp.float32))


@struct.dataclass
class Prefilled:
  """B prefilled prompts waiting to enter decode rows (`prefill`, then `insert` once or more).

  logits [B,V] of each prompt's last token; cache: its W = P1 + P2 slots per layer ([B,K,W,H]);
  visible [B,W]; key_positions [B,W]; next_position [B]; prompt_ids [B] (the keys derive from
  them)."""
  logits: Array
  cache: llama.KVCache
  visible: Array
  key_positions: Array
  next_position: Array
  prompt_ids: Array


@functools.partial(jax.jit, static_argnames=("config",))
def prefill(config: LlamaConfig, params, batch: PromptBatch) -> Prefilled:
  """Prefills a `PromptBatch` (shared prefixes once per group, as the static loop does)."""
  TRACE_COUNTS["prefill"] += 1
  logits, cache, visible, next_position, key_positions = _prefill(config, params, batch)
  return Prefilled(logits=logits, cache=cache, visible=visible, key_positions=key_positions,
                   next_position=next_position, prompt_ids=batch.prompt_ids)


@functools.partial(jax.jit, static_argnames=("config", "strategy"), donate_argnames=("state",))
def insert(config: LlamaConfig, state: SlotState, prefilled: Prefilled, rows: Array, source: Array,
           sample: Array, seed: Array, stop_ids: Array, pad_id: Array, *, strategy) -> SlotState:
  """Row rows[k] becomes sample sample[k] of the prefilled prompt source[k] (rows[k] >= R: none).

  The row's cache window, visibility and position come from that prompt's prefill; its first token
  is drawn from the prefill's logits with the row's own key (seed, prompt id, sample), exactly as
  the static loop draws it. One prefill can serve a prompt's samples over several calls, as rows
  free up; the other rows are left as they are.
  """
  TRACE_COUNTS["insert"] += 1
  R, S = state.visible.shape
  M = state.tokens.shape[1]
  W = prefilled.visible.shape[1]

  # Ring slot s holds block slot (s - (clock - W)) mod S, when that is < W (the other slots of the
  # row keep what they held: `visible` hides them).
  offset = jnp.mod(jnp.arange(S, dtype=jnp.int32) - (state.clock - W), S)
  in_block = offset < W
  offset = jnp.minimum(offset, W - 1)

  def put_cache(old, new):  # scatters whole rows; out-of-range rows are dropped
    index = (slice(None),) * (old.ndim - 4) + (rows,)  # cache leaves: batch axis -4, slots -2
    new = jnp.take(jnp.take(new, source, axis=-4), offset, axis=-2)
    return old.at[index].set(new.astype(old.dtype), mode="drop")

  cache = _constrain_cache(config, jax.tree.map(put_cache, state.cache, prefilled.cache))
  put = lambda old, new: old.at[rows].set(new, mode="drop")

  uniforms = None
  if strategy.needs_rng:  # the keys of `_row_keys`: (seed, prompt id, sample)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda p, j: jax.random.fold_in(jax.random.fold_in(base, p), j))(
        prefilled.prompt_ids[source], sample)
    uniforms = _step_uniforms(keys, M)
  token, logprob = _select(strategy, prefilled.logits[source],
                           None if uniforms is None else uniforms[:, 0], jnp.zeros_like(rows))
  first = jnp.arange(M, dtype=jnp.int32)[None, :] == 0
  hit_stop = jnp.isin(token, stop_ids)
  return state.replace(
      cache=cache,
      visible=put(state.visible, jnp.take(prefilled.visible[source], offset, axis=1)
                  & in_block[None, :]),
      key_positions=put(state.key_positions,
                        jnp.take(prefilled.key_positions[source], offset, axis=1)),
      position=put(state.position, prefilled.next_position[source]),
      count=put(state.count, jnp.ones_like(rows)),
      done=put(state.done, hit_stop | (M <= 1)),
      stopped=put(state.stopped, hit_stop),
      tokens=put(state.tokens, jnp.where(first, token[:, None], pad_id)),
      logprobs=put(state.logprobs, jnp.where(first, logprob[:, None], 0.0)),
      uniforms=state.uniforms if uniforms is None else put(state.uniforms, uniforms))


def _decode_step(config: LlamaConfig, params, state: SlotState, stop_ids: Array, *,
                 strategy) -> SlotState:
  """One decode step of every row: feed each live row's last token, write its key at the ring's
  next slot, pick the next token (the body of `decode_block`'s loop)."""
  model = llama.Llama(config)
  S = state.visible.shape[1]
  M = state.tokens.shape[1]
  steps = jnp.arange(M, dtype=jnp.int32)[None, :]
  slot = jnp.mod(state.clock, S)
  live = ~state.done
  visible = state.visible.at[:, slot].set(live)  # the key this step writes is the row's own
  key_positions = state.key_positions.at[:, slot].set(state.position)
  last = jnp.maximum(state.count - 1, 0)[:, None]
  token = jnp.take_along_axis(state.tokens, last, axis=1)                            # [R,1]
  logits, cache = model.apply({"params": params}, token, state.position[:, None],
                              visible[:, None, :], cache=state.cache, cache_index=slot,
                              key_positions=key_positions)
  u = jnp.take_along_axis(state.uniforms, jnp.minimum(state.count, M - 1)[:, None], axis=1)[:, 0]
  new, logprob = _select(strategy, logits[:, 0], u if strategy.needs_rng else None, state.count)
  hit_stop = live & jnp.isin(new, stop_ids)
  here = live[:, None] & (steps == state.count[:, None])
  count = state.count + live
  return state.replace(
      clock=state.clock + 1, cache=_constrain_cache(config, cache), visible=visible,
      key_positions=key_positions,
      position=state.position + live, count=count,
      done=state.done | hit_stop | (count >= M), stopped=state.stopped | hit_stop,
      tokens=jnp.where(here, new[:, None], state.tokens),
      logprobs=jnp.where(here, logprob[:, None], state.logprobs))


# One step alone, compiled by the compile check (`compile_check.py`) for its per-step cost: XLA's
# cost analysis of the whole `decode_block` is not one step's (for the 70-row actor block on a
# v4-32 it reported 27 GB against 5.5 GB for this step alone: how it counts the loop).
decode_step = jax.jit(_decode_step, static_argnames=("config", "strategy"),
                      donate_argnames=("state",))


@functools.partial(jax.jit, static_argnames=("config", "strategy", "num_steps"),
                   donate_argnames=("state",))
def decode_block(config: LlamaConfig, params, state: SlotState, stop_ids: Array, refill_at: Array,
                 *, strategy, num_steps: int) -> SlotState:
  """Up to `num_steps` decode steps of every row; ends early when every row is done, or once at
  least `refill_at` rows are done (the host has samples waiting for them)."""
  TRACE_COUNTS["decode_block"] += 1
  end = state.clock + num_steps

  def cond(state: SlotState):
    return ((state.clock < end) & ~jnp.all(state.done) &
            (jnp.sum(state.done, dtype=jnp.int32) < refill_at))

  def body(state: SlotState):
    return _decode_step(config, params, state, stop_ids, strategy=strategy)

  return jax.lax.while_loop(cond, body, state)


def stop_array(stop_ids: Sequence[int]) -> np.ndarray:
  """Stop ids as a padded int32 array (-1 fills; a multiple of 4 long: fewer distinct shapes)."""
  stops = np.asarray(sorted(set(int(s) for s in stop_ids)) or [-1], np.int32)
  return np.pad(stops, (0, -len(stops) % 4), constant_values=-1)


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
