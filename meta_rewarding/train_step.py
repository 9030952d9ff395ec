"""The pure training step: train state, optimizer, DPO / SFT losses on packed rows, one jitted update.

No I/O, no loop: `train.py` runs these on a mesh with its data order, reference pass and
checkpoints; users can call `train_step` in their own loops.

  spec = LossSpec(kind="dpo", beta=0.1)
  optimizer = make_optimizer(OptimizerSpec(...))
  state = init_state(params, optimizer)
  state, metrics = train_step(state, batch, learning_rate, model_config=..., spec=spec,
                              optimizer=optimizer)

Axis letters as in `model/llama.py`: M rows (packed prompt | chosen | rejected), T tokens, A
microbatches of one step; a packed row's segments are 0 prompt, 1 chosen, 2 rejected, -1 padding
(`data.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from meta_rewarding import losses
from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig


# ------------------------------------------------------------------------------------------------
# State and optimizer.

@flax.struct.dataclass
class TrainState:
  step: jax.Array   # int32 scalar: optimizer updates done
  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The static (hashable) part of a training step."""
  kind: str                   # "dpo" | "sft"
  beta: float = 0.1
  loss_type: str = "sigmoid"
  label_smoothing: float = 0.0
  nll_scale: float = 0.0
  chunk_size: int = 0

  @classmethod
  def from_config(cls, cfg, kind: str) -> "LossSpec":
    return cls(kind=kind, beta=float(cfg.beta), loss_type=str(cfg.loss_type),
               label_smoothing=float(cfg.label_smoothing), nll_scale=float(cfg.nll_scale),
               chunk_size=int(cfg.logps_chunk_size))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Learning rate per step, computed on the host and passed to the step as a scalar (so changing
  it never recompiles): warmup to `learning_rate` over `warmup_steps` (step s uses
  lr·(s+1)/warmup_steps), then `decay` towards `end_learning_rate_ratio`·lr at `total_steps`."""
  learning_rate: float
  warmup_steps: int
  decay: str
  end_learning_rate_ratio: float
  total_steps: int

  @classmethod
  def from_config(cls, cfg, total_steps: int) -> "Schedule":
    return cls(float(cfg.learning_rate), int(cfg.warmup_steps), str(cfg.decay),
               float(cfg.end_learning_rate_ratio), int(total_steps))

  def __call__(self, step: int) -> np.float32:
    lr, w = self.learning_rate, self.warmup_steps
    if step < w:
      return np.float32(lr * (step + 1) / w)
    end = lr * self.end_learning_rate_ratio
    frac = min(max((step - w) / max(self.total_steps - w, 1), 0.0), 1.0)
    if self.decay == "cosine":
      return np.float32(end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if self.decay == "linear":
      return np.float32(lr + (end - lr) * frac)
    return np.float32(lr)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """The compiled part of the optimizer (AdamW without its learning rate, and clipping)."""
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  max_grad_norm: float = 1.0

  @classmethod
  def from_config(cls, cfg) -> "OptimizerSpec":
    return cls(float(cfg.weight_decay), float(cfg.adam_b1), float(cfg.adam_b2),
               float(cfg.adam_eps), float(cfg.max_grad_norm))


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(spec: OptimizerSpec) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW's direction (Adam + decoupled weight decay on matrices).

  The train step multiplies the result by −learning_rate, which makes the whole exactly
  `optax.adamw(learning_rate, ...)` after `optax.clip_by_global_norm`.
  """
  parts = [optax.clip_by_global_norm(spec.max_grad_norm)] if spec.max_grad_norm > 0 else []
  parts += [optax.scale_by_adam(b1=spec.b1, b2=spec.b2, eps=spec.eps),
            optax.add_decayed_weights(spec.weight_decay, mask=_decay_mask)]
  return optax.chain(*parts)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


# ------------------------------------------------------------------------------------------------
# Pure step functions.

ROW_KEYS = ("tokens", "positions", "segment", "resp_src", "resp_tgt", "resp_seg")


def attention_mask(segment):
  """[M,T] segments (0 prompt, 1 chosen, 2 rejected, -1 pad) -> [M,T,T]: causal, padding
  invisible, and a rejected token never sees the chosen response packed before it."""
  T = segment.shape[-1]
  causal = jnp.tril(jnp.ones((T, T), jnp.bool_))
  q, k = segment[:, :, None], segment[:, None, :]
  return causal[None] & (q >= 0) & (k >= 0) & ~((q == 2) & (k == 1))


def response_logps(model_config: LlamaConfig, params, rows: Mapping[str, jax.Array], *,
                   num_segments: int, chunk_size: int = 0):
  """Packed rows (see `data.py`) -> [M, num_segments] float32 summed log-probs of each response.

  One forward over prompt+responses, then logits only at the response tokens' source positions:
  [M,Tr,V] (or `chunk_size` positions at a time, never all of them, when chunk_size > 0).
  """
  hidden, _ = llama.Llama(model_config).apply(
      {"params": params}, rows["tokens"], rows["positions"], attention_mask(rows["segment"]),
      return_hidden=True)                                                        # [M,T,D]
  h = jnp.take_along_axis(hidden, rows["resp_src"][..., None], axis=1)          # [M,Tr,D]
  h = nn.with_logical_constraint(h, ("batch", "length", "act_embed"))
  unembed = llama.unembedding(model_config, params).astype(model_config.dtype)  # [D,V]
  if chunk_size > 0:
    token_lp = losses.chunked_token_logps(h, unembed, rows["resp_tgt"], chunk_size=chunk_size,
                                          logit_softcap=model_config.final_logit_softcapping)
  else:
    logits = llama.final_logits(model_config, jnp.einsum("BTD,DV->BTV", h, unembed,
                                                         preferred_element_type=jnp.float32))
    logits = nn.with_logical_constraint(logits, ("batch", "length", "act_vocab"))
    token_lp = losses.token_logps(logits, rows["resp_tgt"])                     # [M,Tr]
  seg = rows["resp_seg"]
  return jnp.stack([jnp.sum(jnp.where(seg == s, token_lp, 0.0), axis=-1)
                    for s in range(1, num_segments + 1)], axis=-1)


def _dpo_microbatch_loss(params, mb, total_pairs, *, model_config, spec: LossSpec):
  """Σ_pairs weight·loss / total_pairs for one microbatch, and weighted metric sums."""
  logps = response_logps(model_config, params, mb, num_segments=2,
                         chunk_size=spec.chunk_size)                             # [M,2]
  policy_chosen, policy_rejected = logps[:, 0], logps[:, 1]
  chosen_tokens = jnp.sum(mb["resp_seg"] == 1, axis=-1).astype(jnp.float32)
  chosen_nll = -policy_chosen / jnp.maximum(chosen_tokens, 1.0)

  def one(pc, pr, rc, rr, nll):
    return losses.dpo_loss(pc[None], pr[None], rc[None], rr[None], beta=spec.beta,
                           loss_type=spec.loss_type, label_smoothing=spec.label_smoothing,
                           chosen_nll=nll[None] if spec.nll_scale > 0 else None,
                           nll_scale=spec.nll_scale)

  per_loss, per_metrics = jax.vmap(one)(policy_chosen, policy_rejected, mb["ref_chosen"],
                                        mb["ref_rejected"], chosen_nll)          # [M]
  w = mb["weight"]
  weighted = lambda x: jnp.sum(jnp.where(w > 0, x, 0.0) * w)
  loss = weighted(per_loss) / total_pairs
  sums = {k: weighted(v) for k, v in per_metrics.items()}
  sums["logps/chosen"] = weighted(jax.lax.stop_gradient(policy_chosen))
  sums["logps/rejected"] = weighted(jax.lax.stop_gradient(policy_rejected))
  return loss, sums


def _sft_microbatch_loss(params, mb, total_tokens, *, model_config, spec: LossSpec):
  logps = response_logps(model_config, params, mb, num_segments=1,
                         chunk_size=spec.chunk_size)[:, 0]                      # [M]
  loss = -jnp.sum(logps) / total_tokens
  return loss, {"nll": jax.lax.stop_gradient(-jnp.sum(logps))}


def _metric_keys(spec: LossSpec) -> list[str]:
  """Names of the per-microbatch metric sums (the scan carry needs them before the first step)."""
  if spec.kind == "sft":
    return ["nll"]
  one = jnp.zeros((1,), jnp.float32)
  _, metrics = jax.eval_shape(functools.partial(
      losses.dpo_loss, beta=spec.beta, loss_type=spec.loss_type,
      label_smoothing=spec.label_smoothing, chosen_nll=one if spec.nll_scale > 0 else None,
      nll_scale=spec.nll_scale), one, one, one, one)
  return sorted(metrics) + ["logps/chosen", "logps/rejected"]


def _logical_constraint(tree, axes):
  return jax.tree.map(lambda x, a: nn.with_logical_constraint(x, a), tree, axes,
                      is_leaf=lambda a: isinstance(a, P))


def train_step(state: TrainState, batch: Mapping[str, jax.Array], learning_rate: jax.Array, *,
               model_config: LlamaConfig, spec: LossSpec, optimizer: optax.GradientTransformation
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer update from A microbatches (`batch` arrays lead with A). Pure; jit it.

  `optimizer` is `make_optimizer(...)`; its update is scaled by −`learning_rate` (a scalar).

  Batch (see `data.collate`): packed rows tokens/positions/segment [A,M,T], resp_src/resp_tgt/
  resp_seg [A,M,Tr], weight [A,M], and for DPO ref_chosen/ref_rejected [A,M].
  """
  if spec.kind == "dpo":
    total = jnp.maximum(jnp.sum(batch["weight"]), 1.0)
    loss_fn = functools.partial(_dpo_microbatch_loss, model_config=model_config, spec=spec)
  else:
    total = jnp.maximum(jnp.sum(batch["resp_seg"] > 0).astype(jnp.float32), 1.0)
    loss_fn = functools.partial(_sft_microbatch_loss, model_config=model_config, spec=spec)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  param_axes = llama.param_logical_axes(model_config)

  def micro(carry, mb):
    grads, sums = carry
    (loss, msums), g = grad_fn(state.params, mb, total)
    grads = jax.tree.map(jnp.add, grads, _logical_constraint(g, param_axes))
    sums = jax.tree.map(jnp.add, sums, dict(msums, loss=loss))
    return (grads, sums), None

  zeros = _logical_constraint(jax.tree.map(jnp.zeros_like, state.params), param_axes)
  sums0 = {k: jnp.zeros((), jnp.float32) for k in _metric_keys(spec) + ["loss"]}
  (grads, sums), _ = jax.lax.scan(micro, (zeros, sums0), batch)

  state, grad_norm = apply_gradients(state, grads, learning_rate, optimizer=optimizer)
  metrics = {"loss": sums.pop("loss"), "grad_norm": grad_norm,
             "learning_rate": jnp.asarray(learning_rate, jnp.float32)}
  metrics.update({k: v / total for k, v in sums.items()})
  if spec.kind == "sft":
    metrics["response_tokens"] = total
  return state, metrics


def apply_gradients(state: TrainState, grads, learning_rate: jax.Array, *,
                    optimizer: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
  """One optimizer update from summed gradients: (the next state, the gradient's global norm).
  The update part of `train_step` (the compile check also compiles it alone, to count it once
  per step where the microbatch scan runs A times)."""
  grad_norm = optax.global_norm(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  lr = jnp.asarray(learning_rate, jnp.float32)
  params = jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), state.params, updates)
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), grad_norm


def pair_logps(params, rows, *, model_config: LlamaConfig, chunk_size: int = 0):
  """Packed pair rows -> ([M] chosen, [M] rejected) summed response log-probs."""
  logps = response_logps(model_config, params, rows, num_segments=2, chunk_size=chunk_size)
  return logps[:, 0], logps[:, 1]
