"""meta_rewarding: Meta-Rewarding (and Self-Rewarding) self-improvement of Llama models in JAX.

The package root stays light on purpose: `import meta_rewarding.losses` must pull in only jax, so
nothing heavy (flax, transformers) is imported here. Import the submodules you need.
"""

__version__ = "0.1.0"
