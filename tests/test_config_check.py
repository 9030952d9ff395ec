"""config_check: every shipped config passes, and every value out of range is refused with its key
and the allowed values, all failures of a config in one error, one line each."""

import os

import ml_collections
import pytest

import configs
from meta_rewarding.config import base as config_base
from meta_rewarding import config_check, train
from meta_rewarding.config_check import ConfigError

import test_configs  # the same variant list as the config-file tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_cases():
  for name in configs.NAMES:
    for variant in test_configs.documented_variants(configs.module(name)) or [""]:
      yield pytest.param(name, variant, id=f"{name}.py:{variant}")


@pytest.mark.parametrize("name,variant", list(_config_cases()))
def test_every_config_file_and_variant_passes(name, variant):
  module = configs.module(name)
  config = configs.load(name, variant)
  if test_configs.is_pipeline_config(module):
    config_check.check_pipeline_config(config)
  else:
    config_check.check_train_dpo_config(config)


def test_base_and_train_defaults_pass():
  c = config_base.get_base_config()
  c.data.prompts = "testbed:10"  # the base leaves the prompt source to the config file
  c.model.architecture = ml_collections.ConfigDict({"hidden_size": 8})
  c.train = config_base.train_config()
  config_check.check_pipeline_config(c)
  config_check.check_train_config(config_base.train_config())


def smoke():
  return configs.load("local_cpu", "smoke")


def _set(config, key, value):
  *parents, last = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[last] = value


# (key, bad value, the key as the message names it, a piece of the allowed range).
PIPELINE_CASES = [
    # The cases of issue 14.
    ("pipeline.rho", (2.0,), "pipeline.rho[0]=2.0", "[0, 0.5)"),
    ("judge.num_judgments", 0, "judge.num_judgments=0", ">= 1"),
    ("pipeline.chunk_size", 0, "pipeline.chunk_size=0", ">= 1"),
    ("sampling.temperature", -1.0, "sampling.temperature=-1.0", ">= 0"),
    ("pipeline.num_iterations", -1, "pipeline.num_iterations=-1", ">= 1"),
    ("pipeline.prompts_per_iteration", 0, "pipeline.prompts_per_iteration=0", ">= 1"),
    ("actor.num_responses", 1, "actor.num_responses=1", ">= 2"),
    ("train.batch_size", 0, "train.batch_size=0", ">= 1"),
    # Pipeline.
    ("pipeline.rho", (0.0, 0.5), "pipeline.rho[1]=0.5", "[0, 0.5)"),
    ("pipeline.rho", (-0.1,), "pipeline.rho[0]=-0.1", "[0, 0.5)"),
    ("pipeline.rho", (), "pipeline.rho=()", "non-empty list"),
    ("pipeline.train_pairs", ("both", "bth"), "pipeline.train_pairs[1]='bth'",
     "both|actor|judge|none"),
    ("pipeline.train_pairs", (), "pipeline.train_pairs=()", "non-empty list"),
    ("pipeline.length_unit", "words", "pipeline.length_unit='words'", "chars|tokens"),
    ("seed", -3, "seed=-3", ">= 0"),
    # Sampling.
    ("sampling.top_p", 0.0, "sampling.top_p=0.0", "(0, 1]"),
    ("sampling.top_p", 1.5, "sampling.top_p=1.5", "(0, 1]"),
    ("sampling.top_k", -1, "sampling.top_k=-1", ">= 0"),
    ("sampling.batch_size", 0, "sampling.batch_size=0", ">= 1"),
    ("sampling.prompt_buckets", (48, 0), "sampling.prompt_buckets[1]=0", ">= 1"),
    ("sampling.prompt_buckets", (), "sampling.prompt_buckets=()", "non-empty"),
    ("sampling.max_cache_length", -1, "sampling.max_cache_length=-1", ">= 0"),
    ("sampling.max_cache_length", 20, "sampling.max_cache_length=20", "longest generation"),
    ("sampling.batching", "dynamic", "sampling.batching='dynamic'", "continuous|static"),
    ("sampling.decode_block", 0, "sampling.decode_block=0", ">= 1"),
    ("sampling.temperature", float("nan"), "sampling.temperature=nan", ">= 0"),
    # Stages.
    ("actor.max_new_tokens", 0, "actor.max_new_tokens=0", ">= 1"),
    ("judge.max_new_tokens", -5, "judge.max_new_tokens=-5", ">= 1"),
    ("meta_judge.max_new_tokens", 0, "meta_judge.max_new_tokens=0", ">= 1"),
    ("meta_judge.max_chosen_chars", 0, "meta_judge.max_chosen_chars=0", ">= 1"),
    ("meta_judge.elo_l2", 0.0, "meta_judge.elo_l2=0.0", "> 0"),
    ("meta_judge.testbed_oracle", "perfect", "meta_judge.testbed_oracle='perfect'",
     "''|verdict|check"),
    ("judge.template", "Rate {response}.", "judge.template", "{instruction}"),
    ("meta_judge.template", "{prompt} {response} {judgment_a}", "meta_judge.template",
     "{judgment_b}"),
    # Model, data, evaluation.
    ("model.dtype", "float65", "model.dtype='float65'", "float32|bfloat16|float16"),
    ("model.param_dtype", "int8", "model.param_dtype='int8'", "float32|bfloat16|float16"),
    ("model.chat_format", "chatml", "model.chat_format='chatml'", "llama3"),
    ("model.remat_policy", "some", "model.remat_policy='some'", "dots_no_batch"),
    ("data.prompts", "", "data.prompts=''", "non-empty string"),
    ("data.prompts", "testbed:zero", "data.prompts='testbed:zero'", "n >= 1"),
    ("data.prompts", "hf:", "data.prompts='hf:'", "dataset name"),
    ("data.field", "", "data.field=''", "non-empty string"),
    ("evaluate.heldout_tasks", -1, "evaluate.heldout_tasks=-1", ">= 0"),
    ("evaluate.oracle", "gpt4", "evaluate.oracle='gpt4'", "''|testbed"),
    # Mesh.
    ("mesh.shape.fsdp", 0, "mesh.shape.fsdp=0", "positive integer, or -1"),
    ("mesh.shape.tensor", -2, "mesh.shape.tensor=-2", "positive integer, or -1"),
    ("mesh.num_devices", -1, "mesh.num_devices=-1", ">= 0"),
    # Training.
    ("train.learning_rate", 0.0, "train.learning_rate=0.0", "> 0"),
    ("train.learning_rate", -1e-4, "train.learning_rate=-0.0001", "> 0"),
    ("train.beta", 0.0, "train.beta=0.0", "> 0"),
    ("train.warmup_steps", -1, "train.warmup_steps=-1", ">= 0"),
    ("train.decay", "exp", "train.decay='exp'", "cosine|linear|constant"),
    ("train.end_learning_rate_ratio", 1.5, "train.end_learning_rate_ratio=1.5", "[0, 1]"),
    ("train.weight_decay", -0.1, "train.weight_decay=-0.1", ">= 0"),
    ("train.adam_b1", 1.0, "train.adam_b1=1.0", "[0, 1)"),
    ("train.adam_b2", -0.5, "train.adam_b2=-0.5", "[0, 1)"),
    ("train.adam_eps", 0.0, "train.adam_eps=0.0", "> 0"),
    ("train.max_grad_norm", -1.0, "train.max_grad_norm=-1.0", ">= 0"),
    ("train.grad_accum_steps", 0, "train.grad_accum_steps=0", ">= 1"),
    ("train.num_epochs", 0, "train.num_epochs=0", ">= 1"),
    ("train.max_steps", -1, "train.max_steps=-1", ">= 0"),
    ("train.max_length", 0, "train.max_length=0", ">= 1"),
    ("train.length_buckets", (48, -96), "train.length_buckets[1]=-96", ">= 1"),
    ("train.truncation", "cut", "train.truncation='cut'", "skip|truncate_response|error"),
    ("train.loss_type", "kto", "train.loss_type='kto'", "sigmoid|robust|hinge|ipo"),
    ("train.label_smoothing", 0.5, "train.label_smoothing=0.5", "[0, 0.5)"),
    ("train.nll_scale", -1.0, "train.nll_scale=-1.0", ">= 0"),
    ("train.checkpoint_every", 0, "train.checkpoint_every=0", ">= 1"),
    ("train.keep_checkpoints", 0, "train.keep_checkpoints=0", ">= 1"),
    ("train.log_every", 0, "train.log_every=0", ">= 1"),
    ("train.logps_chunk_size", -512, "train.logps_chunk_size=-512", ">= 0"),
    ("train.reference_batch_size", -1, "train.reference_batch_size=-1", ">= 0"),
]


# (key, the largest value accepted): one past it is surely a mistake (config_check's Limits).
BOUNDS = [
    ("train.learning_rate", 1e-2),
    ("train.num_epochs", 100),
    ("train.batch_size", 4096),
    ("train.grad_accum_steps", 1024),
    ("train.reference_batch_size", 8192),
    ("train.max_length", 131_072),
    ("actor.num_responses", 256),
    ("judge.num_judgments", 64),
    ("evaluate.heldout_samples", 256),
    ("actor.max_new_tokens", 131_072),
    ("judge.max_new_tokens", 131_072),
    ("meta_judge.max_new_tokens", 131_072),
    ("sampling.batch_size", 65_536),
    ("pipeline.num_iterations", 100),
    ("pipeline.prompts_per_iteration", 1_000_000),
]


def _past(bound):
  return bound * 10 if isinstance(bound, float) else bound + 1


@pytest.mark.parametrize("key,bound", BOUNDS, ids=[k for k, _ in BOUNDS])
def test_each_upper_bound_refuses_one_past_it(key, bound):
  config = smoke()
  _set(config, key, bound)
  config_check.check_pipeline_config(config)  # the bound itself is allowed
  _set(config, key, _past(bound))
  with pytest.raises(ConfigError) as info:
    config_check.check_pipeline_config(config)
  problems = info.value.problems
  assert len(problems) == 1, problems
  # Key, value, bound and reason on one line.
  assert problems[0].startswith(f"{key}={_past(bound)!r}: must be <= {bound:g}: "), problems
  assert len(problems[0].split(": ", 2)[2]) > 20 and "\n" not in problems[0]


@pytest.mark.parametrize("key,value", [
    ("train.learning_rate", 1e30),        # issue 32: ran to |w| = 5e29
    ("train.num_epochs", 10**9),          # ran forever
    ("actor.num_responses", 100_000),     # grew to 5 GB RSS in 42 s
    ("pipeline.num_iterations", 10**9),   # the meta-judge check must not walk 1e9 iterations
    ("sampling.prompt_buckets", (48, 10**9)),
    ("train.length_buckets", (512, 10**9)),
])
def test_values_no_run_can_mean_are_refused(key, value):
  config = smoke()
  _set(config, key, value)
  with pytest.raises(ConfigError, match=r"must be <= "):
    config_check.check_pipeline_config(config)


@pytest.mark.parametrize("key,bound", [("ste.num_judgments", 64),
                                       ("ste.judge_max_new_tokens", 131_072),
                                       ("ste.worse_max_new_tokens", 131_072),
                                       ("ste.category_max_new_tokens", 131_072)])
def test_ste_bounds(key, bound):
  config = configs.load("ste_testbed")
  _set(config, key, bound)
  config_check.check_pipeline_config(config)
  _set(config, key, bound + 1)
  with pytest.raises(ConfigError, match=rf"^{key}={bound + 1}: must be <= {bound}: "):
    config_check.check_pipeline_config(config)


# A command-line tuple with an entry ast.literal_eval cannot read (nan, a bare name) reaches the
# config as a one-string tuple: the message names the entry the text holds, not the string.
UNPARSED_CASES = [
    ("pipeline.rho", "(0.1, nan)", ["pipeline.rho[1]=nan: must be a number in [0, 0.5)"]),
    ("pipeline.rho", "(0.1, float('nan'), -inf)",
     ["pipeline.rho[1]=nan: must be a number in [0, 0.5)",
      "pipeline.rho[2]=-inf: must be a number in [0, 0.5)"]),
    ("pipeline.rho", "nan", ["pipeline.rho[0]=nan: must be a number in [0, 0.5)"]),
    ("pipeline.rho", "((0.1, float('nan')),)",
     ["pipeline.rho[0]=(0.1, nan): must be a number in [0, 0.5)"]),
    ("pipeline.train_pairs", "(both, actr)",
     ["pipeline.train_pairs[1]='actr': must be one of both|actor|judge|none"]),
    # Every entry is fine but the pipeline would read one string: refused whole.
    ("pipeline.train_pairs", "(both, actor)",
     ["pipeline.train_pairs='(both, actor)': was read as one string, not a list (an entry is not "
      "a Python literal); write literals, e.g. (0.0, 0.3) or ('both', 'actor')"]),
]


@pytest.mark.parametrize("key,text,expected", UNPARSED_CASES, ids=[c[1] for c in UNPARSED_CASES])
def test_a_list_left_as_one_string_names_the_bad_entry(key, text, expected):
  config = smoke()
  _set(config, key, (text,))
  with pytest.raises(ConfigError) as info:
    config_check.check_pipeline_config(config)
  assert list(info.value.problems) == expected


def test_a_one_string_list_that_is_a_value_is_kept():
  config = smoke()
  config.pipeline.train_pairs = ("actor",)  # `--config.pipeline.train_pairs=actor`
  config_check.check_pipeline_config(config)


@pytest.mark.parametrize("key,value,named,allowed", PIPELINE_CASES,
                         ids=[f"{c[0]}={c[1]!r}" for c in PIPELINE_CASES])
def test_each_bad_value_is_refused_by_name(key, value, named, allowed):
  config = smoke()
  _set(config, key, value)
  with pytest.raises(ConfigError) as info:
    config_check.check_pipeline_config(config)
  problems = info.value.problems
  assert len(problems) == 1, problems
  assert problems[0].startswith(named), problems
  assert allowed in problems[0], problems
  assert "\n" not in problems[0]


def test_errors_are_value_errors_listing_every_failure():
  config = smoke()
  config.pipeline.rho = (2.0,)
  config.judge.num_judgments = 0
  config.sampling.temperature = -1.0
  config.train.batch_size = 0
  with pytest.raises(ValueError) as info:  # ConfigError is a ValueError
    config_check.check_pipeline_config(config)
  assert isinstance(info.value, ConfigError)
  lines = str(info.value).splitlines()
  assert lines == list(info.value.problems) and len(lines) == 4
  for key in ("pipeline.rho[0]", "judge.num_judgments", "sampling.temperature", "train.batch_size"):
    assert sum(line.startswith(key + "=") for line in lines) == 1, (key, lines)


def test_mesh_with_two_fill_axes():
  config = smoke()
  config.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": -1, "tensor": 1})
  with pytest.raises(ConfigError, match=r"mesh.shape=.*at most one axis may be -1"):
    config_check.check_pipeline_config(config)
  config = smoke()
  config.mesh.shape = ml_collections.ConfigDict({"data": 1, "model": 2})
  with pytest.raises(ConfigError, match=r"mesh.shape.model=2: unknown axis; the axes are "
                                        r"data\|fsdp\|tensor"):
    config_check.check_pipeline_config(config)


def test_meta_judge_needs_two_judgments_only_when_it_runs():
  config = smoke()
  config.judge.num_judgments = 1
  with pytest.raises(ConfigError, match=r"judge.num_judgments=1: must be >= 2 when the meta-judge"):
    config_check.check_pipeline_config(config)
  config.meta_judge.enabled = False  # Self-Rewarding: one judgment per response is enough
  config_check.check_pipeline_config(config)
  config.meta_judge.enabled = True
  config.pipeline.train_pairs = ("actor",)
  config_check.check_pipeline_config(config)
  config.meta_judge.run_when_unused = True
  with pytest.raises(ConfigError, match="judge.num_judgments=1"):
    config_check.check_pipeline_config(config)


def test_the_oracle_meta_judge_needs_the_testbed_oracle():
  config = smoke()
  config.meta_judge.testbed_oracle = "check"
  config_check.check_pipeline_config(config)      # local_cpu: evaluate.oracle = "testbed"
  config.evaluate.oracle = ""
  config.evaluate.heldout_tasks = 0
  with pytest.raises(ConfigError, match=r"meta_judge.testbed_oracle='check': needs "
                                        r"evaluate.oracle='testbed'"):
    config_check.check_pipeline_config(config)


def test_random_init_needs_an_architecture():
  config = smoke()
  config.model.checkpoint = ""
  config.model.architecture = ml_collections.ConfigDict()
  with pytest.raises(ConfigError, match=r"model.checkpoint='': must name a Hugging Face Llama "
                                        r"directory when model.architecture is empty"):
    config_check.check_pipeline_config(config)


def test_no_limit_for_chosen_judgments():
  config = smoke()
  config.meta_judge.max_chosen_chars = None
  config_check.check_pipeline_config(config)


def test_missing_key_is_named():
  config = smoke()
  del config.pipeline["chunk_size"]
  with pytest.raises(ConfigError, match="pipeline.chunk_size is missing from the config"):
    config_check.check_pipeline_config(config)


def test_train_config_alone():
  cfg = config_base.train_config()
  cfg.batch_size = 0
  cfg.loss_type = "kto"
  with pytest.raises(ConfigError) as info:
    config_check.check_train_config(cfg)
  assert [p.split("=")[0] for p in info.value.problems] == ["train.batch_size", "train.loss_type"]
  # SFT has no DPO loss type.
  cfg.batch_size = 4
  config_check.check_train_config(cfg, kind="sft")


def _dpo_example():
  return configs.load("dpo_example")


@pytest.mark.parametrize("key,value,named,allowed", [
    ("mode", "ppo", "mode='ppo'", "dpo|sft"),
    ("export_dtype", "float8", "export_dtype='float8'", "''|float32|bfloat16|float16"),
    ("seed", -1, "seed=-1", ">= 0"),
    ("model.dtype", "float65", "model.dtype='float65'", "float32|bfloat16"),
    ("mesh.shape.fsdp", 0, "mesh.shape.fsdp=0", "positive integer, or -1"),
    ("train.batch_size", 0, "train.batch_size=0", ">= 1"),
    ("train.beta", -0.1, "train.beta=-0.1", "> 0"),
    ("train.learning_rate", 1.0, "train.learning_rate=1.0", "<= 0.01: Adam"),
    ("train.num_epochs", 1000, "train.num_epochs=1000", "<= 100: "),
])
def test_train_dpo_config(key, value, named, allowed):
  config = _dpo_example()
  config_check.check_train_dpo_config(config)
  _set(config, key, value)
  with pytest.raises(ConfigError) as info:
    config_check.check_train_dpo_config(config)
  assert len(info.value.problems) == 1 and info.value.problems[0].startswith(named)
  assert allowed in info.value.problems[0]


def test_train_dpo_sft_mode_ignores_the_dpo_loss_type():
  config = _dpo_example()
  config.mode = "sft"
  config.train.loss_type = "not-a-dpo-loss"
  config_check.check_train_dpo_config(config)


def test_a_tensor_width_the_model_does_not_divide_names_one_that_does():
  """A Qwen2.5-7B checkpoint (28 heads, 4 kv heads) on the pod config's default tensor=8: the
  refusal says which tensor width fits (the `model=qwen2_5_7b_instruct` variant picks it)."""
  config = configs.load("tpu_v4", "model=qwen2_5_7b_instruct")
  assert config.mesh.shape.tensor == 4
  config_check.check_run_environment(config, 16)
  config.mesh.shape.tensor = 8
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 16)
  (problem,) = info.value.problems
  assert "'q_heads'=28 over ('tensor',) (size 8)" in problem
  assert problem.endswith("; tensor=4 divides it (--config.mesh.shape.tensor=4; the pod configs' "
                          "model=<preset> variants pick such a mesh, README.md#model-families)")
