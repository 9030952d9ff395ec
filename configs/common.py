"""What the config files share, besides the base configs (meta_rewarding/config/base.py) and the
logical-axis rules (meta_rewarding/config/rules.py):

  parse_variants()       the one parser of `--config=configs/<file>.py:<variants>` arguments.
  paper_scale_config()   what the TPU and GPU configs share (model presets, paper settings,
                         scan + remat, long buckets, a tensor width that divides the model) and
                         `apply_runlocal`, their tiny local variant; `method_sweep`, their sweep.
  model_preset()         a preset of meta_rewarding/model/presets.py with its checkpoint names.
  testbed_settings()     the synthetic testbed's seed model, templates and generation lengths;
                         `use_testbed_seed` points a config's model at the shipped seed.

Nothing here imports jax, flax or optax (tests/test_configs.py checks it), so loading a config
costs nothing.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import ml_collections

from meta_rewarding.config import base, rules
from meta_rewarding.model import presets  # plain dicts; the model package imports no flax
from meta_rewarding.testbed import settings as testbed_defs, templates  # pure Python

# ------------------------------------------------------------------------------------------------
# Variants: `--config=configs/<file>.py:<arg>`.

def parse_variants(arg: str | None, config_name: str, known: Iterable[str],
                   example: str = "") -> dict[str, str | bool]:
  """'model=llama3_1b,runlocal' -> {'model': 'llama3_1b', 'runlocal': True}, in the order given.

  Raises ValueError naming the config file, the unknown variants and the known ones (a config's
  `get_config` is called by ml_collections' flag parser, which reports it with the file name)."""
  out: dict[str, str | bool] = {}
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, sep, value = item.partition("=")
    out[key.strip()] = value.strip() if sep else True
  known = tuple(known)
  unknown = [k for k in out if k not in known]
  if unknown:
    hint = f" (e.g. {example!r})" if example else ""
    names = ", ".join(repr(k) for k in unknown)
    raise ValueError(f"unknown {config_name} variant{'s' if len(unknown) > 1 else ''} {names}; "
                     f"expected some of {', '.join(known)}{hint}")
  return out


# ------------------------------------------------------------------------------------------------
# Paper scale: what configs/tpu_v4.py and configs/gpu.py share.

PAPER_SCALE_VARIANTS = ("model", "mesh", "self_rewarding", "runlocal")


def model_preset(name: str) -> dict[str, Any]:
  """{"name": the preset key, "architecture": its DecoderConfig fields, "hf_repo": the checkpoint
  it describes or None, "checkpoint_name": the directory name placeholder paths give it} for a
  preset name or alias of `model/presets.py` (KeyError lists them)."""
  key = presets.canonical(name)
  repo = presets.HF_REPOS.get(key)
  return {"name": key, "architecture": presets.get(key), "hf_repo": repo,
          "checkpoint_name": presets.CHECKPOINT_NAMES.get(key, repo and repo.split("/")[1])}


def paper_scale_config(variants: Mapping[str, Any], *, checkpoint: str, checkpoint_dir: str,
                       prompts_path: str, mesh_shape: Mapping[str, int], num_devices: int,
                       device_memory_gb: float, distributed: bool, remat_policy: str,
                       mesh_names: tuple[str, str], fsdp_batch: tuple[int, int]
                       ) -> ml_collections.ConfigDict:
  """A preset model (`variants["model"]`, default Llama-3-8B-Instruct) with the paper's method
  settings on a pod or node: scan + remat for training, 3072-token pairs in 4 x 4 microbatches,
  512-token log-prob chunks, 64 decode rows, prompt buckets up to 3072.

  mesh_shape's `tensor` is the widest tensor parallelism: a model whose heads, kv heads, MLP or
  vocabulary it does not divide runs at the widest divisor of it that divides them all
  (`tensor_width`), the other devices going to fsdp; where the batch shards then outnumber the
  4 pairs per microbatch, the microbatch grows to them with fewer microbatches (16 pairs a step).

  checkpoint: the 8B checkpoint's placeholder path; other presets get `checkpoint_dir/<repo name>`
  (`presets.CHECKPOINT_NAMES` where the directory that runs is not the repo's: Gemma 3's text model).
  mesh_names: (the default mesh's variant name, the pure-FSDP one's), e.g. ("tensor", "fsdp").
  fsdp_batch: (pairs per microbatch, microbatches) under pure FSDP: the batch shards must divide
  the microbatch.
  """
  c = base.get_base_config()
  c.seed = 0
  preset = model_preset(str(variants.get("model", "llama3_8b")))
  name = preset["checkpoint_name"]
  c.model.checkpoint = checkpoint if preset["name"] == "llama3_8b" else (
      f"{checkpoint_dir}/{name}" if name else "")
  c.model.tokenizer = ""              # the checkpoint's own tokenizer and chat template
  c.model.chat_format = "auto"
  c.model.architecture = ml_collections.ConfigDict(preset["architecture"])  # planning / random init
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.scan_layers = True
  c.model.remat_policy = remat_policy

  c.data.prompts = prompts_path
  c.data.field = "prompt"

  t = c.train
  # learning rate, warmup, cosine decay, AdamW betas, clipping, beta=0.1: base.train_config()'s.
  t.batch_size = 4                    # pairs per microbatch (a multiple of the batch shards)
  t.grad_accum_steps = 4              # 16 pairs per optimizer step
  t.num_epochs = 1
  t.max_length = 3072
  t.length_buckets = (512, 1024, 2048, 3072)
  t.logps_chunk_size = 512
  t.checkpoint_every = 50
  # Stage 0 (SFT on the EFT set; off until sft.data names the file): the same lengths.
  c.sft.train.max_length = t.max_length
  c.sft.train.length_buckets = t.length_buckets
  c.sft.train.logps_chunk_size = t.logps_chunk_size
  c.sft.train.checkpoint_every = t.checkpoint_every

  c.mesh.shape = ml_collections.ConfigDict(dict(mesh_shape))
  c.mesh.distributed = distributed
  c.mesh.num_devices = num_devices    # the device count the planner assumes by default
  c.mesh.device_memory_gb = device_memory_gb
  mesh = variants.get("mesh")
  if mesh == mesh_names[1]:
    c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    t.batch_size, t.grad_accum_steps = fsdp_batch
    c.sft.train.batch_size, c.sft.train.grad_accum_steps = fsdp_batch
    # Without tensor parallelism a chip holds all heads of a packed row: its [T, T] attention
    # scores (13.5 GiB at 6144 tokens under remat) do not fit beside the state. In blocks of 1024
    # queries, 2.2 GiB (`plan` prints both).
    c.model.attention_chunk = 1024
  elif mesh not in (None, mesh_names[0]):
    raise ValueError(f"mesh={mesh!r}; expected {mesh_names[1]} or {mesh_names[0]}")
  elif mesh_shape.get("tensor", 1) > 1:
    # The tensor axis shards heads, kv heads, MLP and vocabulary: a model whose widths it does not
    # divide (Qwen2.5-7B's 28 heads / 4 kv heads at tensor=8) gets the widest degree that does,
    # and the devices left over go to fsdp.
    width = rules.tensor_width(preset["architecture"], int(mesh_shape["tensor"]))
    if width != mesh_shape["tensor"]:
      c.mesh.shape.tensor = width
      shards = num_devices // width   # data x fsdp: the batch shards
      if t.batch_size % shards:   # pairs per microbatch: a multiple of the batch shards
        pairs = t.batch_size * t.grad_accum_steps
        t.batch_size = -(-t.batch_size // shards) * shards
        t.grad_accum_steps = max(1, pairs // t.batch_size)
        c.sft.train.batch_size, c.sft.train.grad_accum_steps = t.batch_size, t.grad_accum_steps

  # The paper's method settings (4 iterations, 5000 prompts, K=7, N=11, rho schedule, beta 0.1,
  # temperature 0.8, top-p 0.95) are the defaults; only lengths and batching are set here.
  c.sampling.batch_size = 64
  c.sampling.prompt_buckets = (128, 256, 512, 1024, 2048, 3072)
  c.sampling.top_k = 64
  c.sampling.max_cache_length = 0
  c.actor.max_new_tokens = 1024
  c.judge.max_new_tokens = 256
  c.meta_judge.max_new_tokens = 256
  c.evaluate.oracle = ""

  if c.mesh.shape.get("tensor", 1) != 1:
    c.mesh.decode_rules = rules.DECODE_WEIGHTS_NOT_OVER_FSDP
  if variants.get("self_rewarding"):
    c.meta_judge.enabled = False      # no judge pairs: "both" trains on actor pairs only
  if variants.get("runlocal"):
    apply_runlocal(c, variants)
  return c


def method_sweep(h):
  """The sweep the paper-scale configs' `get_hyper` returns: Meta-Rewarding against its
  Self-Rewarding baseline (meta-judge on / off), one work unit each. `h` is `xm_launch.hyper`."""
  return h.product([
      h.sweep("config.seed", [0]),
      h.sweep("config.meta_judge.enabled", [True, False]),
  ])


def apply_runlocal(c: ml_collections.ConfigDict, variants: Mapping[str, Any]) -> None:
  """Tiny and local: the same structure (scan, remat, a mesh) at a size a CPU runs in a minute."""
  if variants.get("model", "tiny") != "tiny":
    raise ValueError("runlocal uses the tiny model; drop model=")
  c.model.checkpoint = ""
  c.model.tokenizer = "train:512"
  c.model.chat_format = "llama2"
  c.model.architecture = ml_collections.ConfigDict(model_preset("tiny")["architecture"])
  c.model.dtype = "float32"
  c.data.prompts = "testbed:2000"
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  c.mesh.distributed = False
  c.mesh.num_devices = 0              # plan for the devices present
  c.mesh.device_memory_gb = 0.0       # unknown on CPU: the planner budgets the host's RAM
  c.sampling.batch_size = 8
  c.sampling.prompt_buckets = (128, 512, 1024)  # the judge and meta-judge prompts fit
  c.sampling.top_k = 32
  c.actor.num_responses = 2
  c.judge.num_judgments = 3
  c.actor.max_new_tokens = c.judge.max_new_tokens = c.meta_judge.max_new_tokens = 8
  c.pipeline.num_iterations = 1
  c.pipeline.prompts_per_iteration = 4
  c.pipeline.rho = (0.0,)
  c.pipeline.train_pairs = ("both",)
  c.pipeline.chunk_size = 4
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 1
  c.train.batch_size = 8              # divisible by 1, 2, 4 or 8 devices
  c.train.grad_accum_steps = 1
  c.train.max_length = 512
  c.train.length_buckets = (128, 256, 512)
  c.train.logps_chunk_size = 0
  for key in ("learning_rate", "warmup_steps", "batch_size", "grad_accum_steps", "max_length",
              "length_buckets", "logps_chunk_size"):
    c.sft.train[key] = c.train[key]
  c.evaluate.oracle = "testbed"


# ------------------------------------------------------------------------------------------------
# The synthetic testbed.

def use_testbed_seed(c: ml_collections.ConfigDict) -> None:
  """Points `c.model` at the shipped testbed seed (its tokenizer and chat format; the
  architecture only for planning before the seed exists: its config.json is what runs), in
  float32 (bf16 matmuls are slower than f32 on CPU)."""
  testbed = testbed_settings()
  c.model.checkpoint = testbed.seed_dir
  c.model.tokenizer = ""           # the checkpoint's tokenizer.model
  c.model.chat_format = testbed.chat_format
  c.model.architecture = ml_collections.ConfigDict(testbed.architecture.to_dict())
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"


def testbed_settings() -> ml_collections.ConfigDict:
  """The testbed's seed model (directory, architecture, chat format), its compact judge,
  meta-judge and STE templates, the generation lengths and the sampling settings it is measured
  at."""
  return ml_collections.ConfigDict(dict(
      seed_dir=testbed_defs.seed_dir(),
      architecture=dict(testbed_defs.ARCHITECTURE),
      chat_format=testbed_defs.CHAT_FORMAT,
      judge_template=templates.JUDGE_TEMPLATE,
      meta_judge_template=templates.META_JUDGE_TEMPLATE,
      # The Self-Taught Evaluator's compact prompts (no system prompt on the testbed).
      pairwise_template=templates.PAIRWISE_TEMPLATE,
      worse_response_template=templates.WORSE_RESPONSE_TEMPLATE,
      actor_max_new_tokens=testbed_defs.ACTOR_MAX_NEW_TOKENS,
      judge_max_new_tokens=testbed_defs.JUDGE_MAX_NEW_TOKENS,
      meta_judge_max_new_tokens=testbed_defs.META_MAX_NEW_TOKENS,
      pairwise_max_new_tokens=testbed_defs.PAIRWISE_MAX_NEW_TOKENS,
      worse_max_new_tokens=testbed_defs.WORSE_MAX_NEW_TOKENS,
      sampling=dict(testbed_defs.PIPELINE_SAMPLING),
  ))
