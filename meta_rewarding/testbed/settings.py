"""What the testbed's config and its seed builder share, in one small module with no heavy imports.

The seed's architecture and chat format, the generation lengths every testbed stage uses, the
sampling settings the seed is measured at (the pipeline's: configs/local_cpu.py through
`configs.common.testbed_settings`), and where the shipped seed lives. `seed.py` builds the model
these describe; config files read them without importing the builder.
"""

from __future__ import annotations

import os

# The seed model: a 0.9M-parameter Llama (seed.py's docstring says why this size).
ARCHITECTURE = dict(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
CHAT_FORMAT = "llama2"

# Generation lengths (tokens of the seed's tokenizer): an answer, a judgment (check, verdict,
# score), a meta-judgment (its own check and verdict, both scores against it, the winner), and the
# Self-Taught Evaluator's pairwise judgment (two checks and the tag) and worse response (a
# modified task and an answer to it), each with room to spare over the longest demonstration
# (10, 85, 122, 161, 81 tokens).
ACTOR_MAX_NEW_TOKENS = 24
JUDGE_MAX_NEW_TOKENS = 96
META_MAX_NEW_TOKENS = 136
PAIRWISE_MAX_NEW_TOKENS = 176
WORSE_MAX_NEW_TOKENS = 96

# The pipeline's sampling settings, used wherever the seed's figures or demonstrations should see
# what the pipeline will see.
PIPELINE_SAMPLING = dict(temperature=0.8, top_p=0.95, top_k=32)


def seed_dir() -> str:
  """The shipped seed model's directory (inside the package)."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed")
