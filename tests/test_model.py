"""The Flax Llama: parity with transformers, cache consistency, causality, config exchange."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_models import VARIANTS, hf_logits, save_hf_model
from meta_rewarding.config import rules as config_rules
from meta_rewarding import checkpoints, sharding
from meta_rewarding.model.config import LlamaConfig, UnsupportedConfigError, tiny_config
from meta_rewarding.model.llama import (Llama, causal_mask, forward, init_cache, init_params,
                                        padded_forward)


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
  """Each variant saved once through `save_pretrained`; returns name -> (dir, torch model)."""
  out = {}
  for name in VARIANTS:
    directory = tmp_path_factory.mktemp(name)
    out[name] = (directory, save_hf_model(name, directory))
  return out


def _tokens(vocab, batch, length, seed=0):
  return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_logits_match_transformers(hf_checkpoints, name):
  directory, torch_model = hf_checkpoints[name]
  config, params = checkpoints.load_hf(str(directory), dtype="float32")
  # llama31 has original_max_position_embeddings=16: run well past it to exercise the scaling.
  tokens = _tokens(config.vocab_size, 2, 48 if name == "llama31" else 16)
  ours = np.asarray(forward(config, params, tokens))
  theirs = hf_logits(torch_model, tokens)
  assert ours.dtype == np.float32
  assert np.abs(ours - theirs).max() <= 1e-4


def test_scanned_layers_match_transformers(hf_checkpoints):
  directory, torch_model = hf_checkpoints["llama3"]
  config, params = checkpoints.load_hf(str(directory), dtype="float32", scan_layers=True,
                                       remat_policy="full")
  assert params["layers"]["layer"]["attn"]["q"].shape[0] == config.num_hidden_layers
  tokens = _tokens(config.vocab_size, 2, 16)
  assert np.abs(np.asarray(forward(config, params, tokens)) - hf_logits(torch_model, tokens)).max() <= 1e-4


@pytest.mark.parametrize("mesh_shape", [{"fsdp": 4, "tensor": 2}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_parity_holds_with_sharded_params(hf_checkpoints, mesh_shape):
  directory, torch_model = hf_checkpoints["llama3"]
  mesh = sharding.make_mesh(mesh_shape)
  config, params = checkpoints.load_hf(
      str(directory), dtype="float32",
      shardings=lambda c: sharding.param_shardings(c, mesh, config_rules.TRAIN_RULES))
  q = params["layers_0"]["attn"]["q"]
  assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated
  # Each device holds a slice, not the whole tensor.
  assert q.addressable_shards[0].data.size < q.size
  tokens = _tokens(config.vocab_size, 8, 16)
  with sharding.activate(mesh, config_rules.TRAIN_RULES):
    ours = np.asarray(forward(config, params, tokens))
  assert np.abs(ours - hf_logits(torch_model, tokens)).max() <= 1e-4


@pytest.mark.parametrize("scan", [False, True])
def test_prefill_then_decode_equals_full_forward(scan):
  config = tiny_config(scan_layers=scan)
  params = init_params(config, jax.random.key(0))
  B, T, P, S = 3, 12, 5, 16
  tokens = _tokens(config.vocab_size, B, T)
  full = np.asarray(forward(config, params, tokens))
  model = Llama(config)
  positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  slots = jnp.arange(S)
  cache = init_cache(config, B, S)
  # Jitted like the sampler's steps (eager `apply` retraces every layer op on every call); the
  # cache index is a traced value, so all decode steps share one compiled program.
  step = jax.jit(lambda cache, tokens, positions, mask, index: model.apply(
      {"params": params}, tokens, positions, mask, cache=cache, cache_index=index))
  mask = jnp.broadcast_to(slots[None, :] <= jnp.arange(P)[:, None], (B, P, S))
  logits, cache = step(cache, tokens[:, :P], positions[:, :P], mask, jnp.int32(0))
  steps = [logits]
  for t in range(P, T):
    mask = jnp.broadcast_to(slots <= t, (B, 1, S))
    logits, cache = step(cache, tokens[:, t:t + 1], positions[:, t:t + 1], mask, jnp.int32(t))
    steps.append(logits)
  np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
  if scan:
    assert cache["k"].shape == (config.num_hidden_layers, B, config.num_key_value_heads, S,
                                config.head_dim)
  else:
    assert len(cache) == config.num_hidden_layers
    assert cache[0]["k"].shape == (B, config.num_key_value_heads, S, config.head_dim)


def test_causality_future_tokens_do_not_change_the_past():
  config = tiny_config()
  params = init_params(config, jax.random.key(1))
  tokens = _tokens(config.vocab_size, 2, 10)
  changed = tokens.copy()
  changed[:, 6:] = (changed[:, 6:] + 7) % config.vocab_size
  a, b = np.asarray(forward(config, params, tokens)), np.asarray(forward(config, params, changed))
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
  assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


def test_left_padding_does_not_change_a_rows_logits():
  config = tiny_config()
  params = init_params(config, jax.random.key(2))
  row = _tokens(config.vocab_size, 1, 7)
  padded = np.concatenate([np.zeros((1, 3), np.int32), row], axis=1)
  valid = np.concatenate([np.zeros((1, 3), bool), np.ones((1, 7), bool)], axis=1)
  ours = np.asarray(padded_forward(config, params, padded, valid))[:, 3:]
  np.testing.assert_allclose(ours, np.asarray(forward(config, params, row)), atol=1e-5)


def test_bf16_compute_stays_close_to_float32():
  config = tiny_config()
  params = init_params(config, jax.random.key(3))
  tokens = _tokens(config.vocab_size, 2, 8)
  f32 = np.asarray(forward(config, params, tokens))
  bf16 = np.asarray(forward(config.replace(dtype="bfloat16"), params, tokens))
  assert bf16.dtype == np.float32
  assert np.abs(bf16 - f32).max() < 0.05 * np.abs(f32).max() + 0.05


@pytest.mark.parametrize("T", [1, 5])
def test_output_projection_forms_agree(T):
  # The CPU form (per kv head) and the form used elsewhere (plain): the same product.
  from meta_rewarding.model.llama import output_projection
  rng = np.random.default_rng(T)
  out = jnp.asarray(rng.standard_normal((2, 4, 3, T, 8)), jnp.float32)   # B, K, G, T, H
  wo = jnp.asarray(rng.standard_normal((12, 8, 16)), jnp.float32)        # N = K·G, H, D
  want = np.einsum("bkgth,kghd->btd", np.asarray(out, np.float64),
                   np.asarray(wo, np.float64).reshape(4, 3, 8, 16))
  for per_kv_head in (True, False):
    got = np.asarray(output_projection(out, wo, per_kv_head=per_kv_head))
    assert got.shape == (2, T, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_causal_mask_blocks_padding_and_future():
  mask = np.asarray(causal_mask(jnp.array([[False, True, True]])))
  np.testing.assert_array_equal(mask[0], [[0, 0, 0], [0, 1, 0], [0, 1, 1]])


# ---- LlamaConfig <-> HF config.json -------------------------------------------------------------

def _saved_config(tmp_path, **kwargs) -> dict:
  import transformers
  transformers.LlamaConfig(**kwargs).save_pretrained(str(tmp_path))
  return json.loads((tmp_path / "config.json").read_text())


def test_from_hf_reads_transformers_v5_layout(tmp_path):
  hf = _saved_config(tmp_path, **VARIANTS["llama31"])
  assert "rope_parameters" in hf  # what save_pretrained writes today
  config = LlamaConfig.from_hf(hf)
  assert config.rope_theta == 500000.0
  assert config.rope_scaling.rope_type == "llama3" and config.rope_scaling.factor == 8.0
  assert config.rope_scaling.original_max_position_embeddings == 16


def test_from_hf_reads_transformers_v4_layout():
  # As in the published Meta-Llama-3.1-8B-Instruct config.json.
  hf = {"architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 128256}
  config = LlamaConfig.from_hf(hf)
  assert config.head_dim == 128 and config.num_groups == 4
  assert config.eos_token_ids == (128001, 128008, 128009)
  assert config.rope_scaling.original_max_position_embeddings == 8192
  again = LlamaConfig.from_hf(config.to_hf())
  assert again == config
  # to_hf writes both layouts, so older readers see the same rope.
  assert config.to_hf()["rope_scaling"]["rope_type"] == "llama3"
  assert config.to_hf()["rope_parameters"]["rope_theta"] == 500000.0


def test_to_hf_is_loaded_by_transformers_with_the_same_fields():
  import transformers
  config = tiny_config(rope_scaling=None, tie_word_embeddings=True, head_dim=32)
  hf = transformers.LlamaConfig(**{k: v for k, v in config.to_hf().items()
                                   if k not in ("architectures", "model_type", "torch_dtype")})
  assert hf.head_dim == 32 and hf.tie_word_embeddings and hf.num_key_value_heads == 2
  assert LlamaConfig.from_hf(hf.to_dict(), strict=False).replace(
      dtype="float32", param_dtype="float32") == config


@pytest.mark.parametrize("bad, message", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "rope type 'dynamic'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "missing"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"model_type": "gpt2"}, "model_type"),
    ({"model_type": "gemma3"}, "multimodal Gemma 3"),
    ({"rope_interleaved": True}, "rope_interleaved"),
    ({"num_key_value_heads": 3}, "multiple of"),
])
def test_from_hf_rejects_what_it_does_not_implement(bad, message):
  hf = {**tiny_config().to_hf(), "rope_scaling": None, "rope_parameters": None, **bad}
  with pytest.raises(UnsupportedConfigError, match=message):
    LlamaConfig.from_hf(hf)


def test_from_hf_unknown_keys_refused_only_when_strict():
  # transformers' Llama ignores keys it does not read; so does this one unless strict.
  hf = {**tiny_config().to_hf(), "rope_scaling": None, "rope_parameters": None,
        "sliding_window": 4096}
  assert LlamaConfig.from_hf(hf).replace(dtype="float32") == tiny_config()
  with pytest.raises(UnsupportedConfigError, match=r"unknown Llama config fields \['sliding_window'\]"):
    LlamaConfig.from_hf(hf, strict=True)


# Attention in query blocks (`attention_chunk`): the same function, one block's scores at a time.

_GEMMA_LIKE = dict(model_type="gemma2", norm_style="gemma", sandwich_norms=True,
                   hidden_act="gelu_pytorch_tanh", scale_embeddings=True, query_pre_attn_scalar=16.0,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4,
                   layer_types=("sliding_attention", "full_attention"))


@pytest.mark.parametrize("chunk", [4, 5])  # 4 divides T = 12; 5 pads the last block
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_attention_in_blocks_equals_all_at_once(chunk, family):
  extra = _GEMMA_LIKE if family == "gemma2" else {}
  config = tiny_config(**extra)
  blocked = config.replace(attention_chunk=chunk)
  params = init_params(config, jax.random.key(1))
  tokens = _tokens(config.vocab_size, 3, 12, seed=2)
  valid = np.ones_like(tokens, dtype=bool)
  valid[1, :3] = False  # a left-padded row: its padding queries see no key in any block
  want = np.asarray(padded_forward(config, params, tokens, valid))
  got = np.asarray(padded_forward(blocked, params, tokens, valid))
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_attention_in_blocks_has_the_same_gradient(remat):
  config = tiny_config(scan_layers=True, remat_policy=remat)
  blocked = config.replace(attention_chunk=4)
  params = init_params(config, jax.random.key(3))
  tokens = _tokens(config.vocab_size, 2, 10, seed=4)

  def loss(c):
    return lambda p: jnp.sum(jax.nn.log_softmax(forward(c, p, tokens))[..., 7] ** 2)

  want = jax.grad(loss(config))(params)
  got = jax.grad(loss(blocked))(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_attention_in_blocks_prefills_a_cache_like_all_at_once():
  config = tiny_config()
  blocked = config.replace(attention_chunk=3)
  params = init_params(config, jax.random.key(5))
  B, P, S = 2, 8, 12
  tokens = jnp.asarray(_tokens(config.vocab_size, B, P, seed=6))
  positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
  mask = jnp.broadcast_to(jnp.arange(S)[None, :] <= jnp.arange(P)[:, None], (B, P, S))
  outs = [Llama(c).apply({"params": params}, tokens, positions, mask,
                         cache=init_cache(c, B, S), cache_index=jnp.int32(0))
          for c in (config, blocked)]
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1])):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_attention_in_blocks_holds_one_blocks_scores():
  """What the blocks are for: the compiled gradient of a long row needs less memory in blocks."""
  config = tiny_config(num_attention_heads=8, num_key_value_heads=8, hidden_size=64,
                       scan_layers=True, remat_policy="full")
  params = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((1, 1024), jnp.int32)

  def temp_bytes(c):
    fn = jax.jit(jax.grad(lambda p, t: jnp.mean(forward(c, p, t))))
    return fn.lower(params, tokens).compile().memory_analysis().temp_size_in_bytes

  whole, blocked = temp_bytes(config), temp_bytes(config.replace(attention_chunk=128))
  scores = 8 * 1024 * 1024 * 4  # one layer's f32 scores over the whole row: 32 MiB
  assert whole > scores
  assert blocked < whole - scores / 2, (whole, blocked)


def test_attention_chunk_must_not_be_negative():
  with pytest.raises(UnsupportedConfigError, match="attention_chunk"):
    tiny_config(attention_chunk=-1)
