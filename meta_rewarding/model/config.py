"""`LlamaConfig`: the Llama 2 / 3 / 3.1 / 3.2 architecture, read from and written to HF `config.json`.

Two HF layouts exist in the wild and both are read:
  * transformers v4 (the published Llama 3.x checkpoints): `rope_theta` and `rope_scaling` at the top
    level, the scaling type under `rope_type` (or the older `type`);
  * transformers v5 (what `save_pretrained` writes today): one `rope_parameters` dict holding
    `rope_theta`, `rope_type` and the scaling fields.
`to_hf()` writes the v5 layout plus the v4 top-level `rope_theta`/`rope_scaling`, so both old and
new readers (vLLM, older transformers) see the same rope.

Anything that would change the computation and that this model does not implement (another rope
type, biases, another activation) raises `UnsupportedConfigError` instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np


class UnsupportedConfigError(ValueError):
  """A HF config field or value this Llama implementation cannot honour."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling. `rope_type` is "llama3" (Llama 3.1+) or "linear"."""
  rope_type: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


# Keys HF writes that do not change the forward pass (or that we check separately below).
_IGNORED_HF_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "initializer_range", "attention_dropout", "pretraining_tp", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tie_encoder_decoder", "is_encoder_decoder",
    "_attn_implementation_autoset", "layer_types", "quantization_config_ignored",
})
# Keys whose values we check (must equal the value our implementation computes with).
_REQUIRED_VALUES = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
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
  def from_hf(cls, hf: Mapping[str, Any], *, strict: bool = True, **run_options) -> "LlamaConfig":
    """Reads a HF Llama `config.json` dict (v4 or v5 layout). `run_options`: dtype, scan_layers, ...

    strict=True: keys that are neither known nor harmless raise; strict=False ignores them.
    """
    hf = dict(hf)
    model_type = hf.get("model_type", "llama")
    if model_type != "llama":
      raise UnsupportedConfigError(f"model_type={model_type!r}; only 'llama' checkpoints are supported")
    for key, expected in _REQUIRED_VALUES.items():
      if key in hf and hf[key] != expected:
        raise UnsupportedConfigError(f"{key}={hf[key]!r} is not supported (only {expected!r})")
    rope_theta, rope_scaling = _read_rope(hf)
    fields = {f.name for f in dataclasses.fields(cls)}
    hf_fields = fields - {"dtype", "param_dtype", "scan_layers", "remat_policy",
                          "rope_theta", "rope_scaling"}
    unknown = sorted(k for k in hf if k not in hf_fields and k not in _IGNORED_HF_KEYS
                     and k not in _REQUIRED_VALUES and k not in _ROPE_KEYS)
    if unknown and strict:
      raise UnsupportedConfigError(
          f"unknown Llama config fields {unknown}; they may change the model in ways this "
          "implementation ignores (pass strict=False to accept them)")
    kwargs = {k: hf[k] for k in hf_fields if k in hf}
    if "max_position_embeddings" not in kwargs and rope_scaling is not None:
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


def _read_rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  """(rope_theta, scaling) from either layout; raises on rope types or fields we do not implement."""
  params = hf.get("rope_parameters")
  scaling = hf.get("rope_scaling")
  theta = hf.get("rope_theta")
  if params is not None:
    if not isinstance(params, Mapping):
      raise UnsupportedConfigError(f"rope_parameters must be a dict, got {params!r}")
    if "full_attention" in params and isinstance(params["full_attention"], Mapping):
      params = params["full_attention"]  # v5 per-layer-type layout; Llama has one layer type.
    theta = params.get("rope_theta", theta)
    scaling = params
  if theta is None:
    theta = 10000.0
  if not scaling:
    return float(theta), None
  if not isinstance(scaling, Mapping):
    raise UnsupportedConfigError(f"rope_scaling must be a dict, got {scaling!r}")
  extra = sorted(set(scaling) - _ROPE_SCALING_FIELDS)
  if extra:
    raise UnsupportedConfigError(f"unsupported rope scaling fields {extra} in {dict(scaling)}")
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type not in SUPPORTED_ROPE_TYPES:
    raise UnsupportedConfigError(
        f"rope type {rope_type!r} is not implemented (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
  if rope_type == "default":
    return float(theta), None
  if "factor" not in scaling:
    raise UnsupportedConfigError(f"rope scaling {rope_type!r} needs a 'factor': {dict(scaling)}")
  if rope_type == "linear":
    return float(theta), RopeScaling("linear", float(scaling["factor"]))
  missing = [k for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
             if k not in scaling]
  if missing:
    raise UnsupportedConfigError(f"llama3 rope scaling is missing {missing}: {dict(scaling)}")
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
