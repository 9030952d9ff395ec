r"""Meta-Rewarding at paper scale on one GPU node: Llama-3-8B-Instruct on 8 x H100 80GB (one host).

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python -m meta_rewarding.main --config=configs/gpu.py \
      --workdir=$WORKDIR --config.model.checkpoint=$CKPT --config.data.prompts=$PROMPTS

  CKPT     a local Hugging Face Llama-3-8B-Instruct directory (config.json, *.safetensors,
           tokenizer files). The default below is a placeholder that fails with a clear error.
  PROMPTS  your prompt file: JSONL (or parquet) with one {"prompt": ...} per line (the paper used
           Open Assistant-derived instructions; docs/scale.md shows how to make such a file).
  XLA_PYTHON_CLIENT_MEM_FRACTION: JAX preallocates 75% of GPU memory by default (60 of 80 GB);
           the plan below assumes 95% (76 GiB). `xm_launch/launch.py --platform=gpu` sets it.

Plan its memory first:  python -m meta_rewarding.plan --config=configs/gpu.py

Variants (`--config=configs/gpu.py:<arg>`, comma-separated, e.g. `:model=llama3_1b`):
  (none)            Llama-3-8B-Instruct, the paper's method defaults, tensor=8.
  model=NAME        another preset: llama3_1b (Llama-3.2-1B), llama3_3b, llama3_1_8b, llama3_8b, tiny.
  mesh=fsdp         pure FSDP over the 8 GPUs instead of tensor parallelism (DPO batches of
                    8 pairs x 2 microbatches: the 8 batch shards must divide them).
  self_rewarding    the Self-Rewarding baseline (no meta-judge).
  runlocal          a tiny random model on the synthetic testbed, on whatever devices are present
                    (CPU is fine, about a minute).

Why these choices (8 x H100 80GB, NVLink, one process driving all 8 GPUs):
  * float32 parameters (AdamW master copy; DPO's 5e-7 learning rate is below bf16 resolution),
    bfloat16 matmuls.
  * Mesh tensor=8 (fsdp=1): decoding dominates the pipeline and tensor parallelism over NVLink
    keeps every weight where it is used (no per-step weight gathering); 8 divides Llama-3's 8 kv
    heads, 32 query heads, 14336 mlp and 128256 vocab. The 8B train state (params 32 GB +
    AdamW 64 GB + gradients) is sharded 8 ways.
  * Tensor parallelism replicates the batch on every GPU, so per-GPU activations are those of the
    whole microbatch: scan + remat "dots_no_batch", 4 pairs x 4 microbatches, 512-token log-prob
    chunks.

Expected run time: about 4.5 hours per iteration (an estimate from a memory-bandwidth roofline,
not a measurement: docs/scale.md); `runlocal`: about a minute on a CPU. What it prints: the memory
plan (`plan.check_fits`), a progress bar per stage and, after each iteration, the DESIGN.md 4.3
metrics table; metrics.jsonl, TensorBoard events, plots and each iteration's model in the workdir.
"""

import ml_collections

from meta_rewarding import defaults
from meta_rewarding.model import presets

CHECKPOINT = "/path/to/Meta-Llama-3-8B-Instruct"
PROMPTS = "/path/to/prompts.jsonl"
NUM_GPUS = 8
GPU_MEMORY_GIB = 76.0    # 80 GB H100 x XLA_PYTHON_CLIENT_MEM_FRACTION=0.95

VARIANTS = ("", "model=llama3_1b", "model=llama3_3b", "model=llama3_1_8b", "mesh=fsdp",
            "self_rewarding", "runlocal", "runlocal,self_rewarding")


def parse_arg(arg: str | None) -> dict:
  """'model=llama3_1b,runlocal' -> {'model': 'llama3_1b', 'runlocal': True}."""
  out = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    out[key.strip()] = value.strip() if sep else True
  known = {"model", "mesh", "self_rewarding", "runlocal"}
  unknown = sorted(set(out) - known)
  if unknown:
    raise ValueError(f"unknown gpu variant(s) {unknown}; expected some of {sorted(known)} "
                     "(e.g. 'model=llama3_1b', 'runlocal')")
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg)
  c = defaults.get_base_config()
  c.seed = 0

  model = presets.canonical(a.get("model", "llama3_8b"))
  repo = presets.HF_REPOS.get(model)
  c.model.checkpoint = CHECKPOINT if model == "llama3_8b" else (
      f"/path/to/{repo.split('/')[1]}" if repo else "")
  c.model.tokenizer = ""
  c.model.chat_format = "auto"
  c.model.architecture = ml_collections.ConfigDict(presets.get(model))
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.scan_layers = True
  c.model.remat_policy = "dots_no_batch"

  c.data.prompts = PROMPTS
  c.data.field = "prompt"

  c.train = _train_config()
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 8})
  c.mesh.distributed = False          # one host, one process for all 8 GPUs
  c.mesh.num_devices = NUM_GPUS
  c.mesh.device_memory_gb = GPU_MEMORY_GIB
  if a.get("mesh") == "fsdp":
    c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    c.train.batch_size = 8             # a multiple of the 8 batch shards
    c.train.grad_accum_steps = 2
  elif a.get("mesh") not in (None, "tensor"):
    raise ValueError(f"mesh={a['mesh']!r}; expected fsdp or tensor")

  c.sampling.batch_size = 64
  c.sampling.prompt_buckets = (128, 256, 512, 1024, 2048, 3072)
  c.sampling.top_k = 64
  c.sampling.max_cache_length = 0
  c.actor.max_new_tokens = 1024
  c.judge.max_new_tokens = 256
  c.meta_judge.max_new_tokens = 256

  c.evaluate.oracle = ""

  if a.get("self_rewarding"):
    c.meta_judge.enabled = False      # no judge pairs: "both" trains on actor pairs only
  if a.get("runlocal"):
    _runlocal(c, a)
  return c


def _train_config() -> ml_collections.ConfigDict:
  from meta_rewarding import train
  t = train.default_train_config()
  t.batch_size = 4                    # pairs per microbatch
  t.grad_accum_steps = 4              # 16 pairs per optimizer step
  t.num_epochs = 1
  t.max_length = 3072
  t.length_buckets = (512, 1024, 2048, 3072)
  t.logps_chunk_size = 512
  t.checkpoint_every = 50
  return t


def _runlocal(c: ml_collections.ConfigDict, a: dict):
  """Tiny and local: the same structure (scan, remat, a mesh) at a size a CPU runs in a minute."""
  if a.get("model", "tiny") != "tiny":
    raise ValueError("runlocal uses the tiny model; drop model=")
  c.model.checkpoint = ""
  c.model.tokenizer = "train:512"
  c.model.chat_format = "llama2"
  c.model.architecture = ml_collections.ConfigDict(presets.get("tiny"))
  c.model.dtype = "float32"
  c.data.prompts = "testbed:2000"
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  c.mesh.num_devices = 0
  c.mesh.device_memory_gb = 0.0
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
  c.evaluate.oracle = "testbed"


def get_hyper(h):
  """The sweep `xm_launch/launch.py --sweep` runs: Meta-Rewarding against its Self-Rewarding
  baseline, one node each. `h` is `xm_launch.hyper`."""
  return h.product([
      h.sweep("config.seed", [0]),
      h.sweep("config.meta_judge.enabled", [True, False]),
  ])
