"""DPO and SFT training loops: sharded compiled steps, the reference pass, the data order, resume.

The pure step (train state, optimizer, losses, `train_step`) is `train_step.py`; the orbax
train-state manager is `checkpoints.TrainStateCheckpoints`.

Entry points (the pipeline driver and `train_dpo.py` call these):

  cfg = base.train_config()               # meta_rewarding.config.base: the config's `train`
  params, history = run_dpo(model_config, params, examples, cfg, mesh=mesh, rules=rules,
                            checkpoint_dir=dir, seed=0)
  params, history = run_sft(...)          # same shape, SFT examples

`examples` are the tokenized dicts `data.py` produces. `run_dpo` first computes the reference
log-probs of the examples that lack them, with the given params (π_ref = the initial policy; one
forward per pair, batched), so only the policy is in memory while training. It then trains,
saving the train state every `checkpoint_every` steps into `{checkpoint_dir}/state` (orbax,
keep-last-N); a later call with the same arguments resumes from the latest checkpoint and produces
bitwise the same parameters as an uninterrupted run (the data order of epoch e is drawn from
(seed, e)). At the end the final parameters are also written alone to `{checkpoint_dir}/params`
(orbax) and per-step metrics to `{checkpoint_dir}/metrics.jsonl`. The input `params` are never
donated or modified.

One optimizer step = one call of the jitted `train_step`: `grad_accum_steps` microbatches of
`batch_size` pairs run in a `lax.scan` inside the step, gradients summed (in the parameter
dtype), then one AdamW update. Losses are normalised by the whole step's pair count (DPO) or response-token count
(SFT), so accumulation equals the large-batch step and padding rows (weight 0) change nothing.
Chosen and rejected go through one forward, packed in one row after their shared prompt (the
prompt is processed once; an attention mask keeps the two responses apart; see `data.py`), and
logits are computed only at response tokens.

A non-finite loss or gradient norm stops training with `TrainingDivergedError` naming the step;
the bad state is never saved, so the latest checkpoint is the last good one.

Defaults (`meta_rewarding.config.base.train_config`) -- not confirmed by the Meta-Rewarding paper, chosen here:
  learning_rate 5e-7 with 10 warmup steps, cosine decay to 0.1x (a common Llama-3-8B-Instruct
  DPO setting; Self-Rewarding reports 1e-6 -> 1e-7 cosine, batch 16, beta 0.1), AdamW
  (0.9, 0.95, eps 1e-8), weight decay 0, grad-norm clip 1.0, 16 pairs per optimizer step (4
  pairs x 4 microbatches), 1 epoch, beta 0.1, sigmoid loss, max_length 2048. SFT (the judge/seed
  training) typically wants a larger learning rate, e.g. 1e-5: set it in the config.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from meta_rewarding import artifacts, checkpoints, data, losses, sharding
from meta_rewarding.choices import DECAYS, TRUNCATION_POLICIES
from meta_rewarding.errors import UserError
from meta_rewarding.model.config import LlamaConfig
from meta_rewarding.train_step import (ROW_KEYS, LossSpec, OptimizerSpec, Schedule, TrainState,
                                       init_state, make_optimizer, pair_logps, train_step)



class TrainConfigError(UserError, ValueError):
  """A training configuration, dataset or checkpoint directory that cannot be used as given."""


class TrainingDivergedError(UserError, RuntimeError):
  """The loss or gradient norm became NaN/Inf. `step` is the failing step (1-based update count);
  `last_checkpoint` the newest saved step (the state before it is intact on disk), or None."""

  def __init__(self, step: int, last_checkpoint: int | None, metrics: Mapping[str, float],
               checkpoint_dir: str):
    self.step, self.last_checkpoint, self.metrics = step, last_checkpoint, dict(metrics)
    where = (f"the last good checkpoint is step {last_checkpoint} in {checkpoint_dir}"
             if last_checkpoint is not None else "no checkpoint had been saved yet")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()
                      if k in ("loss", "grad_norm", "learning_rate"))
    super().__init__(f"training diverged at step {step}: non-finite loss or gradient ({shown}); "
                     f"stopped without saving it; {where}")


# ------------------------------------------------------------------------------------------------
# Shardings and compiled functions.

def _batch_axes_size(mesh, rules) -> int:
  spec = sharding.batch_sharding(mesh, rules, ndim=1).spec[0]
  if spec is None:
    return 1
  names = (spec,) if isinstance(spec, str) else spec
  return math.prod(mesh.shape[a] for a in names)


def state_shardings(model_config: LlamaConfig, optimizer, mesh, rules) -> TrainState:
  """NamedShardings of the train state: optimizer moments follow their parameters."""
  param_sh = sharding.param_shardings(model_config, mesh, rules)
  replicated = NamedSharding(mesh, P())
  abstract = sharding.abstract_params(model_config)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, jax.eval_shape(optimizer.init, abstract),
                                 param_sh, transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def _batch_shardings(mesh, rules, kind: str, with_micro: bool = True) -> dict[str, NamedSharding]:
  """Rows over the mesh's batch axes; the leading microbatch axis (if any) unsharded."""
  lead = (None,) if with_micro else ()
  rows3 = sharding.logical_sharding(mesh, rules, P(*lead, "batch", None))
  rows2 = sharding.logical_sharding(mesh, rules, P(*lead, "batch"))
  out = {k: rows3 for k in ROW_KEYS}
  out["weight"] = rows2
  if kind == "dpo":
    out.update(ref_chosen=rows2, ref_rejected=rows2)
  return out


def put_batch(batch: Mapping[str, np.ndarray], shardings: Mapping[str, NamedSharding]):
  """Host arrays (the same global batch on every host) -> global device arrays, each host
  transferring only its addressable shards."""
  return {k: jax.make_array_from_callback(batch[k].shape, s, lambda idx, a=batch[k]: a[idx])
          for k, s in shardings.items()}


@functools.lru_cache(maxsize=16)
def make_train_step(model_config: LlamaConfig, spec: LossSpec, opt_spec: OptimizerSpec, mesh, rules):
  """(jitted train step, jitted state init, state shardings, batch shardings), cached per setup.

  step(state, batch, learning_rate) -> (state, metrics) donates `state`; init(params) -> state
  copies `params`.
  Call both inside `sharding.activate(mesh, rules)` so the model's logical constraints resolve.
  """
  optimizer = make_optimizer(opt_spec)
  state_sh = state_shardings(model_config, optimizer, mesh, rules)
  batch_sh = _batch_shardings(mesh, rules, spec.kind)
  step = jax.jit(functools.partial(train_step, model_config=model_config, spec=spec,
                                   optimizer=optimizer),
                 in_shardings=(state_sh, batch_sh, NamedSharding(mesh, P())),
                 out_shardings=(state_sh, NamedSharding(mesh, P())), donate_argnums=(0,))
  # Outputs of a jit never alias non-donated inputs: the caller's params stay untouched.
  init_jit = jax.jit(functools.partial(init_state, optimizer=optimizer), out_shardings=state_sh)

  def init(params):
    return init_jit(jax.device_put(params, state_sh.params))  # params may sit anywhere

  return step, init, state_sh, batch_sh


@functools.lru_cache(maxsize=16)
def _compiled_logps(model_config: LlamaConfig, chunk_size: int, mesh, rules):
  batch_sh = {k: v for k, v in _batch_shardings(mesh, rules, "sft", with_micro=False).items()
              if k in ROW_KEYS}
  out_sh = NamedSharding(mesh, P())  # [M] floats, replicated: every host reads all of them
  fn = jax.jit(functools.partial(pair_logps, model_config=model_config, chunk_size=chunk_size),
               in_shardings=(sharding.param_shardings(model_config, mesh, rules), batch_sh),
               out_shardings=(out_sh, out_sh))
  return fn, batch_sh


# ------------------------------------------------------------------------------------------------
# Reference pass.

def compute_reference_logps(model_config: LlamaConfig, params, examples: Sequence[Mapping], *,
                            mesh, rules, batch_size: int, max_length: int,
                            length_buckets: Sequence[int] = (), chunk_size: int = 0,
                            progress: bool = False) -> list[dict]:
  """Copies of the pair `examples` with `ref_chosen_logp` / `ref_rejected_logp` set to the summed
  response log-probs under `params` (the reference model). Pure apart from device work.

  Pairs are processed longest first, `batch_size` per forward (chosen and rejected together),
  padded to length buckets, so a dataset compiles a handful of programs.
  """
  shards = _batch_axes_size(mesh, rules)
  batch_size = -(-batch_size // shards) * shards
  fn, batch_sh = _compiled_logps(model_config, int(chunk_size), mesh, rules)
  params = jax.device_put(params, sharding.param_shardings(model_config, mesh, rules))
  order = sorted(range(len(examples)), key=lambda i: -data.row_length(examples[i]))
  out = [dict(ex) for ex in examples]
  batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
  with sharding.activate(mesh, rules):
    for idx in _progress(batches, progress, "reference log-probs"):
      indices = np.array(idx + [-1] * (batch_size - len(idx)))
      b = data.collate(examples, indices, kind="dpo", num_micro=1, length_buckets=length_buckets,
                       max_length=max_length, pad_id=0)
      host = {k: b[k][0] for k in ROW_KEYS}
      chosen, rejected = fn(params, put_batch(host, batch_sh))
      chosen, rejected = np.asarray(chosen), np.asarray(rejected)
      for j, i in enumerate(idx):
        out[i]["ref_chosen_logp"] = float(chosen[j])
        out[i]["ref_rejected_logp"] = float(rejected[j])
  return out


def _progress(items, enabled: bool, desc: str):
  if not enabled:
    return items
  return tqdm(items, desc=desc, leave=False)


# ------------------------------------------------------------------------------------------------
# The training loop.

def run_dpo(model_config: LlamaConfig, params, examples: Sequence[Mapping], cfg, *, mesh, rules,
            checkpoint_dir: str, seed: int, progress: bool = True) -> tuple[Any, list[dict]]:
  """DPO on tokenized pair examples; returns (final params, per-step metrics). See module doc."""
  return _run("dpo", model_config, params, examples, cfg, mesh=mesh, rules=rules,
              checkpoint_dir=checkpoint_dir, seed=seed, progress=progress)


def run_sft(model_config: LlamaConfig, params, examples: Sequence[Mapping], cfg, *, mesh, rules,
            checkpoint_dir: str, seed: int, progress: bool = True) -> tuple[Any, list[dict]]:
  """SFT (NLL of the response tokens) on tokenized prompt/response examples."""
  return _run("sft", model_config, params, examples, cfg, mesh=mesh, rules=rules,
              checkpoint_dir=checkpoint_dir, seed=seed, progress=progress)


def _check_config(cfg, kind: str):
  problems = []
  if cfg.decay not in DECAYS:
    problems.append(f"decay={cfg.decay!r} (expected one of {DECAYS})")
  if kind == "dpo" and cfg.loss_type not in losses.DPO_LOSS_TYPES:
    problems.append(f"loss_type={cfg.loss_type!r} (expected one of {losses.DPO_LOSS_TYPES})")
  if cfg.truncation not in TRUNCATION_POLICIES:
    problems.append(f"truncation={cfg.truncation!r} (expected one of {TRUNCATION_POLICIES})")
  for name in ("batch_size", "grad_accum_steps", "num_epochs", "checkpoint_every",
               "keep_checkpoints", "log_every"):
    if int(cfg[name]) < 1:
      problems.append(f"{name}={cfg[name]} (must be >= 1)")
  if cfg.learning_rate < 0 or cfg.max_grad_norm < 0 or cfg.warmup_steps < 0 or cfg.max_steps < 0:
    problems.append("learning_rate, max_grad_norm, warmup_steps and max_steps must be >= 0")
  if problems:
    raise TrainConfigError("bad training config: " + "; ".join(problems))


def _write_metrics(path: str, history: list[dict]):
  if jax.process_index() != 0:
    return
  artifacts.write_jsonl(path, history)


def _read_metrics(path: str, upto: int) -> list[dict]:
  if not artifacts.exists(path):
    return []
  return [m for m in artifacts.read_jsonl(path) if m["step"] <= upto]


def _run(kind, model_config, params, examples, cfg, *, mesh, rules, checkpoint_dir, seed, progress):
  _check_config(cfg, kind)
  examples, report = data.truncate_examples(examples, max_length=int(cfg.max_length),
                                            policy=cfg.truncation)
  if report.skipped or report.truncated:
    logging.warning("training data: %s", report)
  data.validate_examples(examples, kind=kind, vocab_size=model_config.vocab_size)
  sharding.check_divisibility(model_config, mesh, rules)
  shards = _batch_axes_size(mesh, rules)
  if cfg.batch_size % shards:
    raise TrainConfigError(f"batch_size={cfg.batch_size} must be a multiple of the {shards} batch "
                           f"shards of the mesh {dict(mesh.shape)}")
  n = len(examples)
  global_batch = int(cfg.batch_size * cfg.grad_accum_steps)
  total_steps = int(cfg.num_epochs) * data.steps_per_epoch(n, global_batch)
  stop = min(total_steps, int(cfg.max_steps)) if cfg.max_steps else total_steps
  schedule = Schedule.from_config(cfg, total_steps)
  opt_spec = OptimizerSpec.from_config(cfg)
  spec = LossSpec.from_config(cfg, kind)
  step_fn, init_fn, state_sh, batch_sh = make_train_step(model_config, spec, opt_spec, mesh, rules)
  # What must not change between a run and its resumption (max_steps may: it only stops early).
  identity = json.loads(json.dumps({
      "kind": kind, "seed": int(seed), "num_examples": n, "global_batch": global_batch,
      "total_steps": total_steps, "data": data.fingerprint(examples),
      "schedule": dataclasses.asdict(schedule), "optimizer": dataclasses.asdict(opt_spec),
      "loss": dataclasses.asdict(spec)}))

  artifacts.makedirs(checkpoint_dir)
  metrics_path = artifacts.join(checkpoint_dir, "metrics.jsonl")
  ckpt = checkpoints.TrainStateCheckpoints(checkpoint_dir, int(cfg.keep_checkpoints), bool(cfg.async_checkpointing))
  try:
    with sharding.activate(mesh, rules):
      if ckpt.last_saved is not None:
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                jax.eval_shape(init_fn, params), state_sh)
        state, saved_identity = ckpt.restore(ckpt.last_saved, abstract)
        if saved_identity != identity:
          changed = sorted(k for k in set(identity) | set(saved_identity)
                           if identity.get(k) != saved_identity.get(k))
          raise TrainConfigError(
              f"{checkpoint_dir} holds a checkpoint of a different run (changed: "
              + "; ".join(f"{k}: {saved_identity.get(k)} -> {identity.get(k)}" for k in changed)
              + "). Use a new checkpoint_dir, or delete the old one to start over.")
        history = _read_metrics(metrics_path, ckpt.last_saved)
        logging.info("resuming %s from step %d of %d (%s)", kind, ckpt.last_saved, stop,
                     checkpoint_dir)
      else:
        state, history = None, []

      if kind == "dpo" and (state is None or int(jax.device_get(state.step)) < stop):
        examples = _with_reference_logps(model_config, params, examples, cfg, mesh=mesh,
                                         rules=rules, progress=progress)
      if state is None:
        state = init_fn(params)
      start = int(jax.device_get(state.step))
      state = _loop(kind, state, examples, cfg, step_fn=step_fn, batch_sh=batch_sh, ckpt=ckpt,
                    schedule=schedule, identity=identity, history=history, start=start,
                    stop=stop, seed=seed, global_batch=global_batch,
                    buckets=tuple(int(b) for b in cfg.length_buckets),
                    max_length=int(cfg.max_length), metrics_path=metrics_path, progress=progress)
  finally:
    ckpt.close()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(artifacts.join(checkpoints.orbax_path(checkpoint_dir), "params"), state.params,
                    force=True)
  checkpointer.wait_until_finished()
  return state.params, history


def _with_reference_logps(model_config, params, examples, cfg, *, mesh, rules, progress):
  """`examples` with reference log-probs under `params` filled in where missing."""
  missing = [i for i, ex in enumerate(examples) if not all(k in ex for k in data.REF_FIELDS)]
  if not missing:
    return examples
  logging.info("computing reference log-probs for %d of %d pairs", len(missing), len(examples))
  refs = compute_reference_logps(
      model_config, params, [examples[i] for i in missing], mesh=mesh, rules=rules,
      batch_size=int(cfg.reference_batch_size or 2 * cfg.batch_size),
      max_length=int(cfg.max_length), length_buckets=tuple(int(b) for b in cfg.length_buckets),
      chunk_size=int(cfg.logps_chunk_size), progress=progress)
  examples = list(examples)
  for i, ex in zip(missing, refs):
    examples[i] = ex
  return examples


def _loop(kind, state, examples, cfg, *, step_fn, batch_sh, ckpt, schedule, identity, history,
          start, stop,
          seed, global_batch, buckets, max_length, metrics_path, progress):
  n = len(examples)
  pending = None  # the dispatched step whose metrics are not yet checked (one-step lag)
  last_time = time.perf_counter()
  bar = None
  if progress:
    bar = tqdm(total=stop, initial=start, desc=kind, dynamic_ncols=True)

  def finish(item):
    nonlocal last_time
    step, metrics, num_tokens, epoch = item
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
      raise TrainingDivergedError(step, ckpt.last_saved, m, ckpt.directory)
    m.update(step=step, epoch=epoch, tokens=int(num_tokens),
             tokens_per_second=num_tokens / max(now - last_time, 1e-9))
    last_time = now
    history.append(m)
    if step % int(cfg.log_every) == 0 or step == stop:
      shown = " ".join(f"{k}={m[k]:.4g}" for k in (
          "loss", "rewards/accuracies", "rewards/margins", "grad_norm", "learning_rate",
          "tokens_per_second") if k in m)
      logging.info("%s step %d/%d %s", kind, step, stop, shown)
    if bar is not None:
      bar.update(1)
      bar.set_postfix({short: f"{m[k]:.3g}" for k, short in (
          ("loss", "loss"), ("rewards/accuracies", "acc"), ("rewards/margins", "margin"),
          ("tokens_per_second", "tok/s")) if k in m})

  try:
    for s in range(start, stop):
      epoch, indices = data.step_indices(seed, s, n, global_batch)
      batch = data.collate(examples, indices, kind=kind, num_micro=int(cfg.grad_accum_steps),
                           length_buckets=buckets, max_length=max_length, pad_id=0)
      num_tokens = int(batch.pop("num_tokens"))
      state, metrics = step_fn(state, put_batch(batch, batch_sh), schedule(s))
      if pending is not None:
        finish(pending)
      pending = (s + 1, metrics, num_tokens, epoch)
      if (s + 1) % int(cfg.checkpoint_every) == 0 or s + 1 == stop:
        finish(pending)
        pending = None
        ckpt.save(s + 1, state, identity)
        _write_metrics(metrics_path, history)
    if pending is not None:
      finish(pending)
  finally:
    if bar is not None:
      bar.close()
  return state
