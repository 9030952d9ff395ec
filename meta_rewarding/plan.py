"""Memory planner: per-device bytes of a config's sampling, reference and training phases.

  python -m meta_rewarding.plan --config=configs/tpu_v4.py            # planned for mesh.num_devices
  python -m meta_rewarding.plan --config=configs/gpu.py --num_devices=8 --device_memory_gb=80

Prints one table and exits 1 (with what to change) when the peak exceeds the usable device memory.
A config value out of range (`config_check`) is one `error:` line per value instead (exit 2).
`run.py` calls `check_fits(config)` before anything is loaded, with the real device count.

What is exact and what is estimated:
  * exact (checked against real arrays by tests/test_plan.py): parameters, the AdamW state (the
    abstract `jax.eval_shape` of the optimizer `train_step.make_optimizer` builds, each moment sharded
    like its parameter), gradients and the sampler's KV cache, all divided per device by the mesh
    axes the logical rules give each dimension (rounded up, as uneven shards are);
  * estimated: activations, attention scores and logits. XLA's buffer assignment decides the real
    peak; the formulas below count the large tensors that must be alive at once.

Phases (they do not overlap in time, so the peak is the largest of the three):
  sampling   = params + decode params + max(prefill, decode)
               decode params: the sampler's copy of the weights in the compute dtype when
               param_dtype differs (`sampling.decoding_params`: decode steps read half the bytes)
               decode  = KV cache [L,R,K,S,H]×2(k,v) + the prefilled rows' cache + logits [R,V]
                         float32 ×3 (logits, softmax, top-k workspace)
               prefill = prefix cache [L,G,P1,K,H]×2 + row cache [L,B,P1+P2,K,H]×2
                         + attention scores B·N·Q·(P1+P2)·(4+dt) + hidden [B,P2,·]
                         (Q = P2, or one block of `model.attention_chunk` queries; with the
                         batch sharded, G is every prompt's prefix: the rows gather them)
               per stage (actor: n=K; judge: n=N, shared prefixes; meta-judge: n=1, shared;
               recipe='ste': categorize, actor and worse n=1, judge n=N, shared with a system prompt), with
               the sampler's own batching: B = ceil((batch_size // n) / m)·m prompts (m = batch
               shards of the mesh), R = B·n decode rows, prompt buckets P1 (shared prefix) and P2
               chosen as the worst case the buckets allow, S = P1 + P2 + max_new_tokens.
  reference  = params + one layer's forward working set + logits (forward only, no gradients).
  (recipe='ste' trains by SFT: one row per sequence, r = batch_size/m, and no reference pass.)
  training   = params (the policy's) + params (the train state's own copy: run_dpo never donates
               its input) + optimizer + gradients ×2 (accumulator + microbatch gradient)
               + activations + logits.
  Training activations per device, for r = batch_size/m packed rows (data.collate: a pair's prompt
  once, then both responses) of T = 2·max_length tokens (SFT: one sequence, T = max_length), with
  per-device widths D, N, K, F (heads / mlp divided by the tensor axis) and dt the compute dtype's
  bytes:
     layer  = dt·(4D + 2NH + 2KH + 3F) + 8D + N·Q·(4 + dt)
              one layer's forward, nothing recomputed: the residual stream and norm outputs, q/k/v
              and the attention output, gate/up/product; float32 copies of the two norm inputs;
              per attention score the float32 logits and the dt probabilities (XLA fuses the mask
              and the softmax's steps into them). Q = T: a token's N·T scores; with
              `model.attention_chunk` C the queries attend in blocks of C and one block's scores
              exist at a time, Q = min(C, T) on average per token of the row
     saved  = none: layer
              dots: dt·(2D + 2NH + 2KH + 2F) + 4·N·T       (every matmul output, scores in f32;
                                                           in blocks, no scores: each block is
                                                           recomputed)
              dots_no_batch: dt·(2D + NH + 2KH + 2F)       (the projections only)
              full: dt·D                                   (the layer input only)
     activations = r·T·(L·saved + layer·(1 if remat_policy == "none" else 2))
     logits      = r·C·V·4·3 with C = logps_chunk_size (or T when 0), V divided by the tensor axis.
  Checked against XLA's own compiled memory: on the TPU (`--compile_for`, every program of an
  iteration of the shipped TPU configs: bench/results/tpu_compile.md) and on the CPU for a small
  model's gradient under every remat policy (tests/test_plan.py, within 0.5-2.5x; XLA's CPU
  backend computes bfloat16 elementwise ops in float32, TPUs do not).
Model families (model/config.py): q/k/v/o biases, q/k norms and Gemma's extra norms are counted
exactly with the parameters (they are arrays of the model's own tree); their activations (a few
D- or H-wide vectors per token) stay inside the estimate's margin. Sliding-window layers keep a
full-length KV cache and attend over masked full-length scores, so the cache and score terms are
those of global layers.
Usable memory = device memory × `usable_fraction` (default 0.9: XLA workspace, fragmentation).
On CPU devices, which report no memory, `check_fits` (and this CLI, planning for the devices here)
takes the host's RAM instead: its physical memory shared by the local CPU devices, of which
`HOST_MEMORY_FRACTION` is usable (the reason is at the constant); `mesh.device_memory_gb` overrides
it. The table says which budget it used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from meta_rewarding import recipes
from meta_rewarding.config import base as config_base, rules as config_rules
from meta_rewarding.errors import UserError

GiB = 1 << 30
USABLE_FRACTION = 0.9
# The share of the host's RAM a CPU run may plan for. The plan counts arrays only; on top come the
# process itself (Python, the JAX/XLA runtime, compiled programs, the prompt pool: the default CPU
# run peaks at 1.8 GB RSS for a 0.35 GiB plan), XLA's CPU backend computing bfloat16 elementwise
# ops in float32 (buffers up to 2.5x the estimate: tests/test_plan.py), and the OS and the other
# processes on the machine. Half leaves room for all of them; swap is not counted (a run that
# swaps is as good as stopped).
HOST_MEMORY_FRACTION = 0.5
_MIN_SHARED_PREFIX = 16  # sampling.Sampler's default min_shared_prefix


class DoesNotFitError(UserError, ValueError):
  """The config's planned peak exceeds the device memory. The message says what to change."""


# ------------------------------------------------------------------------------------------------
# Result.

@dataclasses.dataclass(frozen=True)
class SamplerStage:
  """One generating stage at the sampler's batch size (bytes are per device)."""
  name: str
  n: int               # samples per prompt
  prompts: int         # B: prompts per batch (padded to the batch shards)
  rows: int            # R = B·n decode rows
  prefix_length: int   # P1 (0 = no shared prefix)
  prompt_length: int   # P2
  max_new_tokens: int
  kv_cache: int        # [L,R,K,S,H] ×2
  prefill: int         # prefill working set (its caches, attention scores, hidden states)
  logits: int          # decode logits and sampling workspace
  row_cache: int = 0   # the prefilled rows' cache, alive while it is repeated into the KV cache
  shared: bool = False          # shared-prefix prefill
  batch_multiple: int = 1       # m: the batch shards the prompt count is rounded to
  scores_prefix_length: int = 0  # (P1, P2) of the largest prefill working set
  scores_prompt_length: int = 0

  @property
  def cache_length(self) -> int:
    return self.prefix_length + self.prompt_length + self.max_new_tokens

  @property
  def peak(self) -> int:
    return max(self.prefill, self.kv_cache + self.row_cache + self.logits)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Per-device bytes of each phase of a config (see the module doc for the formulas)."""
  model: str
  num_params: int
  num_devices: int
  mesh: Mapping[str, int]
  param_dtype: str
  dtype: str
  remat_policy: str
  scan_layers: bool
  # sampling
  params: int
  stages: tuple[SamplerStage, ...]
  # reference log-probs
  reference: int
  # training
  train_params: int
  optimizer: int
  gradients: int
  activations: int
  train_logits: int
  train_rows: int        # rows per device per microbatch
  train_length: int
  # capacity (None = unknown)
  device_memory: int | None = None
  usable_fraction: float = USABLE_FRACTION
  decode_params: int = 0   # the sampler's copy in the compute dtype (0: it is `params` itself)
  notes: tuple[str, ...] = ()
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Where `device_memory` came from when it is not the device's: e.g. "host RAM 23.5 GiB / 8 CPU
  # devices" (`on_host_memory`); "" = the device's own (configured or reported).
  memory_source: str = ""

  # -- derived -------------------------------------------------------------------------------
  @property
  def worst_stage(self) -> SamplerStage | None:
    return max(self.stages, key=lambda s: s.peak) if self.stages else None

  @property
  def kv_cache(self) -> int:
    s = self.worst_stage
    return s.kv_cache if s else 0

  @property
  def sampling_total(self) -> int:
    s = self.worst_stage
    return self.params + self.decode_params + (s.peak if s else 0)

  @property
  def reference_total(self) -> int:
    return self.params + self.reference

  @property
  def training_total(self) -> int:
    return (self.params + self.train_params + self.optimizer + self.gradients + self.activations
            + self.train_logits)

  @property
  def phases(self) -> dict[str, int]:
    return {"sampling": self.sampling_total, "reference": self.reference_total,
            "training": self.training_total}

  @property
  def total(self) -> int:
    """The peak over phases: what one device must hold."""
    return max(self.phases.values())

  @property
  def usable(self) -> int | None:
    return None if self.device_memory is None else int(self.device_memory * self.usable_fraction)

  def fits(self, bytes_per_device: int | None = None) -> bool:
    """Whether the peak fits `bytes_per_device` (default: the usable share of `device_memory`;
    True when the capacity is unknown)."""
    limit = self.usable if bytes_per_device is None else bytes_per_device
    return True if limit is None else self.total <= limit

  # -- presentation --------------------------------------------------------------------------
  def table(self) -> str:
    g = lambda b: f"{b / GiB:9.2f}"
    mesh = " ".join(f"{k}={v}" for k, v in self.mesh.items())
    st = self.settings
    lines = [f"memory plan: {self.model} ({self.num_params / 1e9:.2f}B params), {self.num_devices} "
             f"devices, mesh {mesh}",
             f"  params {self.param_dtype}, compute {self.dtype}, remat {self.remat_policy}, "
             f"scan_layers {self.scan_layers}",
             f"{'per device':46s}{'GiB':>9s}"]
    lines.append("sampling (sampling.batch_size={})".format(st.get("sampling_batch_size")))
    for s in self.stages:
      lines.append(f"  {s.name:11s} n={s.n:<3d} {s.prompts:4d} prompts x{s.n} = {s.rows:4d} rows, "
                   f"cache {s.cache_length} (P1 {s.prefix_length} + P2 {s.prompt_length} "
                   f"+ {s.max_new_tokens}): peak{g(s.peak)}")
    w = self.worst_stage
    lines += [f"  {'params':44s}{g(self.params)}"]
    if self.decode_params:
      lines += [f"  {'params in ' + self.dtype + ' (the sampler reads these)':44s}"
                f"{g(self.decode_params)}"]
    if w:
      lines += [f"  worst stage {w.name}: prefill, then decode",
                f"  {'  prefill: caches + attention scores (est.)':44s}{g(w.prefill)}",
                f"  {'  decode: kv cache':44s}{g(w.kv_cache)}",
                f"  {'  decode: prefilled rows cache':44s}{g(w.row_cache)}",
                f"  {'  decode: logits':44s}{g(w.logits)}"]
    lines += [f"  {'total = params (+ copy) + max(prefill, decode)':44s}{g(self.sampling_total)}",
              "reference log-probs (forward only)",
              f"  {'params':44s}{g(self.params)}",
              f"  {'forward working set (estimate)':44s}{g(self.reference)}",
              f"  {'total':44s}{g(self.reference_total)}",
              "training ({} {} x {} microbatches, packed rows of {} tokens, {} rows/device)".format(
                  st.get("train_batch_size"), st.get("train_unit", "pairs"),
                  st.get("grad_accum_steps"), self.train_length, self.train_rows),
              f"  {'params (policy)':44s}{g(self.params)}",
              f"  {'params (train state copy)':44s}{g(self.train_params)}",
              f"  {'optimizer state (AdamW mu, nu)':44s}{g(self.optimizer)}",
              f"  {'gradients (accumulator + microbatch)':44s}{g(self.gradients)}",
              f"  {'activations (estimate, remat ' + self.remat_policy + ')':44s}{g(self.activations)}",
              f"  {'logits (chunk ' + str(st.get('logps_chunk_size') or 'none') + ', estimate)':44s}"
              f"{g(self.train_logits)}",
              f"  {'total':44s}{g(self.training_total)}"]
    peak_phase = max(self.phases, key=self.phases.get)
    if self.device_memory is None:
      verdict = "device memory unknown (set mesh.device_memory_gb)"
    else:
      verdict = (f"of {self.usable / GiB:.2f} usable ({self._capacity()}): "
                 f"{'fits' if self.fits() else 'DOES NOT FIT'}")
    lines.append(f"{'peak (' + peak_phase + ')':46s}{g(self.total)} {verdict}")
    lines += [f"note: {n}" for n in self.notes]
    if self.memory_source:
      lines.append(f"note: CPU devices report no memory: the budget is the {self.memory_source}, "
                   f"{self.usable_fraction:.0%} usable (set mesh.device_memory_gb to choose)")
    return "\n".join(lines)

  def _capacity(self) -> str:
    """How the usable bytes were reached: '32 GiB x 90%' or 'host RAM 23.5 GiB / 1 CPU device x 50%'."""
    if self.memory_source:
      return f"{self.memory_source} x {self.usable_fraction:.0%}"
    gib = self.device_memory / GiB
    return f"{gib:.0f} GiB x {self.usable_fraction:.0%}" if gib >= 1 else \
        f"{gib:.2f} GiB x {self.usable_fraction:.0%}"  # a fraction of a GiB is not "0 GiB"

  def advice(self) -> list[str]:
    """What to change, largest problem first (empty when it fits)."""
    if self.fits():
      return []
    limit = self.usable
    st = self.settings
    out = []
    if self.training_total > limit:
      state = self.params + self.train_params + self.optimizer + self.gradients
      parts = {"activations": self.activations, "logits": self.train_logits, "state": state}
      for part in sorted(parts, key=parts.get, reverse=True):
        if part == "activations":
          chunk, scores = st.get("attention_chunk", 0), st.get("attention_score_bytes", 0)
          if scores > self.activations / 4 and (not chunk or chunk > ATTENTION_CHUNK_ADVICE):
            out.append(f"set model.attention_chunk={ATTENTION_CHUNK_ADVICE} (now {chunk}): the "
                       f"attention scores of {self.train_length}-token rows take "
                       f"{scores / GiB:.1f} GiB per device; in blocks of "
                       f"{ATTENTION_CHUNK_ADVICE} queries, "
                       f"{scores * ATTENTION_CHUNK_ADVICE / self.train_length / GiB:.1f}")
          if self.remat_policy != "full":
            out.append(f"set model.remat_policy='full' (now {self.remat_policy!r}): activations "
                       f"are {self.activations / GiB:.1f} GiB per device")
          out.append(f"lower train.batch_size (now {st.get('train_batch_size')} pairs per "
                     "microbatch) and raise train.grad_accum_steps (now "
                     f"{st.get('grad_accum_steps')}) to keep the pairs per step; or lower "
                     f"train.max_length (now {self.train_length})")
        elif part == "logits":
          if not st.get("logps_chunk_size"):
            out.append("set train.logps_chunk_size=512 (now 0): full [rows, T, V] float32 logits "
                       f"take {self.train_logits / GiB:.1f} GiB per device")
          else:
            out.append(f"lower train.logps_chunk_size (now {st.get('logps_chunk_size')})")
        else:
          out.append(f"shard the model over more devices (more fsdp x tensor; mesh now "
                     f"{dict(self.mesh)}): parameters, optimizer state and gradients take "
                     f"{state / GiB:.1f} GiB per device and shrink linearly with fsdp x tensor")
    if self.sampling_total > limit:
      w = self.worst_stage
      out.append(f"lower sampling.batch_size (now {st.get('sampling_batch_size')}): the {w.name} "
                 f"stage decodes {w.rows} rows with a {w.cache_length}-token cache "
                 f"({w.peak / GiB:.1f} GiB per device)")
      out.append("shorten sampling.prompt_buckets / the stages' max_new_tokens (the cache and the "
                 "prefill scores grow with them), or add tensor parallelism (the KV cache is "
                 "sharded over kv heads)")
    if self.reference_total > limit:
      out.append("lower train.reference_batch_size (0 = 2 x batch_size) or set "
                 "train.logps_chunk_size" + ("" if st.get("attention_chunk") else
                                             f" or model.attention_chunk={ATTENTION_CHUNK_ADVICE}"))
    seen, unique = set(), []
    for a in out:
      if a not in seen:
        seen.add(a)
        unique.append(a)
    return unique

  def refusal(self) -> str:
    phase = max(self.phases, key=self.phases.get)
    head = (f"the config does not fit: {phase} needs {self.total / GiB:.2f} GiB per device but "
            f"{self.usable / GiB:.2f} GiB are usable ({self._capacity()}) on {self.num_devices} "
            f"devices, mesh {dict(self.mesh)}.")
    return head + " To fit: " + "; ".join(self.advice()) + "."


# ------------------------------------------------------------------------------------------------
# Arithmetic.

# The query block the advice suggests: 1024 queries' scores of a 6144-token row are 1/6 of the
# row's, and the blocks' matmuls stay large enough to keep a TPU's MXU busy.
ATTENTION_CHUNK_ADVICE = 1024


def _dtype_bytes(name) -> int:
  import jax.numpy as jnp
  return int(np.dtype(jnp.dtype(name)).itemsize)


def _axis_size(mesh: Mapping[str, int], axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(mesh[a] for a in axes)


def _rule_size(mesh, rules, name: str) -> int:
  return _axis_size(mesh, dict(rules).get(name))


def shard_bytes(shape: Sequence[int], dtype, logical_axes, mesh: Mapping[str, int], rules) -> int:
  """Bytes of one device's shard of an array with `logical_axes` (uneven shards round up)."""
  import flax.linen as nn
  spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
  dims = [-(-d // _axis_size(mesh, a)) for d, a in zip(shape, tuple(spec) + (None,) * len(shape))]
  return math.prod(dims) * _dtype_bytes(dtype)


class _Axes:
  """A logical-axes tuple that pytrees treat as a leaf (so it can ride along a params tree)."""
  def __init__(self, axes):
    self.axes = tuple(axes)


def model_config_from(config):
  """The `LlamaConfig` a config describes: the checkpoint's config.json when readable here, else
  `model.architecture` (what the planner uses before the weights are at hand) -- the run's own
  factory (`runtime.model_config`) in its planning mode."""
  from meta_rewarding import runtime
  try:
    return runtime.model_config(config, planning=True)
  except runtime.RuntimeConfigError as e:
    raise DoesNotFitError(f"cannot plan: {e}") from e


def _train_config(config):
  base = config_base.train_config()
  if "train" in config:
    for k, v in config.train.items():
      if k in base:
        base[k] = v
  return base


def make_optimizer(tcfg):
  """The optax optimizer `train.py` trains with: its state is what the plan counts."""
  from meta_rewarding import train_step  # optax: the planner's table loads without it
  return train_step.make_optimizer(train_step.OptimizerSpec.from_config(tcfg))


def _wrapped_axes(mc):
  """`llama.param_logical_axes(mc)` with each axes tuple as a pytree leaf."""
  import jax
  from meta_rewarding.model import llama
  return jax.tree.map(lambda spec: _Axes(spec), llama.param_logical_axes(mc),
                      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def _param_bytes(mc, mesh, rules, dtype=None) -> int:
  """Per-device bytes of `mc`'s parameters laid out by `rules` (in `dtype`, default their own)."""
  import jax
  from meta_rewarding import sharding
  per_param = jax.tree.map(
      lambda a, w: shard_bytes(a.shape, dtype or a.dtype, w.axes, mesh, rules),
      sharding.abstract_params(mc), _wrapped_axes(mc))
  return int(sum(jax.tree.leaves(per_param)))


def _param_and_optimizer_bytes(mc, tcfg, mesh, rules) -> tuple[int, int]:
  import jax
  from meta_rewarding import sharding
  import optax
  abstract = sharding.abstract_params(mc)
  wrapped = _wrapped_axes(mc)
  params = _param_bytes(mc, mesh, rules)
  optimizer = make_optimizer(tcfg)
  opt_shapes = jax.eval_shape(optimizer.init, abstract)
  opt_bytes = optax.tree_map_params(
      optimizer, lambda s, w: shard_bytes(s.shape, s.dtype, w.axes, mesh, rules), opt_shapes,
      wrapped, transform_non_params=lambda s: int(np.prod(s.shape)) * _dtype_bytes(s.dtype),
      is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
  return params, int(sum(jax.tree.leaves(opt_bytes)))


_PARAM_AXES = ("vocab", "embed", "q_heads", "kv_heads", "head_dim", "mlp", "norm", "layers")


def _decode_param_bytes(mc, mesh, train_rules, decode_rules) -> int:
  """Per-device bytes of the sampler's weight copy (`sampling.decoding_params`): the compute
  dtype, unstacked, in the decode rules' layout; 0 when that is the params themselves."""
  from meta_rewarding import sampling
  same_layout = all(dict(train_rules).get(a) == dict(decode_rules).get(a) for a in _PARAM_AXES)
  if not mc.scan_layers and mc.dtype == mc.param_dtype and same_layout:
    return 0
  dc = sampling.decoding_config(mc)
  return _param_bytes(dc, mesh, decode_rules, dc.dtype)


def _widths(mc, mesh, rules) -> dict[str, int]:
  """Per-device activation widths under `rules`."""
  c = lambda n, name: -(-n // _rule_size(mesh, rules, name))
  return dict(D=c(mc.hidden_size, "act_embed"), N=c(mc.num_attention_heads, "act_q_heads"),
              K=c(mc.num_key_value_heads, "act_kv_heads"), F=c(mc.intermediate_size, "act_mlp"),
              V=c(mc.vocab_size, "act_vocab"), H=mc.head_dim)


def score_queries(length: int, attention_chunk: int) -> int:
  """Queries whose attention scores exist at once in a forward over `length` tokens: all of them,
  or one block of `model.attention_chunk` (`Attention` attends in blocks when it is set)."""
  return min(attention_chunk, length) if attention_chunk else length


def layer_bytes_per_token(w: Mapping[str, int], length: int, dt: int,
                          attention_chunk: int = 0) -> int:
  """One decoder layer's forward activations per token (nothing recomputed)."""
  D, N, K, F, H = w["D"], w["N"], w["K"], w["F"], w["H"]
  return (dt * (4 * D + 2 * N * H + 2 * K * H + 3 * F) + 8 * D
          + N * score_queries(length, attention_chunk) * (4 + dt))


def saved_bytes_per_token(w: Mapping[str, int], length: int, dt: int, policy: str,
                          attention_chunk: int = 0) -> int:
  """What one layer keeps for the backward pass per token, by remat policy."""
  D, N, K, F, H = w["D"], w["N"], w["K"], w["F"], w["H"]
  if policy == "none":
    return layer_bytes_per_token(w, length, dt, attention_chunk)
  if policy == "dots":  # scores computed in blocks are recomputed (each block is checkpointed)
    scores = 0 if attention_chunk and attention_chunk < length else 4 * N * length
    return dt * (2 * D + 2 * N * H + 2 * K * H + 2 * F) + scores
  if policy == "dots_no_batch":
    return dt * (2 * D + N * H + 2 * K * H + 2 * F)
  if policy == "full":
    return dt * D
  raise ValueError(f"unknown remat_policy {policy!r}")


def _kv_bytes(mc, rows_dev: int, length: int, kv_dev: int, dt: int) -> int:
  return 2 * mc.num_hidden_layers * rows_dev * length * kv_dev * mc.head_dim * dt


def _buckets(config, mc, max_new_tokens: int, key: str) -> tuple[tuple[int, ...], int]:
  """(clipped prompt buckets, longest prompt accepted): the sampler's own rule (prompt_length).
  `key`: the config key of `max_new_tokens`, which the error names."""
  from meta_rewarding import prompt_length
  s = config.sampling
  try:
    return prompt_length.limits(s.prompt_buckets, max_new_tokens, int(s.max_cache_length),
                                mc.max_position_embeddings, key=key,
                                cache_key="sampling.max_cache_length")
  except prompt_length.PromptLengthError as e:
    raise DoesNotFitError(str(e)) from e


def _worst_lengths(buckets, longest: int, shared: bool, key) -> tuple[int, int]:
  """The (P1, P2) bucket pair maximising `key` among prompts of at most `longest` tokens."""
  fit = [b for b in buckets if b >= 1]
  lo = {b: (prev + 1) for prev, b in zip((0,) + tuple(fit), fit)}  # shortest length padded to b
  own_options = [b for b in fit if lo[b] <= longest]
  if not shared:
    return 0, max(own_options)
  best = (0, max(own_options))
  for p1 in fit:
    first = max(lo[p1], _MIN_SHARED_PREFIX)
    if first > longest or first > p1:
      continue
    for p2 in fit:
      own_lo = lo[p2]  # every member keeps >= 1 token of its own
      if first + own_lo <= longest and key((p1, p2)) > key(best):
        best = (p1, p2)
  return best


def kv_bytes(mc, mesh, rules, prompts: int, length: int) -> int:
  """Per-device bytes of the KV cache of `prompts` rows of `length` slots (rows over the batch
  shards, kv heads over theirs), in the compute dtype."""
  w = _widths(mc, mesh, rules)
  rows_dev = -(-prompts // _rule_size(mesh, rules, "batch"))
  return _kv_bytes(mc, rows_dev, length, w["K"], _dtype_bytes(mc.dtype))


def prefill_bytes(mc, mesh, rules, prompts: int, p1: int, p2: int) -> int:
  """Per-device working set of prefilling `prompts` prompts of P2 own tokens after P1-token shared
  prefixes (one prefix row per prompt at worst): the prefix and row caches, the largest attention
  scores (f32 logits and dt probabilities) and one layer's hidden states."""
  w = _widths(mc, mesh, rules)
  dt = _dtype_bytes(mc.dtype)
  prompts_dev = -(-prompts // _rule_size(mesh, rules, "batch"))
  chunk = mc.attention_chunk  # in blocks: one block of queries' scores at a time
  scores = prompts_dev * w["N"] * score_queries(p2, chunk) * (p1 + p2) * (4 + dt)
  prefix_scores = prompts_dev * w["N"] * score_queries(p1, chunk) * p1 * (4 + dt)
  hidden = prompts_dev * p2 * dt * (2 * w["D"] + 2 * w["F"] + (w["N"] + 2 * w["K"]) * w["H"])
  # A row takes its prefix's cache from whichever batch shard prefilled it: XLA all-gathers each
  # layer's prefix cache over the batch axes, and may hold every layer's at once (the compile
  # check, pure FSDP on a v5e-32: 64 prompts' 1024-token prefixes, 8 GiB of a 14.5 GiB prefill).
  prefix_prompts = prompts if p1 and _rule_size(mesh, rules, "batch") > 1 else prompts_dev
  return (_kv_bytes(mc, prefix_prompts, p1, w["K"], dt)
          + _kv_bytes(mc, prompts_dev, p1 + p2, w["K"], dt) + max(scores, prefix_scores) + hidden)


def _stage(name, n, max_new_tokens, shared, config, mc, mesh, rules, dt, key) -> SamplerStage:
  mult = _rule_size(mesh, rules, "batch")
  per_batch = max(1, int(config.sampling.batch_size) // n)
  prompts = -(-per_batch // mult) * mult
  rows = prompts * n
  buckets, longest = _buckets(config, mc, max_new_tokens, key)
  p1k, p2k = _worst_lengths(buckets, longest, shared, key=lambda p: (sum(p), p[1]))
  p1s, p2s = _worst_lengths(buckets, longest, shared, key=lambda p: (p[1] * sum(p), p[0]))
  kv = kv_bytes(mc, mesh, rules, rows, p1k + p2k + max_new_tokens)
  row_cache = kv_bytes(mc, mesh, rules, prompts, p1k + p2k)
  prefill = prefill_bytes(mc, mesh, rules, prompts, p1s, p2s)
  logits = (rows // mult) * mc.vocab_size * 4 * 3
  return SamplerStage(name=name, n=n, prompts=prompts, rows=rows, prefix_length=p1k,
                      prompt_length=p2k, max_new_tokens=max_new_tokens, kv_cache=kv,
                      prefill=prefill, logits=logits, row_cache=row_cache, shared=shared,
                      batch_multiple=mult, scores_prefix_length=p1s, scores_prompt_length=p2s)


def detected_device_memory() -> int | None:
  """What the first device reports as its allocation limit (None on CPU)."""
  try:
    import jax
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pragma: no cover - backends without memory stats
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return None


def host_memory_bytes() -> int | None:
  """This machine's physical memory (None where the OS does not say)."""
  try:
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
  except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
    return None


def on_host_memory(p: Plan, host_memory: int | None = None, *,
                   local_devices: int | None = None) -> Plan:
  """`p` with the host's RAM as its budget, for CPU devices, which report no memory: the physical
  memory (`host_memory` bytes, default this machine's) divided among the `local_devices` that
  share it (default: the mesh's devices in this process), `HOST_MEMORY_FRACTION` of it usable.
  `p` itself when its memory is known, or when the host's is not."""
  if p.device_memory is not None:
    return p
  host_memory = host_memory_bytes() if host_memory is None else int(host_memory)
  if not host_memory:
    return p
  if local_devices is None:
    import jax
    local_devices = min(p.num_devices, jax.local_device_count())
  sharing = max(1, int(local_devices))
  source = (f"host RAM {host_memory / GiB:.1f} GiB" +
            (f" / {sharing} CPU devices" if sharing > 1 else ""))
  return dataclasses.replace(p, device_memory=host_memory // sharing,
                             usable_fraction=HOST_MEMORY_FRACTION, memory_source=source)


def _devices_are_cpus() -> bool:
  import jax
  return jax.local_devices()[0].platform == "cpu"


def device_memory_bytes(config=None, *, detect: bool = True) -> int | None:
  """Memory per device: `mesh.device_memory_gb` (GiB) and/or what the device reports (its limit
  includes e.g. JAX's GPU preallocation fraction); the smaller when both are known."""
  configured = None
  if config is not None and "mesh" in config and config.mesh.get("device_memory_gb"):
    configured = int(float(config.mesh.device_memory_gb) * GiB)
  detected = detected_device_memory() if detect else None
  known = [b for b in (configured, detected) if b]
  return min(known) if known else None


def plan(config, num_devices: int | None = None, *, device_memory: int | None = None,
         usable_fraction: float = USABLE_FRACTION, detect_memory: bool = False) -> Plan:
  """The memory plan of `config` on `num_devices` devices (default: `mesh.num_devices` when the
  config names one, else `jax.device_count()`). Arithmetic on abstract shapes: allocates nothing,
  needs no devices of that count. Device memory: `device_memory` (bytes), else
  `mesh.device_memory_gb`, and with `detect_memory` also what the local device reports."""
  from meta_rewarding import sharding
  if num_devices is None:
    num_devices = int(config.mesh.get("num_devices") or 0) or None
  if num_devices is None:
    import jax
    num_devices = jax.device_count()
  mesh = sharding.resolve_mesh_shape(dict(config.mesh.shape), int(num_devices))
  train_rules, decode_rules = config_rules.rules_for(config)  # exactly what the run uses
  mc, source = model_config_from(config)
  tcfg = _train_config(config)
  dt = _dtype_bytes(mc.dtype)
  notes = [f"architecture from {source}"]

  # Divisibility problems are the mesh's, not memory's: sharding.MeshError names the parameter.
  import types
  sharding.check_divisibility(mc, types.SimpleNamespace(shape=mesh), train_rules)

  params, optimizer = _param_and_optimizer_bytes(mc, tcfg, mesh, train_rules)
  decode_params = _decode_param_bytes(mc, mesh, train_rules, decode_rules)

  recipe = recipes.for_config(config)
  stages = []
  for s in recipe.sampling_stages(config):
    section, field = s.max_new_tokens_key.split(".")
    stages.append(_stage(s.name, s.n, int(config[section][field]), s.shared, config, mc, mesh,
                         decode_rules, dt, s.max_new_tokens_key))

  # Training.
  m = _rule_size(mesh, train_rules, "batch")
  batch = int(tcfg.batch_size)
  if batch % m:
    notes.append(f"train.batch_size={batch} is not a multiple of the {m} batch shards; "
                 "run_dpo will refuse it")
  # Packed rows (data.collate): a DPO pair is one row (its prompt once, then both responses) of up
  # to 2 x max_length tokens; an SFT sequence is one row of up to max_length.
  rows_dev = -(-batch // m)
  T = recipe.row_factor * int(tcfg.max_length)
  w = _widths(mc, mesh, train_rules)
  L = mc.num_hidden_layers
  layer = layer_bytes_per_token(w, T, dt, mc.attention_chunk)
  saved = saved_bytes_per_token(w, T, dt, mc.remat_policy, mc.attention_chunk)
  activations = rows_dev * T * (L * saved + layer * (1 if mc.remat_policy == "none" else 2))
  chunk = int(tcfg.logps_chunk_size) or T
  chunk = min(chunk, T)
  train_logits = rows_dev * chunk * w["V"] * 4 * 3
  gradients = 2 * params

  ref_pairs = int(tcfg.reference_batch_size or 2 * batch)
  ref_pairs = -(-ref_pairs // m) * m
  ref_rows_dev = ref_pairs // m
  reference = (ref_rows_dev * T * layer + ref_rows_dev * chunk * w["V"] * 4 * 2
               if recipe.reference_pass else 0)

  if device_memory is None:
    device_memory = device_memory_bytes(config, detect=detect_memory)
  # The attention scores' share of the activations (what `model.attention_chunk` shrinks).
  scores = (rows_dev * T * w["N"] * score_queries(T, mc.attention_chunk) * (4 + dt)
            * (1 if mc.remat_policy == "none" else 2))
  settings = dict(sampling_batch_size=int(config.sampling.batch_size), train_batch_size=batch,
                  attention_chunk=mc.attention_chunk, attention_score_bytes=scores,
                  train_unit="pairs" if recipe.trains == "dpo" else "sequences (SFT)",
                  grad_accum_steps=int(tcfg.grad_accum_steps),
                  logps_chunk_size=int(tcfg.logps_chunk_size))
  return Plan(model=_model_name(mc), num_params=mc.num_params(), num_devices=int(num_devices),
              mesh=mesh, param_dtype=mc.param_dtype, dtype=mc.dtype,
              remat_policy=mc.remat_policy, scan_layers=mc.scan_layers, params=params,
              stages=tuple(stages), reference=reference, train_params=params,
              decode_params=decode_params,
              optimizer=optimizer, gradients=gradients, activations=activations,
              train_logits=train_logits, train_rows=rows_dev, train_length=T,
              device_memory=device_memory, usable_fraction=usable_fraction, notes=tuple(notes),
              settings=settings)


def _model_name(mc) -> str:
  from meta_rewarding.model import presets
  for name, fields in presets.PRESETS.items():
    try:
      ref = presets.llama_config(fields)
    except Exception:  # pragma: no cover
      continue
    if all(getattr(ref, f) == getattr(mc, f) for f in (
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")):
      return name
  return (f"{mc.model_type} L{mc.num_hidden_layers} D{mc.hidden_size} F{mc.intermediate_size} "
          f"N{mc.num_attention_heads} K{mc.num_key_value_heads} V{mc.vocab_size}")


def check_fits(config, num_devices: int | None = None, *, log: bool = True,
               host_memory: int | None = None) -> Plan:
  """Plans `config` for the devices at hand (default `jax.device_count()`) and raises
  `DoesNotFitError` saying what to change when the peak exceeds the usable device memory.
  On CPU devices without `mesh.device_memory_gb` the budget is the host's RAM (`on_host_memory`;
  `host_memory`: the bytes to assume instead of this machine's, for tests); on other devices
  whose memory is unknown it passes."""
  if num_devices is None:
    import jax
    num_devices = jax.device_count()
  p = plan(config, num_devices, detect_memory=True)
  if p.device_memory is None and _devices_are_cpus():
    p = on_host_memory(p, host_memory)
  if log:
    from absl import logging
    logging.info("%s", p.table())
  if not p.fits():
    raise DoesNotFitError(p.refusal())
  return p


# ------------------------------------------------------------------------------------------------
# CLI.

def main(argv):
  from absl import flags
  del argv
  from meta_rewarding import config_check
  FLAGS = flags.FLAGS
  config = _load_config(FLAGS)
  try:
    config_check.check_pipeline_config(config)  # one line per bad value, not a traceback below
  except config_check.ConfigError as e:
    for line in e.problems:
      print(f"error: {line}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.compile_for:
    sys.exit(_compile_for(config, FLAGS.compile_for, FLAGS.output, FLAGS.compile_threads,
                          FLAGS.compile_programs))
  # Planning for the devices present (no count given anywhere): also ask them for their memory.
  here = FLAGS.num_devices is None and not config.mesh.get("num_devices")
  try:
    p = plan(config, FLAGS.num_devices,
             device_memory=int(FLAGS.device_memory_gb * GiB) if FLAGS.device_memory_gb else None,
             detect_memory=here)
  except UserError as e:  # no plan at all (a stage with no room for a prompt, a mesh that does not
    # divide the model or the devices): a config to change, one line like the range checks'
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if here and p.device_memory is None and _devices_are_cpus():
    p = on_host_memory(p)  # the budget `check_fits` gives the same run here
  print(p.table())
  if not p.fits():
    print("\n" + p.refusal(), file=sys.stderr)
    sys.exit(1)


def _load_config(FLAGS):
  """`--config`, or exit 2 with one line: a file that does not exist or fails to load is a
  placeholder that raises when first read, which would print a traceback."""
  try:
    config = FLAGS.config
    config.get("seed")
    return config
  except Exception as e:  # pylint: disable=broad-except  (whatever the config file raised)
    # ml_collections' message ends with the cause ("[Errno 2] No such file or directory: ...").
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    print(f"error: --config: cannot load the config file: "
          f"{lines[-1] if lines else type(e).__name__}", file=sys.stderr)
    sys.exit(2)


def _compile_for(config, target: str, output: str | None, threads: int | None = None,
                 only: Sequence[str] = ()) -> int:
  """`--compile_for`: compile every program of an iteration for `target` (compile_check.py),
  print the table, write `output`; 1 when a program does not fit, 2 when the check cannot run."""
  from meta_rewarding import compile_check, targets
  if target != "cpu":
    try:
      targets.parse(target)
    except targets.UnknownTargetError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  progress = lambda line: print(line, file=sys.stderr, flush=True)
  try:
    report = compile_check.run(config, target, log=progress, threads=threads, only=only or ())
  except (compile_check.CompileCheckError, UserError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report.table())
  if output:
    import json
    from meta_rewarding import artifacts
    artifacts.write_text(output, json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n")
  return 0 if report.all_fit else 1


def _define_flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "configs/local_cpu.py", "Config file (get_config(arg)).",
                                  lock_config=True)
  flags.DEFINE_integer("num_devices", None, "Devices to plan for (default: mesh.num_devices of the "
                       "config, else the devices present).")
  flags.DEFINE_string("compile_for", None, "Compile every program of one iteration for this "
                      "slice (v4-8 ... v4-1024, v5e-1 ... v5e-256, v5p-..., v6e-...; needs the "
                      "[tpu] extra) or 'cpu' (the devices here), and print XLA's memory and cost "
                      "next to the plan.")
  flags.DEFINE_string("output", None, "With --compile_for: write the figures as JSON here.")
  flags.DEFINE_integer("compile_threads", None, "With --compile_for: programs compiled at once "
                       "(default: one per CPU core; XLA compiles each on one core).", lower_bound=1)
  flags.DEFINE_list("compile_programs", [], "With --compile_for: compile only the programs "
                    "matching these patterns (e.g. 'judge/*,train'); the table lists the others as "
                    "not compiled. For a machine whose host memory cannot hold one process's "
                    "compiles of a large model: run the groups as separate commands.")
  flags.DEFINE_float("device_memory_gb", None, "Memory per device in GiB (default: "
                     "mesh.device_memory_gb, else what the device reports).")


if __name__ == "__main__":
  if any(a.startswith("--compile_for") and not a.endswith("=cpu") for a in sys.argv):
    from meta_rewarding import compile_check  # before jax starts a backend
    compile_check.quiet_libtpu_environment()
  from absl import app
  _define_flags()
  app.run(main)
