r"""Meta-Rewarding at paper scale: Llama-3-8B-Instruct on a Cloud TPU v4-32 slice (16 chips, 4 hosts).

Run the same command on every host of the slice (`xm_launch/launch.py` does that for you):

  python -m meta_rewarding.main --config=configs/tpu_v4.py --workdir=$WORKDIR \
      --config.model.checkpoint=$CKPT --config.data.prompts=$PROMPTS

  CKPT     a Hugging Face Llama-3-8B-Instruct directory (config.json, *.safetensors, tokenizer
           files) that every host can read: a local copy on each host, or a gs:// path. The
           default below is a placeholder that fails with a clear "does not exist" error.
  PROMPTS  your prompt file: JSONL (or parquet) with one {"prompt": ...} per line. The paper drew
           its prompts from Open Assistant-derived instructions (Self-Rewarding's augmented
           prompt set); any pool of >= 20k instructions works (4 iterations x 5000, no repeats).
           docs/scale.md#2-the-prompt-pool-from-oasst1 shows how to make one from `OpenAssistant/oasst1`.

Stage 0, the EFT model (`--config.sft.data=$EFT`; off by default): the Meta-Rewarding paper's
iteration 1 starts from the SFT model, the seed fine-tuned on evaluation data (EFT) so that it can
judge, not from the Instruct model as it is. With `sft.data` set, the run first trains M_0 by SFT
on that file (iter_0/, resumable; `sft.train` holds its learning rate, epochs, batch and lengths)
and starts iteration 1 from it.
  EFT      Self-Rewarding's evaluation fine-tuning set (judge prompts in, judgments with a
           score out); its format and how to build it from Open Assistant:
           docs/scale.md#3-the-eft-file-and-an-eft-trained-starting-model; e.g. gs://YOUR_BUCKET/data/eft.jsonl.

Plan its memory first (prints the table, exits 1 with what to change when it cannot fit), and
before renting the slice compile every program of an iteration for it, on any machine with the
[tpu] extra (XLA's own per-chip memory and cost; about 15-20 minutes on 2 CPU cores):

  python -m meta_rewarding.plan --config=configs/tpu_v4.py
  pip install -e ".[tpu]" && python -m meta_rewarding.plan --config=configs/tpu_v4.py --compile_for=v4-32

Variants (`--config=configs/tpu_v4.py:<arg>`, comma-separated, e.g. `:model=llama3_1b,mesh=fsdp`):
  (none)            Llama-3-8B-Instruct, the paper's method defaults, mesh fsdp x tensor=8.
  model=NAME        another preset of meta_rewarding/model/presets.py: llama3_1b (Llama-3.2-1B),
                    llama3_3b (Llama-3.2-3B), llama3_1_8b (Llama-3.1-8B), llama3_8b, tiny;
                    other families (README, "Model families"): qwen2_5_7b_instruct and
                    qwen2_5_1_5b_instruct (Qwen2.5-Instruct), qwen3_8b, mistral_7b_instruct_v0_3,
                    gemma_2_9b_it, gemma_3_4b_it (its text model). The checkpoint placeholder
                    becomes gs://YOUR_BUCKET/models/<repo name>, e.g. .../Qwen2.5-7B-Instruct
                    (Gemma 3: .../gemma-3-4b-it-text). Tensor parallelism must divide the heads
                    and kv heads: Qwen2.5-7B (28/4) and Gemma-3-4B (8/4) run at tensor=4 (fsdp=4),
                    Qwen2.5-1.5B (12/2) at tensor=2 (fsdp=8, DPO batches of 8 pairs x 2
                    microbatches); the others at tensor=8. All fit a v4-32 (`plan` prints each).
  mesh=fsdp         pure FSDP (fsdp=-1, tensor=1): parameters sharded along `embed` only; DPO
                    batches of 16 pairs x 1 microbatch (the 16 batch shards must divide them);
                    attention in blocks of 1024 queries (`model.attention_chunk`): a chip holds
                    all 32 heads of a 6144-token row, whose whole [T, T] scores (13.5 GiB under
                    remat) would not fit beside the state (`plan` refused it: 28.9 of 28.8 GiB).
  self_rewarding    the Self-Rewarding baseline (no meta-judge, actor pairs only).
  runlocal          a tiny random model on the synthetic testbed, on whatever devices are present
                    (CPU is fine, about a minute): checks the wiring of this config, not the method.

Why these choices (the target is v4-32 = 16 chips x 32 GiB HBM, 4 hosts of 4 chips):
  * Parameters stay float32 (the AdamW master copy): DPO's learning rate (5e-7) makes updates of
    ~1e-6 relative size, below bfloat16's resolution (~4e-3), so bf16 weights would not move.
    Matmuls run in bfloat16 (`model.dtype`).
  * Mesh data=1, fsdp=-1, tensor=8: the pipeline's time is almost all decoding (per iteration
    ~35k actor samples, ~385k judgments, ~550k meta-judgments). Under pure FSDP every decode step
    all-gathers the whole model onto every chip (~30 GB of f32 weights per chip per token step);
    with tensor=8 (the largest width that divides Llama-3's 8 kv heads) each chip keeps 1/8 of
    every layer. The sampler reads its own bfloat16 copy of the weights, unscanned and not
    sharded over fsdp (`mesh.decode_rules`, `sampling.decoding_params`: 2 GiB per chip), so a
    decode step gathers no weight; the KV cache is sharded over kv heads, its rows over fsdp.
    Training shards the AdamW state 16 ways either way. `-1` takes the rest, so the same config
    runs on v4-64 (fsdp=4) and larger slices.
  * scan_layers + remat "full" for training (each layer keeps only its input and recomputes its
    forward in the backward pass: ~1/3 more training FLOPs, but training is a small share of an
    iteration and "dots_no_batch" would leave under 2 GiB of headroom per chip), 4 pairs x 4
    microbatches per step, pairs up to 3072 tokens (judge pairs carry the rubric, the question
    and the response), log-probs in 512-token chunks (128k vocabulary).
  * Sampling: 64 decode rows per batch; the meta-judge stage (n=1, shared prefixes) prefills 64
    prompts at once and bounds it: its full attention scores grow with prompts x length^2.

Expected run time: the roofline bound per iteration that `--compile_for=v4-32` prints from the
compiled programs (README, "Expected time per iteration"; bench/results/tpu_compile.md); a bound,
not a measurement. `runlocal`: about a minute on a CPU. What it prints: the memory plan
(`plan.check_fits`), a progress bar per stage and, after each iteration, the metrics table;
metrics.jsonl, TensorBoard events, plots and each iteration's model (HF safetensors) in the
workdir.
"""

import ml_collections

from configs import common

# Placeholders: override on the command line (see the docstring).
CHECKPOINT = "gs://YOUR_BUCKET/models/Meta-Llama-3-8B-Instruct"
PROMPTS = "gs://YOUR_BUCKET/data/prompts.jsonl"
SLICE = "v4-32"          # what the mesh, batch sizes and the memory plan are chosen for
NUM_CHIPS = 16           # v4-32: 16 chips (a v4 "core count" of 32), 4 hosts of 4 chips
CHIP_MEMORY_GIB = 32.0    # HBM per v4 chip

VARIANTS = ("", "model=llama3_1b", "model=llama3_3b", "model=llama3_1_8b", "mesh=fsdp",
            "self_rewarding", "runlocal", "runlocal,self_rewarding",
            # The other families' presets (README, "Model families"), each on a mesh it divides.
            "model=qwen2_5_7b_instruct", "model=qwen2_5_1_5b_instruct", "model=qwen3_8b",
            "model=mistral_7b_instruct_v0_3", "model=gemma_2_9b_it", "model=gemma_3_4b_it")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants(arg, "tpu_v4", common.PAPER_SCALE_VARIANTS,
                                     "model=llama3_1b,mesh=fsdp")
  c = common.paper_scale_config(
      variants, checkpoint=CHECKPOINT, checkpoint_dir="gs://YOUR_BUCKET/models",
      prompts_path=PROMPTS, mesh_shape={"data": 1, "fsdp": -1, "tensor": 8},
      num_devices=NUM_CHIPS, device_memory_gb=CHIP_MEMORY_GIB,
      distributed=True,                # jax.distributed.initialize: TPU hosts find each other
      remat_policy="full", mesh_names=("fsdp_tensor", "fsdp"),
      fsdp_batch=(16, 1))              # pure FSDP: a multiple of the 16 batch shards
  # Stage 0: "" runs none (iteration 1 starts from model.checkpoint as it is). Point it at your EFT
  # file (see the docstring) for the paper's starting point: M_0 = SFT(checkpoint, EFT).
  c.sft.data = ""
  return c


def get_hyper(h):
  """The sweep `xm_launch/launch.py --sweep` runs: Meta-Rewarding against its Self-Rewarding
  baseline (one work unit, i.e. one slice, each). `h` is `xm_launch.hyper`."""
  return common.method_sweep(h)
