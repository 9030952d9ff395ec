r"""Meta-Rewarding at paper scale on Cloud TPU v5e: Llama-3-8B-Instruct on a v5e-32 slice (32 chips,
8 hosts of 4 chips, 16 GiB HBM per chip).

Run the same command on every host of the slice (`gcloud compute tpus tpu-vm ssh <name>
--worker=all --command="..."`; `xm_launch/launch.py` knows v4 slices only so far):

  python -m meta_rewarding.main --config=configs/tpu_v5e.py --workdir=$WORKDIR \
      --config.model.checkpoint=$CKPT --config.data.prompts=$PROMPTS

  CKPT and PROMPTS as in configs/tpu_v4.py (docs/scale.md#2-the-prompt-pool-from-oasst1 shows how
  to make the prompt file from OpenAssistant/oasst1).

Check it before renting the slice (compiles every program of an iteration for the v5e-32 topology
on any machine with the [tpu] extra; prints XLA's per-chip memory next to the plan, exits 1 when a
program does not fit):

  pip install -e ".[tpu]"
  python -m meta_rewarding.plan --config=configs/tpu_v5e.py --compile_for=v5e-32

Variants (`--config=configs/tpu_v5e.py:<arg>`, comma-separated):
  (none)            Llama-3-8B-Instruct, the paper's method defaults, mesh fsdp=4 x tensor=8.
  model=NAME        another preset (llama3_1b, llama3_3b, llama3_1_8b, llama3_8b, tiny).
  mesh=fsdp         pure FSDP (fsdp=-1, tensor=1); DPO batches of 32 pairs x 1 microbatch;
                    attention in blocks of 1024 queries (`model.attention_chunk`): the whole
                    [T, T] scores of a 6144-token row on one chip would need 23.3 GiB; decode
                    batches of 32 prompts (`sampling.batch_size`): the meta-judge prefill
                    gathers every prompt's prefix cache, and 64 did not fit.
  self_rewarding    the Self-Rewarding baseline (no meta-judge, actor pairs only).
  runlocal          a tiny random model on the synthetic testbed, on whatever devices are present.

Why a v5e-32 and not a v5e-16 (bench/results/tpu_compile.md):
  * The full fine-tune holds six float32 copies of the 8.03B parameters at once: the policy, the
    train state's params, AdamW's two moments, the gradient accumulator and a microbatch's
    gradient (about 180 GiB), plus activations. On 16 chips that is 11.2 GiB of state per chip
    before one activation; the planner puts the DPO step at 19.6 GiB per chip there, of 14.4
    usable (`python -m meta_rewarding.plan --config=configs/tpu_v5e.py --num_devices=16`; the
    v5e-16 was not compiled). On 32 chips every program compiles and fits (`--compile_for=v5e-32`):
    the largest, the DPO step, is 10.6 GiB per chip beside 0.9 GiB of the policy's params.
  * float32 parameters for the same reason as on v4 (DPO's 5e-7 learning rate is below bfloat16's
    resolution); sampling reads a bfloat16 copy (`sampling.Sampler`), so decoding moves half the
    weight bytes.
  * tensor=8 for decoding (the largest width that divides Llama-3's 8 kv heads); fsdp=-1 takes
    the rest (4 on v5e-32, 8 on v5e-64), so the same config runs on larger slices. Training
    microbatches of 4 pairs: a multiple of the 4 batch shards (fsdp).
  * Sampling: 64 decode rows per batch, as on v4; each chip holds a quarter of the rows' KV cache
    (batch over fsdp=4), the meta-judge prefill's attention scores are the largest sampling
    buffer.

Expected run time: the roofline bound per iteration that `--compile_for` prints (README, "At
scale"); not a measurement.
"""

import ml_collections

from configs import common

CHECKPOINT = "gs://YOUR_BUCKET/models/Meta-Llama-3-8B-Instruct"
PROMPTS = "gs://YOUR_BUCKET/data/prompts.jsonl"
SLICE = "v5e-32"         # what the mesh, batch sizes and the memory plan are chosen for
NUM_CHIPS = 32           # v5e counts chips: v5e-32 = 32 chips, 8 hosts of 4
CHIP_MEMORY_GIB = 16.0   # HBM per v5e chip

VARIANTS = ("", "model=llama3_1b", "model=llama3_3b", "model=llama3_1_8b", "mesh=fsdp",
            "self_rewarding", "runlocal", "runlocal,self_rewarding")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants(arg, "tpu_v5e", common.PAPER_SCALE_VARIANTS,
                                     "model=llama3_1b,mesh=fsdp")
  c = common.paper_scale_config(
      variants, checkpoint=CHECKPOINT, checkpoint_dir="gs://YOUR_BUCKET/models",
      prompts_path=PROMPTS, mesh_shape={"data": 1, "fsdp": -1, "tensor": 8},
      num_devices=NUM_CHIPS, device_memory_gb=CHIP_MEMORY_GIB,
      distributed=True,                # jax.distributed.initialize: TPU hosts find each other
      remat_policy="full", mesh_names=("fsdp_tensor", "fsdp"),
      fsdp_batch=(32, 1))              # pure FSDP: a multiple of the 32 batch shards
  if variants.get("mesh") == "fsdp":
    # Each row gathers its shared prefix's cache from the shard that prefilled it: XLA gathers
    # every prompt's prefix cache per layer (8 GiB for 64 meta-judge prompts of 1024-token
    # prefixes, unsharded kv heads). The compile check refused the 64-prompt meta-judge prefill
    # (15.96 GiB of temporaries); 32 prompts a batch halve it.
    c.sampling.batch_size = 32
  return c


def get_hyper(h):
  """The sweep `xm_launch/launch.py --sweep` runs: Meta-Rewarding against Self-Rewarding."""
  return common.method_sweep(h)
