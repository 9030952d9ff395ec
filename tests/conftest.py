"""Shared test set-up: 8 fake CPU devices (for sharding tests) and tiny-model factories."""

import os

# Must happen before jax is imported anywhere: every test process sees 8 CPU devices, so sharded
# and unsharded runs can be compared in one process. Unsharded code simply uses device 0.
# (--xla_gpu_deterministic_ops: on a GPU, XLA's reductions and scatters otherwise use atomics, and
# the bitwise resume tests would see 1e-9 differences; CPU ignores it.)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_gpu_deterministic_ops=true").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Float32 matmuls in full float32 on every backend: on GPUs XLA's default precision runs them as
# TF32 (~1e-3 relative), which the parity tests (1e-4 against transformers) would read as a bug.
# Set JAX_DEFAULT_MATMUL_PRECISION=default to see what TF32 does. (On CPU both are the same.)
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# Compiled programs go to an on-disk cache shared by every process of a test run (the xdist workers
# and the CLI subprocesses the end-to-end tests start), so a program several tests build is
# compiled once; it is kept between runs (JAX keys it by program, compile options, devices and jax
# version, and evicts beyond the size limit). META_REWARDING_TEST_JAX_CACHE="" turns it off, e.g.
# to time cold compiles.
_CACHE = os.environ.get("META_REWARDING_TEST_JAX_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "meta_rewarding", "jax_tests"))
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
  """A tiny HF Llama with a Llama-3-style tokenizer in the same directory (train / train_dpo CLIs)."""
  import jax
  from tiny_tokenizers import build_llama3_hf
  from meta_rewarding import checkpoints
  from meta_rewarding.model.config import tiny_config
  from meta_rewarding.model.llama import init_params
  from meta_rewarding.tokenizer import load_tokenizer
  directory = tmp_path_factory.mktemp("hf")
  build_llama3_hf(str(directory))
  tok = load_tokenizer(str(directory))
  config = tiny_config(vocab_size=512, max_position_embeddings=512, bos_token_id=tok.bos_id,
                       eos_token_id=tok.eos_id)
  checkpoints.save_hf(str(directory), config, init_params(config, jax.random.key(1)))
  build_llama3_hf(str(directory))  # save_hf replaced the directory: put the tokenizer back
  return str(directory)


@pytest.fixture(scope="session")
def llama3_checkpoint(tmp_path_factory):
  """A tiny random HF Llama saved by transformers, with a Llama-3-style tokenizer beside it
  (<|begin_of_text|> = 0, <|end_of_text|> = 1, <|eot_id|> = 4): the CLIs' test model."""
  import tiny_tokenizers
  from hf_models import save_hf_model
  directory = str(tmp_path_factory.mktemp("llama3_ckpt"))
  save_hf_model("llama3", directory, vocab_size=400, bos_token_id=0, eos_token_id=[1, 4])
  tiny_tokenizers.build_llama3_hf(directory)
  return directory
