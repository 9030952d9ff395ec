"""Tiny randomly initialised `transformers` Llamas saved to disk, for parity tests (no downloads)."""

import torch
import transformers

# name -> transformers.LlamaConfig kwargs. Covers every architecture variant the model claims.
VARIANTS = {
    # Llama-2 style: multi-head attention, theta 1e4.
    "llama2": dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0,
                   rms_norm_eps=1e-5, max_position_embeddings=128),
    # Llama-3 style: grouped-query attention, theta 5e5.
    "llama3": dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                   num_attention_heads=8, num_key_value_heads=2, rope_theta=500000.0,
                   rms_norm_eps=1e-5, max_position_embeddings=128),
    # Llama-3.1 rope scaling; tests run sequences longer than original_max_position_embeddings.
    "llama31": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                    max_position_embeddings=256),
    # Llama-3.2 1B/3B style: tied input/output embeddings.
    "tied": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
                 tie_word_embeddings=True, max_position_embeddings=128),
    # head_dim != hidden_size / num_attention_heads.
    "head_dim": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                     rope_theta=10000.0, max_position_embeddings=128),
}


def make_hf_model(name: str, seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(**{**VARIANTS[name], **overrides})
  model = transformers.LlamaForCausalLM(config).float().eval()
  # Default init (std 0.02) gives near-uniform logits; larger weights make parity a sharper test.
  with torch.no_grad():
    for p in model.parameters():
      if p.dim() > 1:
        p.mul_(4.0)
  return model


def save_hf_model(name: str, directory, seed: int = 0, **overrides) -> transformers.LlamaForCausalLM:
  model = make_hf_model(name, seed, **overrides)
  model.save_pretrained(str(directory), safe_serialization=True)
  return model


def hf_logits(model, tokens) -> "numpy.ndarray":
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()
