"""Sampling strategies: how the next token is chosen from the logits, inside the jitted decode loop.

Axis letters as in `model/llama.py` and `decode.py`: R decode rows, V vocab, C candidates.

  * `Greedy`, `Sampling`: the strategies (frozen dataclasses, hence jit-static). `Sampling` restricts
    to the top-k candidates (k = `top_k`, or `nucleus_candidates` = 64 when only `top_p` < 1) with
    `top_k` (`lax.top_k` over the k blocks with the highest maxima) before nucleus filtering,
    instead of sorting the whole vocabulary (a 16 x 32000 sort costs about as much as the model's
    forward on CPU, and XLA:GPU sorts whole rows for `lax.top_k` with k > 16), and draws with
    inverse-CDF sampling: one uniform number per row per step, so the PRNG costs O(rows), not
    O(rows x vocab) as Gumbel-max or `jax.random.categorical` do. The uniforms come from threefry
    keys derived per row from (seed, prompt index, sample index) and folded with the step
    (`decode.py`): results do not depend on which other prompts share the batch.
  * A strategy that sets `needs_count = True` is called as `sample(logits, uniforms, count)`, with
    count [R] the tokens each row has generated before this one, the same under static and
    continuous batching (`bench/decode.py`'s forced-length workload ends rows at drawn lengths so).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


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
