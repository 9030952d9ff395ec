"""Preference and language-modelling losses, in plain JAX.

This module imports only ``jax`` and ``numpy``: copy it into another project as is.

Axis letters: B batch, T length, D model dim, V vocab, C chunk length, N number of chunks.

Convention for every ``(logits, targets, mask)`` function: the caller has already shifted,
so ``logits[:, t]`` is the prediction for ``targets[:, t]`` (for a token sequence ``x`` that is
``logits = model(x)[:, :-1]``, ``targets = x[:, 1:]``), and ``mask[:, t]`` is 1 where
``targets[:, t]`` counts (response tokens) and 0 elsewhere (prompt, padding). Targets at masked
positions may hold any integer (padding ids, -100): they are clipped before the gather and the
result is zeroed, so they never produce NaNs.

Example (one DPO step on a pair batch, reference log-probs precomputed)::

    def loss_fn(params, batch):
      logits = forward(config, params, batch["tokens"])[:, :-1]          # [2B, T-1, V]
      logps = sequence_logps(logits, batch["tokens"][:, 1:], batch["mask"][:, 1:])
      chosen, rejected = jnp.split(logps, 2)                             # [B], [B]
      return dpo_loss(chosen, rejected, batch["ref_chosen"], batch["ref_rejected"], beta=0.1)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

# The one choice list defined outside `meta_rewarding.choices`: this module is meant to load alone
# (copied into another project, it needs nothing but jax), so it keeps its own copy;
# tests/test_losses.py keeps the two equal.
DPO_LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


def _float(x):
  """Casts to at least float32 (bf16/f16 -> f32; f64 stays f64 for x64 tests)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
    chosen_nll=None,
    nll_scale=0.0,
):
  """DPO-family loss on a batch of preference pairs.

  Args:
    policy_chosen_logps: [B] sequence log-probs of the chosen responses under the policy.
    policy_rejected_logps: [B] same for the rejected responses.
    ref_chosen_logps: [B] chosen log-probs under the frozen reference model.
    ref_rejected_logps: [B] rejected log-probs under the reference model.
    beta: KL strength β.
    loss_type: one of ``DPO_LOSS_TYPES``. With h = (πc − rc) − (πr − rr) and z = β·h:
      ``sigmoid``: −(1−ε)·log σ(z) − ε·log σ(−z)  (ε = label_smoothing; conservative DPO),
      ``robust``: [−(1−ε)·log σ(z) + ε·log σ(−z)] / (1 − 2ε)  (needs ε < 0.5),
      ``hinge``: relu(1 − z),
      ``ipo``: (h − 1/(2β))².
    label_smoothing: ε, the assumed probability that a preference label is flipped.
    chosen_nll: optional [B] per-example mean token NLL of the chosen response (see
      ``masked_mean_nll``); needed when ``nll_scale > 0``.
    nll_scale: python float; when > 0 adds ``nll_scale * mean(chosen_nll)`` to the loss
      (the NLL term of Iterative RPO / Meta-Rewarding training).

  Returns:
    ``(loss, metrics)``: scalar batch-mean loss and a dict of scalar batch means with keys
    ``rewards/chosen`` = β(πc − rc), ``rewards/rejected`` = β(πr − rr), ``rewards/margins``,
    ``rewards/accuracies`` (fraction with chosen reward > rejected reward), plus
    ``nll/chosen`` when ``nll_scale > 0``. Everything is computed in (at least) float32.

  Example::

    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="sigmoid")
  """
  # Python-level validation: these run once at trace time, never inside the compiled graph.
  if loss_type not in DPO_LOSS_TYPES:
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
  eps = label_smoothing
  if loss_type == "robust" and isinstance(eps, numbers.Real) and eps >= 0.5:
    raise ValueError(f"robust DPO needs label_smoothing < 0.5, got {eps}")
  if nll_scale > 0 and chosen_nll is None:
    raise ValueError("nll_scale > 0 needs chosen_nll")

  pc, pr, rc, rr = map(_float, (policy_chosen_logps, policy_rejected_logps,
                                ref_chosen_logps, ref_rejected_logps))
  chosen_logratios = pc - rc                                        # [B]
  rejected_logratios = pr - rr                                      # [B]
  h = chosen_logratios - rejected_logratios                         # [B]
  z = beta * h                                                      # [B]

  if loss_type == "sigmoid":
    losses = -(1 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)
  elif loss_type == "robust":
    losses = (-(1 - eps) * jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1 - 2 * eps)
  elif loss_type == "hinge":
    losses = jax.nn.relu(1 - z)
  else:  # ipo
    losses = (h - 1 / (2 * beta)) ** 2
  loss = jnp.mean(losses)

  # Rewards are reported, never differentiated through.
  chosen_rewards = jax.lax.stop_gradient(beta * chosen_logratios)
  rejected_rewards = jax.lax.stop_gradient(beta * rejected_logratios)
  metrics = {
      "rewards/chosen": jnp.mean(chosen_rewards),
      "rewards/rejected": jnp.mean(rejected_rewards),
      "rewards/margins": jnp.mean(chosen_rewards - rejected_rewards),
      "rewards/accuracies": jnp.mean((chosen_rewards > rejected_rewards).astype(loss.dtype)),
  }
  if nll_scale > 0:
    nll = jnp.mean(_float(chosen_nll))
    loss = loss + nll_scale * nll
    metrics["nll/chosen"] = jax.lax.stop_gradient(nll)
  return loss, metrics


def _gather(logits, targets):
  """logits [..., V] (any float), targets [...] int -> (target logit, logsumexp) in float32."""
  logits = _float(logits)
  targets = jnp.clip(targets, 0, logits.shape[-1] - 1)  # masked pad ids (-100 etc.) stay finite
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked, jax.nn.logsumexp(logits, axis=-1)


def token_logps(logits, targets):
  """Log-prob of each target token.

  Args:
    logits: [B, T, V], any float dtype; ``logits[:, t]`` predicts ``targets[:, t]``.
    targets: [B, T] int.

  Returns:
    [B, T] float32 log p(targets[:, t]), i.e. log-softmax taken in float32.

  Example::

    lp = token_logps(logits, tokens[:, 1:])  # logits = model(tokens)[:, :-1]
  """
  picked, lse = _gather(logits, targets)
  return picked - lse


def _masked_sum(token_lp, mask):
  return jnp.sum(jnp.where(mask > 0, token_lp, 0.0), axis=-1)


def sequence_logps(logits, targets, mask):
  """Summed log-prob of the masked target tokens of each sequence.

  Args:
    logits: [B, T, V]; ``logits[:, t]`` predicts ``targets[:, t]``.
    targets: [B, T] int (already shifted by the caller).
    mask: [B, T] 0/1, 1 on the tokens to score (the response).

  Returns:
    [B] float32: Σ_t mask[:, t] · log p(targets[:, t]).

  Example::

    logps = sequence_logps(model(x)[:, :-1], x[:, 1:], response_mask[:, 1:])
  """
  return _masked_sum(token_logps(logits, targets), mask)


def chunked_token_logps(hidden, unembed, targets, *, chunk_size=256, logit_softcap=None):
  """``token_logps(hidden @ unembed, targets)`` without materialising [B, T, V] logits.

  The sequence is split into chunks of ``chunk_size`` positions and scanned, so at most
  [B, chunk_size, V] float32 logits exist at once; each chunk body is rematerialised
  (``jax.checkpoint``) so the backward pass does not keep every chunk's logits either. Use it
  for large vocabularies (128k), where full float32 logits dominate memory.

  Args:
    hidden: [B, T, D] final-norm hidden states; ``hidden[:, t]`` predicts ``targets[:, t]``.
    unembed: [D, V] output projection (the transposed embedding for tied models).
    targets: [B, T] int.
    chunk_size: positions per chunk; T is padded internally to a multiple of it.
    logit_softcap: if set, the logits are ``cap * tanh(logits / cap)`` first (Gemma's final
      soft-capping), as the model's own output logits are.

  Returns:
    [B, T] float32 token log-probs; differentiable w.r.t. ``hidden`` and ``unembed``.

  Example::

    lp = chunked_token_logps(h[:, :-1], params["lm_head"], tokens[:, 1:], chunk_size=128)
  """
  B, T, D = hidden.shape
  C = max(1, min(chunk_size, T))
  N = -(-T // C)
  pad = N * C - T
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  hidden = hidden.reshape(B, N, C, D).transpose(1, 0, 2, 3)        # [N, B, C, D]
  targets = targets.reshape(B, N, C).transpose(1, 0, 2)             # [N, B, C]

  # Remat: the backward pass recomputes each chunk's logits instead of storing N of them.
  # prevent_cse is unnecessary inside a scan and only costs speed.
  @functools.partial(jax.checkpoint, prevent_cse=False)
  def chunk(w, h, t):
    logits = jnp.einsum("BCD,DV->BCV", h, w, preferred_element_type=jnp.float32)
    if logit_softcap is not None:
      logits = jnp.tanh(logits / logit_softcap) * logit_softcap
    picked, lse = _gather(logits, t)
    return picked - lse                                             # [B, C]

  out = jax.lax.map(lambda ht: chunk(unembed, *ht), (hidden, targets))  # [N, B, C]
  return out.transpose(1, 0, 2).reshape(B, N * C)[:, :T]


def chunked_sequence_logps(hidden, unembed, targets, mask, *, chunk_size=256, logit_softcap=None):
  """``sequence_logps(hidden @ unembed, targets, mask)`` computed chunk by chunk.

  Args:
    hidden: [B, T, D]; unembed: [D, V]; targets: [B, T] int; mask: [B, T] 0/1.
    chunk_size, logit_softcap: see ``chunked_token_logps``.

  Returns:
    [B] float32 summed masked log-probs.

  Example::

    logps = chunked_sequence_logps(h[:, :-1], w_out, x[:, 1:], m[:, 1:], chunk_size=128)
  """
  lp = chunked_token_logps(hidden, unembed, targets, chunk_size=chunk_size,
                           logit_softcap=logit_softcap)
  return _masked_sum(lp, mask)


def masked_mean_nll(logits, targets, mask):
  """Per-example mean token NLL over the masked tokens.

  Args:
    logits: [B, T, V]; targets: [B, T] int; mask: [B, T] 0/1 (conventions as above).

  Returns:
    [B] float32: −Σ_t mask·log p / max(Σ_t mask, 1). This is ``dpo_loss``'s ``chosen_nll``.

  Example::

    nll = masked_mean_nll(chosen_logits, chosen_targets, chosen_mask)
  """
  n = jnp.maximum(jnp.sum(_float(mask), axis=-1), 1.0)
  return -sequence_logps(logits, targets, mask) / n


def sft_loss(logits, targets, mask):
  """Token-mean negative log-likelihood over all masked tokens of the batch.

  Args:
    logits: [B, T, V]; targets: [B, T] int; mask: [B, T] 0/1 (conventions as above).

  Returns:
    ``(loss, metrics)``: loss = −Σ mask·log p / max(Σ mask, 1) (float32 scalar);
    metrics ``{"nll": loss, "tokens": Σ mask}``.

  Example::

    loss, metrics = sft_loss(model(x)[:, :-1], x[:, 1:], response_mask[:, 1:])
  """
  tokens = jnp.sum(_float(mask))
  loss = -jnp.sum(sequence_logps(logits, targets, mask)) / jnp.maximum(tokens, 1.0)
  return loss, {"nll": jax.lax.stop_gradient(loss), "tokens": tokens}
