"""runtime.py: the one factory from a config to what runs it; the planner and the run follow the
config's rules (`config.mesh.rules`), not constants of their own."""

import os

import jax
import ml_collections
import pytest

import configs
from meta_rewarding import plan, runtime, sharding
from meta_rewarding.config import base as config_base, rules as config_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def local_cpu(arg=""):
  return configs.load("local_cpu", arg)


def tiny_config(**mesh_shape):
  c = config_base.get_base_config()
  c.seed = 3
  c.model.architecture = ml_collections.ConfigDict(dict(
      vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
      bos_token_id=1, eos_token_id=2))
  c.actor.max_new_tokens = c.judge.max_new_tokens = c.meta_judge.max_new_tokens = 16
  c.sampling.prompt_buckets = (32, 64)
  c.model.dtype = c.model.param_dtype = "float32"
  c.mesh.shape = ml_collections.ConfigDict(mesh_shape or {"data": 1, "fsdp": 2, "tensor": 2})
  return c


# Every parameter replicated: the layout a user gets by mapping no logical axis to a mesh axis.
REPLICATED = tuple((name, None) for name, _ in config_rules.TRAIN_RULES)


def test_rules_default_to_the_config_defaults_and_decode_adds_the_cache():
  train_rules, decode_rules = config_rules.rules_for(local_cpu())
  assert train_rules == config_rules.TRAIN_RULES
  assert decode_rules == train_rules + (("cache_length", None),) == config_rules.DECODE_RULES
  # Lists (what JSON and the command line give) become the tuples flax wants.
  c = tiny_config()
  c.mesh.rules = [["batch", ["data", "fsdp"]], ["embed", "fsdp"]]
  assert config_rules.rules_for(c)[0] == (("batch", ("data", "fsdp")), ("embed", "fsdp"))


def test_planner_and_run_follow_a_changed_config_rules():
  c = tiny_config()
  rt = runtime.build(c, devices=jax.devices()[:4])
  planned = plan.plan(c, 4)
  embed = rt.params["embed"]
  assert embed.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")

  c.mesh.rules = REPLICATED
  rt2 = runtime.build(c, devices=jax.devices()[:4])
  replanned = plan.plan(c, 4)
  assert rt2.train_rules == REPLICATED
  for leaf in jax.tree.leaves(rt2.params):  # the run: every weight whole on every device
    assert leaf.sharding.is_fully_replicated
  # The planner counts the same: replicated parameters cost the whole model per device (4x the
  # 2 x 2 sharded layout, up to the norm scales that are replicated either way).
  assert replanned.params > 3 * planned.params
  assert replanned.params == sum(x.size * 4 for x in jax.tree.leaves(rt2.params))
  # Same weights whichever layout: the random init depends on the seed, not on the sharding.
  assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(rt.params),
                                                   jax.tree.leaves(rt2.params)))


def test_model_config_takes_missing_ids_from_the_tokenizer_and_refuses_a_bigger_vocabulary():
  class Tok:
    vocab_size, bos_id, eos_id = 40, 5, 6
  c = tiny_config()
  del c.model.architecture["bos_token_id"], c.model.architecture["eos_token_id"]
  mc, source = runtime.model_config(c, Tok())
  assert (mc.bos_token_id, mc.eos_token_id, source) == (5, 6, "model.architecture")
  Tok.vocab_size = 65
  with pytest.raises(runtime.RuntimeConfigError, match="65 tokens but the model .* only 64"):
    runtime.model_config(c, Tok())


def test_planning_falls_back_to_the_architecture_and_the_run_does_not(tmp_path):
  c = tiny_config()
  c.model.checkpoint = str(tmp_path / "not_here")
  mc, source = runtime.model_config(c, planning=True)
  assert source == "model.architecture" and mc.vocab_size == 64
  with pytest.raises(Exception, match="not_here"):
    runtime.model_config(c)


def test_build_without_params_and_a_mesh_that_does_not_divide():
  rt = runtime.build(tiny_config(), devices=jax.devices()[:4], params=False)
  assert rt.params is None and dict(rt.mesh.shape) == {"data": 1, "fsdp": 2, "tensor": 2}
  c = tiny_config(data=1, fsdp=1, tensor=8)  # 8 does not divide 4 query heads
  with pytest.raises(sharding.MeshError):
    runtime.build(c, params=False)
