"""Checkpoint exchange with Hugging Face (safetensors only) and the orbax train-state manager.

`load_hf` streams a HF checkpoint directory (any family of `model/config.py`) tensor by tensor: each tensor is read from its file,
converted to this project's layout, and placed straight into its sharding before the next is read,
so host memory stays near the largest single tensor (for `scan_layers`, one stacked [L, ...] tensor).
`save_hf` writes safetensors (split into shards above `max_shard_bytes`, with an index) plus
`config.json`, into a temporary directory renamed into place when complete: a crash never leaves a
half-written checkpoint behind. Pickle is never read or written.

Remote checkpoints (gs://, s3://: see `artifacts.is_remote`): `load_hf` first copies the checkpoint's
config, safetensors and index into a local cache (`artifacts.localize`: $META_REWARDING_CACHE_DIR or
<tempdir>/meta_rewarding_cache, one directory per remote path, reused while the remote files' sizes
and modification times are unchanged) and loads that copy; `read_hf_config` reads config.json
directly. `save_hf` writes into a local temporary directory as for a local path, then uploads every
file with config.json last: an object store has no atomic directory rename, so config.json present
means the upload is complete (and the loader refuses a directory without it).

Layout mapping (HF `nn.Linear` weights are [out, in]):
  embed_tokens [V,D] -> embed [V,D]          q_proj [N·H,D] -> attn/q [D,N,H]
  k_proj/v_proj [K·H,D] -> attn/k,v [D,K,H]   o_proj [D,N·H] -> attn/o [N,H,D]
  gate/up_proj [F,D] -> mlp/gate,up [D,F]    down_proj [D,F] -> mlp/down [F,D]
  *_layernorm, norm [D] -> */scale [D]       lm_head [V,D] -> lm_head [D,V]
HF stores q/k with the rotate-half RoPE layout that `llama.apply_rope` uses, so no permutation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.experimental import multihost_utils

from meta_rewarding import artifacts, model_files
from meta_rewarding.errors import UserError
from meta_rewarding.model.config import LlamaConfig, UnsupportedConfigError


class CheckpointError(UserError, ValueError):
  """A checkpoint that is missing, partial or does not match the model."""


_ST_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


# ------------------------------------------------------------------------------------------------
# safetensors, read and written tensor by tensor.

class _SafetensorsReader:
  """Index of one or more safetensors files; `read(name)` loads exactly one tensor from disk."""

  def __init__(self, directory: str):
    self.directory = directory
    index_path = os.path.join(directory, "model.safetensors.index.json")
    single_path = os.path.join(directory, "model.safetensors")
    if os.path.exists(index_path):
      try:
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index ({e})") from e
      files = sorted(set(weight_map.values()))
    elif os.path.exists(single_path):
      files = ["model.safetensors"]
    else:
      found = sorted(os.listdir(directory))
      pickles = [f for f in found if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
      hint = (f" (found {pickles}: pickle checkpoints are not loaded; convert them to safetensors)"
              if pickles else "")
      raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json{hint}")
    self.entries: dict[str, tuple[str, str, tuple[int, ...], int, int]] = {}
    for fname in files:
      path = os.path.join(directory, fname)
      if not os.path.exists(path):
        raise CheckpointError(f"{directory}: the index names {fname}, which is missing (partial download?)")
      size = os.path.getsize(path)
      with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
          raise CheckpointError(f"{path}: truncated safetensors file")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
          raise CheckpointError(f"{path}: header length {header_len} exceeds the file size")
        try:
          header = json.loads(f.read(header_len))
        except json.JSONDecodeError as e:
          raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from e
      base = 8 + header_len
      for name, meta in header.items():
        if name == "__metadata__":
          continue
        start, end = meta["data_offsets"]
        if base + end > size:
          raise CheckpointError(f"{path}: tensor {name} extends past the end of the file (truncated?)")
        self.entries[name] = (path, meta["dtype"], tuple(meta["shape"]), base + start, base + end)

  def __contains__(self, name: str) -> bool:
    return name in self.entries

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name][2]

  def read(self, name: str) -> np.ndarray:
    path, dtype, shape, start, end = self.entries[name]
    if dtype not in _ST_DTYPES:
      raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {dtype}")
    out = np.empty(shape, _ST_DTYPES[dtype])
    with open(path, "rb") as f:
      f.seek(start)
      if f.readinto(memoryview(out.reshape(-1).view(np.uint8))) != end - start:
        raise CheckpointError(f"{path}: tensor {name} is truncated")
    return out


class _HashingWriter:
  """A binary file that also hashes what is written through it: a model's sha256 is computed while
  its bytes stream out (reading an 8B checkpoint back from gs:// to hash it would cost minutes)."""

  def __init__(self, f):
    self.f = f
    self.sha256 = hashlib.sha256()
    self.bytes = 0

  def write(self, data) -> int:
    self.sha256.update(data)
    self.bytes += memoryview(data).nbytes
    return self.f.write(data)

  def digest(self) -> dict:
    return {"bytes": self.bytes, "sha256": self.sha256.hexdigest()}


def write_safetensors(path: str, tensors: list[tuple[str, tuple[int, ...], np.dtype]],
                      produce: Callable[[str], np.ndarray], metadata: dict[str, str] | None = None
                      ) -> dict:
  """Writes a safetensors file, asking `produce(name)` for one tensor at a time; returns the file's
  {"bytes", "sha256"}."""
  header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
  offset = 0
  for name, shape, dtype in tensors:
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header[name] = {"dtype": _ST_NAMES[np.dtype(dtype)], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned
  with open(path, "wb") as raw:
    f = _HashingWriter(raw)
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, shape, dtype in tensors:
      array = np.ascontiguousarray(produce(name), dtype=dtype)
      if array.shape != tuple(shape):
        raise CheckpointError(f"tensor {name}: produced shape {array.shape}, declared {shape}")
      f.write(memoryview(array.reshape(-1).view(np.uint8)))
  return f.digest()


# ------------------------------------------------------------------------------------------------
# Name and layout mapping.

def _layer_map(c: LlamaConfig) -> dict[tuple[str, ...], tuple[str, tuple[int, ...], Callable, Callable]]:
  """Per-layer param path -> (HF suffix, HF shape, hf->ours, ours->hf) converters (numpy,
  view-friendly), for the config's family: the same parameters under each family's HF names."""
  D, F, N, K, H = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
  lin = (lambda w: w.T, lambda p: p.T)
  ident = (lambda w: w, lambda p: p)
  out = {
      ("attn", "q"): ("self_attn.q_proj.weight", (N * H, D), lambda w: w.T.reshape(D, N, H),
                      lambda p: p.reshape(D, N * H).T),
      ("attn", "k"): ("self_attn.k_proj.weight", (K * H, D), lambda w: w.T.reshape(D, K, H),
                      lambda p: p.reshape(D, K * H).T),
      ("attn", "v"): ("self_attn.v_proj.weight", (K * H, D), lambda w: w.T.reshape(D, K, H),
                      lambda p: p.reshape(D, K * H).T),
      ("attn", "o"): ("self_attn.o_proj.weight", (D, N * H), lambda w: w.T.reshape(N, H, D),
                      lambda p: p.reshape(N * H, D).T),
      ("mlp", "gate"): ("mlp.gate_proj.weight", (F, D), *lin),
      ("mlp", "up"): ("mlp.up_proj.weight", (F, D), *lin),
      ("mlp", "down"): ("mlp.down_proj.weight", (D, F), *lin),
      ("attn_norm", "scale"): ("input_layernorm.weight", (D,), *ident),
  }
  if c.attention_bias:
    for name, heads in (("q", N), ("k", K), ("v", K)):
      out[("attn", f"{name}_bias")] = (f"self_attn.{name}_proj.bias", (heads * H,),
                                       lambda w, n=heads: w.reshape(n, H), lambda p: p.reshape(-1))
  if c.attention_out_bias:
    out[("attn", "o_bias")] = ("self_attn.o_proj.bias", (D,), *ident)
  if c.qk_norm:
    out[("attn", "q_norm", "scale")] = ("self_attn.q_norm.weight", (H,), *ident)
    out[("attn", "k_norm", "scale")] = ("self_attn.k_norm.weight", (H,), *ident)
  if c.sandwich_norms:  # Gemma: four norms a layer, named after where they sit
    out[("attn_post_norm", "scale")] = ("post_attention_layernorm.weight", (D,), *ident)
    out[("mlp_norm", "scale")] = ("pre_feedforward_layernorm.weight", (D,), *ident)
    out[("mlp_post_norm", "scale")] = ("post_feedforward_layernorm.weight", (D,), *ident)
  else:
    out[("mlp_norm", "scale")] = ("post_attention_layernorm.weight", (D,), *ident)
  return out


def _param_specs(c: LlamaConfig) -> Iterator[tuple[tuple[str, ...], list[str], tuple[int, ...],
                                                   Callable, Callable]]:
  """Yields (our param path, HF names it is built from, each HF tensor's shape, hf->ours, ours->hf)."""
  ident = lambda x: x
  D, V = c.hidden_size, c.vocab_size
  yield ("embed",), ["model.embed_tokens.weight"], (V, D), ident, ident
  yield ("final_norm", "scale"), ["model.norm.weight"], (D,), ident, ident
  if not c.tie_word_embeddings:
    yield ("lm_head",), ["lm_head.weight"], (V, D), lambda w: w.T, lambda p: p.T
  for sub, (suffix, shape, to_ours, to_hf) in _layer_map(c).items():
    names = [f"model.layers.{i}.{suffix}" for i in range(c.num_hidden_layers)]
    if c.scan_layers:
      yield ("layers", "layer") + sub, names, shape, to_ours, to_hf
    else:
      for i, name in enumerate(names):
        yield (f"layers_{i}",) + sub, [name], shape, to_ours, to_hf


def _set_path(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get_path(tree, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


# ------------------------------------------------------------------------------------------------
# Public API.

def read_hf_config(path: str, *, strict: bool = False, **run_options) -> LlamaConfig:
  """`LlamaConfig` from `path/config.json` (local or remote), with run options (dtype, scan_layers,
  ...) applied. `strict`: refuse config keys this model does not know instead of ignoring them
  (see `LlamaConfig.from_hf`); keys that change the computation are refused by name either way."""
  path = os.fspath(path)
  remote = artifacts.is_remote(path)
  if not (artifacts.exists(path) if remote else os.path.isdir(path)):
    raise CheckpointError(f"checkpoint directory {path} does not exist")
  config_path = artifacts.join(path, "config.json")
  if not artifacts.exists(config_path):
    raise CheckpointError(f"{path}: missing config.json (is this a Hugging Face model directory?)")
  try:
    hf = json.loads(artifacts.read_text(config_path))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from e
  except UnicodeDecodeError as e:
    line = e.object[:e.start].count(b"\n") + 1
    raise CheckpointError(f"{config_path}:{line}: not UTF-8 text; is this a Hugging Face "
                          "config.json?") from e
  if not isinstance(hf, dict):
    raise CheckpointError(f"{config_path}: expected a JSON object, got {type(hf).__name__}")
  try:
    return LlamaConfig.from_hf(hf, strict=strict, **run_options)
  except UnsupportedConfigError as e:
    raise UnsupportedConfigError(f"{config_path}: {e}") from e


# The files `load_hf` copies from a remote checkpoint (tokenizer files are copied by
# `tokenizer.load_tokenizer` when it is given the same path).
def _weight_file(name: str) -> bool:
  return name.endswith(".safetensors") or name in (
      "config.json", "generation_config.json", "model.safetensors.index.json", model_files.MODEL_MARKER)


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def load_hf(path: str, *, shardings=None, config: LlamaConfig | None = None,
            cache_dir: str | None = None, keep_local_copy: bool = True, strict: bool = False,
            **run_options) -> tuple[LlamaConfig, dict]:
  """Loads a HF model directory (local, or remote: gs://, s3://) -> (DecoderConfig, params).

  Args:
    path: directory with config.json and model.safetensors (or sharded files + index). A remote
      directory is copied to a local cache first (see the module doc).
    cache_dir: where remote checkpoints are copied (default: $META_REWARDING_CACHE_DIR, else
      <tempdir>/meta_rewarding_cache).
    keep_local_copy: for a remote path, False copies into a private temporary directory removed
      after loading (for checkpoints read once, e.g. a resumed run's per-iteration models).
    shardings: optional pytree of `jax.sharding.Sharding` matching the params (e.g. from
      `sharding.param_shardings`), or a callable `config -> that pytree`; each tensor is placed
      straight into its sharding (each device receives only its slice). Default: the first device.
    config: use this config instead of reading config.json (its architecture must match the files).
    strict: refuse config.json keys this model does not know (default: ignore them with a
      warning, as transformers does); see `LlamaConfig.from_hf`.
    **run_options: LlamaConfig run fields: dtype (compute), param_dtype (what the tensors are
      converted to on load), scan_layers, remat_policy.
  """
  path = os.fspath(path)
  if not artifacts.is_remote(path):
    model_files.verify(path, full=True)
    return _load_local(path, shardings=shardings, config=config, strict=strict, **run_options)
  config = config or read_hf_config(path, strict=strict, **run_options)
  names = artifacts.listdir(path)
  if "model.safetensors" not in names and "model.safetensors.index.json" not in names:
    pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
    hint = (f" (found {pickles}: pickle checkpoints are not loaded; convert them to safetensors)"
            if pickles else "")
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json{hint}")
  root = cache_dir or artifacts.cache_dir()
  os.makedirs(root, exist_ok=True)
  private = None if keep_local_copy else tempfile.mkdtemp(prefix="load-", dir=root)
  try:
    try:
      local = artifacts.localize(path, _weight_file, cache=private or root)
    except (OSError, ValueError) as e:
      raise CheckpointError(f"{path}: could not copy the checkpoint to {private or root}: {e}") from e
    # The copy is what gets loaded, so it is what is checked (tokenizer files are not copied here);
    # only against a marker the remote directory holds now (the cache may keep an older one).
    if model_files.MODEL_MARKER in names:
      model_files.verify(local, full=True, include=_weight_file, name_as=path)
    try:
      return _load_local(local, shardings=shardings, config=config, **run_options)
    except CheckpointError as e:  # name the remote checkpoint, not its local copy
      raise CheckpointError(str(e).replace(local, path)) from e
  finally:
    if private:
      shutil.rmtree(private, ignore_errors=True)


def _load_local(path: str, *, shardings=None, config: LlamaConfig | None = None,
                strict: bool = False, **run_options) -> tuple[LlamaConfig, dict]:
  config = config or read_hf_config(path, strict=strict, **run_options)
  reader = _SafetensorsReader(path)
  if callable(shardings):
    shardings = shardings(config)
  target_dtype = np.dtype(jnp.dtype(config.param_dtype))
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  params: dict = {}
  for our_path, names, expected, to_ours, _ in _param_specs(config):
    layers = []
    for name in names:
      if name not in reader:
        if name == "lm_head.weight":
          raise CheckpointError(
              f"{path}: missing tensor lm_head.weight (config.json says tie_word_embeddings=false)")
        raise CheckpointError(f"{path}: missing tensor {name}")
      if reader.shape(name) != expected:
        raise CheckpointError(
            f"{path}: tensor {name} has shape {reader.shape(name)}, config.json implies {expected}")
      layers.append(to_ours(reader.read(name)).astype(target_dtype))
    host = layers[0] if len(layers) == 1 else np.stack(layers)
    del layers
    sharding = default if shardings is None else _get_path(shardings, our_path)
    value = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    _set_path(params, our_path, value)
    del host
  unused = set(reader.entries) - {n for _, names, *_ in _param_specs(config) for n in names}
  unused = {n for n in unused if not n.endswith("rotary_emb.inv_freq")}
  if config.tie_word_embeddings and "lm_head.weight" in unused:
    # Some exports write the tied output layer out too. The same values: it is the embedding, as
    # the model computes it. Different ones: transformers would untie them (a different model).
    if not np.array_equal(reader.read("lm_head.weight"), reader.read("model.embed_tokens.weight")):
      raise CheckpointError(
          f"{path}: lm_head.weight differs from model.embed_tokens.weight, but config.json says "
          "tie_word_embeddings=true (transformers unties them when they differ); set "
          "tie_word_embeddings to false in config.json to load the separate output layer")
    unused.discard("lm_head.weight")
  if unused:
    raise CheckpointError(f"{path}: tensors not used by a {config.num_hidden_layers}-layer "
                          f"{config.family.label}: "
                          f"{sorted(unused)[:5]}{' ...' if len(unused) > 5 else ''}")
  return config, params


def _to_host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def save_hf(path: str, config: LlamaConfig, params, *, dtype: Any = None,
            max_shard_bytes: int = 5 * 2**30, extra_files: dict[str, str | bytes] | None = None) -> str:
  """Writes `params` as a HF directory that the family's `...ForCausalLM.from_pretrained` loads
  (`AutoModelForCausalLM` picks it from config.json's model_type).

  Tensors are gathered to the host one at a time. Files above `max_shard_bytes` are split into
  `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`. `extra_files` maps file
  names to text or bytes (e.g. tokenizer files). In multi-host runs every process must call this (the
  gathers are collective) and only process 0 writes. A remote `path` (gs://, s3://) is written
  locally first, then uploaded with config.json last (see the module doc).
  """
  path = os.fspath(path)
  remote = artifacts.is_remote(path)
  out_dtype = np.dtype(jnp.dtype(dtype or config.param_dtype))
  hf_config = dict(config.to_hf(), torch_dtype=str(jnp.dtype(out_dtype)))
  entries: list[tuple[str, tuple[int, ...], np.dtype, Callable[[], np.ndarray]]] = []
  for our_path, names, shape, _, to_hf in _param_specs(config):
    leaf = _get_path(params, our_path)
    for i, name in enumerate(names):
      def produce(leaf=leaf, i=i, stacked=our_path[0] == "layers", to_hf=to_hf):
        value = _to_host(leaf[i] if stacked else leaf)
        return to_hf(value)
      entries.append((name, shape, out_dtype, produce))
  # Greedy split into shards in parameter order.
  shards: list[list] = [[]]
  size = 0
  for entry in entries:
    nbytes = int(np.prod(entry[1])) * out_dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(entry)
    size += nbytes
  write = jax.process_index() == 0
  if remote:
    parent = None  # the system temp dir (TMPDIR): it must hold one copy of the checkpoint
  else:
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
  tmp = (artifacts.mkdtemp(prefix=artifacts.basename(path) + ".tmp-", dir=parent) if write
         else None)
  try:
    weight_map = {}
    digests: dict[str, dict] = {}  # file name -> {"bytes", "sha256"}, for the model marker
    for k, shard in enumerate(shards):
      fname = ("model.safetensors" if len(shards) == 1
               else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors")
      producers = {name: produce for name, _, _, produce in shard}
      if write:
        digests[fname] = write_safetensors(os.path.join(tmp, fname),
                                           [(n, s, d) for n, s, d, _ in shard],
                                           lambda name: producers[name]())
      else:
        for produce in producers.values():  # take part in the collective gathers
          produce()
      weight_map.update({name: fname for name in producers})
    if not write:
      return path

    def write_file(name: str, content: str | bytes):
      data = content.encode("utf-8") if isinstance(content, str) else content
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
      if name != model_files.MODEL_MARKER:
        digests[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    if len(shards) > 1:
      total = sum(int(np.prod(s)) * out_dtype.itemsize for _, s, _, _ in entries)
      write_file("model.safetensors.index.json", json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    write_file("config.json", json.dumps(hf_config, indent=2))
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": hf_config["eos_token_id"]}
    write_file("generation_config.json", json.dumps(generation, indent=2))
    for name, content in (extra_files or {}).items():
      write_file(name, content)
    # Written last, from the digests taken while the files streamed out: its presence says the
    # directory is complete, and its digests say what each file must still hold.
    write_file(model_files.MODEL_MARKER, json.dumps({"files": digests}, indent=2, sort_keys=True))
    if remote:
      _upload(tmp, path)
      shutil.rmtree(tmp, ignore_errors=True)
    else:
      if os.path.exists(path):
        shutil.rmtree(path)
      os.replace(tmp, path)
  except BaseException:
    if tmp and os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def _upload(local_dir: str, path: str):
  """Replaces remote directory `path` with the files of `local_dir`, config.json and then the model
  marker last."""
  try:
    artifacts.rmtree(path)  # no stale shards of an earlier save, and no config.json until the end
    artifacts.upload_dir(local_dir, path, last=["config.json", model_files.MODEL_MARKER])
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{path}: upload of the checkpoint failed ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------------------
# A saved model's identity.

def model_identity(path: str) -> dict:
  """What identifies the model in directory `path`, for results keyed by their inputs (e.g.
  `judge_eval --output`): the sha256 of its marker when it has one (the marker holds every file's
  sha256), else each file's size and modification time (deterministic, JSON-serialisable)."""
  path = os.fspath(path)
  marker_path = artifacts.join(path, model_files.MODEL_MARKER)
  if artifacts.exists(marker_path):
    return {"marker_sha256": hashlib.sha256(artifacts.read_bytes(marker_path)).hexdigest()}
  files = {}
  for name in sorted(artifacts.listdir(path)):
    stat = artifacts.file_stat(artifacts.join(path, name))
    if stat is not None:
      files[name] = list(stat)
  return {"files": files}


# ------------------------------------------------------------------------------------------------
# The orbax train-state manager (train.py's periodic, keep-last-N, resumable checkpoints).

class TrainStateCheckpoints:
  """orbax CheckpointManager for the train state plus a small JSON record of the run's identity."""

  def __init__(self, directory: str, keep: int, use_async: bool):
    # orbax: only training needs it; sample and judge_eval load HF weights without it
    import orbax.checkpoint as ocp
    self.ocp = ocp
    self.directory = orbax_path(directory)
    self.manager = ocp.CheckpointManager(
        artifacts.join(self.directory, "state"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=use_async))
    self.last_saved = self.manager.latest_step()

  def save(self, step: int, state, identity: dict):
    a = self.ocp.args
    self.manager.save(step, args=a.Composite(state=a.StandardSave(state), run=a.JsonSave(identity)))
    self.last_saved = step

  def restore(self, step: int, abstract_state) -> tuple[Any, dict]:
    a = self.ocp.args
    restored = self.manager.restore(step, args=a.Composite(
        state=a.StandardRestore(abstract_state), run=a.JsonRestore()))
    return restored["state"], restored["run"]

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def orbax_path(path: str) -> str:
  """`path` as orbax wants it: absolute when local (remote paths are absolute already)."""
  return path if artifacts.is_remote(path) else os.path.abspath(path)
