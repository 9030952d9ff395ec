"""HF safetensors exchange: exact round trip, streaming memory, clear errors."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from hf_models import save_hf_model
from meta_rewarding import checkpoints, model_files, sharding
from meta_rewarding.config import rules as config_rules
from meta_rewarding.checkpoints import CheckpointError
from meta_rewarding.model.config import UnsupportedConfigError, tiny_config
from meta_rewarding.model.llama import forward, init_params


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("llama3")
  save_hf_model("llama3", directory)
  return directory


def _state(directory) -> dict:
  model = transformers.LlamaForCausalLM.from_pretrained(str(directory), torch_dtype=torch.float32)
  return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("scan", [False, True])
def test_load_save_from_pretrained_reproduces_tensors_exactly(llama3_dir, tmp_path, scan):
  config, params = checkpoints.load_hf(str(llama3_dir), dtype="float32", scan_layers=scan)
  out = checkpoints.save_hf(str(tmp_path / "exported"), config, params)
  original, reloaded = _state(llama3_dir), _state(out)
  assert original.keys() == reloaded.keys()
  for name in original:
    np.testing.assert_array_equal(original[name], reloaded[name], err_msg=name)


def test_save_hf_shards_large_checkpoints_with_an_index(tmp_path):
  config = tiny_config(tie_word_embeddings=True)
  params = init_params(config, jax.random.key(0))
  out = tmp_path / "sharded"
  checkpoints.save_hf(str(out), config, params, max_shard_bytes=40_000)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 2 and all((out / f).exists() for f in files)
  assert "lm_head.weight" not in index["weight_map"]  # tied
  # transformers loads it and computes the same logits.
  model = transformers.LlamaForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32)
  tokens = np.arange(10)[None] % config.vocab_size
  with torch.no_grad():
    theirs = model(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(forward(config, params, tokens)), theirs, atol=1e-4)
  # ... and so do we, from the sharded files.
  config2, params2 = checkpoints.load_hf(str(out), dtype="float32")
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_save_hf_writes_bf16(tmp_path):
  config = tiny_config()
  params = init_params(config, jax.random.key(0))
  out = checkpoints.save_hf(str(tmp_path / "bf16"), config, params, dtype="bfloat16")
  model = transformers.LlamaForCausalLM.from_pretrained(out)
  assert model.model.embed_tokens.weight.dtype == torch.bfloat16
  config2, params2 = checkpoints.load_hf(out, dtype="float32", param_dtype="float32")
  np.testing.assert_allclose(params2["embed"], params["embed"], rtol=1e-2, atol=1e-3)


def test_load_hf_places_each_tensor_in_its_sharding(llama3_dir):
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  shardings = None
  config = checkpoints.read_hf_config(str(llama3_dir), dtype="float32")
  shardings = sharding.param_shardings(config, mesh, config_rules.TRAIN_RULES)
  _, params = checkpoints.load_hf(str(llama3_dir), dtype="float32", shardings=shardings)
  jax.tree.map(lambda p, s: (p.sharding == s) or pytest.fail(f"{p.sharding} != {s}"), params, shardings)


def test_loading_streams_tensor_by_tensor(tmp_path):
  """Peak RSS growth while loading a ~170 MB float32 checkpoint into bfloat16 params (~85 MB)."""
  directory = tmp_path / "big"
  directory.mkdir()
  config = tiny_config(vocab_size=8192, hidden_size=512, intermediate_size=1536,
                       num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=8)
  rng = np.random.default_rng(0)
  tensors = {}
  from meta_rewarding.checkpoints import _param_specs
  for _, names, shape, _, _ in _param_specs(config):
    for name in names:
      tensors[name] = rng.standard_normal(shape, dtype=np.float32) * 0.02
  save_file(tensors, str(directory / "model.safetensors"))
  (directory / "config.json").write_text(json.dumps(config.to_hf()))
  checkpoint_bytes = sum(t.nbytes for t in tensors.values())
  del tensors
  assert checkpoint_bytes > 150e6
  script = textwrap.dedent(f"""
      import resource, jax, json
      jax.numpy.zeros(1).block_until_ready()
      from meta_rewarding import checkpoints
      def status(key):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
      # Reset the peak (VmHWM) so start-up peaks do not hide the load's own.
      open("/proc/self/clear_refs", "w").write("5")
      before = status("VmRSS:")
      config, params = checkpoints.load_hf({str(directory)!r}, param_dtype="bfloat16")
      jax.block_until_ready(params)
      after = status("VmHWM:")
      size = sum(x.nbytes for x in jax.tree.leaves(params))
      print(json.dumps({{"growth": after - before, "result": size}}))
  """)
  env = {**os.environ, "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       check=True)
  figures = json.loads(out.stdout.strip().splitlines()[-1])
  largest_tensor = 8192 * 512 * 4
  assert figures["result"] == checkpoint_bytes // 2
  # On CPU the loaded params live in host memory too, so growth = result + transient. Streaming
  # keeps the transient to a few copies of the largest tensor (read, converted, placed); a loader
  # that read the whole checkpoint first would add the full ~170 MB on top of the result.
  transient = figures["growth"] - figures["result"]
  assert transient < 4 * largest_tensor, figures
  assert transient < 0.4 * checkpoint_bytes, figures
  assert figures["growth"] < checkpoint_bytes, figures


# ---- clear errors ------------------------------------------------------------------------------

def test_missing_directory_and_config(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    checkpoints.load_hf(str(tmp_path / "nope"))
  with pytest.raises(CheckpointError, match="missing config.json"):
    checkpoints.load_hf(str(tmp_path))


def test_missing_tensor_is_named(llama3_dir, tmp_path):
  tensors = load_file(str(llama3_dir / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text((llama3_dir / "config.json").read_text())
  with pytest.raises(CheckpointError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
    checkpoints.load_hf(str(tmp_path))


def test_shape_mismatch_is_named(llama3_dir, tmp_path):
  hf = json.loads((llama3_dir / "config.json").read_text())
  hf["intermediate_size"] = 96
  (tmp_path / "config.json").write_text(json.dumps(hf))
  (tmp_path / "model.safetensors").symlink_to(llama3_dir / "model.safetensors")
  with pytest.raises(CheckpointError, match=r"gate_proj\.weight has shape \(128, 64\), config.json implies \(96, 64\)"):
    checkpoints.load_hf(str(tmp_path))


def test_unsupported_rope_type_names_the_file(llama3_dir, tmp_path):
  hf = json.loads((llama3_dir / "config.json").read_text())
  hf["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(UnsupportedConfigError, match=r"config.json: rope_parameters: rope type 'yarn'"):
    checkpoints.load_hf(str(tmp_path))


@pytest.mark.parametrize("content, message", [
    (b"\x00\x9f\x92garbage\xff\xfe", r"config\.json:1: not UTF-8 text"),
    (b'{"model_type": "llama",\n "vocab_size": 32000,\n "hidden_size": \xff}', r"config\.json:3: not UTF-8"),
    (b"[1, 2, 3]", r"config\.json: expected a JSON object, got list"),
])
def test_unreadable_config_json_is_one_clear_error(tmp_path, content, message):
  (tmp_path / "config.json").write_bytes(content)
  with pytest.raises(CheckpointError, match=message):
    checkpoints.read_hf_config(str(tmp_path))


def test_partial_sharded_checkpoint_and_pickles_are_refused(tmp_path):
  config = tiny_config()
  params = init_params(config, jax.random.key(0))
  out = tmp_path / "ckpt"
  checkpoints.save_hf(str(out), config, params, max_shard_bytes=40_000)
  missing = sorted(out.glob("model-*.safetensors"))[1]
  missing.unlink()
  # Saved by save_hf, so its marker names the lost shard; a downloaded checkpoint has no marker
  # and its index does.
  with pytest.raises(model_files.ModelDirError, match=f"{missing.name}: missing"):
    checkpoints.load_hf(str(out))
  (out / model_files.MODEL_MARKER).unlink()
  with pytest.raises(CheckpointError, match=f"names {missing.name}, which is missing"):
    checkpoints.load_hf(str(out))
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  (pickled / "config.json").write_text(json.dumps(config.to_hf()))
  (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(CheckpointError, match="pickle checkpoints are not loaded"):
    checkpoints.load_hf(str(pickled))


def test_truncated_file_is_detected(llama3_dir, tmp_path):
  data = (llama3_dir / "model.safetensors").read_bytes()
  (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
  (tmp_path / "config.json").write_text((llama3_dir / "config.json").read_text())
  with pytest.raises(CheckpointError, match="truncated"):
    checkpoints.load_hf(str(tmp_path))


def test_failed_save_leaves_no_partial_directory(tmp_path):
  config = tiny_config()
  params = init_params(config, jax.random.key(0))
  del params["layers_1"]["mlp"]["up"]
  with pytest.raises(KeyError):
    checkpoints.save_hf(str(tmp_path / "out"), config, params)
  assert os.listdir(tmp_path) == []
