"""The host-side sampler: prompts (strings, messages or token ids) in, `Completion`s out.

`Sampler` tokenizes with the chat template, sorts by length, packs prompts into prompt-length and
batch buckets (a run compiles a handful of programs), detects shared prefixes (prefilled once),
reports prompts that do not fit (`prompt_length.py`) as finish_reason "too_long", runs the jitted
decode (`decode.py`) with a strategy (`strategies.py`), and shows tqdm progress. By default the
batching is continuous: a fixed set of decode rows runs in blocks of steps, and between blocks the
rows that finished take the next prompts (`Sampler(batching="static")`: batch after batch, each
until its longest row ends; the same completions either way, `Sampler.last_stats` says how full
the rows were).

  sampler = Sampler(model_config, params, tokenizer, mesh=mesh, rules=decode_rules)
  rows = sampler.generate(prompts, n=4, strategy=strategies.Sampling(temperature=0.8, top_p=0.95),
                          max_new_tokens=256, seed=0)   # rows[i][j]: Completion

Log-probs are those of the model itself (log-softmax of the raw logits, temperature 1, unfiltered)
at the chosen token: what length normalisation and reference scoring want, whatever the strategy.
A completion stopped by a stop token includes that token in `token_ids`, `num_tokens` and
`logprob` (the probability of ending there is part of the sequence's probability); its `text` does
not.

Multi-process decoding. On a mesh whose devices span several processes (multi-host), the sampler
decodes on that global mesh: the parameters stay in their shardings (no process ever holds a whole
weight matrix the mesh shards) and every jitted program runs over all devices, batch rows over the
rules' "batch" axes, heads / mlp / vocab / embed as the rules say. All processes must run the same
sequence of programs with the same shapes, and continuous batching decides on the host, between
blocks, which rows finished and which prompts enter. The sampler makes those decisions identical by
construction rather than by negotiation: every process calls `generate` with the same prompts (the
pipeline's processes hold the same records; `generate` checks it), so each one computes the same
plans, buckets and queue, and after each block every process reads the same per-row results (done
flags, counts, tokens: an on-device all-gather of [R] and [R,M] arrays, small next to a block's
work). Each process transfers only the rows of a batch its own devices hold
(`jax.make_array_from_callback`), and every process returns every prompt's completions, so nothing
is gathered afterwards. The global program is the one a single process with the same devices runs,
and keys derive from (seed, prompt index, sample), so results do not depend on the process count.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from meta_rewarding import distributed, prompt_length, sharding as sharding_lib
from meta_rewarding import decode
from meta_rewarding.choices import BATCHING
from meta_rewarding.decode import SampleOutput, generate_tokens, make_batch
from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig
from meta_rewarding.strategies import Greedy, Sampling, Strategy

DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048)


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


@dataclasses.dataclass
class SamplerStats:
  """How full the decode rows were during one `generate` call.

  slot_steps: the sum over decode steps of the rows each step ran (static: batch rows x steps of
  each batch; continuous: slots x steps). kept_tokens: the tokens those steps produced that the
  completions keep: every completion's tokens but its first, which the prefill's logits give.
  """
  batching: str
  slots: int = 0          # decode rows (static: of the largest batch)
  decode_steps: int = 0
  slot_steps: int = 0
  kept_tokens: int = 0
  prefills: int = 0       # prefill calls (static: one per batch)

  @property
  def utilisation(self) -> float:
    """kept tokens / (slots x decode steps); 1.0 when no decode step ran (nothing was wasted)."""
    return self.kept_tokens / self.slot_steps if self.slot_steps else 1.0


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
    mesh, rules: optional device mesh and its logical rules (a config's decode rules,
      `meta_rewarding.config.rules.rules_for(config)[1]`; required with a mesh). The mesh may
      span several processes: then every process calls `generate` with the same arguments
      (module docstring, "Multi-process decoding").
    batch_size: decode rows per batch: prompts per batch = max(1, batch_size // n).
    prompt_buckets: prompt lengths are padded up to one of these (with a shared prefix, both the
      prefix and the rest are); batches of fewer prompts are padded to a power of two.
    max_cache_length: the most tokens (prompt + generated) one sequence may hold, i.e. the largest
      position; default `model_config.max_position_embeddings`. Buckets are clipped to
      max_cache_length - max_new_tokens.
    min_shared_prefix: with share_prefix, the shortest common prefix worth sharing.
    batching: "continuous" (default): decode rows that finish are refilled with waiting prompts
      between blocks of at most `decode_block` steps, so long generations do not hold short ones'
      rows idle; "static": each batch decodes until its longest row ends. Both give the same
      completions (keys and buckets do not depend on it); `last_stats` says how full the rows were.
    decode_block: with continuous batching, the most decode steps between two refills (a block
      also ends as soon as enough rows are free for the prompts waiting).
  """

  def __init__(self, model_config: LlamaConfig, params, tokenizer=None, *, mesh=None,
               rules=None, batch_size: int = 16,
               prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
               max_cache_length: int | None = None, min_shared_prefix: int = 16,
               batching: str = "continuous", decode_block: int = 32):
    if batching not in BATCHING:
      raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if decode_block < 1:
      raise ValueError(f"decode_block must be >= 1, got {decode_block}")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompt_buckets or min(prompt_buckets) < 1:
      raise ValueError(f"prompt_buckets must be positive lengths, got {prompt_buckets}")
    self.tokenizer = tokenizer
    self.mesh = mesh
    if mesh is not None and rules is None:
      raise ValueError("Sampler(mesh=...) needs the mesh's logical rules: the config's decode rules "
                       "(meta_rewarding.config.rules.rules_for(config)[1])")
    self.rules = rules
    self.batch_size = int(batch_size)
    self.prompt_buckets = tuple(sorted({int(b) for b in prompt_buckets}))
    self.max_cache_length = prompt_length.cache_length(max_cache_length or 0,
                                                       model_config.max_position_embeddings)
    self.min_shared_prefix = int(min_shared_prefix)
    self.batching = batching
    self.decode_block = int(decode_block)
    self.last_stats: SamplerStats | None = None  # of the latest `generate` call
    self._batch_multiple = 1
    params = decoding_params(model_config, params, mesh, self.rules)
    self.config = model_config = decoding_config(model_config)
    if mesh is not None:
      axes = dict(self.rules).get("batch")
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      self._batch_multiple = math.prod(mesh.shape[a] for a in axes)
    # A mesh over several processes' devices (module docstring, "Multi-process decoding"): inputs
    # are built from each process's own rows and outputs read through one replicating program.
    self.spans_processes = mesh is not None and len(
        {d.process_index for d in mesh.devices.flat}) > 1
    self._replicate = (jax.jit(_identity, out_shardings=NamedSharding(mesh, PartitionSpec()))
                       if self.spans_processes else None)
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
    return round_batch(count, cap, self._batch_multiple)

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
    if self.spans_processes:
      self._check_same_call(ids, n=n, strategy=strategy, max_new_tokens=max_new_tokens, seed=seed,
                            share_prefix=share_prefix, stop_ids=stop_ids, index_offset=index_offset)
    skipped = set(long)
    plans = self._plans(ids, n, buckets, share_prefix,
                        keep=[i for i in range(len(ids)) if i not in skipped])

    bar = tqdm(total=len(ids) - len(long), desc=desc or "sampling", disable=not progress,
               unit="prompt")
    run = dict(n=n, strategy=strategy, max_new_tokens=max_new_tokens, seed=seed, stop_ids=stop_ids,
               pad_id=pad_id, index_offset=index_offset, stop_set=stop_set, results=results,
               ids=ids, bar=bar)
    try:
      with (sharding_lib.activate(self.mesh, self.rules) if self.mesh is not None
            else contextlib.nullcontext()):
        if self.batching == "static":
          self.last_stats = self._static(plans, **run)
        else:
          self.last_stats = self._continuous(plans, **run)
    finally:
      bar.close()
    return results  # type: ignore[return-value]

  def _place(self, tree):
    """Host arrays onto the device(s): rows over the mesh's batch axes.

    Across processes each one transfers only the rows its devices hold (every process built the
    same host batch); `jax.device_put` would first check, with a collective, that they agree."""
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    sharding_of = lambda x: sharding_lib.batch_sharding(self.mesh, self.rules, x.ndim)
    if self.spans_processes:
      return jax.tree.map(lambda x: jax.make_array_from_callback(
          x.shape, sharding_of(x), lambda index: x[index]), tree)
    return jax.tree.map(lambda x: jax.device_put(x, sharding_of(x)), tree)

  def _fetch(self, tree):
    """Device results to host numpy, whole on every process.

    Across processes no process can read the rows other processes' devices hold, so one program
    all-gathers them first (the per-row outputs only: tokens, log-probs, flags; never params)."""
    if not self.spans_processes:
      return jax.device_get(tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), self._replicate(tree))

  def _check_same_call(self, ids, **args):
    """Across processes, every process must sample the same prompts with the same arguments: each
    makes the host-side decisions (plans, refills) on its own, and they must agree. A mismatch
    would hang in a collective or mix results; this fails at once instead (one small all-gather)."""
    payload = json.dumps([ids, {k: repr(v) for k, v in sorted(args.items())}])
    digest = hashlib.sha256(payload.encode()).hexdigest()
    digests = distributed.allgather_objects(digest)
    if len(set(digests)) > 1:
      raise ValueError(
          "Sampler.generate on a mesh spanning several processes needs the same prompts and "
          "arguments on every process; they differ (per-process digests: "
          f"{[d[:12] for d in digests]})")

  def _static(self, plans: list[_Plan], *, n, strategy, max_new_tokens, seed, stop_ids, pad_id,
              index_offset, stop_set, results, ids, bar) -> SamplerStats:
    """Batch after batch, each decoded until its longest row ends."""
    stats = SamplerStats("static")
    pending = None

    def collect(plan: _Plan, out: SampleOutput):
      tokens, logprobs, lengths, stopped = self._fetch(
          (out.tokens, out.logprobs, out.lengths, out.stopped))
      for b, i in enumerate(plan.rows):
        results[i] = [self._completion(tokens[b * n + j], logprobs[b * n + j],
                                       int(lengths[b * n + j]), bool(stopped[b * n + j]),
                                       stop_set, len(ids[i])) for j in range(n)]
      rows = plan.batch * n
      steps = max(int(lengths.max()) - 1, 0)  # the first token comes from the prefill's logits
      stats.slots = max(stats.slots, rows)
      stats.decode_steps += steps
      stats.slot_steps += rows * steps
      stats.kept_tokens += int(np.maximum(lengths - 1, 0).sum())
      stats.prefills += 1
      bar.update(len(plan.rows))

    for plan in plans:
      batch = make_batch(plan.own, length=plan.length, batch=plan.batch,
                         prompt_ids=[index_offset + i for i in plan.rows],
                         pad_id=pad_id, prefixes=plan.prefixes, group=plan.group,
                         prefix_length=plan.prefix_length, num_prefixes=plan.num_prefixes)
      out = generate_tokens(self.config, self.params, self._place(batch), strategy=strategy,
                            max_new_tokens=max_new_tokens, num_samples=n, seed=seed,
                            stop_ids=stop_ids, pad_id=pad_id)
      if pending is not None:  # dispatch is async: fetch the previous batch while this one runs
        collect(*pending)
      pending = (plan, out)
    if pending is not None:
      collect(*pending)
    return stats

  def _continuous(self, plans: list[_Plan], *, n, strategy, max_new_tokens, seed, stop_ids,
                  pad_id, index_offset, stop_set, results, ids, bar) -> SamplerStats:
    """A fixed set of decode rows, refilled with waiting samples between blocks (decode.py).

    Prompts are prefilled in the static plans' order (by length; shared-prefix groups together):
    the first fill at the static batch's bucket, later ones `refill_prompts` at a time, padded to
    the call's widest buckets, each only when no prefilled sample is left waiting. Samples enter
    rows as rows free up, so a prompt's n samples may enter over several blocks, all from its one
    prefill (with n close to the row count, waiting for n free rows would leave most rows idle).
    Inserts take `refill_rows` rows at a time. A call compiles at most three prefill shapes (the
    first fill; refills with and without shared prefixes), as many insert shapes, and one decode
    block for the call's ring. The ring is as wide as the call's longest bucket (+
    max_new_tokens) for every row, where static batches of short prompts attend over their own
    bucket only: on calls that mix far-apart buckets, each step reads more cache than static
    batching would (the refills usually win that back). When nothing waits, the last rows drain
    at the full row count (the tail of a call).
    """
    stats = SamplerStats("continuous")
    M = max_new_tokens
    # (prompt index, own tokens, shared prefix) in the plans' order.
    queue = collections.deque(
        (i, plan.own[b], plan.prefixes[plan.group[b]] if plan.prefix_length else [])
        for plan in plans for b, i in enumerate(plan.rows))
    if not queue:
      return stats
    per_batch = max(1, self.batch_size // n)
    slot_prompts = self._round_batch(min(len(queue), per_batch), per_batch)
    refill_prompts = self._round_batch(max(1, slot_prompts // 16), slot_prompts)
    R = slot_prompts * n
    # Refill as soon as 1/16 of the rows are free: a freed row idles ~half that long (a few % of
    # the rows), while blocks stay long enough on a wide batch that host round trips are rare.
    refill_rows = max(1, R // 16)
    # The widest prefill block any chunk can have, plus room for every generated token.
    ring = max(p.prefix_length for p in plans) + max(p.length for p in plans) + M
    bucket = lambda length: next(b for b in self._buckets(M) if b >= length)
    seed_, stops, pad = (jnp.asarray(seed, jnp.uint32), jnp.asarray(decode.stop_array(stop_ids)),
                         jnp.asarray(pad_id, jnp.int32))
    state = decode.init_slots(self.config, pad, rows=R, ring=ring, max_new_tokens=M)
    stats.slots = R
    owner: list[tuple[int, int] | None] = [None] * R   # (prompt index, sample) per row
    free = list(range(R))
    ready: collections.deque = collections.deque()  # (Prefilled, its row, prompt index, sample)
    samples: dict[int, list] = {}
    clock = 0  # decode steps run (state.clock), known here without a sync

    # Refills (a few prompts each) are padded to the call's widest buckets and to one prefix row
    # per prompt, so that every refill of a call has one of two shapes (with or without shared
    # prefixes): fitted to each chunk, a call with many (own, prefix) bucket pairs compiled a
    # prefill and an insert for every pair it met (~100 small programs, 3 minutes of a 7-minute
    # testbed run on 2 cores). The padding costs little: a refill is a small share of the
    # prefill work, and decoding dominates.
    widest_own = max(p.length for p in plans)
    widest_prefix = max(p.prefix_length for p in plans)

    def prefill(size: int, *, refill: bool):  # `size` prompts, the last chunk padded
      chunk = [queue.popleft() for _ in range(min(len(queue), size))]
      prefixes: list[list[int]] = []
      group = []
      for _, _, prefix in chunk:
        if prefix not in prefixes:
          prefixes.append(prefix)
        group.append(prefixes.index(prefix))
      shared = max(map(len, prefixes))
      length = widest_own if refill else bucket(max(len(own) for _, own, _ in chunk))
      batch = make_batch(
          [own for _, own, _ in chunk], length=length,
          batch=size, prompt_ids=[index_offset + i for i, _, _ in chunk], pad_id=pad_id,
          prefixes=prefixes if shared else [], group=group if shared else None,
          prefix_length=(widest_prefix if refill else bucket(shared)) if shared else 0,
          num_prefixes=(self._round_batch(size if refill else len(prefixes), size) if shared
                        else self._batch_multiple))
      done = decode.prefill(self.config, self.params, self._place(batch))
      ready.extend((done, c, i, j) for c, (i, _, _) in enumerate(chunk) for j in range(n))
      stats.prefills += 1

    def insert(width: int):
      """Up to `width` waiting samples of the oldest prefill into free rows (one call)."""
      nonlocal state
      head = ready[0][0]
      rows = np.full((width,), R, np.int32)  # R: no row (dropped)
      source, sample = np.zeros((width,), np.int32), np.zeros((width,), np.int32)
      k = 0
      while ready and ready[0][0] is head and k < min(width, len(free)):
        _, source[k], i, sample[k] = ready.popleft()
        rows[k] = free.pop(0)
        owner[rows[k]] = (i, int(sample[k]))
        k += 1
      # Index arrays stay unsharded: any row may take any prefilled prompt.
      state = decode.insert(self.config, state, head, rows, source, sample, seed_, stops, pad,
                            strategy=strategy)

    # The first fill enters `refill_rows` at a time too (R / refill_rows small calls): one insert
    # width per call instead of two, so one compiled insert fewer per call shape.
    prefill(slot_prompts, refill=False)
    while ready or queue or any(o is not None for o in owner):
      while (ready or queue) and free:
        if not ready:
          prefill(refill_prompts, refill=True)
        insert(refill_rows)
      waiting = min(len(ready) + n * len(queue), refill_rows)
      # The block ends once enough rows are free for the waiting samples (never, with none).
      state = decode.decode_block(self.config, self.params, state, stops,
                                  jnp.asarray(waiting if waiting else R + 1, jnp.int32),
                                  strategy=strategy, num_steps=self.decode_block)
      if queue and not ready:  # dispatched now, it runs while the host waits for the block
        prefill(refill_prompts, refill=True)
      # One transfer per block (the rows' tokens are small next to a block's work).
      # Across processes every process reads every row: each makes the same refill decisions.
      done, count, stopped, now, tokens, logprobs = self._fetch(
          (state.done, state.count, state.stopped, state.clock, state.tokens, state.logprobs))
      steps, clock = int(now) - clock, int(now)
      stats.decode_steps += steps
      stats.slot_steps += R * steps
      for r in [r for r in range(R) if owner[r] is not None and done[r]]:
        i, j = owner[r]
        k = int(count[r])
        stats.kept_tokens += max(k - 1, 0)
        samples.setdefault(i, [None] * n)[j] = self._completion(
            tokens[r], logprobs[r], k, bool(stopped[r]), stop_set, len(ids[i]))
        owner[r] = None
        free.append(r)
        if all(c is not None for c in samples[i]):
          results[i] = samples.pop(i)
          bar.update(1)
      free.sort()
    return stats

  def _completion(self, tokens: np.ndarray, logprobs: np.ndarray, k: int, stop: bool, stop_set,
                  prompt_tokens: int) -> Completion:
    """One row's `Completion` from its first k tokens (a stop token included in the ids)."""
    token_ids = tuple(int(t) for t in tokens[:k])
    body = token_ids[:-1] if stop and token_ids and token_ids[-1] in stop_set else token_ids
    text = self.tokenizer.decode(body) if self.tokenizer is not None else ""
    return Completion(text=text, token_ids=token_ids,
                      logprob=float(np.sum(logprobs[:k], dtype=np.float64)), num_tokens=k,
                      finish_reason="stop" if stop else "length", prompt_tokens=prompt_tokens)


def decoding_config(model_config: LlamaConfig) -> LlamaConfig:
  """The model config the sampler runs: unscanned, no remat, weights in the compute dtype.

  Scanned layers help compile-time and training memory, but a scanned decode step slices every
  layer's weights and KV cache out of [L, ...] stacks, and XLA copies the stacked cache in every
  step (the compile check: bench/results/tpu_compile.md); remat has nothing to do without a
  backward pass."""
  return model_config.replace(scan_layers=False, remat_policy="none",
                              param_dtype=model_config.dtype)


def decoding_params(model_config: LlamaConfig, params, mesh=None, rules=None):
  """The weights the sampler reads, for `decoding_config(model_config)`: floating parameters in
  the compute dtype, per layer (unstacked), in the decode rules' shardings on `mesh`.

  The model casts every weight to the compute dtype before its matmul, so the samples are the same
  bit for bit; but a decode step is bound by the bytes it reads, and float32 master weights
  (`model.param_dtype`, kept for training) read twice the bytes of bfloat16 ones in every step.
  The copy lives as long as the sampler (until the next training stage); when nothing changes
  (an unscanned model, param_dtype == dtype, the same layout) it is the params themselves.
  Planned by `plan.py` as "params in <dtype> (the sampler reads these)"."""
  if params is None:  # a sampler built for its planning helpers only
    return None
  dtype = jnp.dtype(model_config.dtype)
  cast = lambda x: x.astype(dtype) if (jnp.issubdtype(x.dtype, jnp.floating)
                                        and x.dtype != dtype) else x
  convert = lambda p: jax.tree.map(cast, llama.unstacked_params(model_config, p))
  if mesh is None:
    return convert(params)
  target = sharding_lib.param_shardings(decoding_config(model_config), mesh, rules)
  unchanged = (not model_config.scan_layers
               and all(x.dtype == dtype for x in jax.tree.leaves(params)))
  if unchanged:
    return sharding_lib.shard_params(params, target)
  if not all(isinstance(x, jax.Array) for x in jax.tree.leaves(params)):  # host arrays
    params = sharding_lib.shard_params(params, sharding_lib.param_shardings(
        model_config, mesh, rules))
  # One jitted conversion into the decode shardings: no weight is whole on a device it does not
  # belong to, nor on the host.
  return jax.jit(convert, out_shardings=target)(params)


def round_batch(count: int, cap: int, multiple: int) -> int:
  """The batch a group of `count` prompts is padded to: the next power of two, at most `cap`,
  then up to a multiple of the batch shards (and never below `count`). Fewer distinct shapes,
  fewer compiled programs; the compile check (`compile_check.py`) plans with the same rule."""
  b = min(1 << max(count - 1, 0).bit_length(), cap)
  return -(-max(b, count) // multiple) * multiple


def _identity(tree):
  return tree


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
