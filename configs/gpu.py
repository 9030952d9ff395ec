r"""Meta-Rewarding at paper scale on one GPU node: Llama-3-8B-Instruct on 8 x H100 80GB (one host).

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python -m meta_rewarding.main --config=configs/gpu.py \
      --workdir=$WORKDIR --config.model.checkpoint=$CKPT --config.data.prompts=$PROMPTS

  CKPT     a local Hugging Face Llama-3-8B-Instruct directory (config.json, *.safetensors,
           tokenizer files). The default below is a placeholder that fails with a clear error.
  PROMPTS  your prompt file: JSONL (or parquet) with one {"prompt": ...} per line (the paper used
           Open Assistant-derived instructions; docs/scale.md#2-the-prompt-pool-from-oasst1 shows how to make such a file).
  XLA_PYTHON_CLIENT_MEM_FRACTION: JAX preallocates 75% of GPU memory by default (60 of 80 GB);
           the plan below assumes 95% (76 GiB). `xm_launch/launch.py --platform=gpu` sets it.

Stage 0, the EFT model (`--config.sft.data=$EFT`; off by default): the Meta-Rewarding paper's
iteration 1 starts from the SFT model, the seed fine-tuned on evaluation data (EFT) so that it can
judge, not from the Instruct model as it is. With `sft.data` set, the run first trains M_0 by SFT
on that file (iter_0/, resumable; `sft.train` holds its learning rate, epochs, batch and lengths)
and starts iteration 1 from it.
  EFT      Self-Rewarding's evaluation fine-tuning set (judge prompts in, judgments with a
           score out); its format and how to build it from Open Assistant:
           docs/scale.md#3-the-eft-file-and-an-eft-trained-starting-model; e.g. /path/to/eft.jsonl.

Plan its memory first:  python -m meta_rewarding.plan --config=configs/gpu.py

Variants (`--config=configs/gpu.py:<arg>`, comma-separated, e.g. `:model=llama3_1b`):
  (none)            Llama-3-8B-Instruct, the paper's method defaults, tensor=8.
  model=NAME        another preset: llama3_1b (Llama-3.2-1B), llama3_3b, llama3_1_8b, llama3_8b, tiny;
                    other families (README, "Model families"): qwen2_5_7b_instruct,
                    qwen2_5_1_5b_instruct, qwen3_8b, mistral_7b_instruct_v0_3, gemma_2_9b_it,
                    gemma_3_4b_it (its text model); checkpoint placeholder /path/to/<repo name>
                    (Gemma 3: /path/to/gemma-3-4b-it-text). Tensor parallelism must divide the
                    heads and kv heads: Qwen2.5-7B and Gemma-3-4B run at tensor=4 (fsdp=2),
                    Qwen2.5-1.5B at tensor=2 (fsdp=4); the others at tensor=8. All fit 8 x 80 GB.
  mesh=fsdp         pure FSDP over the 8 GPUs instead of tensor parallelism (DPO batches of
                    8 pairs x 2 microbatches: the 8 batch shards must divide them); attention
                    in blocks of 1024 queries (`model.attention_chunk`), as every pure-FSDP variant.
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

Run time: not measured on a GPU node (`runlocal`: about a minute on a CPU). What it prints: the
memory plan (`plan.check_fits`), a progress bar per stage and, after each iteration, the metrics
table of docs/design.md#what-each-iteration-reports; metrics.jsonl, TensorBoard events, plots and each iteration's model in the workdir.
"""

import ml_collections

from configs import common

CHECKPOINT = "/path/to/Meta-Llama-3-8B-Instruct"
PROMPTS = "/path/to/prompts.jsonl"
NUM_GPUS = 8
GPU_MEMORY_GIB = 76.0    # 80 GB H100 x XLA_PYTHON_CLIENT_MEM_FRACTION=0.95

VARIANTS = ("", "model=llama3_1b", "model=llama3_3b", "model=llama3_1_8b", "mesh=fsdp",
            "self_rewarding", "runlocal", "runlocal,self_rewarding",
            # The other families' presets (README, "Model families"), each on a mesh it divides.
            "model=qwen2_5_7b_instruct", "model=qwen2_5_1_5b_instruct", "model=qwen3_8b",
            "model=mistral_7b_instruct_v0_3", "model=gemma_2_9b_it", "model=gemma_3_4b_it")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants(arg, "gpu", common.PAPER_SCALE_VARIANTS,
                                     "model=llama3_1b,runlocal")
  c = common.paper_scale_config(
      variants, checkpoint=CHECKPOINT, checkpoint_dir="/path/to", prompts_path=PROMPTS,
      mesh_shape={"data": 1, "fsdp": -1, "tensor": 8}, num_devices=NUM_GPUS,
      device_memory_gb=GPU_MEMORY_GIB,
      distributed=False,               # one host, one process for all 8 GPUs
      remat_policy="dots_no_batch", mesh_names=("tensor", "fsdp"),
      fsdp_batch=(8, 2))               # pure FSDP: a multiple of the 8 batch shards
  # Stage 0: "" runs none (iteration 1 starts from model.checkpoint as it is). Point it at your EFT
  # file (see the docstring) for the paper's starting point: M_0 = SFT(checkpoint, EFT).
  c.sft.data = ""
  return c


def get_hyper(h):
  """The sweep `xm_launch/launch.py --sweep` runs: Meta-Rewarding against its Self-Rewarding
  baseline, one node each. `h` is `xm_launch.hyper`."""
  return common.method_sweep(h)
