"""`DecoderConfig` (alias `LlamaConfig`): one decoder-only transformer, read from and written to HF
`config.json`, for six families.

One decoder serves Llama 2 / 3 / 3.x, Mistral (v0.1 - v0.3, Nemo), Qwen2 / Qwen2.5, Qwen3, Gemma 2
and Gemma 3 (text). What differs between them is a field of this config, never a new model file:

  field                     llama  mistral  qwen2  qwen3  gemma2  gemma3_text
  attention_bias (q/k/v)      -      -        yes    opt    opt     opt
  attention_out_bias (o)      -      -        -      opt    opt     opt
  qk_norm                     -      -        -      yes    -       yes
  norm_style                llama  llama    llama  llama  gemma   gemma     (gemma: x * (1 + w))
  sandwich_norms              -      -        -      -      yes     yes       (norms after attn/MLP too)
  hidden_act                silu   silu     silu   silu   gelu_pytorch_tanh (both gemmas)
  scale_embeddings            -      -        -      -      yes     yes       (x sqrt(hidden))
  query_pre_attn_scalar       -      -        -      -      yes     yes
  attn/final logit softcap    -      -        -      -      yes     opt
  layer_types (sliding)       -     all      opt    opt    1:1     5:1
  rope_local_theta            -      -        -      -      -       yes       (sliding layers' base)

(opt: read from config.json when set.) `model_type` names the family: it picks how config.json is
read and written and how tensors are named (`checkpoints.py`); the forward pass reads only the
fields.

Two HF layouts exist in the wild and both are read:
  * transformers v4 (most published checkpoints): `rope_theta` and `rope_scaling` at the top level
    (Gemma 3: also `rope_local_base_freq`, `sliding_window_pattern`), the scaling type under
    `rope_type` (or the older `type`);
  * transformers v5 (what `save_pretrained` writes today): one `rope_parameters` dict holding
    `rope_theta`, `rope_type` and the scaling fields (Gemma 3: one such dict per layer type), and
    an explicit `layer_types` list.
`to_hf()` writes the v5 layout plus the v4 top-level keys, so old and new readers (vLLM, older
transformers) see the same model.

Every key of a config.json falls in one of four groups:
  * fields this model reads (sizes, rope, eps, tied embeddings, special-token ids, the family
    fields above);
  * keys that change the computation and are accepted only at the values this model computes with
    (e.g. `hidden_act` silu for Llama, `mlp_bias` false, `rope_interleaved` false, no
    `quantization_config`, rope types default/linear/llama3, Gemma's bidirectional attention off);
    any other value raises `UnsupportedConfigError` naming the key, whatever `strict` says;
  * metadata that does not change the forward pass (`_name_or_path`, `transformers_version`,
    `torch_dtype`, `is_llama_config`, `unk_token_id`, ...): ignored, each key logged once per process;
  * anything else. transformers ignores keys a family does not know, so by default this one does
    too (with a warning, once per key); `strict=True` refuses them instead, for users who want
    every key accounted for.
Keys absent from the dict take the defaults of that family's transformers config class (e.g.
Llama's `num_key_value_heads` = `num_attention_heads`, Mistral's `sliding_window` = 4096), so a
sparse config.json means what it means there (tests/test_model_families.py checks each family's
defaults against transformers).

Sliding windows follow transformers: a query at position p of a sliding layer sees keys at
positions p - window < q <= p. The KV cache of a sliding layer keeps every slot, as a global
layer's does (the window is a mask over key positions), so decoding stays exact past the window in
prefill, decode and continuous-batching refills; it does not save the cache memory a ring of
`window` slots would.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np
from absl import logging

from meta_rewarding.choices import REMAT_POLICIES
from meta_rewarding.errors import UserError


class UnsupportedConfigError(UserError, ValueError):
  """A HF config field or value this decoder implementation cannot honour."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling. `rope_type` is "llama3" (Llama 3.1+) or "linear"."""
  rope_type: str
  factor: float
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


# Keys that describe the checkpoint, its training or its runtime, not the forward pass: transformers
# reads none of them for the computation. Ignored (logged once each).
_METADATA_KEYS = frozenset({
    # provenance
    "_name_or_path", "_model_name_or_path", "transformers_version", "architectures",
    "is_llama_config", "auto_map", "_commit_hash",
    # storage dtype (run options choose the compute and parameter dtypes)
    "torch_dtype", "dtype",
    # training-time and generation-time settings
    "initializer_range", "attention_dropout", "use_cache", "pretraining_tp",
    "_attn_implementation", "_attn_implementation_autoset", "use_return_dict",
    "unk_token_id", "sep_token_id", "decoder_start_token_id", "cache_implementation",
    # PretrainedConfig's generic fields (classification heads, output switches, ...)
    "output_attentions", "output_hidden_states", "return_dict", "torchscript",
    "tie_encoder_decoder", "is_encoder_decoder", "is_decoder", "add_cross_attention",
    "chunk_size_feed_forward", "id2label", "label2id", "problem_type", "finetuning_task",
    "tokenizer_class", "prefix", "task_specific_params", "cross_attention_hidden_size",
    "pruned_heads", "quantization_config_ignored",
    # runtime hints of other libraries
    "transformers.js_config",
})
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")
LAYER_TYPES = ("full_attention", "sliding_attention")
NORM_STYLES = ("llama", "gemma")
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
_ROPE_KEYS = frozenset({"rope_theta", "rope_scaling", "rope_parameters"})
_ROPE_SCALING_FIELDS = frozenset({
    "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings", "rope_theta"})
# Metadata and unknown keys already logged by this process: each is reported once.
_LOGGED_KEYS: set[str] = set()


@dataclasses.dataclass(frozen=True)
class Family:
  """How one HF `model_type` maps onto `DecoderConfig`: its defaults, fixed fields and checks.

  defaults: transformers' config-class defaults for keys a config.json may leave out.
  fixed: `DecoderConfig` fields every checkpoint of the family has (not read from config.json).
  required: config.json key -> the values this implementation computes with (first: what
    `to_hf` writes), with `why` saying what the implementation does instead.
  reads: the HF keys the family reads beyond the ones every family reads.
  """
  model_type: str
  label: str           # in messages: "Llama", "Qwen2", ...
  architecture: str    # HF `architectures` entry
  defaults: Mapping[str, Any]
  fixed: Mapping[str, Any]
  required: Mapping[str, tuple]
  why: Mapping[str, str]
  reads: frozenset

_COMMON_READS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
    "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"})
_SILU = {"hidden_act": ("silu", "swish")}  # "swish" is transformers' other name for SiLU
_WHY_SILU = {"hidden_act": "this model's MLP is SwiGLU (silu)"}
_NO_MLP_BIAS = {"mlp_bias": (False, None)}
_WHY_NO_MLP_BIAS = {"mlp_bias": "the MLP projections have no bias terms"}
_GELU = {"hidden_activation": ("gelu_pytorch_tanh",), "hidden_act": ("gelu_pytorch_tanh", None),
         "use_bidirectional_attention": (False, None)}
_WHY_GELU = {"hidden_activation": "Gemma's MLP is GeGLU with the tanh approximation of gelu",
             "hidden_act": "Gemma's MLP is GeGLU with the tanh approximation of gelu",
             "use_bidirectional_attention": "attention here is causal"}
_QWEN_SLIDING = frozenset({"use_sliding_window", "sliding_window", "max_window_layers",
                           "layer_types"})
_GEMMA_READS = frozenset({"query_pre_attn_scalar", "attn_logit_softcapping",
                          "final_logit_softcapping", "sliding_window", "layer_types",
                          "attention_bias", "sliding_window_size"})
# transformers' Gemma2Config defaults; Gemma3TextConfig's differ only where its entry says.
_GEMMA2_DEFAULTS = {
    "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 8192, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    "tie_word_embeddings": True, "attention_bias": False, "query_pre_attn_scalar": 256,
    "sliding_window": 4096, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}
_GEMMA_FIXED = dict(norm_style="gemma", sandwich_norms=True, hidden_act="gelu_pytorch_tanh",
                    scale_embeddings=True)

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama", "Llama", "LlamaForCausalLM",
           defaults={"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "rms_norm_eps": 1e-6,
                     "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
                     "pad_token_id": None, "tie_word_embeddings": False},
           fixed={},
           required={**_SILU, "attention_bias": (False, None), **_NO_MLP_BIAS,
                     "rope_interleaved": (False, None)},
           why={**_WHY_SILU, "attention_bias": "the attention projections have no bias terms",
                **_WHY_NO_MLP_BIAS,
                "rope_interleaved": ("RoPE here rotates halves (transformers' layout); interleaved "
                                     "(GPT-J style) pairs need permuted q/k weights")},
           reads=frozenset()),
    Family("mistral", "Mistral", "MistralForCausalLM",
           defaults={"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "rms_norm_eps": 1e-6, "max_position_embeddings": 4096 * 32,
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
                     "tie_word_embeddings": False, "sliding_window": 4096},
           fixed={}, required=dict(_SILU), why=dict(_WHY_SILU),
           reads=frozenset({"sliding_window"})),
    Family("qwen2", "Qwen2", "Qwen2ForCausalLM",
           defaults={"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "rms_norm_eps": 1e-6,
                     "max_position_embeddings": 32768, "bos_token_id": None, "eos_token_id": None,
                     "pad_token_id": None, "tie_word_embeddings": False,
                     "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28},
           fixed={"attention_bias": True}, required=dict(_SILU), why=dict(_WHY_SILU),
           reads=_QWEN_SLIDING),
    Family("qwen3", "Qwen3", "Qwen3ForCausalLM",
           defaults={"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "head_dim": 128,
                     "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "bos_token_id": None,
                     "eos_token_id": None, "pad_token_id": None, "tie_word_embeddings": False,
                     "attention_bias": False, "use_sliding_window": False, "sliding_window": 4096,
                     "max_window_layers": 28},
           fixed={"qk_norm": True}, required=dict(_SILU), why=dict(_WHY_SILU),
           reads=_QWEN_SLIDING | {"attention_bias"}),
    Family("gemma2", "Gemma2", "Gemma2ForCausalLM", defaults=_GEMMA2_DEFAULTS,
           fixed=_GEMMA_FIXED, required=dict(_GELU), why=dict(_WHY_GELU),
           reads=_GEMMA_READS),
    Family("gemma3_text", "Gemma3", "Gemma3ForCausalLM",
           defaults={**_GEMMA2_DEFAULTS, "vocab_size": 262208, "max_position_embeddings": 131072,
                     "attn_logit_softcapping": None, "final_logit_softcapping": None,
                     "sliding_window_pattern": 6, "rope_theta": 1_000_000.0,
                     "rope_local_base_freq": 10_000.0},
           fixed={**_GEMMA_FIXED, "qk_norm": True}, required=dict(_GELU), why=dict(_WHY_GELU),
           reads=_GEMMA_READS | {"rope_local_base_freq", "sliding_window_pattern",
                                 "_sliding_window_pattern"}),
)}
MODEL_TYPES = tuple(FAMILIES)
# config.json model types that hold one of these decoders inside a larger model: refused with how
# to get the text model out.
_WRAPPERS = {
    "gemma3": ("the multimodal Gemma 3 (Gemma3ForConditionalGeneration); this framework runs the "
               "text model: save `model.language_model` with its `config.text_config` as a "
               "Gemma3ForCausalLM checkpoint (model_type 'gemma3_text') and point at that"),
}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
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
  # The family and its switches (module doc). The defaults are Llama's.
  model_type: str = "llama"
  attention_bias: bool = False        # biases on q, k, v
  attention_out_bias: bool = False    # bias on o
  qk_norm: bool = False               # RMSNorm over head_dim on q and k, before rope
  norm_style: str = "llama"           # llama: w * x̂ ; gemma: (1 + w) * x̂, in float32
  sandwich_norms: bool = False        # norms on the attention and MLP outputs too (four per layer)
  hidden_act: str = "silu"            # the gate's activation: silu (SwiGLU) | gelu_pytorch_tanh
  scale_embeddings: bool = False      # embeddings x sqrt(hidden_size)
  query_pre_attn_scalar: float | None = None  # attention scale 1/sqrt(this); None: head_dim
  attn_logit_softcapping: float | None = None
  final_logit_softcapping: float | None = None
  sliding_window: int | None = None
  layer_types: tuple[str, ...] | None = None  # per layer, LAYER_TYPES; None: all full_attention
  rope_local_theta: float | None = None       # sliding layers' rope base (unscaled); None: global
  # How to run it (not HF fields).
  dtype: str = "bfloat16"        # activations / matmul inputs
  param_dtype: str = "float32"   # stored parameters
  scan_layers: bool = False      # one compiled layer scanned L times (fast compiles for deep models)
  remat_policy: str = "none"     # none | full | dots | dots_no_batch
  # Queries per attention block over many tokens (0: all at once). A forward over T tokens holds
  # [T, S] attention scores per head; in blocks only [attention_chunk, S] at a time, each block
  # recomputed in the backward pass. For long packed rows on a chip without tensor parallelism.
  attention_chunk: int = 0

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
    if self.attention_chunk < 0:
      raise UnsupportedConfigError(f"attention_chunk={self.attention_chunk}; expected >= 0 "
                                   "(0: no blocks)")
    if self.rope_scaling is not None and self.rope_scaling.rope_type not in SUPPORTED_ROPE_TYPES:
      raise UnsupportedConfigError(f"rope type {self.rope_scaling.rope_type!r} is not supported")
    for name, allowed in (("model_type", MODEL_TYPES), ("norm_style", NORM_STYLES),
                          ("hidden_act", ACTIVATIONS)):
      if getattr(self, name) not in allowed:
        raise UnsupportedConfigError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
    if self.layer_types is not None:
      types = tuple(self.layer_types)
      object.__setattr__(self, "layer_types", types)
      if len(types) != self.num_hidden_layers:
        raise UnsupportedConfigError(
            f"layer_types has {len(types)} entries for num_hidden_layers={self.num_hidden_layers}")
      bad = sorted(set(types) - set(LAYER_TYPES))
      if bad:
        raise UnsupportedConfigError(f"layer_types: {bad} not supported (expected {LAYER_TYPES})")
      if "sliding_attention" in types and not self.sliding_window:
        raise UnsupportedConfigError("layer_types has sliding_attention layers but sliding_window "
                                     f"is {self.sliding_window!r}")
    if self.sliding_window is not None and self.sliding_window < 1:
      raise UnsupportedConfigError(f"sliding_window={self.sliding_window}; expected >= 1 or null")

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

  @property
  def sliding_layers(self) -> tuple[bool, ...]:
    """Per layer: does it attend through the sliding window?"""
    types = self.layer_types or ("full_attention",) * self.num_hidden_layers
    return tuple(t == "sliding_attention" for t in types)

  @property
  def has_sliding_layers(self) -> bool:
    return any(self.sliding_layers)

  @property
  def attention_scale(self) -> float:
    """What q·k is multiplied by: 1/sqrt(query_pre_attn_scalar or head_dim)."""
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  @property
  def family(self) -> Family:
    return FAMILIES[self.model_type]

  def replace(self, **changes) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)

  def num_params(self) -> int:
    d, f, v, l = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers
    n, k, h = self.num_attention_heads, self.num_key_value_heads, self.head_dim
    per_layer = d * (n * h) * 2 + d * (k * h) * 2 + 3 * d * f + 2 * d
    per_layer += ((n + 2 * k) * h if self.attention_bias else 0) + (d if self.attention_out_bias else 0)
    per_layer += (2 * h if self.qk_norm else 0) + (2 * d if self.sandwich_norms else 0)
    return v * d * (1 if self.tie_word_embeddings else 2) + l * per_layer + d

  # ---------------------------------------------------------------------------------------------
  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], *, strict: bool = False, **run_options) -> "DecoderConfig":
    """Reads a HF `config.json` dict of one of the families (v4 or v5 layout). `run_options`:
    dtype, scan_layers, ...

    Keys that change the computation are read or refused by name (see the module doc). Keys the
    family does not know are ignored with a warning, as transformers does, unless `strict`: then
    they raise `UnsupportedConfigError`.
    """
    hf = dict(hf)
    model_type = hf.get("model_type", "llama")
    if model_type in _WRAPPERS:
      raise UnsupportedConfigError(f"model_type={model_type!r} is {_WRAPPERS[model_type]}")
    if model_type not in FAMILIES:
      raise UnsupportedConfigError(
          f"model_type={model_type!r}; supported: {', '.join(repr(t) for t in MODEL_TYPES)}")
    family = FAMILIES[model_type]
    for key, accepted in family.required.items():
      if key in hf and hf[key] not in accepted:
        raise UnsupportedConfigError(
            f"{key}={hf[key]!r} is not supported: {family.why[key]} (accepted: "
            f"{', '.join(repr(v) for v in accepted if v is not None)})")
    if hf.get("quantization_config"):
      method = hf["quantization_config"]
      method = method.get("quant_method", "?") if isinstance(method, Mapping) else method
      raise UnsupportedConfigError(
          f"quantization_config (quant_method={method!r}) is not supported: the weights are "
          "quantized; dequantize them to a bfloat16/float32 safetensors checkpoint first")
    known = (_COMMON_READS | family.reads | family.required.keys() | _ROPE_KEYS
             | {"model_type", "quantization_config"})
    metadata = _METADATA_KEYS | ({"layer_types"} if model_type in ("llama", "mistral") else set())
    unknown = sorted(k for k in hf if k not in known and k not in metadata)
    if unknown and strict:
      raise UnsupportedConfigError(
          f"unknown {family.label} config fields {unknown}; they may change the model in ways this "
          "implementation ignores (strict config checking is on: turn it off, e.g. "
          "--nostrict_config / model.strict_config=False, to ignore them as transformers does)")
    _log_once(sorted(k for k in hf if k in metadata), logging.info,
              f"{family.label} config: ignoring %s (they do not change the computation)")
    _log_once(unknown, logging.warning,
              f"{family.label} config: ignoring unknown fields %s, as transformers' "
              f"{family.label} does; if they change the model, its outputs will differ (strict "
              "config checking refuses them)")
    dropout = hf.get("attention_dropout")
    if dropout and "attention_dropout=" not in _LOGGED_KEYS:
      _LOGGED_KEYS.add("attention_dropout=")
      logging.warning("%s config: attention_dropout=%s is ignored: this implementation trains "
                      "without dropout", family.label, dropout)
    get = lambda key: hf[key] if key in hf else family.defaults.get(key)
    kwargs = {k: get(k) for k in _COMMON_READS if k in hf or k in family.defaults}
    if kwargs.get("num_key_value_heads") is None:  # transformers: absent or null means no GQA
      kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    kwargs.update(family.fixed, model_type=model_type)
    kwargs.update(_read_family_fields(family, hf, get, kwargs["num_hidden_layers"]))
    rope_theta, rope_scaling, local_theta = _read_rope(hf, family)
    if "max_position_embeddings" not in hf and rope_scaling is not None and model_type == "llama":
      kwargs["max_position_embeddings"] = rope_scaling.original_max_position_embeddings
    return cls(rope_theta=rope_theta, rope_scaling=rope_scaling, rope_local_theta=local_theta,
               **kwargs, **run_options)

  def to_hf(self) -> dict[str, Any]:
    """The HF `config.json` dict; `DecoderConfig.from_hf(c.to_hf())` gives back the same architecture."""
    global_rope = _rope_dict(self.rope_theta, self.rope_scaling)
    rope_scaling = None if self.rope_scaling is None else {
        k: v for k, v in global_rope.items() if k != "rope_theta"}
    eos = self.eos_token_id
    hf = {
        "architectures": [self.family.architecture],
        "model_type": self.model_type,
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
        "rope_parameters": global_rope,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": list(eos) if isinstance(eos, tuple) else eos,
        "pad_token_id": self.pad_token_id,
    }
    if self.model_type == "llama":
      hf.update(hidden_act="silu", attention_bias=False, mlp_bias=False)
    elif self.model_type == "mistral":
      hf.update(hidden_act="silu", sliding_window=self.sliding_window if self.has_sliding_layers
                else None)
    elif self.model_type in ("qwen2", "qwen3"):
      sliding = self.sliding_layers
      first = sliding.index(True) if any(sliding) else self.num_hidden_layers
      hf.update(hidden_act="silu", use_sliding_window=any(sliding),
                sliding_window=self.sliding_window if any(sliding) else None,
                max_window_layers=first, layer_types=list(self._layer_types()))
      if self.model_type == "qwen3":
        hf["attention_bias"] = self.attention_bias
    else:  # gemma2, gemma3_text
      hf.update(hidden_activation="gelu_pytorch_tanh", attention_bias=self.attention_bias,
                query_pre_attn_scalar=_plain_number(self.query_pre_attn_scalar or self.head_dim),
                attn_logit_softcapping=self.attn_logit_softcapping,
                final_logit_softcapping=self.final_logit_softcapping,
                sliding_window=self.sliding_window, layer_types=list(self._layer_types()))
      if self.model_type == "gemma3_text":
        local = float(self.rope_local_theta if self.rope_local_theta is not None
                      else self.rope_theta)
        hf["rope_local_base_freq"] = local
        hf["rope_parameters"] = {"full_attention": global_rope,
                                 "sliding_attention": {"rope_type": "default", "rope_theta": local}}
    hf["torch_dtype"] = self.param_dtype
    return hf

  def _layer_types(self) -> tuple[str, ...]:
    return tuple(LAYER_TYPES[s] for s in self.sliding_layers)


LlamaConfig = DecoderConfig  # the name this config had when it described Llama only


def _plain_number(x):
  """An integral float as an int (transformers' strict configs type some of these fields int)."""
  return int(x) if float(x).is_integer() else float(x)


def _read_family_fields(family: Family, hf: Mapping[str, Any], get, num_layers: int) -> dict:
  """The family switches read from config.json (the `fixed` ones come from the family itself)."""
  out: dict[str, Any] = {}
  t = family.model_type
  if t == "mistral":
    window = get("sliding_window")
    if window is not None:  # every Mistral layer slides (transformers ignores layer_types here)
      out.update(sliding_window=int(window), layer_types=("sliding_attention",) * num_layers)
  elif t in ("qwen2", "qwen3"):
    if t == "qwen3" and get("attention_bias"):
      out.update(attention_bias=True, attention_out_bias=True)
    window = get("sliding_window") if get("use_sliding_window") else None
    if window is not None:
      types = hf.get("layer_types") or [
          "sliding_attention" if i >= get("max_window_layers") else "full_attention"
          for i in range(num_layers)]
      out.update(sliding_window=int(window), layer_types=tuple(types))
  elif t in ("gemma2", "gemma3_text"):
    if get("attention_bias"):
      out.update(attention_bias=True, attention_out_bias=True)
    window = get("sliding_window")
    legacy = hf.get("sliding_window_size")
    if legacy is not None and legacy != window:
      raise UnsupportedConfigError(f"sliding_window_size={legacy} differs from sliding_window="
                                   f"{window}; which window the checkpoint was trained with is unclear")
    types = hf.get("layer_types")
    if types is None and t == "gemma2":  # transformers: even layers slide, odd ones are global
      types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)]
    if types is None:
      pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern",
                                                        family.defaults["sliding_window_pattern"]))
      types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
               for i in range(num_layers)]
    if window is None:
      types = ["full_attention"] * num_layers
    scalar = get("query_pre_attn_scalar")
    out.update(sliding_window=None if window is None else int(window), layer_types=tuple(types),
               query_pre_attn_scalar=None if scalar is None else float(scalar),
               attn_logit_softcapping=_float_or_none(get("attn_logit_softcapping")),
               final_logit_softcapping=_float_or_none(get("final_logit_softcapping")))
  return out


def _float_or_none(x):
  return None if x is None else float(x)


def _rope_dict(theta: float, scaling: RopeScaling | None) -> dict[str, Any]:
  """One rope as transformers v5 writes it (`rope_parameters`)."""
  if scaling is None:
    return {"rope_type": "default", "rope_theta": float(theta)}
  out = {"rope_type": scaling.rope_type, "factor": float(scaling.factor)}
  if scaling.rope_type == "llama3":
    out.update(low_freq_factor=float(scaling.low_freq_factor),
               high_freq_factor=float(scaling.high_freq_factor),
               original_max_position_embeddings=int(scaling.original_max_position_embeddings))
  return {**out, "rope_theta": float(theta)}


def _log_once(keys: list[str], log, message: str):
  """Logs `message` % the keys not logged before by this process (one line, or nothing)."""
  fresh = [k for k in keys if k not in _LOGGED_KEYS]
  if fresh:
    _LOGGED_KEYS.update(fresh)
    log(message, fresh)


def _read_rope(hf: Mapping[str, Any], family: Family) -> tuple[float, RopeScaling | None, float | None]:
  """(rope_theta, scaling, the sliding layers' own theta or None) from either layout; raises, naming
  the key, on rope types or fields we do not implement."""
  params = hf.get("rope_parameters")
  local = None
  if family.model_type == "gemma3_text":
    local = hf.get("rope_local_base_freq", family.defaults["rope_local_base_freq"])
    if isinstance(params, Mapping) and isinstance(params.get("sliding_attention"), Mapping):
      sliding = params["sliding_attention"]
      if sliding.get("rope_type", sliding.get("type", "default")) != "default" or (
          set(sliding) - {"rope_type", "type", "rope_theta"}):
        raise UnsupportedConfigError(
            f"rope_parameters.sliding_attention: {dict(sliding)}; the sliding layers' rope must "
            "be unscaled ('default')")
      local = sliding.get("rope_theta", local)
    local = float(local)
  theta, scaling = _read_one_rope(hf, params, family.defaults.get("rope_theta", 10000.0))
  return theta, scaling, local


def _read_one_rope(hf: Mapping[str, Any], params, default_theta: float
                   ) -> tuple[float, RopeScaling | None]:
  scaling = hf.get("rope_scaling")
  theta = hf.get("rope_theta")
  key = "rope_scaling"
  if params is not None:
    if not isinstance(params, Mapping):
      raise UnsupportedConfigError(f"rope_parameters must be a dict, got {params!r}")
    if "full_attention" in params and isinstance(params["full_attention"], Mapping):
      params = params["full_attention"]  # v5 per-layer-type layout: the global layers' rope
    theta = params.get("rope_theta", theta)
    scaling = params
    key = "rope_parameters"
  if theta is None:
    theta = default_theta
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


def rope_inverse_frequencies(config: DecoderConfig, *, sliding: bool = False) -> np.ndarray:
  """[H/2] float64 inverse frequencies, with the config's scaling applied (as transformers does).

  `sliding`: those of the sliding-window layers, which differ where the config gives them their own
  base (`rope_local_theta`, Gemma 3: unscaled)."""
  h = config.head_dim
  local = sliding and config.rope_local_theta is not None
  theta = config.rope_local_theta if local else config.rope_theta
  inv_freq = 1.0 / (theta ** (np.arange(0, h, 2, dtype=np.float64) / h))
  s = None if local else config.rope_scaling
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


def tiny_config(**overrides) -> DecoderConfig:
  """A few-KB Llama for tests and examples (float32 so it can be compared against PyTorch)."""
  base = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rope_theta=10000.0, dtype="float32", param_dtype="float32", bos_token_id=1,
              eos_token_id=2, pad_token_id=0)
  base.update(overrides)
  return LlamaConfig(**base)
