"""`LlamaConfig`: the Llama 2 / 3 / 3.1 / 3.2 architecture, read from and written to HF `config.json`.

Two HF layouts exist in the wild and both are read:
  * transformers v4 (the published Llama 3.x checkpoints): `rope_theta` and `rope_scaling` at the top
    level, the scaling type under `rope_type` (or the older `type`);
  * transformers v5 (what `save_pretrained` writes today): one `rope_parameters` dict holding
    `rope_theta`, `rope_type` and the scaling fields.
`to_hf()` writes the v5 layout plus the v4 top-level `rope_theta`/`rope_scaling`, so both old and
new readers (vLLM, older transformers) see the same rope.

Every key of a config.json falls in one of four groups:
  * fields this model reads (sizes, rope, eps, tied embeddings, special-token ids);
  * keys that change the computation and are accepted only at the value this model computes with
    (`hidden_act` silu, `attention_bias`/`mlp_bias` false, `rope_interleaved` false, no
    `quantization_config`, rope types default/linear/llama3); any other value raises
    `UnsupportedConfigError` naming the key, whatever `strict` says;
  * metadata that does not change the forward pass (`_name_or_path`, `transformers_version`,
    `torch_dtype`, `is_llama_config`, `unk_token_id`, ...): ignored, each key logged once per process;
  * anything else. transformers' own Llama ignores keys it does not know, so by default this one
    does too (with a warning, once per key); `strict=True` refuses them instead, for users who
    want every key accounted for.
Keys absent from the dict take transformers' LlamaConfig defaults (e.g. `num_key_value_heads` =
`num_attention_heads`, `rms_norm_eps` = 1e-6), so a sparse config.json means what it means there.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from absl import logging

from meta_rewarding.errors import UserError


class UnsupportedConfigError(UserError, ValueError):
  """A HF config field or value this Llama implementation cannot honour."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling. `rope_type` is "llama3" (Llama 3.1+) or "linear"."""
  rope_type: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


# Keys that describe the checkpoint, its training or its runtime, not the forward pass: transformers'
# own Llama reads none of them for the computation. Ignored (logged once each).
_METADATA_KEYS = frozenset({
    # provenance
    "_name_or_path", "_model_name_or_path", "transformers_version", "architectures",
    "is_llama_config", "auto_map", "_commit_hash",
    # storage dtype (run options choose the compute and parameter dtypes)
    "torch_dtype", "dtype",
    # training-time and generation-time settings
    "initializer_range", "attention_dropout", "use_cache", "pretraining_tp",
    "_attn_implementation", "_attn_implementation_autoset", "use_return_dict",
    "unk_token_id", "sep_token_id", "decoder_start_token_id",
    # PretrainedConfig's generic fields (classification heads, output switches, ...)
    "output_attentions", "output_hidden_states", "return_dict", "torchscript",
    "tie_encoder_decoder", "is_encoder_decoder", "is_decoder", "add_cross_attention",
    "chunk_size_feed_forward", "id2label", "label2id", "problem_type", "finetuning_task",
    "tokenizer_class", "prefix", "task_specific_params", "cross_attention_hidden_size",
    "pruned_heads", "layer_types", "quantization_config_ignored",
    # runtime hints of other libraries
    "transformers.js_config",
})
# Keys that change the computation: accepted only at the values this implementation computes with.
# ("swish" is transformers' other name for SiLU.)
_REQUIRED_VALUES = {
    "hidden_act": ("silu", "swish"),
    "attention_bias": (False, None),
    "mlp_bias": (False, None),
    "rope_interleaved": (False, None),
}
_WHY_REQUIRED = {
    "hidden_act": "this Llama's MLP is SwiGLU (silu)",
    "attention_bias": "the attention projections have no bias terms",
    "mlp_bias": "the MLP projections have no bias terms",
    "rope_interleaved": ("RoPE here rotates halves (transformers' layout); interleaved (GPT-J "
                         "style) pairs need permuted q/k weights"),
}
# transformers' LlamaConfig defaults for keys a config.json may leave out.
_HF_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "tie_word_embeddings": False,
}
# Metadata and unknown keys already logged by this process: each is reported once.
_LOGGED_KEYS: set[str] = set()
_ROPE_KEYS = frozenset({"rope_theta", "rope_scaling", "rope_parameters"})
_ROPE_SCALING_FIELDS = frozenset({
    "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings", "rope_theta"})
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture (HF fields) plus how to run it (dtypes, scan, remat). Frozen, hashable: jit-static."""
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  head_dim: int | None = None  # None: hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  bos_token_id: int | None = 1
  eos_token_id: int | tuple[int, ...] | None = 2
  pad_token_id: int | None = None
  # How to run it (not HF fields).
  dtype: str = "bfloat16"        # activations / matmul inputs
  param_dtype: str = "float32"   # stored parameters
  scan_layers: bool = False      # one compiled layer scanned L times (fast compiles for deep models)
  remat_policy: str = "none"     # none | full | dots | dots_no_batch

  def __post_init__(self):
    if self.head_dim is None:
      if self.hidden_size % self.num_attention_heads:
        raise UnsupportedConfigError(
            f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
            f"{self.num_attention_heads}; set head_dim explicitly")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
    if self.num_attention_heads % self.num_key_value_heads:
      raise UnsupportedConfigError(
          f"num_attention_heads={self.num_attention_heads} must be a multiple of "
          f"num_key_value_heads={self.num_key_value_heads} (grouped-query attention)")
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.remat_policy not in REMAT_POLICIES:
      raise UnsupportedConfigError(f"remat_policy={self.remat_policy!r}; expected one of {REMAT_POLICIES}")
    if self.rope_scaling is not None and self.rope_scaling.rope_type not in SUPPORTED_ROPE_TYPES:
      raise UnsupportedConfigError(f"rope type {self.rope_scaling.rope_type!r} is not supported")

  # Axis-letter sizes used across the model (see the legend in llama.py).
  @property
  def num_groups(self) -> int:
    """G: query heads per kv head."""
    return self.num_attention_heads // self.num_key_value_heads

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    if self.eos_token_id is None:
      return ()
    if isinstance(self.eos_token_id, int):
      return (self.eos_token_id,)
    return tuple(self.eos_token_id)

  def replace(self, **changes) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    d, f, v, l = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
    n, k, h = self.num_attention_heads, self.num_key_value_heads, self.head_dim
    per_layer = d * (n * h) * 2 + d * (k * h) * 2 + 3 * d * f + 2 * d
    return v * d * (1 if self.tie_word_embeddings else 2) + l * per_layer + d

  # ---------------------------------------------------------------------------------------------
  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], *, strict: bool = False, **run_options) -> "LlamaConfig":
    """Reads a HF Llama `config.json` dict (v4 or v5 layout). `run_options`: dtype, scan_layers, ...

    Keys that change the computation are read or refused by name (see the module doc). Keys this
    model does not know are ignored with a warning, as transformers does, unless `strict`: then
    they raise `UnsupportedConfigError`.
    """
    hf = dict(hf)
    model_type = hf.get("model_type", "llama")
    if model_type != "llama":
      raise UnsupportedConfigError(f"model_type={model_type!r}; only 'llama' checkpoints are supported")
    for key, accepted in _REQUIRED_VALUES.items():
      if key in hf and hf[key] not in accepted:
        raise UnsupportedConfigError(
            f"{key}={hf[key]!r} is not supported: {_WHY_REQUIRED[key]} (accepted: "
            f"{', '.join(repr(v) for v in accepted if v is not None)})")
    if hf.get("quantization_config"):
      method = hf["quantization_config"]
      method = method.get("quant_method", "?") if isinstance(method, Mapping) else method
      raise UnsupportedConfigError(
          f"quantization_config (quant_method={method!r}) is not supported: the weights are "
          "quantized; dequantize them to a bfloat16/float32 safetensors checkpoint first")
    rope_theta, rope_scaling = _read_rope(hf)
    fields = {f.name for f in dataclasses.fields(cls)}
    hf_fields = fields - {"dtype", "param_dtype", "scan_layers", "remat_policy",
                          "rope_theta", "rope_scaling"}
    known = hf_fields | _REQUIRED_VALUES.keys() | _ROPE_KEYS | {"model_type", "quantization_config"}
    unknown = sorted(k for k in hf if k not in known and k not in _METADATA_KEYS)
    if unknown and strict:
      raise UnsupportedConfigError(
          f"unknown Llama config fields {unknown}; they may change the model in ways this "
          "implementation ignores (strict config checking is on: turn it off, e.g. "
          "--nostrict_config / model.strict_config=False, to ignore them as transformers does)")
    _log_once(sorted(k for k in hf if k in _METADATA_KEYS), logging.info,
              "Llama config: ignoring %s (they do not change the computation)")
    _log_once(unknown, logging.warning,
              "Llama config: ignoring unknown fields %s, as transformers' Llama does; if they "
              "change the model, its outputs will differ (strict config checking refuses them)")
    dropout = hf.get("attention_dropout")
    if dropout and "attention_dropout=" not in _LOGGED_KEYS:
      _LOGGED_KEYS.add("attention_dropout=")
      logging.warning("Llama config: attention_dropout=%s is ignored: this implementation trains "
                      "without dropout", dropout)
    kwargs = {k: hf[k] for k in hf_fields if k in hf}
    for key, default in _HF_DEFAULTS.items():
      kwargs.setdefault(key, default)
    if kwargs.get("num_key_value_heads") is None:  # transformers: absent or null means no GQA
      kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    if "max_position_embeddings" not in hf and rope_scaling is not None:
      kwargs["max_position_embeddings"] = rope_scaling.original_max_position_embeddings
    return cls(rope_theta=rope_theta, rope_scaling=rope_scaling, **kwargs, **run_options)

  def to_hf(self) -> dict[str, Any]:
    """The HF `config.json` dict; `LlamaConfig.from_hf(c.to_hf())` gives back the same architecture."""
    rope_parameters = {"rope_type": "default", "rope_theta": float(self.rope_theta)}
    rope_scaling = None
    if self.rope_scaling is not None:
      rope_scaling = {"rope_type": self.rope_scaling.rope_type, "factor": float(self.rope_scaling.factor)}
      if self.rope_scaling.rope_type == "llama3":
        rope_scaling.update(
            low_freq_factor=float(self.rope_scaling.low_freq_factor),
            high_freq_factor=float(self.rope_scaling.high_freq_factor),
            original_max_position_embeddings=int(self.rope_scaling.original_max_position_embeddings))
      rope_parameters = {**rope_scaling, "rope_theta": float(self.rope_theta)}
    eos = self.eos_token_id
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "head_dim": self.head_dim,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": float(self.rope_theta),
        "rope_scaling": rope_scaling,
        "rope_parameters": rope_parameters,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": self.pad_token_id,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": self.param_dtype,
    }


def _log_once(keys: list[str], log, message: str):
  """Logs `message` % the keys not logged before by this process (one line, or nothing)."""
  fresh = [k for k in keys if k not in _LOGGED_KEYS]
  if fresh:
    _LOGGED_KEYS.update(fresh)
    log(message, fresh)


def _read_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  """(rope_theta, scaling) from either layout; raises, naming the key, on rope types or fields we
  do not implement."""
  params = hf.get("rope_parameters")
  scaling = hf.get("rope_scaling")
  theta = hf.get("rope_theta")
  key = "rope_scaling"
  if params is not None:
    if not isinstance(params, Mapping):
      raise UnsupportedConfigError(f"rope_parameters must be a dict, got {params!r}")
    if "full_attention" in params and isinstance(params["full_attention"], Mapping):
      params = params["full_attention"]  # v5 per-layer-type layout; Llama has one layer type.
    theta = params.get("rope_theta", theta)
    scaling = params
    key = "rope_parameters"
  if theta is None:
    theta = 10000.0
  if not scaling:
    return float(theta), None
  if not isinstance(scaling, Mapping):
    raise UnsupportedConfigError(f"{key} must be a dict, got {scaling!r}")
  extra = sorted(set(scaling) - _ROPE_SCALING_FIELDS)
  if extra:
    raise UnsupportedConfigError(f"{key}: unsupported rope scaling fields {extra} in {dict(scaling)}")
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type not in SUPPORTED_ROPE_TYPES:
    raise UnsupportedConfigError(
        f"{key}: rope type {rope_type!r} is not implemented (supported: "
        f"{', '.join(SUPPORTED_ROPE_TYPES)})")
  if rope_type == "default":
    return float(theta), None
  if "factor" not in scaling:
    raise UnsupportedConfigError(f"{key}: rope scaling {rope_type!r} needs a 'factor': {dict(scaling)}")
  if rope_type == "linear":
    return float(theta), RopeScaling("linear", float(scaling["factor"]))
  missing = [k for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
             if k not in scaling]
  if missing:
    raise UnsupportedConfigError(f"{key}: llama3 rope scaling is missing {missing}: {dict(scaling)}")
  return float(theta), RopeScaling(
      "llama3", float(scaling["factor"]), float(scaling["low_freq_factor"]),
      float(scaling["high_freq_factor"]), int(scaling["original_max_position_embeddings"]))


def rope_inverse_frequencies(config: LlamaConfig) -> np.ndarray:
  """[H/2] float64 inverse frequencies, with the config's scaling applied (as transformers does)."""
  h = config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, h, 2, dtype=np.float64) / h))
  s = config.rope_scaling
  if s is None:
    return inv_freq
  if s.rope_type == "linear":
    return inv_freq / s.factor
  # llama3: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
  low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
  high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
  smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
      s.high_freq_factor - s.low_freq_factor)
  smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return np.where(is_medium, smoothed, scaled)


def tiny_config(**overrides) -> LlamaConfig:
  """A few-KB Llama for tests and examples (float32 so it can be compared against PyTorch)."""
  base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rope_theta=10000.0, dtype="float32", param_dtype="float32", bos_token_id=1,
              eos_token_id=2, pad_token_id=0)
  base.update(overrides)
  return LlamaConfig(**base)
