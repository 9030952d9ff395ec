"""Device mesh, logical-axis rules and sharded parameter creation.

The model names logical axes only ("embed", "q_heads", "batch", ...); which mesh axes they map to is
configuration (`config.mesh.shape`, `config.mesh.rules`; decoding adds the KV cache's). The mesh
has three axes:
  data    pure data parallelism (parameters replicated);
  fsdp    data parallelism with parameters (and optimizer state) sharded along "embed";
  tensor  Megatron-style tensor parallelism over heads / mlp / vocab.
A shape entry of -1 takes all remaining devices. The multi-host helpers (start-up, barriers,
host-side collectives) are in distributed.py.

Usage (`rules`: the config's, `meta_rewarding.config.rules.rules_for(config)`; this module takes
rules as arguments and never reads a config):
  mesh = make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  with activate(mesh, train_rules):
    params = init_sharded_params(config, rng, mesh, train_rules)  # never whole on one device
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from meta_rewarding.choices import MESH_AXES
from meta_rewarding.errors import UserError
from meta_rewarding.model import llama
from meta_rewarding.model.config import LlamaConfig

Rules = Sequence[tuple[str, Any]]


class MeshError(UserError, ValueError):
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
    grid = mesh_utils.create_device_mesh(dims, devices=devices, allow_split_physical_axes=True)
  except Exception:  # CPU / unusual topologies: plain order is as good as any.
    grid = np.asarray(devices).reshape(dims)
  return Mesh(grid, MESH_AXES)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules):
  """Mesh + logical rules in scope, so the model's logical constraints resolve while tracing."""
  set_mesh = getattr(jax, "set_mesh", None) or getattr(jax.sharding, "use_mesh", None)
  with (set_mesh(mesh) if set_mesh else mesh):
    with nn.logical_axis_rules(rules):
      yield


def logical_sharding(mesh: Mesh, rules: Rules, logical_axes) -> Any:
  """Pytree of logical PartitionSpecs -> pytree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_axes, mesh, rules)


def param_shardings(config: LlamaConfig, mesh: Mesh, rules: Rules):
  """NamedSharding for every parameter of `config`'s Llama (same tree as the params)."""
  return logical_sharding(mesh, rules, llama.param_logical_axes(config))


def cache_shardings(config: LlamaConfig, mesh: Mesh, rules: Rules):
  """NamedShardings of a KV cache, in `llama.init_cache(config, ...)`'s structure."""
  return logical_sharding(mesh, rules, llama.cache_logical_axes(config))


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [B, ...] batch: rows over the batch mesh axes, the rest replicated."""
  return logical_sharding(mesh, rules, PartitionSpec("batch", *([None] * (ndim - 1))))


def init_sharded_params(config: LlamaConfig, rng: jax.Array, mesh: Mesh, rules: Rules):
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


def check_divisibility(config: LlamaConfig, mesh: Mesh, rules: Rules):
  """Raises MeshError naming the parameter and dimension that a mesh axis does not divide."""
  axes = llama.param_logical_axes(config)
  shapes = abstract_params(config)
  rule_map = dict(rules)
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
