"""DPO (or SFT) on your own pair file, without the rest of the pipeline.

Command:
  python -m meta_rewarding.train_dpo --config=configs/dpo_example.py \
      --config.model.checkpoint=/path/to/hf_llama --config.data.pairs=pairs.jsonl --workdir=/tmp/dpo
  (SFT: --config.mode=sft --config.data.sft=sft.jsonl, records with "prompt" and "response".)

`pairs.jsonl` holds one JSON object per line with "prompt", "chosen", "rejected" (strings, or TRL's
conversational lists) and optionally "ref_chosen_logp" / "ref_rejected_logp".

What it does and prints: loads the HF checkpoint and its tokenizer, reports how many pairs were kept,
truncated or skipped by the length policy, computes the reference log-probs once, trains (a tqdm bar;
absl logs every `train.log_every` steps: loss, rewards/accuracies, rewards/margins, grad_norm,
learning_rate, tokens/s), writes orbax checkpoints to WORKDIR/checkpoints (rerunning the same command
resumes), the trained model to WORKDIR/hf (safetensors + tokenizer, loadable by
`transformers.LlamaForCausalLM.from_pretrained`) and WORKDIR/summary.json, then prints a one-line
summary. Run time: about a minute for a 50M model and a few hundred pairs on a laptop CPU; for
Llama-3-8B, hours on one GPU/TPU host per 10k pairs (set mesh.shape for your devices).
"""

import ml_collections

from meta_rewarding.config import base, rules


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.mode = "dpo"              # dpo | sft
  config.seed = 0
  config.progress = True
  config.export_hf = True          # write WORKDIR/hf at the end
  config.export_dtype = ""         # "" = the parameter dtype; e.g. "bfloat16"
  config.distributed = False       # jax.distributed.initialize() first (multi-host TPU/GPU)

  config.model = ml_collections.ConfigDict(dict(
      checkpoint="",               # HF Llama directory (config.json + *.safetensors)
      tokenizer="",                # "" = the checkpoint directory
      chat_format="auto",          # auto | hf | llama3 | llama2 | raw
      dtype="bfloat16",            # compute dtype
      param_dtype="float32",       # parameters and optimizer state
      scan_layers=False,
      remat_policy="none",         # none | full | dots | dots_no_batch
      strict_config=False,         # True: refuse unknown keys in the checkpoint's config.json
  ))
  config.data = ml_collections.ConfigDict(dict(
      pairs="",                    # DPO: JSONL / parquet file or a datasets hub name
      sft="",                      # SFT: JSONL / parquet with prompt + response_field
      response_field="response",
      split="",                    # hub datasets: the split ("" = train)
      system_prompt="",            # optional system message before each prompt
  ))
  config.train = base.train_config()
  config.mesh = ml_collections.ConfigDict(dict(
      shape=ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1)),
      rules=rules.TRAIN_RULES,     # logical axis -> mesh axes (the pipeline's)
  ))
  return config
