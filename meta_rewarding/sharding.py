"""Device mesh, logical-axis rules, sharded parameter creation and multi-host set-up.

The model names logical axes only ("embed", "q_heads", "batch", ...); which mesh axes they map to is
configuration (`config.mesh.shape`, `config.mesh.train_rules`, `config.mesh.decode_rules`). The mesh
has three axes:
  data    pure data parallelism (parameters replicated);
  fsdp    data parallelism with parameters (and optimizer state) sharded along "embed";
  tensor  Megatron-style tensor parallelism over heads / mlp / vocab.
A shape entry of -1 takes all remaining devices.

Usage:
  mesh = make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  with activate(mesh, TRAIN_RULES):
    params = init_sharded_params(config, rng, mesh, TRAIN_RULES)  # never whole on one device
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]

# Training: batch over data×fsdp, parameters sharded along embed (fsdp) and heads/mlp/vocab (tensor).
TRAIN_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_q_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)
# Decoding keeps the same parameter layout (no resharding between stages); the KV cache follows
# batch and kv_heads like the activations do.
DECODE_RULES: Rules = TRAIN_RULES + (("cache_length", None),)


class MeshError(ValueError):
  """The configured mesh does not fit the available devices."""


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fills the (at most one) -1 entry; raises `MeshError` if the product is not `num_devices`."""
  unknown = [a for a in shape if a not in MESH_AXES]
  if unknown:
    raise MeshError(f"mesh axes {unknown} are not among {MESH_AXES}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  fill = [a for a, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise MeshError(f"mesh shape {dict(shape)}: only one axis may be -1, got {fill}")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise MeshError(f"mesh shape {dict(shape)}: sizes must be positive or -1")
  known = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % known:
      raise MeshError(f"mesh shape {dict(shape)}: {num_devices} devices are not divisible by "
                      f"{known}; change mesh.shape so the fixed axes divide the device count")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise MeshError(f"mesh shape {sizes} needs {math.prod(sizes.values())} devices, but "
                    f"{num_devices} are available; set one axis to -1 or change mesh.shape")
  return sizes


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` with axes (data, fsdp, tensor) over `devices` (default: all global devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(shape, len(devices))
  dims = [sizes[a] for a in MESH_AXES]
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(dims, devices=devices, allow_split_physical_axes=True)
  except Exception:  # CPU / unusual topologies: plain order is as good as any.
    grid = np.asarray(devices).reshape(dims)
  return Mesh(grid, MESH_AXES)


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
  """Normalises config rules (lists from ml_collections) into flax's tuple-of-pairs form."""
  out = []
  for rule in rules:
    name, axes = rule
    if isinstance(axes, list):
      axes = tuple(axes)
    out.append((name, axes))
  return tuple(out)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules):
  """Mesh + logical rules in scope, so the model's logical constraints resolve while tracing."""
  set_mesh = getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh", None)
  with (set_mesh(mesh) if set_mesh else mesh):
    with nn.logical_axis_rules(rules_from_config(rules)):
      yield


def logical_sharding(mesh: Mesh, rules: Rules, logical_axes) -> Any:
  """Pytree of logical PartitionSpecs -> pytree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_axes, mesh, rules_from_config(rules))


def param_shardings(config: LlamaConfig, mesh: Mesh, rules: Rules = TRAIN_RULES):
  """NamedSharding for every parameter of `config`'s Llama (same tree as the params)."""
  return logical_sharding(mesh, rules, llama.param_logical_axes(config))


def cache_shardings(config: LlamaConfig, mesh: Mesh, rules: Rules = DECODE_RULES):
  """NamedShardings of a KV cache, in `llama.init_cache(config, ...)`'s structure."""
  return logical_sharding(mesh, rules, llama.cache_logical_axes(config))


def batch_sharding(mesh: Mesh, rules: Rules = TRAIN_RULES, ndim: int = 2) -> NamedSharding:
  """Sharding of a [B, ...] batch: rows over the batch mesh axes, the rest replicated."""
  return logical_sharding(mesh, rules, PartitionSpec("batch", *([None] * (ndim - 1))))


def init_sharded_params(config: LlamaConfig, rng: jax.Array, mesh: Mesh, rules: Rules = TRAIN_RULES):
  """Random params created directly in their shards (jit with out_shardings; never whole)."""
  shardings = param_shardings(config, mesh, rules)
  with activate(mesh, rules):
    return jax.jit(lambda r: llama.init_params(config, r), out_shardings=shardings)(rng)


def abstract_params(config: LlamaConfig):
  """ShapeDtypeStructs of the params, without allocating anything."""
  return jax.eval_shape(lambda: llama.init_params(config, jax.random.key(0)))


def shard_params(params, shardings):
  """Moves existing params into `shardings` (a pytree matching params)."""
  return jax.tree.map(jax.device_put, params, shardings)


def check_divisibility(config: LlamaConfig, mesh: Mesh, rules: Rules = TRAIN_RULES):
  """Raises MeshError naming the parameter and dimension that a mesh axis does not divide."""
  axes = llama.param_logical_axes(config)
  shapes = abstract_params(config)
  rule_map = dict(rules_from_config(rules))
  problems = []
  for (path, spec), shape in zip(jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, PartitionSpec)), jax.tree.leaves(shapes)):
    for dim, name in zip(shape.shape, spec):
      mesh_axes = rule_map.get(name)
      if mesh_axes is None:
        continue
      mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
      size = math.prod(mesh.shape[a] for a in mesh_axes)
      if dim % size:
        problems.append(f"{jax.tree_util.keystr(path)} dim '{name}'={dim} over {mesh_axes} (size {size})")
  if problems:
    raise MeshError("mesh does not divide the model: " + "; ".join(problems[:4]))


# ------------------------------------------------------------------------------------------------
# Multi-host.

def maybe_initialize_distributed(enabled: bool, coordinator_address: str | None = None,
                                 num_processes: int | None = None, process_id: int | None = None):
  """Calls `jax.distributed.initialize` once when enabled.

  TPU pods (and SLURM / Open MPI jobs) discover the rest themselves. Elsewhere pass the coordinator
  explicitly or set the environment: JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. On the CPU backend the cross-process collectives use gloo.
  """
  if not enabled or getattr(maybe_initialize_distributed, "_done", False):
    return
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  kwargs = {}
  if coordinator_address:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (jax 0.10's default)
  jax.distributed.initialize(**kwargs)
  maybe_initialize_distributed._done = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  return jax.process_index() == 0


def sync(name: str):
  """A barrier across processes (no-op on one process): e.g. after process 0 wrote a file."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def main_process_decides(value: bool) -> bool:
  """Process 0's `value` on every process (e.g. whether a file exists), so all take the same branch."""
  if jax.process_count() == 1:
    return bool(value)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))


def allgather_objects(obj) -> list:
  """Every process's JSON-serialisable `obj`, in process order, on every process."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils
  data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths)]


def host_local_to_global(batch, mesh: Mesh, spec: PartitionSpec = PartitionSpec(("data", "fsdp"))):
  """Assembles each host's local rows into global arrays (identity on one host)."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec)), batch)
  from jax.experimental import multihost_utils
  return multihost_utils.host_local_array_to_global_array(batch, mesh, spec)


def process_slice(num_items: int) -> slice:
  """The contiguous slice of `num_items` that this process handles."""
  per = -(-num_items // jax.process_count())
  start = min(jax.process_index() * per, num_items)
  return slice(start, min(start + per, num_items))
