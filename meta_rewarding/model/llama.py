"""The decoder in Flax linen, with an explicit KV cache for the sampler: one module for every family.

Llama, Mistral, Qwen2/2.5, Qwen3, Gemma 2 and Gemma 3 (text) are this one decoder; their
differences are fields of `DecoderConfig` (see its module for the table): q/k/v and o biases,
q/k norms, Gemma's (1 + w) norms and the norms after attention and MLP, GeGLU, the embedding scale,
the attention scale, soft-capped attention and output logits, sliding-window layers and their own
rope base. (The module keeps the name `Llama`, the family it was written for.)

Axis letters (shape comments and einsums):
  B batch · T query length · S key/cache length · D model dim · N query heads · K kv heads
  G query heads per kv head (N = K·G) · H head dim · F mlp dim · V vocab · L layers

Parameters carry logical axis names ("vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp",
"layers"); activations are constrained with ("batch", "length", "act_embed", ...). The mesh rules that
map these names onto devices live in the config (see `sharding.py`); this module never names a mesh
axis.

Call signature (all shapes static under jit):
  logits, cache = Llama(config).apply({"params": p}, tokens[B,T], positions[B,T], attn_mask[B,T,S],
                                      cache=cache, cache_index=i, key_positions=kp[B,S])
  * `attn_mask[b, t, s]` says whether query t of row b may attend to key slot s. Without a cache
    S = T; with one, S is the cache length and the T new keys are written at slots [i, i+T).
  * Sliding-window layers also need each slot's position, `key_positions[b, s]` (what a visible slot
    holds; anything where the mask hides it): query t sees slot s only if
    positions[b, t] - key_positions[b, s] < window. Without a cache the keys are the queries and
    `positions` serve. A model without sliding layers ignores it.
  * The cache (`init_cache`) stores GQA keys/values once per kv head, never repeated to N heads, as
    [B,K,S,H] per layer: the kv-head axis before the slot axis, so the attention einsums find their
    batch dims (B, K) leading and (S, H) contiguous (with [B,S,K,H], XLA transposed the whole cache
    in every decode step: on CPU ~12 of ~54 ms per step at batch 16, growing with S).
    Unscanned models keep one {"k", "v"} dict per layer (a tuple of L dicts): each layer's arrays
    are their own buffers, updated in place, read directly by the attention. Scanned models keep
    one stacked {"k": [L,B,K,S,H], "v": ...} (nn.scan needs it), whose per-layer slices XLA copies
    every step; fine for deep models' training-time evaluation, slower for decoding.
  * With `config.attention_chunk` = C, a forward over T > C tokens (training, the reference
    pass, a prefill) attends one block of C queries at a time (`_attend_in_blocks`): the same
    result, one block's [C, S] scores alive instead of [T, S]; decode steps (T = 1) are unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from meta_rewarding.model.config import LlamaConfig, rope_inverse_frequencies

Array = jax.Array
KVCache = Any  # tuple of L {"k","v": [B,K,S,H]} dicts, or one {"k","v": [L,B,K,S,H]} (scanned)
CACHE_AXES = ("batch", "act_kv_heads", "cache_length", "head_dim")  # of one layer's k or v

_init = nn.initializers.normal(stddev=0.02)


def _param(module: nn.Module, name: str, shape, axes, dtype, init=_init):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _constrain(x: Array, axes) -> Array:
  return nn.with_logical_constraint(x, axes)


def softcap(x: Array, cap: float | None) -> Array:
  """cap · tanh(x / cap) (Gemma's soft-capping of attention and output logits); x when cap is None."""
  return x if cap is None else jnp.tanh(x / cap) * cap


def final_logits(config: LlamaConfig, logits: Array) -> Array:
  """The output logits as the model returns them, from hidden @ unembedding (float32): soft-capped
  where the config says so. For callers that apply the unembedding themselves."""
  return softcap(logits, config.final_logit_softcapping)


class RMSNorm(nn.Module):
  """Over the last axis, of size `size` (default hidden_size; head_dim for the q/k norms)."""
  config: LlamaConfig
  size: int | None = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    gemma = c.norm_style == "gemma"
    scale = _param(self, "scale", (self.size or c.hidden_size,), ("norm",), c.param_dtype,
                   nn.initializers.zeros if gemma else nn.initializers.ones)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + c.rms_norm_eps)
    if gemma:  # as transformers' Gemma: (1 + w) applied in float32, then cast
      return (x32 * (1.0 + scale.astype(jnp.float32))).astype(c.dtype)
    # As transformers' Llama: normalise in float32, cast back, then scale.
    return scale.astype(c.dtype) * x32.astype(c.dtype)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotary embedding, rotate-half convention (the HF weight layout). x [B,T,*,H], positions [B,T]."""
  angles = positions.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]  # [B,T,H/2]
  emb = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]               # [B,T,1,H]
  cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


class Attention(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, attn_mask: Array,
               layer_cache: tuple[Array, Array] | None, cache_index: Array | None,
               inv_freq: Array):
    """`attn_mask` and `inv_freq` are this layer's: the sliding window's and the local rope's for
    a sliding layer (`DecoderLayer` picks them)."""
    c = self.config
    D, N, K, G, H = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.num_groups, c.head_dim
    wq = _param(self, "q", (D, N, H), ("embed", "q_heads", "head_dim"), c.param_dtype)
    wk = _param(self, "k", (D, K, H), ("embed", "kv_heads", "head_dim"), c.param_dtype)
    wv = _param(self, "v", (D, K, H), ("embed", "kv_heads", "head_dim"), c.param_dtype)
    wo = _param(self, "o", (N, H, D), ("q_heads", "head_dim", "embed"), c.param_dtype)
    dt = c.dtype
    q = jnp.einsum("BTD,DNH->BTNH", x, wq.astype(dt))
    k = jnp.einsum("BTD,DKH->BTKH", x, wk.astype(dt))
    v = jnp.einsum("BTD,DKH->BTKH", x, wv.astype(dt))
    if c.attention_bias:  # Qwen2: q/k/v only; Qwen3 / Gemma with attention_bias: o too
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", (N, H), ("q_heads", "head_dim"), c.param_dtype, zeros).astype(dt)
      k = k + _param(self, "k_bias", (K, H), ("kv_heads", "head_dim"), c.param_dtype, zeros).astype(dt)
      v = v + _param(self, "v_bias", (K, H), ("kv_heads", "head_dim"), c.param_dtype, zeros).astype(dt)
    if c.qk_norm:  # per head, over head_dim, before rope (Qwen3, Gemma 3)
      q = RMSNorm(c, H, name="q_norm")(q)
      k = RMSNorm(c, H, name="k_norm")(k)
    q = _constrain(apply_rope(q, positions, inv_freq), ("batch", "length", "act_q_heads", "head_dim"))
    # [B,K,T,H], the cache's layout. (Transposing these small activations, not asking the einsum
    # for BKTH: XLA:CPU then transposed the weights in every decode step.)
    k = _constrain(jnp.swapaxes(apply_rope(k, positions, inv_freq), 1, 2),
                   ("batch", "act_kv_heads", "length", "head_dim"))
    v = _constrain(jnp.swapaxes(v, 1, 2), ("batch", "act_kv_heads", "length", "head_dim"))

    new_kv = (k, v)  # the T new keys/values (the scanned model writes them into its stack)
    written = None
    if layer_cache is not None:
      cache_k, cache_v = layer_cache  # [B,K,S,H]
      written = (
          jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), cache_index, axis=2),
          jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), cache_index, axis=2))
      k, v = written[0].astype(dt), written[1].astype(dt)

    B, T = x.shape[:2]
    q = q.reshape(B, T, K, G, H)
    chunk = c.attention_chunk
    if chunk and T > chunk:
      out = _attend_in_blocks(c, q, k, v, attn_mask, chunk)
    else:
      out = _attend(c, q, k, v, attn_mask)
    out = output_projection(out, wo.astype(dt), per_kv_head=jax.default_backend() == "cpu")
    if c.attention_out_bias:
      out = out + _param(self, "o_bias", (D,), ("embed",), c.param_dtype,
                         nn.initializers.zeros).astype(dt)
    return _constrain(out, ("batch", "length", "act_embed")), new_kv, written


def _attend(c: LlamaConfig, q: Array, k: Array, v: Array, attn_mask: Array) -> Array:
  """Softmax attention of queries q [B,T,K,G,H] over keys/values [B,K,S,H] -> [B,K,G,T,H]."""
  logits = jnp.einsum("BTKGH,BKSH->BKGTS", q, k, preferred_element_type=jnp.float32)
  logits = softcap(logits * c.attention_scale, c.attn_logit_softcapping)
  mask = attn_mask[:, None, None, :, :]
  logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(c.dtype)
  # A query with no visible key (a padding row) would average garbage; zero it instead.
  probs = jnp.where(mask.any(axis=-1, keepdims=True), probs, 0)
  # Batch dims (B, K) leading in the output too: asking the einsum for BTKGH directly made XLA:CPU
  # run the probs x values product ~4x slower at decode (T = 1); the transpose is of a small array.
  return jnp.einsum("BKGTS,BKSH->BKGTH", probs, v)


def _attend_in_blocks(c: LlamaConfig, q: Array, k: Array, v: Array, attn_mask: Array,
                      chunk: int) -> Array:
  """`_attend` one block of `chunk` queries at a time (`DecoderConfig.attention_chunk`): each
  query's softmax is over all its keys, so the result is `_attend`'s, but only one block's
  [chunk, S] scores exist at once instead of [T, S]. Each block is rematerialised
  (`jax.checkpoint`): the backward pass keeps the blocks' inputs and recomputes their scores, so
  training holds one block's scores too. T is padded to whole blocks with queries that see no key
  (zeroed by `_attend`), sliced off after."""
  B, T = q.shape[:2]
  blocks = -(-T // chunk)
  pad = blocks * chunk - T
  if pad:
    q = jnp.pad(q, ((0, 0), (0, pad)) + ((0, 0),) * 3)
    attn_mask = jnp.pad(attn_mask, ((0, 0), (0, pad), (0, 0)))
  q_blocks = jnp.moveaxis(q.reshape(B, blocks, chunk, *q.shape[2:]), 1, 0)
  mask_blocks = jnp.moveaxis(attn_mask.reshape(B, blocks, chunk, attn_mask.shape[-1]), 1, 0)
  block = jax.checkpoint(lambda qm: _attend(c, qm[0], k, v, qm[1]))
  out = jax.lax.map(block, (q_blocks, mask_blocks))         # [blocks, B, K, G, chunk, H]
  out = jnp.moveaxis(out, 0, 3)                             # [B, K, G, blocks, chunk, H]
  return out.reshape(*out.shape[:3], blocks * chunk, out.shape[-1])[:, :, :, :T]


def output_projection(out: Array, wo: Array, *, per_kv_head: bool) -> Array:
  """[B,K,G,T,H] attention outputs x wo [N,H,D] (N = K·G query heads) -> [B,T,D].

  Two forms of one product, each the fast one of its backend at decode (T = 1):
  per_kv_head: K batched products (one per kv head, over its G query heads) summed in float32. On
    XLA:CPU the plain form made it copy a transposed wo in every decode step.
  plain: `out` transposed to [B,T,N,H], one contraction over (N, H). XLA:GPU turns the batched
    form into a column reduction (27 instead of ~4 us per layer of a 1B model on an H100).
  """
  B, K, G, T, H = out.shape
  if per_kv_head:
    return jnp.einsum("BKGTH,KGHD->KBTD", out, wo.reshape(K, G, H, wo.shape[-1]),
                      preferred_element_type=jnp.float32).sum(0).astype(out.dtype)
  return jnp.einsum("BTNH,NHD->BTD", jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(B, T, K * G, H), wo)


class MLP(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    D, F, dt = c.hidden_size, c.intermediate_size, c.dtype
    w_gate = _param(self, "gate", (D, F), ("embed", "mlp"), c.param_dtype)
    w_up = _param(self, "up", (D, F), ("embed", "mlp"), c.param_dtype)
    w_down = _param(self, "down", (F, D), ("mlp", "embed"), c.param_dtype)
    gate = jnp.einsum("BTD,DF->BTF", x, w_gate.astype(dt))
    up = jnp.einsum("BTD,DF->BTF", x, w_up.astype(dt))
    act = jax.nn.silu if c.hidden_act == "silu" else functools.partial(jax.nn.gelu, approximate=True)
    h = _constrain(act(gate) * up, ("batch", "length", "act_mlp"))
    return jnp.einsum("BTF,FD->BTD", h, w_down.astype(dt))


class DecoderLayer(nn.Module):
  """One layer. `sliding`: whether it is a sliding-window layer, when known statically (unscanned
  models); the scanned model passes a traced `sliding_flag` instead."""
  config: LlamaConfig
  sliding: bool | None = None

  @nn.compact
  def __call__(self, x, positions, attn_mask, layer_cache, cache_index, window_mask=None,
               sliding_flag=None):
    """-> (x, the T new (k, v), the layer cache with them written in (None without a cache)).

    `window_mask`: `attn_mask` narrowed to the sliding window (None: the model has no sliding
    layers)."""
    c = self.config
    mask, inv_freq = attn_mask, jnp.asarray(rope_inverse_frequencies(c), jnp.float32)
    if window_mask is not None:
      local_freq = jnp.asarray(rope_inverse_frequencies(c, sliding=True), jnp.float32)
      if self.sliding is not None:
        if self.sliding:
          mask, inv_freq = window_mask, local_freq
      else:
        mask = jnp.where(sliding_flag, window_mask, attn_mask)
        if c.rope_local_theta is not None:
          inv_freq = jnp.where(sliding_flag, local_freq, inv_freq)
    h, new_kv, written = Attention(c, name="attn")(
        RMSNorm(c, name="attn_norm")(x), positions, mask, layer_cache, cache_index, inv_freq)
    if c.sandwich_norms:
      h = RMSNorm(c, name="attn_post_norm")(h)
    x = x + h
    h = MLP(c, name="mlp")(RMSNorm(c, name="mlp_norm")(x))
    if c.sandwich_norms:
      h = RMSNorm(c, name="mlp_post_norm")(h)
    x = x + h
    return _constrain(x, ("batch", "length", "act_embed")), new_kv, written


class _ScannedLayer(nn.Module):
  """DecoderLayer in the (carry, xs) -> (carry, ys) form nn.scan wants.

  The whole stacked cache rides in the carry and only the new tokens are written into it, so a decode
  step updates the cache in place instead of re-stacking L layers of it.
  """
  config: LlamaConfig

  @nn.compact
  def __call__(self, carry, layer_index, positions, attn_mask, cache_index, window_mask):
    x, cache = carry
    layer_cache = None if cache is None else (cache["k"][layer_index], cache["v"][layer_index])
    c = self.config
    flags = c.sliding_layers
    static = flags[0] if len(set(flags)) == 1 else None  # every layer alike: no per-layer choice
    flag = None if static is not None else jnp.asarray(flags)[layer_index]
    x, new_kv, _ = _remat(DecoderLayer, c)(c, sliding=static, name="layer")(
        x, positions, attn_mask, layer_cache, cache_index, window_mask, flag)
    if cache is not None:
      cache = _write_cache(cache, layer_index, cache_index, new_kv)
    return (x, cache), None


def _write_cache(cache: KVCache, layer_index, cache_index, new_kv) -> KVCache:
  """Writes the new [B,K,T,H] keys/values of one layer into the stacked cache at slots
  [cache_index, cache_index+T)."""
  zero = jnp.zeros((), jnp.int32)
  start = (jnp.asarray(layer_index, jnp.int32), zero, zero, cache_index, zero)
  return {name: jax.lax.dynamic_update_slice(cache[name], new[None].astype(cache[name].dtype), start)
          for name, new in zip(("k", "v"), new_kv)}


def _remat(module_cls, config: LlamaConfig):
  policies = {
      "full": jax.checkpoint_policies.nothing_saveable,
      "dots": jax.checkpoint_policies.checkpoint_dots,
      "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
  }
  if config.remat_policy == "none":
    return module_cls
  return nn.remat(module_cls, policy=policies[config.remat_policy], prevent_cse=not config.scan_layers)


class Llama(nn.Module):
  """Llama causal LM. Returns (logits [B,T,V] float32, new cache or None) — or hidden states."""
  config: LlamaConfig

  def setup(self):
    c = self.config
    self.embedding = _param(self, "embed", (c.vocab_size, c.hidden_size), ("vocab", "embed"),
                            c.param_dtype)
    if c.scan_layers:
      self.layers = nn.scan(
          _ScannedLayer, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
          length=c.num_hidden_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(c, name="layers")
    else:
      self.layers = [_remat(DecoderLayer, c)(c, sliding=c.sliding_layers[i], name=f"layers_{i}")
                     for i in range(c.num_hidden_layers)]
    self.final_norm = RMSNorm(c, name="final_norm")
    if not c.tie_word_embeddings:
      self.lm_head = _param(self, "lm_head", (c.hidden_size, c.vocab_size), ("embed", "vocab"),
                            c.param_dtype)

  def unembedding(self) -> Array:
    """[D, V] output projection (the transposed embedding when tied)."""
    return self.embedding.T if self.config.tie_word_embeddings else self.lm_head

  def __call__(self, tokens: Array, positions: Array, attn_mask: Array, *,
               cache: KVCache | None = None, cache_index: Array | int | None = None,
               key_positions: Array | None = None, return_hidden: bool = False):
    c = self.config
    x = jnp.take(self.embedding, tokens, axis=0).astype(c.dtype)  # [B,T,D]
    if c.scale_embeddings:  # Gemma: sqrt(hidden) in the compute dtype, as transformers rounds it
      x = x * jnp.asarray(c.hidden_size ** 0.5, c.dtype)
    x = _constrain(x, ("batch", "length", "act_embed"))
    if cache is not None:
      cache_index = jnp.asarray(cache_index, jnp.int32)
    window_mask = None
    if c.has_sliding_layers:
      if key_positions is None:
        if cache is not None:
          raise ValueError("a model with sliding-window layers decoding from a cache needs "
                           "key_positions [B,S]: the position each cache slot holds")
        key_positions = positions
      window_mask = attn_mask & (
          positions[:, :, None] - key_positions[:, None, :] < c.sliding_window)
    if c.scan_layers:
      (x, cache), _ = self.layers((x, cache), jnp.arange(c.num_hidden_layers), positions, attn_mask,
                                  cache_index, window_mask)
    else:
      if cache is not None and (not isinstance(cache, (tuple, list))
                                or len(cache) != c.num_hidden_layers):
        raise ValueError("an unscanned model takes a tuple of one {'k','v'} cache per layer "
                         "(llama.init_cache)")
      written = []
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else (cache[i]["k"], cache[i]["v"])
        x, _, kv = layer(x, positions, attn_mask, layer_cache, cache_index, window_mask)
        written.append(None if kv is None else {"k": kv[0], "v": kv[1]})
      cache = None if cache is None else tuple(written)
    x = self.final_norm(x)
    if return_hidden:
      return x, cache
    logits = jnp.einsum("BTD,DV->BTV", x, self.unembedding().astype(c.dtype),
                        preferred_element_type=jnp.float32)
    logits = final_logits(c, logits)
    return _constrain(logits, ("batch", "length", "act_vocab")), cache


# --------------------------------------------------------------------------------------------------
# Functional helpers around the module.

def causal_mask(valid: Array) -> Array:
  """[B,T] validity (False = left padding) -> [B,T,T] mask: causal and no attention to padding."""
  T = valid.shape[1]
  causal = jnp.tril(jnp.ones((T, T), jnp.bool_))
  return causal[None] & valid[:, None, :]


def init_cache(config: LlamaConfig, batch: int, max_length: int, dtype=None) -> KVCache:
  """Zeroed cache in the compute dtype (or `dtype`): a tuple of L {"k","v": [B,K,S,H]} dicts, or
  for a scanned model one {"k","v": [L,B,K,S,H]} (module docstring). Batch is axis -4 and slots
  axis -2 of every leaf in both forms."""
  shape = (batch, config.num_key_value_heads, max_length, config.head_dim)
  dtype = dtype or config.dtype
  # The structure is cache_logical_axes'; a leading "layers" axis (scanned) stacks the layers.
  return jax.tree.map(
      lambda spec: jnp.zeros((config.num_hidden_layers,) * (len(spec) - len(shape)) + shape, dtype),
      cache_logical_axes(config), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def cache_logical_axes(config: LlamaConfig):
  """PartitionSpecs of logical axis names, in `init_cache`'s structure."""
  if config.scan_layers:
    spec = jax.sharding.PartitionSpec("layers", *CACHE_AXES)
    return {"k": spec, "v": spec}
  spec = jax.sharding.PartitionSpec(*CACHE_AXES)
  return tuple({"k": spec, "v": spec} for _ in range(config.num_hidden_layers))


def init_params(config: LlamaConfig, rng: Array) -> dict[str, Any]:
  """Random parameters (unboxed). For sharded creation see `sharding.init_sharded_params`."""
  return nn.unbox(_boxed_init(config, rng))


def _boxed_init(config: LlamaConfig, rng: Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Llama(config).init(rng, tokens, tokens, jnp.ones((1, 1, 1), jnp.bool_))["params"]


def unstacked_params(config: LlamaConfig, params) -> dict[str, Any]:
  """A scanned model's params ({"layers": {"layer": [L, ...] leaves}}) as the unscanned model's
  ({"layers_0": ..., "layers_{L-1}": ...}); other params as they are. Under jit, no copy beyond
  the slices."""
  if not config.scan_layers:
    return params
  out = {k: v for k, v in params.items() if k != "layers"}
  stacked = params["layers"]["layer"]
  for i in range(config.num_hidden_layers):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out


def param_logical_axes(config: LlamaConfig):
  """Pytree (same structure as params) of logical axis-name tuples, computed abstractly."""
  boxed = jax.eval_shape(functools.partial(_boxed_init, config), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def hidden_states(config: LlamaConfig, params, tokens: Array, valid: Array | None = None) -> Array:
  """[B,T] -> final-norm hidden states [B,T,D], positions counted from each row's first valid token."""
  valid = jnp.ones(tokens.shape, jnp.bool_) if valid is None else valid.astype(jnp.bool_)
  positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
  hidden, _ = Llama(config).apply({"params": params}, tokens, positions, causal_mask(valid),
                                  return_hidden=True)
  return hidden


def unembedding(config: LlamaConfig, params) -> Array:
  """[D, V] output matrix from params."""
  return params["embed"].T if config.tie_word_embeddings else params["lm_head"]


@functools.partial(jax.jit, static_argnums=0)
def forward(config: LlamaConfig, params, tokens: Array) -> Array:
  """The plain full-sequence forward: tokens [B,T] int -> logits [B,T,V] float32, positions 0..T-1."""
  B, T = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  logits, _ = Llama(config).apply({"params": params}, tokens, positions,
                                  causal_mask(jnp.ones((B, T), jnp.bool_)))
  return logits


def padded_forward(config: LlamaConfig, params, tokens: Array, valid: Array) -> Array:
  """Forward over left- or right-padded rows: positions start at each row's first valid token."""
  positions = jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
  logits, _ = Llama(config).apply({"params": params}, tokens, positions,
                                  causal_mask(valid.astype(jnp.bool_)))
  return logits
