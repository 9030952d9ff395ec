"""Shared test set-up: 8 fake CPU devices (for sharding tests) and tiny-model factories."""

import os

# Must happen before jax is imported anywhere: every test process sees 8 CPU devices, so sharded
# and unsharded runs can be compared in one process. Unsharded code simply uses device 0.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
