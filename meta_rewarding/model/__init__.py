"""The Llama family: `LlamaConfig` (HF config exchange) and the Flax `Llama` module."""

from meta_rewarding.model.config import LlamaConfig, RopeScaling, UnsupportedConfigError, tiny_config
from meta_rewarding.model.llama import (Llama, causal_mask, forward, hidden_states, init_cache,
                                        init_params, padded_forward, param_logical_axes, unembedding)

__all__ = ["LlamaConfig", "RopeScaling", "UnsupportedConfigError", "tiny_config", "Llama",
           "causal_mask", "forward", "hidden_states", "init_cache", "init_params", "padded_forward",
           "param_logical_axes", "unembedding"]
