"""Compile every program of one iteration for a TPU slice, on any machine, and read XLA's figures.

  python -m meta_rewarding.plan --config=configs/tpu_v4.py --compile_for=v4-32 --output=F.json

JAX compiles for a TPU topology without the TPU when libtpu is installed (`pip install -e
".[tpu]"`): `jax.experimental.topologies` gives the slice's devices, a mesh over them and abstract
inputs (`jax.ShapeDtypeStruct` with the run's `NamedSharding`s) lower the project's own jitted
functions, and the compiled executable reports XLA's per-chip memory (`memory_analysis`) and cost
(`cost_analysis`). `--compile_for=cpu` compiles the same programs for the devices present (the
test suite's path: no libtpu needed).

The programs (`programs`) are the ones one iteration of the config runs, built by the modules that
run them, at the config's worst-case shapes (`plan.plan`'s stage shapes):
  <stage>/prefill                   `decode.prefill`: the first fill of the decode rows at the
                                    worst bucket pair (a refill is the same program at 1/16 of
                                    the prompts; the insert takes a refill's shapes)
  <stage>/init, <stage>/insert, <stage>/decode_block   continuous batching (`decode.init_slots`,
                                    `decode.insert`, `decode.decode_block`); `sampling.batching =
                                    "static"` compiles `<stage>/generate` (`decode._generate`)
  reference                         `train._compiled_logps` at the reference batch, longest row
  train                             `train.make_train_step`'s step (DPO; SFT for recipe "ste")
for the stages actor, judge, meta_judge (Meta-Rewarding) or categorize, actor, worse, judge (STE).

Memory: XLA's bytes per chip = arguments + outputs - aliased (donated) + temporaries, next to the
planner's estimate of what that program holds (`plan.Plan.program_bytes`). A program fits when its
bytes plus what the run keeps alive outside it (the policy's parameters during training; a waiting
prefill during a decode block) fit the chip's usable HBM (`plan.USABLE_FRACTION`).

Cost: XLA's cost analysis counts the body of a while loop or scan once. The figures here count each
loop as often as it runs:
  * layers: the program is compiled again, unscanned, with 1 and 2 layers (same shapes, shardings
    and rules), and the per-layer cost (2 layers - 1 layer) is counted L times; a model whose
    layers differ (`layer_types`: sliding-window and global) gets a 2-layer copy per kind, and
    each layer counts as its kind;
  * decode steps: a decode block's figures are those of one step compiled alone
    (`decode.decode_step`, the block's loop body), so they are per decode step;
  * attention in query blocks (`model.attention_chunk`): a loop too; the cost of a program that
    attends over many queries (prefill, reference, train) comes from a copy that attends all at
    once (the same arithmetic); its memory from the program as it runs;
  * microbatches: the train step's scan runs `grad_accum_steps` times; the optimizer update
    (`train_step.apply_gradients`, compiled alone for the real model: no loop) runs once:
    step = update + A x microbatch, the copies' update taken in proportion to their parameters.

Bytes: two figures per program, both per chip and counted through the loops as above.
  * XLA's "bytes accessed" (`cost_analysis()`; the table's "GB read"), kept as XLA reports it;
  * HBM bytes ("GB HBM"): the same cost rules applied to the compiled module's HLO
    (`compiled.as_text()`) instruction by instruction, counting only reads and writes of arrays
    in HBM (memory space 0), `hlo_bytes.py`. On TPU XLA's figure also counts the copies the
    compiler stages in on-chip memory (VMEM, v4's CMEM): a weight prefetched into VMEM before its
    matmul is counted four times, once for the HBM read (bench/results/tpu_decode_hlo.md: 1.26x
    to 3.7x a decode step's floor in XLA's figure, 0.94-1.00x in HBM bytes). On a backend without
    memory spaces (the CPU path) the two are equal but for tuples' pointer tables.
HBM bytes drive the decode steps' floor check (a finding above 1.3x the floor) and the roofline
time, max(FLOPs / peak, HBM bytes / HBM bandwidth) per chip (`targets.py`): the bytes the HBM
bandwidth limits. Where the HLO cannot be analysed, XLA's figure stands in (JSON `hbm_bytes`
null, table "-"). The analysis' own total by XLA's rules (JSON `analysed_bytes`) says how much of
XLA's figure it reproduces (0.95-1.00 on the v4-32 decode steps and inserts): what it does not is
in no memory space, so HBM bytes may be low by up to that share.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fnmatch
import functools
import gc
import math
import concurrent.futures
import os
import re
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from meta_rewarding import hlo_bytes
from meta_rewarding import plan as plan_lib
from meta_rewarding import recipes
from meta_rewarding import targets as targets_lib
from meta_rewarding.config import rules as config_rules
from meta_rewarding.errors import UserError

GiB = 1 << 30


class CompileCheckError(UserError, RuntimeError):
  """The compile check cannot run here (no libtpu, a backend already started, ...)."""


# ------------------------------------------------------------------------------------------------
# Devices.

def topology_devices(target: targets_lib.Target):
  """The devices of `target`'s slice, from libtpu's topology description (no TPU needed)."""
  import jax
  try:
    from jax.experimental import topologies
  except ImportError as e:  # pragma: no cover - every supported jax has it
    raise CompileCheckError(f"this jax ({jax.__version__}) has no jax.experimental.topologies") from e
  g = target.generation
  kwargs = {"chip_config_name": g.chip_config_name} if g.chip_config_name else {}
  try:
    desc = topologies.get_topology_desc(topology_name=target.topology, platform="tpu", **kwargs)
  except Exception as e:  # libtpu missing, or a jax / libtpu pair that does not know the name
    if "lockfile" in str(e):  # libtpu admits one process per machine unless told otherwise
      raise CompileCheckError(
          f"--compile_for={target.name}: another process on this machine holds libtpu (its "
          "lockfile, /tmp/libtpu_lockfile) and ALLOW_MULTIPLE_LIBTPU_LOAD is "
          f"{os.environ.get('ALLOW_MULTIPLE_LIBTPU_LOAD')!r}. Wait for it, or run this one "
          "beside it with ALLOW_MULTIPLE_LIBTPU_LOAD=1 (the check's default: it never opens the "
          "TPU; both share the cores and host memory)") from e
    raise CompileCheckError(
        f"--compile_for={target.name}: cannot describe the TPU topology {target.topology} "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). The TPU compiler comes "
        "with libtpu: pip install -e \".[tpu]\" (the libtpu version jax[tpu] pins for this jax)") from e
  devices = list(desc.devices)
  if len(devices) != target.chips:
    raise CompileCheckError(f"{target.topology} gave {len(devices)} devices, expected "
                            f"{target.chips} chips")
  return devices


def quiet_libtpu_environment() -> None:
  """Compiling for a topology needs no TPU: keep JAX on the CPU and libtpu from probing for a TPU
  VM's metadata (each probe prints a warning and waits). Set before jax is imported; values the
  user set win."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v4-8")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_WORKER_ID", "0")
  # libtpu lets one process per machine load it (a lockfile), to guard the TPU; a compile check
  # never opens the TPU, so it may run beside a job that does, or beside another check.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


# ------------------------------------------------------------------------------------------------
# Abstract inputs: shapes and the run's shardings, nothing allocated.

def _sds(shape, dtype, sharding):
  import jax
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


def abstract_params(mc, mesh, rules):
  """The parameters of `mc` as the run places them: `sharding.param_shardings` under `rules`
  (for the sampler's weights pass `sampling.decoding_config(mc)` and the decode rules)."""
  import jax
  from meta_rewarding import sharding
  shardings = sharding.param_shardings(mc, mesh, rules)
  return jax.tree.map(lambda s, sh: _sds(s.shape, s.dtype, sh), sharding.abstract_params(mc),
                      shardings)


def _replicated(mesh):
  from jax.sharding import NamedSharding, PartitionSpec
  return NamedSharding(mesh, PartitionSpec())


def abstract_prompt_batch(mesh, rules, *, prompts: int, length: int, prefixes: int,
                          prefix_length: int):
  """A `decode.PromptBatch` as `sampling.Sampler._place` places it: rows over the batch axes."""
  import jax.numpy as jnp
  from meta_rewarding import decode, sharding
  rows = lambda shape, dtype=jnp.int32: _sds(shape, dtype,
                                             sharding.batch_sharding(mesh, rules, len(shape)))
  return decode.PromptBatch(
      tokens=rows((prompts, length)), lengths=rows((prompts,)), prompt_ids=rows((prompts,)),
      active=rows((prompts,), jnp.bool_), prefix_tokens=rows((prefixes, prefix_length)),
      prefix_lengths=rows((prefixes,)), group=rows((prompts,)))


def _with_shardings(abstract, shardings):
  import jax
  return jax.tree.map(lambda a, s: _sds(a.shape, a.dtype, s), abstract, shardings)


# ------------------------------------------------------------------------------------------------
# The programs of one iteration.

@dataclasses.dataclass(frozen=True)
class Program:
  """One program of the iteration and how to lower it.

  compile(model_config) -> the compiled executable at the program's shapes, for that model config
  (the check compiles analysis copies with fewer, unscanned layers through the same function).
  planned: the planner's bytes for what the program holds; resident: what the run keeps alive
  outside it meanwhile. loops: "" (none but the layers), "steps" (a decode loop: figures per
  step), "microbatches" (the train step's scan). calls: how often one iteration runs it (per
  step for "steps"), for the time estimate."""
  name: str
  phase: str
  planned: int
  resident: int
  compile: Callable[[Any], Any]
  loops: str = ""
  microbatches: int = 1
  optimizer_compile: Callable[[Any], Any] | None = None
  needs_analysis: bool = False   # XLA's cost counts a loop of it once: compile analysis copies
  # How the analysis copies compile (default `compile`): with the loops outside the layers
  # undone too (the log-prob loss's chunks over the sequence, `train.logps_chunk_size`).
  analysis_compile: Callable[[Any], Any] | None = None
  cost_compile: Callable[[Any], Any] | None = None  # the program whose cost stands for it
  # A forward over many queries (prefill, generate, reference, train): with `attention_chunk`
  # its attention is a loop over query blocks, and its cost comes from a copy without (_cost_config).
  attends_many_queries: bool = False
  calls: float = 0.0
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Measured:
  """XLA's figures for one program (bytes per chip; FLOPs and bytes accessed per chip, per call
  or per decode step, loops counted as they run)."""
  name: str
  phase: str
  planned: int
  resident: int
  argument: int
  output: int
  alias: int
  temp: int
  host: int
  flops: float
  bytes_accessed: float
  loops: str
  calls: float
  compile_seconds: float
  info: Mapping[str, Any]
  hbm_bytes: float | None = None   # HBM reads + writes (hlo_bytes.py); None: not analysed
  analysed_bytes: float | None = None  # the analysis' total of XLA's rule: how much it reproduces
  error: str = ""  # XLA refused to compile it (out of HBM, or another reason): the program's row

  @property
  def compiled(self) -> int:
    return self.argument + self.output - self.alias + self.temp

  @property
  def memory_bytes(self) -> float:
    """The bytes the roofline and the decode floor check use: HBM bytes, else XLA's."""
    return self.bytes_accessed if self.hbm_bytes is None else self.hbm_bytes


def _stage_programs(config, mc, mesh, rules, stage: plan_lib.SamplerStage, p, batching: str,
                    strategy, block: int, calls: Mapping[str, float], cache: dict) -> list[Program]:
  import jax
  import jax.numpy as jnp
  from meta_rewarding import decode, sampling, sharding
  # The sampler runs `sampling.decoding_config` of the model (unscanned, compute-dtype weights):
  # every compile below takes the model config the check passes and converts it the same way.
  as_decoded = sampling.decoding_config
  P1s, P2s = stage.scores_prefix_length, stage.scores_prompt_length
  P1, P2 = stage.prefix_length, stage.prompt_length
  shared = stage.shared
  m = stage.batch_multiple
  prompts, R, M = stage.prompts, stage.rows, stage.max_new_tokens
  rep = _replicated(mesh)
  scalar = lambda dtype: _sds((), dtype, rep)
  stops = _sds(decode.stop_array([0]).shape, jnp.int32, rep)
  weights = p.decode_params or p.params   # what the sampler reads (sampling.decoding_params)
  live = p.params if p.decode_params else 0  # the policy's own (float32) params meanwhile

  def batch(count, length, plen):
    return abstract_prompt_batch(mesh, rules, prompts=count, length=length,
                                 prefixes=count if (shared and plen) else m,
                                 prefix_length=plen if shared else 0)

  def activate():
    return sharding.activate(mesh, rules)

  def decoded(compile_):
    return lambda c: compile_(as_decoded(c))

  name = stage.name
  steps = calls.get(name, {})
  if batching == "static":
    def compile_generate(c):
      params = abstract_params(c, mesh, rules)
      with activate():
        return decode._generate.lower(
            c, params, batch(prompts, P2s, P1s), scalar(jnp.uint32), stops, scalar(jnp.int32),
            strategy=strategy, max_new_tokens=M, num_samples=stage.n).compile()
    return [Program(f"{name}/generate", "sampling", weights + stage.peak, live,
                    decoded(compile_generate), attends_many_queries=True,
                    calls=steps.get("prefills", 0.0),
                    info=dict(prompts=prompts, rows=R, prefix=P1s, own=P2s, new_tokens=M,
                              note="cost: prefill + one decode step (the loop body once)"))]

  cache_lock, key_locks = cache.setdefault("__locks__", (threading.Lock(), {}))
  refill_prompts = sampling.round_batch(max(1, prompts // 16), prompts, m)
  width = max(1, R // 16)
  ring = P1 + P2 + M

  def once(key, build):
    """Compiles each (program, shapes, model config) once per check: the insert and the decode
    block take the output shardings of the programs that feed them (programs of their own too),
    and stages with the same shapes share them. Programs are measured on several threads
    (`run`): a second thread wanting the same key waits for the first one's compile."""
    with cache_lock:
      lock = key_locks.setdefault(key, threading.Lock())
    with lock:
      if key not in cache:
        cache[key] = build()
      return cache[key]

  def compile_prefill(count, length, plen):
    def compile_(c):
      def build():
        params = abstract_params(c, mesh, rules)
        with activate():
          return decode.prefill.lower(c, params, batch(count, length, plen)).compile()
      return once(("prefill", c, count, length, plen, shared), build)
    return compile_

  def compile_init(rows):
    def compile_(c):
      def build():
        with activate():
          return decode.init_slots.lower(c, scalar(jnp.int32), rows=rows, ring=ring,
                                         max_new_tokens=M).compile()
      return once(("init", c, rows, ring, M), build)
    return compile_

  def state_of(c, rows):
    abstract = jax.eval_shape(functools.partial(decode.init_slots, c, rows=rows, ring=ring,
                                                max_new_tokens=M), scalar(jnp.int32))
    return _with_shardings(abstract, compile_init(rows)(c).output_shardings)

  def prefilled_of(c):
    """A refill's `decode.Prefilled` (refill_prompts at the widest buckets) with the shardings of
    the first fill's compiled outputs: the same tree and specs at other shapes, so the refill
    prefill itself need not be compiled (it is the first fill's program at fewer prompts)."""
    params = abstract_params(c, mesh, rules)
    b = batch(refill_prompts, P2, P1)
    with activate():
      abstract = jax.eval_shape(functools.partial(decode.prefill, c), params, b)
    compiled = compile_prefill(prompts, P2s, P1s)(c)
    return _with_shardings(abstract, compiled.output_shardings)

  idx = lambda: _sds((width,), jnp.int32, rep)

  def compile_insert(c):
    state, prefilled = state_of(c, R), prefilled_of(c)
    with activate():
      return decode.insert.lower(c, state, prefilled, idx(), idx(), idx(), scalar(jnp.uint32),
                                 stops, scalar(jnp.int32), strategy=strategy).compile()

  def compile_step(rows):
    """One decode step (`decode.decode_step`, the block's loop body) at the block's shapes: what
    the cost figures per step come from."""
    def compile_(c):
      state = state_of(c, rows)
      params = abstract_params(c, mesh, rules)
      with activate():
        return decode.decode_step.lower(c, params, state, stops, strategy=strategy).compile()
    return compile_

  def compile_block(rows):
    def compile_(c):
      state = state_of(c, rows)
      params = abstract_params(c, mesh, rules)
      with activate():
        return decode.decode_block.lower(c, params, state, stops, scalar(jnp.int32),
                                         strategy=strategy, num_steps=block).compile()
    return compile_

  row_cache = plan_lib.kv_bytes(mc, p.mesh, rules, refill_prompts, P1 + P2)
  common = dict(stage=name, n=stage.n, prompts=prompts, rows=R, ring=ring, new_tokens=M)
  out = [
      Program(f"{name}/prefill", "sampling", weights + stage.prefill, live,
              decoded(compile_prefill(prompts, P2s, P1s)), calls=steps.get("prefills", 0.0),
              attends_many_queries=True,
              info=dict(common, prefill_prompts=prompts, prefix=P1s, own=P2s)),
      Program(f"{name}/init", "sampling", stage.kv_cache, live + weights, decoded(compile_init(R)),
              info=dict(common)),
      Program(f"{name}/insert", "sampling", stage.kv_cache + row_cache, live + weights,
              decoded(compile_insert),
              calls=steps.get("inserts", 0.0), info=dict(common, insert_rows=width)),
      Program(f"{name}/decode_block", "sampling", weights + stage.kv_cache + stage.logits,
              live + stage.row_cache, decoded(compile_block(R)), loops="steps",
              cost_compile=decoded(compile_step(R)), calls=steps.get("decode_steps", 0.0),
              info=dict(common, rows_per_batch_shard=R // m)),
  ]
  if name == "actor" and R // m > 1:
    # The decode floor check at one row per batch shard ("batch 1"): weights dominate.
    out.append(Program(f"{name}/decode_block_batch1", "sampling",
                       weights + stage.kv_cache * m // R + stage.logits * m // R, live,
                       decoded(compile_block(m)), loops="steps",
                       cost_compile=decoded(compile_step(m)),
                       info=dict(common, rows=m, rows_per_batch_shard=1, check_only=True)))
  return out


def programs(config, mesh, *, plan=None) -> list[Program]:
  """Every program one iteration of `config` runs, lowered on `mesh` (see the module doc)."""
  import jax
  import jax.numpy as jnp
  from meta_rewarding import sampling, train, train_step
  p = plan or plan_lib.plan(config, mesh.size)
  train_rules, decode_rules = config_rules.rules_for(config)
  mc, _ = plan_lib.model_config_from(config)
  strategy = sampling.strategy_from_config(config.sampling)
  batching = config.sampling.get("batching", "continuous")
  block = int(config.sampling.get("decode_block", 32))
  calls = iteration_calls(config, p)
  cache: dict = {}
  out = []
  for stage in p.stages:
    out += _stage_programs(config, mc, mesh, decode_rules, stage, p, batching, strategy, block,
                           calls, cache)

  tcfg = plan_lib._train_config(config)
  recipe = recipes.for_config(config)
  analysis_options = (ANALYSIS_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "tpu"
                      else None)
  kind = recipe.trains
  T = recipe.row_factor * int(tcfg.max_length)   # the longest packed row (data.collate's limit)
  shards = plan_lib._rule_size(p.mesh, train_rules, "batch")
  rep = _replicated(mesh)

  def rows_batch(count, micro: int | None, with_ref: bool):
    from meta_rewarding import sharding
    lead = () if micro is None else (micro,)
    sh = lambda nd: sharding.logical_sharding(
        mesh, train_rules, jax.sharding.PartitionSpec(*((None,) * len(lead)), "batch",
                                                      *([None] * nd)))
    b = {k: _sds(lead + (count, T), jnp.int32, sh(1)) for k in train_step.ROW_KEYS}
    if micro is not None:
      b["weight"] = _sds(lead + (count,), jnp.float32, sh(0))
      if with_ref:
        b["ref_chosen"] = _sds(lead + (count,), jnp.float32, sh(0))
        b["ref_rejected"] = _sds(lead + (count,), jnp.float32, sh(0))
    return b

  if recipe.reference_pass:
    ref_pairs = int(tcfg.reference_batch_size or 2 * tcfg.batch_size)
    ref_pairs = -(-ref_pairs // shards) * shards

    def compile_reference(c, chunk_size=int(tcfg.logps_chunk_size), options=None):
      from meta_rewarding import sharding
      fn, _ = train._compiled_logps(c, chunk_size, mesh, train_rules)
      params = abstract_params(c, mesh, train_rules)
      with sharding.activate(mesh, train_rules):
        return fn.lower(params, rows_batch(ref_pairs, None, False)).compile(options)
    out.append(Program("reference", "reference", p.reference_total, 0, compile_reference,
                       needs_analysis=mc.scan_layers, attends_many_queries=True,
                       analysis_compile=functools.partial(compile_reference, chunk_size=0,
                                                          options=analysis_options),
                       calls=calls.get("reference", 0.0),
                       info=dict(pairs=ref_pairs, row_length=T)))

  opt_spec = train_step.OptimizerSpec.from_config(tcfg)
  spec = train_step.LossSpec.from_config(tcfg, kind)
  A, batch = int(tcfg.grad_accum_steps), int(tcfg.batch_size)

  def state_abstract(c):
    optimizer = train_step.make_optimizer(opt_spec)
    from meta_rewarding import sharding
    abstract = jax.eval_shape(functools.partial(train_step.init_state, optimizer=optimizer),
                              sharding.abstract_params(c))
    return _with_shardings(abstract, train.state_shardings(c, optimizer, mesh, train_rules))

  def compile_train(c, loss=spec, options=None):
    from meta_rewarding import sharding
    # Built outside `activate`: with topology devices a mesh in scope makes the state's eager
    # set-up try to run on them.
    step, _, _, _ = train.make_train_step(c, loss, opt_spec, mesh, train_rules)
    state = state_abstract(c)
    with sharding.activate(mesh, train_rules):
      return step.lower(state, rows_batch(batch, A, kind == "dpo"),
                        _sds((), jnp.float32, rep)).compile(options)

  def compile_update(c):
    from meta_rewarding import sharding
    optimizer = train_step.make_optimizer(opt_spec)
    state = state_abstract(c)
    grads = state.params
    fn = jax.jit(functools.partial(train_step.apply_gradients, optimizer=optimizer),
                 in_shardings=(train.state_shardings(c, optimizer, mesh, train_rules),
                               train.state_shardings(c, optimizer, mesh, train_rules).params, rep),
                 donate_argnums=(0,))
    with sharding.activate(mesh, train_rules):
      return fn.lower(state, grads, _sds((), jnp.float32, rep)).compile()

  out.append(Program("train", "training", p.training_total - p.params, p.params, compile_train,
                     loops="microbatches", microbatches=A, optimizer_compile=compile_update,
                     needs_analysis=mc.scan_layers or A > 1, attends_many_queries=True,
                     analysis_compile=functools.partial(
                         compile_train, loss=dataclasses.replace(spec, chunk_size=0),
                         options=analysis_options),
                     calls=calls.get("train_steps", 0.0),
                     info=dict(kind=kind, rows_per_microbatch=batch, microbatches=A,
                               row_length=T, remat=mc.remat_policy)))
  return out


# ------------------------------------------------------------------------------------------------
# How often one iteration runs each program (for the time estimate).

def iteration_calls(config, p) -> dict:
  """Calls of each program in one iteration at the config's stage sizes, every generation taken
  to its max_new_tokens (an upper figure: real generations stop earlier)."""
  out: dict = {}
  recipe = recipes.for_config(config)
  counts = {s.name: s.items for s in recipe.sampling_stages(config)}
  for stage in p.stages:
    items = counts.get(stage.name, 0)
    samples = items * stage.n
    rounds = samples / max(stage.rows, 1)                    # row generations, R at a time
    out[stage.name] = {
        "items": items, "samples": samples,
        "decode_steps": rounds * stage.max_new_tokens,
        # Every prompt is prefilled once: counted at the first fill's cost per prompt (refills
        # prefill 1/16 of the prompts at a time, at the same widest buckets or narrower).
        "prefills": items / max(stage.prompts, 1),
        "inserts": samples / max(1, stage.rows // 16),
    }
  tcfg = plan_lib._train_config(config)
  examples = recipe.train_examples(config)
  step = int(tcfg.batch_size) * int(tcfg.grad_accum_steps)
  out["train_steps"] = math.ceil(examples * int(tcfg.num_epochs) / step)
  if recipe.reference_pass:
    ref = int(tcfg.reference_batch_size or 2 * tcfg.batch_size)
    out["reference"] = math.ceil(examples / ref)
  return out


# ------------------------------------------------------------------------------------------------
# Measuring.

def _cost(compiled) -> tuple[float, float]:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  ca = ca or {}
  return float(ca.get("flops", 0.0)), float(ca.get("bytes accessed", 0.0))


def _analyze(compiled) -> hlo_bytes.Totals | None:
  """The compiled module's bytes by memory space (hlo_bytes.py); None where its HLO text cannot
  be read."""
  try:
    return hlo_bytes.analyze(compiled.as_text())
  except Exception as e:  # an HLO construct the parser does not know: XLA's figure stands in
    logging.warning("HBM bytes not counted for one program (%s: %s): its roofline and floor "
                    "check use XLA's bytes accessed (shown as '-' in GB HBM)",
                    type(e).__name__, str(e)[:200])
    return None


def _figures(compiled) -> tuple[float, float, float, float]:
  """(FLOPs, XLA's bytes accessed, HBM bytes, the analysis' total of XLA's bytes; NaN where not
  analysed)."""
  t = _analyze(compiled)
  return (*_cost(compiled), *((math.nan, math.nan) if t is None else (t.hbm, t.total)))


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  get = lambda k: int(getattr(m, k, 0) or 0) if m is not None else 0
  return dict(argument=get("argument_size_in_bytes"), output=get("output_size_in_bytes"),
              alias=get("alias_size_in_bytes"), temp=get("temp_size_in_bytes"),
              host=get("host_argument_size_in_bytes") + get("host_output_size_in_bytes")
              + get("host_temp_size_in_bytes"))


# The TPU compiler turns a large matmul whose operand is all-gathered (or whose result is
# reduce-scattered) over fsdp into a loop over the shards ("windowed einsum", a collective matmul),
# and XLA's cost counts a loop's body once: with it the Qwen2.5-1.5B train step's layers (fsdp=8)
# read 0.78x the model's FLOPs and the 70B SFT step's (fsdp=16) 0.61x; the one-layer copy alone
# held 13 such loops. The analysis copies compile without it (the same matmuls, not split), which
# gives 0.96x per layer there, as Llama-3-8B's fsdp=2 layout did with it. Memory is measured on
# the program as the run compiles it.
ANALYSIS_COMPILER_OPTIONS = {"xla_tpu_enable_windowed_einsum_for_all_gather": False,
                             "xla_tpu_enable_windowed_einsum_for_reduce_scatter": False}


def _analysis_copy(mc, layers: int | tuple):
  """An unscanned copy of `mc` for the cost analysis: `layers` is how many layers (the model's
  first ones), or the copy's own sequence of `layer_types` entries (a model whose layers differ:
  Gemma's sliding-window and global layers)."""
  if isinstance(layers, int):
    count, types = layers, None if mc.layer_types is None else mc.layer_types[:layers]
  else:
    count, types = len(layers), None if mc.layer_types is None else tuple(layers)
  return mc.replace(num_hidden_layers=count, layer_types=types, scan_layers=False)


def _cost_config(program: Program, mc):
  """The model config whose compile gives `program`'s cost. Attention in query blocks
  (`attention_chunk`) is a loop, whose body XLA's cost analysis counts once: a copy that attends
  all at once does the same arithmetic (the blocks' padding aside) and moves the same arrays."""
  if mc.attention_chunk and program.attends_many_queries:
    return mc.replace(attention_chunk=0)
  return mc


_OUT_OF_HBM = re.compile(r"memory required for HLO temporaries \((\d+(?:\.\d+)?)([KMGT])\)")


def _refused(program: Program, error: Exception, seconds: float) -> Measured:
  """The row of a program XLA would not compile. Out of HBM (the TPU compiler refuses a program
  whose temporaries exceed the chip): the temporaries it names, so the row shows what it needs."""
  text = str(error).strip()
  first = text.splitlines()[0] if text else type(error).__name__
  temp = 0
  found = _OUT_OF_HBM.search(text)
  if found:
    temp = int(float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024)
  return Measured(name=program.name, phase=program.phase, planned=int(program.planned),
                  resident=int(program.resident), argument=0, output=0, alias=0, temp=temp,
                  host=0, flops=0.0, bytes_accessed=0.0, loops=program.loops,
                  calls=program.calls, compile_seconds=seconds, info=dict(program.info),
                  error=first[:300])


def _release_host_memory() -> None:
  """Hands the heap pages the last compile freed back to the OS (glibc keeps them otherwise):
  a 70B check's programs each peak at several GiB of host memory, and without this the process
  grew past a 24 GiB machine's memory on the pages of programs already measured."""
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: nothing to hand back this way
    pass


def measure(program: Program, mc, *, log: Callable[[str], None] = lambda s: None) -> Measured:
  """Compiles `program` as the run does (memory), and its analysis copies where XLA's cost
  would count a loop once (module doc). A program XLA refuses (out of HBM, most often) becomes
  a row that says why, not an exception: the other programs are still measured."""
  import jax
  start = time.perf_counter()
  try:
    compiled = program.compile(mc)
  except jax.errors.JaxRuntimeError as e:  # XLA's refusal; a bug in the check still raises
    log(f"XLA refused {program.name}: {str(e).strip().splitlines()[0] if str(e).strip() else e}")
    return _refused(program, e, time.perf_counter() - start)
  memory = _memory(compiled)
  # Decode blocks: one decode step alone (`decode.decode_step`, the loop's body).
  # (FLOPs, XLA's bytes, HBM bytes, analysed bytes), each extrapolated the same way.
  cost_mc = _cost_config(program, mc)
  L = mc.num_hidden_layers
  if not program.needs_analysis:
    flops, bytes_, hbm, analysed = _figures(
        program.cost_compile(cost_mc) if program.cost_compile
        else compiled if cost_mc is mc else program.compile(cost_mc))
  else:
    # The copies' log-prob loss is not chunked either: its chunks are a loop (lax.map) over the
    # sequence, whose body XLA counts once (the output projection of 512 of a row's 6144 tokens).
    # One layer's cost is a two-layer copy's less a one-layer copy's, per kind of layer where
    # the model's layers differ (`layer_types`: the first layer, then one of that kind), and
    # each of layers 2..L is counted as its kind's.
    analyse = program.analysis_compile or program.compile
    kinds = mc.layer_types or (None,) * L
    one = _figures(analyse(_analysis_copy(cost_mc, kinds[:1])))
    two = {kind: _figures(analyse(_analysis_copy(cost_mc, (kinds[0], kind))))
           for kind in dict.fromkeys(kinds[1:])}
    if program.optimizer_compile is not None:
      # The update has no loop: compiled once for the real model, it is exact. Its copies' share
      # is in proportion to their parameters (elementwise work over every parameter).
      update = _figures(program.optimizer_compile(mc))
      share = lambda k: _analysis_copy(mc, k).num_params() / mc.num_params()
      u1, u2 = ([x * share(k) for x in update] for k in (1, 2))
      per = lambda kind, i: (two[kind][i] - u2[i]) - (one[i] - u1[i])  # a layer's microbatch work
      micro = lambda i: (one[i] - u1[i]) + sum(per(kind, i) for kind in kinds[1:])
      flops, bytes_, hbm, analysed = (update[i] + program.microbatches * micro(i)
                                      for i in range(4))
    else:
      flops, bytes_, hbm, analysed = (one[i] + sum(two[kind][i] - one[i] for kind in kinds[1:])
                                      for i in range(4))
  seconds = time.perf_counter() - start
  log(f"compiled {program.name} in {seconds:.0f} s")
  _release_host_memory()
  return Measured(name=program.name, phase=program.phase, planned=int(program.planned),
                  resident=int(program.resident), flops=flops, bytes_accessed=bytes_,
                  hbm_bytes=None if math.isnan(hbm) else hbm,
                  analysed_bytes=None if math.isnan(analysed) else analysed,
                  loops=program.loops, calls=program.calls, compile_seconds=seconds,
                  info=dict(program.info), **memory)


# ------------------------------------------------------------------------------------------------
# The report.

@dataclasses.dataclass
class Report:
  target: str
  chips: int
  hbm_bytes: int | None
  usable_bytes: int | None
  measured: list[Measured]
  plan: Any
  model_config: Any
  peak_flops: float | None = None
  bandwidth: float | None = None
  compile_seconds: float = 0.0
  decode_rules: tuple = ()
  skipped: tuple[str, ...] = ()   # programs of the iteration not compiled (`run(only=...)`)

  # -- per program ---------------------------------------------------------------------------
  def fits(self, m: Measured) -> bool:
    if m.error:
      return False
    return self.usable_bytes is None or m.compiled + m.resident <= self.usable_bytes

  def roofline(self, flops: float, bytes_accessed: float) -> float | None:
    if not self.peak_flops or not self.bandwidth:
      return None
    return targets_lib.roofline_seconds(flops, bytes_accessed, self.peak_flops, self.bandwidth)

  @property
  def all_fit(self) -> bool:
    return all(self.fits(m) for m in self.measured)

  # -- per phase -----------------------------------------------------------------------------
  def phase_peaks(self) -> dict[str, dict]:
    """Per planner phase: XLA's peak (program + what stays alive outside it) and the planner's."""
    out = {}
    planned = self.plan.phases
    for m in self.measured:
      total = m.compiled + m.resident  # a refused program: the temporaries XLA named, if any
      row = out.setdefault(m.phase, {"compiled_bytes": 0, "program": "",
                                     "planned_bytes": int(planned.get(m.phase, 0))})
      if total > row["compiled_bytes"]:
        row.update(compiled_bytes=total, program=m.name)
    for row in out.values():
      row["ratio"] = row["planned_bytes"] / row["compiled_bytes"] if row["compiled_bytes"] else None
    return out

  # -- static performance checks ---------------------------------------------------------------
  def decode_checks(self) -> list[dict]:
    """Bytes a decode step moves through each chip's HBM (`bytes_per_step`: HBM bytes, XLA's
    where not analysed) against its floor: the chip's share of the weights the sampler reads
    (compute dtype, decode layout) plus the KV cache rows it attends over. XLA's bytes accessed
    (`xla_bytes_per_step`, `xla_ratio`) count weights staged in on-chip memory several times
    (module doc): reported, not checked. `fully_sharded_weights`: that share were the weights
    sharded over every chip (fsdp too)."""
    mc, p = self.model_config, self.plan
    dt = plan_lib._dtype_bytes(mc.dtype)
    fully_sharded = p.params * dt // plan_lib._dtype_bytes(mc.param_dtype)
    weights = p.decode_params or fully_sharded
    out = []
    for m in self.measured:
      if m.loops != "steps" or m.error:
        continue
      info = m.info
      cache = plan_lib.kv_bytes(mc, p.mesh, self.decode_rules, info["rows"], info["ring"])
      floor = weights + cache
      out.append(dict(program=m.name, rows=info["rows"], bytes_per_step=m.memory_bytes,
                      hbm_bytes_per_step=m.hbm_bytes, xla_bytes_per_step=m.bytes_accessed,
                      weights=weights, fully_sharded_weights=fully_sharded, kv_cache=cache,
                      floor=floor, ratio=m.memory_bytes / floor,
                      xla_ratio=m.bytes_accessed / floor, finding=m.memory_bytes > 1.3 * floor))
    return out

  def train_checks(self) -> list[dict]:
    """XLA's training FLOPs per chip against the model FLOPs of its rows for its remat policy."""
    mc = self.model_config
    out = []
    for m in self.measured:
      if m.phase != "training" or m.error:
        continue
      info = m.info
      rows = info["rows_per_microbatch"] * info["microbatches"]
      flops = model_flops(mc, rows=rows, length=info["row_length"],
                          response_length=info["row_length"], backward=True,
                          remat=info["remat"]) / self.chips
      out.append(dict(program=m.name, xla_flops=m.flops, model_flops=flops,
                      ratio=m.flops / flops, finding=m.flops > 1.15 * flops))
    return out

  def iteration_estimate(self) -> list[tuple[str, float]] | None:
    """(part, roofline seconds) of one iteration, from the calls each program makes."""
    if self.roofline(1.0, 1.0) is None or any(m.error for m in self.measured) or self.skipped:
      return None  # a refused program, or one not compiled, has no cost to add
    parts: dict[str, float] = {}
    for m in self.measured:
      if not m.calls or m.info.get("check_only"):
        continue
      key = m.info.get("stage", m.name)
      parts[key] = parts.get(key, 0.0) + m.calls * self.roofline(m.flops, m.memory_bytes)
    return list(parts.items())

  # -- presentation ----------------------------------------------------------------------------
  def table(self) -> str:
    g = lambda b: f"{b / GiB:7.2f}"
    mc = self.model_config
    mesh = " ".join(f"{k}={v}" for k, v in self.plan.mesh.items())
    hbm = ("HBM unknown" if self.hbm_bytes is None else
           f"{self.hbm_bytes / GiB:.0f} GiB HBM per chip, {self.usable_bytes / GiB:.1f} usable")
    lines = [f"compile check: {self.plan.model} ({self.plan.num_params / 1e9:.2f}B params) for "
             f"{self.target}: {self.chips} chips, mesh {mesh}, {hbm}",
             f"  params {mc.param_dtype}, compute {mc.dtype}, remat {mc.remat_policy}, "
             f"scan_layers {mc.scan_layers}; compiled in {self.compile_seconds:.0f} s",
             "  per chip; XLA = arguments + outputs - donated + temporaries; +live = arrays the run "
             "keeps outside the program; FLOPs / bytes per call (decode blocks: per step)",
             "  GB read = XLA's bytes accessed (counts on-chip copies of weights again); GB HBM = "
             "reads + writes of HBM arrays (compiled HLO): the roofline's and the decode floor "
             "check's bytes",
             f"{'program':26s}{'XLA GiB':>8s}{'+live':>8s}{'plan GiB':>9s}{'plan/XLA':>9s}"
             f"{'fits':>6s}{'TFLOP':>9s}{'GB read':>9s}{'GB HBM':>9s}{'roofline':>11s}"]
    for m in self.measured:
      if m.error:
        needs = f"{m.compiled / GiB:.2f} GiB of temporaries, " if m.compiled else ""
        lines.append(f"{m.name:26s}XLA refused it ({needs}plan {m.planned / GiB:.2f} GiB): {m.error}")
        continue
      r = self.roofline(m.flops, m.memory_bytes)
      rt = "-" if r is None else (f"{r * 1e3:8.2f} ms" if r < 10 else f"{r:8.1f} s ")
      ratio = m.planned / m.compiled if m.compiled else float("nan")
      lines.append(f"{m.name:26s}{g(m.compiled)} {g(m.resident)}{g(m.planned)}  {ratio:7.2f}"
                   f"{'yes' if self.fits(m) else 'NO':>6s}{m.flops / 1e12:9.3f}"
                   f"{m.bytes_accessed / 1e9:9.2f}"
                   f"{'-' if m.hbm_bytes is None else f'{m.hbm_bytes / 1e9:.2f}':>9s}{rt:>11s}")
    shares = [m.analysed_bytes / m.bytes_accessed for m in self.measured
              if m.analysed_bytes is not None and m.bytes_accessed]
    if shares:
      lines.append(f"  the HBM analysis reproduces {min(shares):.2f}-{max(shares):.2f} of XLA's "
                   "bytes accessed (what it does not reproduce is in no memory space: HBM bytes may be "
                   "low by up to that share)")
    lines.append("phases (the planner's peak against XLA's):")
    for name, row in self.phase_peaks().items():
      lines.append(f"  {name:10s} XLA {row['compiled_bytes'] / GiB:6.2f} GiB ({row['program']}), "
                   f"planner {row['planned_bytes'] / GiB:6.2f} GiB: {row['ratio']:.2f}x")
    lines.append("decode steps: HBM bytes per chip per step against the floor (weights in "
                 f"{mc.dtype} + the KV cache read); XLA's bytes accessed beside it:")
    for c in self.decode_checks():
      what = "HBM" if c["hbm_bytes_per_step"] is not None else "XLA"
      lines.append(f"  {c['program']:28s} {c['rows']:4d} rows: {what} "
                   f"{c['bytes_per_step'] / 1e9:6.2f} GB vs floor {c['floor'] / 1e9:6.2f} GB "
                   f"({c['weights'] / 1e9:.2f} weights + {c['kv_cache'] / 1e9:.2f} cache) = "
                   f"{c['ratio']:.2f}x (XLA's {c['xla_bytes_per_step'] / 1e9:.2f} GB = "
                   f"{c['xla_ratio']:.2f}x){'  FINDING (> 1.3x)' if c['finding'] else ''}")
    for c in self.train_checks():
      lines.append(f"training FLOPs per chip: XLA {c['xla_flops'] / 1e12:.1f} T vs model "
                   f"{c['model_flops'] / 1e12:.1f} T = {c['ratio']:.2f}x"
                   f"{'  FINDING (> 1.15x)' if c['finding'] else ''}")
    estimate = self.iteration_estimate()
    if estimate:
      total = sum(s for _, s in estimate)
      lines.append("one iteration, roofline bound on HBM bytes (every generation at "
                   "max_new_tokens; not a measurement): " + ", ".join(f"{k} {s / 3600:.2f} h" for k, s in estimate)
                   + f"; total {total / 3600:.2f} h")
    if self.skipped:
      lines.append(f"not compiled (--compile_programs): {', '.join(self.skipped)}")
    bad = [m.name + (" (XLA refused it)" if m.error else "")
           for m in self.measured if not self.fits(m)]
    every = "every compiled program fits" if self.skipped else "every program fits"
    lines.append("verdict: " + (every if not bad else "DOES NOT FIT: " + ", ".join(bad)))
    return "\n".join(lines)

  def to_json(self) -> dict:
    programs = {}
    for m in self.measured:
      programs[m.name] = dict(
          phase=m.phase, planned_bytes=m.planned, compiled_bytes=m.compiled,
          resident_bytes=m.resident, argument_bytes=m.argument, output_bytes=m.output,
          alias_bytes=m.alias, temp_bytes=m.temp, host_bytes=m.host, fits=self.fits(m),
          flops=m.flops, bytes_accessed=m.bytes_accessed, hbm_bytes=m.hbm_bytes,
          analysed_bytes=m.analysed_bytes,
          roofline_seconds=self.roofline(m.flops, m.memory_bytes),
          per=("decode step" if m.loops == "steps" else "call"), loops=m.loops,
          calls_per_iteration=m.calls, error=m.error or None,
          compile_seconds=m.compile_seconds, shapes=dict(m.info))
    estimate = self.iteration_estimate()
    return {"target": self.target, "chips": self.chips, "hbm_bytes": self.hbm_bytes,
            "usable_bytes": self.usable_bytes, "model": self.plan.model,
            "mesh": dict(self.plan.mesh), "phases": programs,
            "phase_peaks": self.phase_peaks(), "decode_checks": self.decode_checks(),
            "train_checks": self.train_checks(),
            "iteration_roofline_seconds": None if estimate is None else dict(estimate),
            "fits": self.all_fit, "not_compiled": list(self.skipped)}


def model_flops(mc, *, rows: int, length: int, response_length: int, backward: bool,
                remat: str) -> float:
  """Matmul FLOPs of `rows` packed rows of `length` tokens through the model: the layers' weights
  (2 per weight per token), attention scores and values over the full [T, T] the model computes
  (masked, not skipped), and the output projection at `response_length` tokens. With `backward`:
  x3 (backward = 2 forwards), plus one forward of the layers again under remat "full"."""
  D, F, L, H = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers, mc.head_dim
  N, K, V = mc.num_attention_heads, mc.num_key_value_heads, mc.vocab_size
  layer_weights = D * (N + 2 * K) * H + N * H * D + 3 * D * F
  per_row_layers = L * (2 * layer_weights * length + 4 * N * H * length * length)
  head = 2 * D * V * response_length
  if not backward:
    return rows * (per_row_layers + head)
  recompute = {"full": 1.0, "none": 0.0}.get(remat, 0.5)
  return rows * (per_row_layers * (3 + recompute) + head * 3)


def select(todo: Sequence[Program], patterns: Sequence[str]) -> list[Program]:
  """The programs whose names match one of `patterns` (fnmatch: "judge/*", "train"), in their
  order; a pattern that matches none is an error naming the programs there are."""
  names = [t.name for t in todo]
  unmatched = [pat for pat in patterns if not fnmatch.filter(names, pat)]
  if unmatched:
    raise CompileCheckError(f"--compile_programs: {', '.join(unmatched)} matches no program of "
                            f"this config's iteration; its programs: {', '.join(names)}")
  return [t for t in todo if any(fnmatch.fnmatchcase(t.name, pat) for pat in patterns)]


def target_devices(config, target_name: str):
  """(the target or None for "cpu", the devices to compile for): a TPU slice's topology devices,
  or the CPU devices here that `config`'s mesh takes."""
  import jax
  if target_name == "cpu":
    shape = dict(config.mesh.shape)
    fixed = -1 not in shape.values()
    return None, (jax.devices()[:math.prod(shape.values())] if fixed else jax.devices())
  target = targets_lib.parse(target_name)
  return target, topology_devices(target)


def run(config, target_name: str, *, log: Callable[[str], None] = print,
        threads: int | None = None, only: Sequence[str] = ()) -> Report:
  """Compiles every program of `config`'s iteration for `target_name` ("v4-32", ..., or "cpu")
  and returns the report (the caller prints it and exits 1 when something does not fit).

  `threads` programs compile at once (default: one per CPU core). XLA compiles a program on one
  core with the GIL released, so on a 2-core machine two threads nearly halve the wall time; the
  figures do not depend on it. The programs with analysis copies (the longest) start first.
  `only`: fnmatch patterns of the programs to compile (`select`); the others are listed as not
  compiled, and the report has no iteration estimate (a machine with too little host memory for
  one process runs the check in groups: `bench/tpu_compile.py` merges their JSON)."""
  from meta_rewarding import sharding
  start = time.perf_counter()
  target, devices = target_devices(config, target_name)
  hbm = target.hbm_bytes if target else None
  mesh = sharding.make_mesh(dict(config.mesh.shape), devices)
  p = plan_lib.plan(config, len(devices), device_memory=hbm)
  mc, _ = plan_lib.model_config_from(config)
  every = programs(config, mesh, plan=p)
  todo = select(every, only) if only else every
  skipped = tuple(t.name for t in every if t not in todo)
  workers = max(1, min(len(todo), threads or os.cpu_count() or 1))
  longest_first = sorted(range(len(todo)), key=lambda i: not todo[i].needs_analysis)
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="compile") as pool:
    futures = {i: pool.submit(measure, todo[i], mc, log=log) for i in longest_first}
    measured = [futures[i].result() for i in range(len(todo))]
  g = target.generation if target else None
  return Report(target=target.name if target else "cpu", chips=len(devices), hbm_bytes=hbm,
                usable_bytes=None if hbm is None else int(hbm * p.usable_fraction),
                measured=measured, plan=p, model_config=mc,
                peak_flops=g.peak_bf16_flops if g else None,
                bandwidth=g.hbm_bandwidth if g else None,
                compile_seconds=time.perf_counter() - start,
                decode_rules=config_rules.rules_for(config)[1], skipped=skipped)


def report_from_json(config, data: Mapping[str, Any]) -> Report:
  """The `Report` a saved `--output` file holds, for `config` (the plan is recomputed from it):
  print a check again without compiling."""
  p = plan_lib.plan(config, int(data["chips"]), device_memory=data.get("hbm_bytes"))
  mc, _ = plan_lib.model_config_from(config)
  measured = []
  for name, row in data["phases"].items():
    measured.append(Measured(
        name=name, phase=row["phase"], planned=int(row["planned_bytes"]),
        resident=int(row["resident_bytes"]), argument=int(row["argument_bytes"]),
        output=int(row["output_bytes"]), alias=int(row["alias_bytes"]), temp=int(row["temp_bytes"]),
        host=int(row["host_bytes"]), flops=float(row["flops"]),
        bytes_accessed=float(row["bytes_accessed"]),
        hbm_bytes=None if row.get("hbm_bytes") is None else float(row["hbm_bytes"]),
        analysed_bytes=(None if row.get("analysed_bytes") is None
                        else float(row["analysed_bytes"])),
        loops=row.get("loops", "steps" if row.get("per") == "decode step" else ""),
        calls=row["calls_per_iteration"],
        compile_seconds=row["compile_seconds"], info=dict(row["shapes"]),
        error=row.get("error") or ""))
  target = None if data["target"] == "cpu" else targets_lib.parse(data["target"])
  g = target.generation if target else None
  return Report(target=data["target"], chips=int(data["chips"]), hbm_bytes=data.get("hbm_bytes"),
                usable_bytes=data.get("usable_bytes"), measured=measured, plan=p, model_config=mc,
                peak_flops=g.peak_bf16_flops if g else None,
                bandwidth=g.hbm_bandwidth if g else None,
                compile_seconds=sum(m.compile_seconds for m in measured),
                decode_rules=config_rules.rules_for(config)[1],
                skipped=tuple(data.get("not_compiled", ())))


def merge_reports(reports: Sequence[Report]) -> Report:
  """One report from checks of the same config and target that compiled different programs
  (`run(only=...)`, one process per group): the programs in the order of the reports given, each
  from the first report that compiled it; a program none compiled stays listed as not compiled."""
  first = reports[0]
  if any((r.target, r.chips) != (first.target, first.chips) for r in reports):
    raise ValueError("merge_reports: the reports are for different targets or slices")
  measured: dict[str, Measured] = {}
  for r in reports:
    for m in r.measured:
      measured.setdefault(m.name, m)
  skipped = dict.fromkeys(n for r in reports for n in r.skipped if n not in measured)
  return dataclasses.replace(first, measured=list(measured.values()), skipped=tuple(skipped),
                             compile_seconds=sum(r.compile_seconds for r in reports))
