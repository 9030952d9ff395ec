"""DPO training throughput: this project's jitted trainer vs TRL's `DPOTrainer`, side by side.

  python -m bench.dpo_step                 # ~54M Llama (vocab 32000, d 512, 8 layers), seq <= 256
                                           # 2 CPU cores: ~5 minutes (--trl_live_ref: +2)
  python -m bench.dpo_step --batch_size=16 --hidden_size=2048 --num_layers=16 \
      --intermediate_size=8192 --dtype=bfloat16 --skip_trl         # a 1B-class config on a GPU/TPU

Both sides train the same weights (written by `save_hf`, loaded by `LlamaForCausalLM`) on the same
random-token pairs (prompt 96-127 tokens, chosen and rejected 80-125 tokens + EOS, so every
prompt+response fits 256) with the same optimizer (AdamW 0.9/0.95, clip 1.0, constant lr), β 0.1, sigmoid
loss, --batch_size pairs per optimizer step, no gradient accumulation, no remat, the same dtype.

Training tokens per step = the non-pad prompt + chosen + rejected tokens of the step's pairs (each
prompt once), for both. Step time = the interval between consecutive completed steps after
--warmup steps (compilation); tokens/s = Σ tokens / Σ step time over the timed steps. With --repeats=N the trainers run N alternating rounds and the best
round of each is reported.

* ours: `train.run_dpo`: one packed row per pair (prompt once, then chosen and rejected, padded to
  the 384 bucket), logits only at the response tokens, reference log-probs stored (computed once by
  `compute_reference_logps`, timed separately).
* TRL, reference precomputed (`precompute_ref_log_probs=True`): the like-for-like comparison (its
  precompute is timed separately too).
* TRL default (`--trl_live_ref`): a reference forward in every step, as `DPOTrainer` runs unless
  told otherwise.
TRL's fastest settings: the precomputed-reference row is the fastest configuration trl 1.16.0
offers. Its `padding_free=True` only warns and falls back to standard padding ("temporarily
unavailable" since its DPO refactor; it needed FlashAttention anyway), and its `DPOConfig` has no
option that keeps logits only at the completion tokens, so neither can be switched on here.
TRL runs with `gradient_checkpointing=False` and `bf16` off (its defaults assume a GPU), PyTorch
eager, dynamic padding to the longest sequence of the batch.

MFU (model FLOPs 6·N + 12·L·d·T per processed token, N = matmul parameters, T = sequence length,
over the device's peak) where an accelerator with a known peak is present; "n/a on CPU" otherwise.
Prints one table and writes bench/results/dpo_step.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time

from absl import app, flags

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench import machine  # noqa: E402
from meta_rewarding.config import base as config_base, rules as config_rules
from meta_rewarding import checkpoints, sharding, train  # noqa: E402
from meta_rewarding.model.config import LlamaConfig  # noqa: E402
from meta_rewarding.model.llama import init_params  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 2, "Pairs per optimizer step.")
flags.DEFINE_integer("steps", 3, "Timed steps per framework.")
flags.DEFINE_integer("warmup", 1, "Untimed first steps (compilation, allocator warm-up).")
flags.DEFINE_integer("seq_len", 256, "Sequence bucket; prompts and responses are drawn to fit it.")
flags.DEFINE_integer("vocab_size", 32000, "")
flags.DEFINE_integer("hidden_size", 512, "")
flags.DEFINE_integer("intermediate_size", 1024, "")
flags.DEFINE_integer("num_layers", 8, "")
flags.DEFINE_integer("num_heads", 8, "")
flags.DEFINE_integer("num_kv_heads", 8, "")
flags.DEFINE_string("dtype", "float32", "Compute and parameter dtype (both frameworks).")
flags.DEFINE_enum("shape", "actor", ["actor", "judge"],
                  "actor: prompts and responses of similar length (3/8-1/2 of seq_len each); "
                  "judge: the pipeline's judge pairs, long prompts (the rubric, question and "
                  "response: 3/4-7/8 of seq_len) with short judgments (1/16-1/8).")
flags.DEFINE_bool("skip_trl", False, "Only measure this project's trainer.")
flags.DEFINE_integer("repeats", 2, "Alternating rounds of all trainers; the best of each is shown.")
flags.DEFINE_bool("trl_live_ref", False, "Also run TRL's default (live reference model).")
flags.DEFINE_bool("allow_loaded", False, "Write the results file even when the machine was "
                  "loaded before the run (marked NOT COMPARABLE).")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                           "dpo_step.md"), "Markdown report path ('' for none).")

EOS = 2
PEAK_FLOPS = {  # dense bf16 peak per device
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12,
}


def model_config() -> LlamaConfig:
  return LlamaConfig(
      vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
      intermediate_size=FLAGS.intermediate_size, num_hidden_layers=FLAGS.num_layers,
      num_attention_heads=FLAGS.num_heads, num_key_value_heads=FLAGS.num_kv_heads,
      max_position_embeddings=max(512, FLAGS.seq_len), dtype=FLAGS.dtype, param_dtype=FLAGS.dtype,
      bos_token_id=1, eos_token_id=EOS, pad_token_id=0)


def make_pairs(n: int, seq_len: int, vocab: int, seed: int = 0,
               shape: str = "actor") -> list[dict]:
  rng = np.random.RandomState(seed)
  if shape == "actor":
    # For 256: prompts 96..127, responses 80..125 + EOS: every prompt+response fits 256, and
    # every packed prompt+chosen+rejected row falls in (256, 384], so ours compiles one program.
    p_lo, p_hi = 3 * seq_len // 8, seq_len // 2
    r_lo, r_hi = 5 * seq_len // 16, seq_len // 2 - 2
  else:
    # For 512: prompts 384..447, judgments 32..63 + EOS: prompt+response fits 512 and the packed
    # row (<= 575) the 1.5 x seq_len bucket.
    p_lo, p_hi = 3 * seq_len // 4, 7 * seq_len // 8
    r_lo, r_hi = seq_len // 16, seq_len // 8 - 1
  out = []
  for _ in range(n):
    ids = lambda lo, hi: rng.randint(3, vocab, rng.randint(lo, hi)).astype(np.int32)
    out.append({"prompt_ids": ids(p_lo, p_hi),
                "chosen_ids": np.append(ids(r_lo, r_hi), EOS).astype(np.int32),
                "rejected_ids": np.append(ids(r_lo, r_hi), EOS).astype(np.int32)})
  return out


def train_cfg():
  cfg = config_base.train_config()
  cfg.update(dict(learning_rate=5e-7, warmup_steps=0, decay="constant", weight_decay=0.0,
                  adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8, max_grad_norm=1.0,
                  batch_size=FLAGS.batch_size, grad_accum_steps=1, num_epochs=1,
                  max_length=FLAGS.seq_len, length_buckets=buckets(), truncation="error",
                  beta=0.1, loss_type="sigmoid", checkpoint_every=10**6, log_every=10**6,
                  reference_batch_size=FLAGS.batch_size, async_checkpointing=True))
  return cfg


def buckets() -> tuple[int, int]:
  """Responses (chosen+rejected <= seq_len) and packed rows (<= 1.5 seq_len): one program each."""
  return (FLAGS.seq_len, 3 * FLAGS.seq_len // 2)


def processed_tokens(pair) -> int:
  """Tokens TRL's model runs over for one pair: the prompt twice (with chosen, with rejected).
  Ours runs the prompt once; model FLOPs below are counted the conventional (TRL) way for both,
  so "model TFLOP/s" compares like with like."""
  return 2 * len(pair["prompt_ids"]) + len(pair["chosen_ids"]) + len(pair["rejected_ids"])


def flops_per_token(config: LlamaConfig, seq_len: int) -> float:
  n = config.num_params() - config.vocab_size * config.hidden_size  # the input gather is free
  return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def peak_flops() -> tuple[float | None, str]:
  device = jax.devices()[0]
  if device.platform == "cpu":
    return None, f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
  kind = device.device_kind
  for name, peak in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return peak * jax.device_count(), f"{jax.device_count()} x {kind}"
  return None, f"{jax.device_count()} x {kind}"


# ------------------------------------------------------------------------------------------------

def run_ours(config, params, pairs, workdir):
  cfg = train_cfg()
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  if FLAGS.batch_size % mesh.shape["fsdp"]:
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  rules = config_rules.TRAIN_RULES
  # Reference pass, timed on its own (once per dataset). The first batch compiles; time the rest.
  train.compute_reference_logps(config, params, pairs[:FLAGS.batch_size], mesh=mesh, rules=rules,
                                batch_size=FLAGS.batch_size, max_length=FLAGS.seq_len,
                                length_buckets=buckets())
  t0 = time.perf_counter()
  with_ref = train.compute_reference_logps(config, params, pairs, mesh=mesh, rules=rules,
                                           batch_size=FLAGS.batch_size, max_length=FLAGS.seq_len,
                                           length_buckets=buckets())
  ref_time = time.perf_counter() - t0
  _, history = train.run_dpo(config, params, with_ref, cfg, mesh=mesh, rules=rules,
                             checkpoint_dir=os.path.join(workdir, "ours"), seed=0, progress=False)
  timed = history[FLAGS.warmup:]
  tokens = sum(m["tokens"] for m in timed)
  seconds = sum(m["tokens"] / m["tokens_per_second"] for m in timed)
  return {"name": "ours (jax, stored reference)", "tokens": tokens, "seconds": seconds,
          "ref_seconds": ref_time, "first_loss": history[0]["loss"],
          "steps": len(timed)}


def run_trl(hf_dir, pairs, workdir, *, precompute: bool):
  import datasets
  import torch
  import transformers
  from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
  from trl import DPOConfig, DPOTrainer

  torch.manual_seed(0)
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(FLAGS.vocab_size),
                                      bos_token="<s>", eos_token="</s>", pad_token="<pad>")
  word = lambda ids: " ".join(f"t{i}" for i in ids)
  rows = [{"prompt": word(p["prompt_ids"]), "chosen": " " + word(p["chosen_ids"][:-1]),
           "rejected": " " + word(p["rejected_ids"][:-1])} for p in pairs]
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
  model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype)
  args = DPOConfig(
      output_dir=os.path.join(workdir, "trl"), per_device_train_batch_size=FLAGS.batch_size,
      gradient_accumulation_steps=1, max_steps=FLAGS.warmup + FLAGS.steps, learning_rate=5e-7,
      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
      adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"],
      max_length=FLAGS.seq_len, precompute_ref_log_probs=precompute,
      precompute_ref_batch_size=FLAGS.batch_size, gradient_checkpointing=False, bf16=False,
      logging_steps=1, report_to="none", save_strategy="no", use_cpu=jax.devices()[0].platform == "cpu",
      dataloader_num_workers=0, seed=0, disable_tqdm=True)
  t0 = time.perf_counter()
  trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                       processing_class=tokenizer)
  init_seconds = time.perf_counter() - t0
  # Sanity: TRL tokenized exactly our pairs.
  first = trainer.train_dataset[0]
  assert list(first["prompt_ids"]) == list(pairs[0]["prompt_ids"]), "tokenization differs"
  assert list(first["chosen_ids"]) == list(pairs[0]["chosen_ids"]), "tokenization differs"

  counts: list[int] = []
  collate = trainer.data_collator

  def counting_collator(examples):
    counts.append(sum(len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])
                      for e in examples))
    return collate(examples)

  trainer.data_collator = counting_collator
  ends: list[float] = []
  losses: list[float] = []

  class Timer(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
      ends.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
      ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
      if logs and "loss" in logs:
        losses.append(float(logs["loss"]))

  trainer.add_callback(Timer())
  transformers.logging.set_verbosity_error()
  trainer.train()
  steps = len(ends) - 1
  durations = np.diff(ends)[FLAGS.warmup:]
  tokens = sum(counts[FLAGS.warmup:steps])
  name = "TRL DPOTrainer, reference precomputed" if precompute else "TRL DPOTrainer, live reference"
  return {"name": name, "tokens": tokens, "seconds": float(durations.sum()),
          "ref_seconds": init_seconds if precompute else None,
          "first_loss": losses[0] if losses else float("nan"), "steps": len(durations)}


def _torch_threads() -> str:
  try:
    import torch
    return str(torch.get_num_threads())
  except ImportError:
    return "-"


def _word_tokenizer(vocab: int):
  """A word-level tokenizer: "t{i}" is id i (ids 0-2 are <pad>, <s>, </s>)."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  words = {"<pad>": 0, "<s>": 1, "</s>": 2}
  words.update({f"t{i}": i for i in range(3, vocab)})
  tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<pad>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  from tokenizers import AddedToken
  tok.add_special_tokens([AddedToken("<pad>", special=True), AddedToken("<s>", special=True),
                          AddedToken("</s>", special=True)])
  return tok


# ------------------------------------------------------------------------------------------------

def main(argv):
  del argv
  state = machine.MachineState.before()  # before any work of ours: the load of other jobs
  print(state.describe(), flush=True)
  if FLAGS.output:
    state.check(FLAGS.allow_loaded)  # fail before the run, not after it
  config = model_config()
  n_pairs = (FLAGS.warmup + FLAGS.steps) * FLAGS.batch_size
  pairs = make_pairs(n_pairs, FLAGS.seq_len, FLAGS.vocab_size, shape=FLAGS.shape)
  peak, device = peak_flops()
  params = init_params(config, jax.random.key(0))
  workdir = tempfile.mkdtemp(prefix="dpo_bench_")
  try:
    hf_dir = os.path.join(workdir, "hf")
    checkpoints.save_hf(hf_dir, config, params)
    best: dict[str, dict] = {}
    for _ in range(FLAGS.repeats):  # alternate, so both sides see the same machine load
      runs = [lambda: run_ours(config, params, pairs, workdir)]
      if not FLAGS.skip_trl:
        runs.append(lambda: run_trl(hf_dir, pairs, workdir, precompute=True))
        if FLAGS.trl_live_ref:
          runs.append(lambda: run_trl(hf_dir, pairs, workdir, precompute=False))
      for run in runs:
        r = run()
        old = best.get(r["name"])
        if old is None or r["tokens"] / r["seconds"] > old["tokens"] / old["seconds"]:
          best[r["name"]] = r
        shutil.rmtree(os.path.join(workdir, "ours"), ignore_errors=True)
    results = list(best.values())
  finally:
    shutil.rmtree(workdir, ignore_errors=True)

  state.finish()
  mean_processed = np.mean([processed_tokens(p) for p in pairs])
  mean_training = np.mean([len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"])
                           for p in pairs])
  fpt = flops_per_token(config, FLAGS.seq_len) * mean_processed / mean_training
  base = results[1]["tokens"] / results[1]["seconds"] if len(results) > 1 else None
  header = ("| trainer | timed steps | training tokens/s | step time (s) | vs TRL (precomputed ref) "
            "| model TFLOP/s | MFU | one-time reference pass (s) | first-step loss |")
  lines = [header, "|" + "---|" * 9]
  for r in results:
    tps = r["tokens"] / r["seconds"]
    tflops = tps * fpt / 1e12
    mfu = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a on CPU"
    ratio = f"{tps / base:.2f}x" if base else "-"
    ref = f"{r['ref_seconds']:.1f}" if r["ref_seconds"] is not None else "- (every step)"
    lines.append(f"| {r['name']} | {r['steps']} | {tps:.0f} | {r['seconds'] / r['steps']:.2f} | "
                 f"{ratio} | {tflops:.3f} | {mfu} | {ref} | {r['first_loss']:.4f} |")
  table = "\n".join(lines)
  setup = (f"Device: {device}; jax {jax.__version__}. Model: Llama, vocab {config.vocab_size}, "
           f"d {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads}"
           f" heads ({config.num_key_value_heads} kv), mlp {config.intermediate_size}, "
           f"{config.num_params() / 1e6:.1f}M parameters, {FLAGS.dtype}. Data ({FLAGS.shape} "
           f"shape): {n_pairs} random "
           f"pairs, {FLAGS.batch_size} per step, sequences <= {FLAGS.seq_len} tokens, mean "
           f"{mean_training:.0f} training tokens per pair (prompt + chosen + rejected). "
           f"{FLAGS.warmup} warm-up steps, then {FLAGS.steps} timed; best of {FLAGS.repeats} "
           f"round(s). torch threads: {_torch_threads()}. {state.describe()}.")
  print(setup)
  print(table)
  if FLAGS.output:
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    try:
      import trl
      versions = f"trl {trl.__version__}, "
    except ImportError:
      versions = ""
    import torch
    import transformers
    with open(FLAGS.output, "w") as f:
      f.write("# DPO training throughput\n\n`python -m bench.dpo_step "
              + " ".join(sys.argv[1:]) + "`\n\n" + setup + "\n\n" + table + "\n\n"
              + f"Versions: {versions}transformers {transformers.__version__}, "
                f"torch {torch.__version__}.\n\n" + NOTES)
    print(f"wrote {FLAGS.output}")


NOTES = """\
How to read it: "training tokens/s" counts each pair's non-pad prompt + chosen + rejected tokens
once per step, identically for both trainers. TRL runs its model over the prompt twice (once with
each response, as separate rows); ours runs it once (prompt, chosen and rejected packed in one row,
the responses kept apart by the attention mask) and computes logits only at response tokens;
most of the speed-up comes from that (a first version with chosen and rejected as separate padded
rows measured 1.4x here). "model TFLOP/s" counts the
conventional FLOPs (prompt twice) for both, i.e. the work TRL does. "vs TRL" divides by the
like-for-like TRL run (reference log-probs precomputed, so neither side runs a reference model
inside the step). The one-time reference pass is reported separately (TRL's column is its whole
constructor: tokenization plus the precompute); over a real dataset it is one forward per pair,
amortised over all epochs. MFU needs an accelerator with a known peak. Wall-clock numbers on a
shared 2-core machine swing by up to 2x with other jobs' load; the trainers alternate in rounds
and the best round of each is shown.
"""


if __name__ == "__main__":
  app.run(main)
