"""The Llama family: `config` (`LlamaConfig`, the HF config exchange), `presets` (architectures as
plain dicts) and `llama` (the Flax `Llama` module and its functions).

Empty on purpose: import the module that defines a name (`from meta_rewarding.model.config import
LlamaConfig`), so `meta_rewarding.model.presets` and `meta_rewarding.model.config` load -- in
config files, the planner -- without flax.
"""
