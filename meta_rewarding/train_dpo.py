"""Stand-alone DPO / SFT on a user's own data: HF checkpoint in, trained HF checkpoint out.

  python -m meta_rewarding.train_dpo --config=configs/dpo_example.py \
      --config.model.checkpoint=HF_DIR --config.data.pairs=FILE.jsonl --workdir=DIR
  python -m meta_rewarding.train_dpo --config=configs/dpo_example.py --config.mode=sft \
      --config.model.checkpoint=HF_DIR --config.data.sft=FILE.jsonl --workdir=DIR

Layout of DIR: checkpoints/ (orbax train state, params export, metrics.jsonl; rerunning the same
command resumes), hf/ (safetensors + config + tokenizer files), summary.json.
Every config value is checked against its range before anything is written or loaded
(`config_check`): each failure is one `error:` line naming the key (exit code 2). Bad input found
later (data, tokenizer, checkpoint, mesh) ends with one `error:` line and exit code 1
(`--verbosity=1` adds the traceback); a data line that is malformed or not UTF-8 is named by file
and line (`pairs.jsonl:3: not UTF-8 (byte 0xff at column 7)`). Pairs whose chosen and rejected responses tokenize the same
are dropped and counted (`identical_dropped` in the data line and summary.json): their DPO gradient
is zero, yet AdamW would still move the weights by a full step. Progress: a tqdm bar, and a log
line every `train.log_every` steps; every step's metrics are in DIR/checkpoints/metrics.jsonl.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

import numpy as np
from absl import app, flags, logging

from meta_rewarding import artifacts, config_check, data, distributed, runtime, sample
from meta_rewarding.errors import UserError
from meta_rewarding.tokenizer import load_tokenizer
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (checkpoints, hf export).")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "tokenizer.model", "chat_template.jinja")


class UsageError(UserError, ValueError):
  """A missing or contradictory command-line setting."""


def _copy_tokenizer(tokenizer_path: str, out_dir: str):
  if not artifacts.isdir(tokenizer_path):
    name = "tokenizer.model" if tokenizer_path.endswith(".model") else \
        artifacts.basename(tokenizer_path)
    artifacts.copy_file(tokenizer_path, artifacts.join(out_dir, name))
    return
  for name in _TOKENIZER_FILES:
    src = artifacts.join(tokenizer_path, name)
    if artifacts.exists(src):
      artifacts.copy_file(src, artifacts.join(out_dir, name))


def drop_identical_pairs(examples: list[dict]) -> tuple[list[dict], int]:
  """Drops tokenized DPO examples whose chosen and rejected ids are equal; returns (kept, dropped).

  Compared after tokenization and truncation, so a pair that only became identical when
  `truncate_response` cut both responses to a shared prefix is caught too. Such a pair has a zero
  DPO gradient: it teaches nothing, yet AdamW's normalised update still moves the weights a full
  step, and it pulls rewards/accuracies down (the pipeline drops judge pairs of this kind alike).
  """
  kept = [ex for ex in examples
          if not np.array_equal(np.asarray(ex["chosen_ids"]), np.asarray(ex["rejected_ids"]))]
  return kept, len(examples) - len(kept)


def load_records(config, source, split):
  """The pairs (dpo) or SFT examples of `source`; a `data.DataError` naming the file and line
  otherwise, a line that is not UTF-8 included (data reads a file whole, and its decode error
  knows only a byte offset into the file)."""
  try:
    if config.mode == "dpo":
      return data.load_pairs(source, split=split)
    return data.load_sft(source, response_field=config.data.response_field, split=split)
  except data.DataError as e:
    path = os.path.expanduser(str(source))
    if isinstance(e.__cause__, UnicodeDecodeError) and os.path.isfile(path):
      located = sample.find_not_utf8(path)
      if located:
        raise data.DataError(located) from e
    raise


def run(config, workdir: str) -> dict:
  """Trains as `config` says; returns the summary (also written to WORKDIR/summary.json)."""
  # jax: after flag parsing and the config check (main), so --help and a refused config start no jax
  import jax

  from meta_rewarding import checkpoints, train

  mode = config.mode
  if mode not in ("dpo", "sft"):
    raise UsageError(f"--config.mode must be 'dpo' or 'sft', got {mode!r}")
  if not config.model.checkpoint:
    raise UsageError("set --config.model.checkpoint=HF_DIR (a Hugging Face Llama directory)")
  source = config.data.pairs if mode == "dpo" else (config.data.sft or config.data.pairs)
  if not source:
    raise UsageError(f"set --config.data.{'pairs' if mode == 'dpo' else 'sft'}=FILE "
                     "(JSONL or parquet, or a datasets hub name)")
  split = config.data.split or None
  system_prompt = config.data.system_prompt or None
  cfg = config.train

  # Cheap checks first: data, tokenizer, mesh; the model last.
  records = load_records(config, source, split)
  tokenizer_path = config.model.tokenizer or config.model.checkpoint
  tokenizer = load_tokenizer(tokenizer_path, chat_format=config.model.chat_format)
  tokenize = data.tokenize_pairs if mode == "dpo" else data.tokenize_sft
  examples, report = tokenize(records, tokenizer, max_length=int(cfg.max_length),
                              truncation=cfg.truncation, system_prompt=system_prompt)
  identical = 0
  if mode == "dpo":
    examples, identical = drop_identical_pairs(examples)
  print(f"data: {source}: {report}" + (f"; identical_dropped={identical} (chosen == rejected)"
                                       if mode == "dpo" else ""), flush=True)
  if not examples:
    if identical:
      raise data.DataError(f"{source}: every pair that fits max_length={cfg.max_length} has "
                           f"chosen == rejected ({identical} dropped); nothing to learn from")
    raise data.DataError(f"{source}: no example fits max_length={cfg.max_length}")

  distributed.maybe_initialize_distributed(bool(config.get("distributed", False)))
  # The same factory as the pipeline: checkpoint config, tokenizer check, mesh, config.mesh.rules,
  # parameters loaded straight into their shards.
  rt = runtime.build(config, tokenizer)
  model_config, params, mesh, rules = rt.model_config, rt.params, rt.mesh, rt.train_rules

  run_fn = train.run_dpo if mode == "dpo" else train.run_sft
  params, history = run_fn(model_config, params, examples, cfg, mesh=mesh, rules=rules,
                           checkpoint_dir=artifacts.join(workdir, "checkpoints"),
                           seed=int(config.seed), progress=bool(config.progress))

  hf_dir = None
  if config.export_hf:
    hf_dir = artifacts.join(workdir, "hf")
    checkpoints.save_hf(hf_dir, model_config, params, dtype=config.export_dtype or None)
    if jax.process_index() == 0:
      _copy_tokenizer(tokenizer_path, hf_dir)
  final = history[-1] if history else {}
  summary = {"mode": mode, "data": {"source": str(source), "kept": report.kept - identical,
                                    "truncated": report.truncated, "skipped": report.skipped,
                                    "identical_dropped": identical, "total": report.total},
             "steps": int(final.get("step", 0)), "final": final, "hf": hf_dir,
             "checkpoints": artifacts.join(workdir, "checkpoints")}
  if jax.process_index() == 0:
    artifacts.write_json(artifacts.join(workdir, "summary.json"), summary)
  shown = " ".join(f"{k}={final[k]:.4g}" for k in ("loss", "rewards/accuracies", "rewards/margins",
                                                   "nll", "tokens_per_second") if k in final)
  print(f"{mode}: {summary['steps']} steps, {shown}; model: {hf_dir or '(not exported)'}",
        flush=True)
  return summary


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's per-save INFO chatter (dozens of lines per checkpoint) from the console."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietOrbax())
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/dpo_example.py is required")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir=DIR is required")
  try:
    config_check.check_train_dpo_config(config)  # before the workdir is created
  except config_check.ConfigError as e:
    for line in e.problems:
      print(f"error: {line}", file=sys.stderr)
    sys.exit(2)
  artifacts.makedirs(_WORKDIR.value)
  try:
    run(config, _WORKDIR.value)
  # A missing or unreadable input file is the user's to fix too, though not a UserError.
  except (UserError, FileNotFoundError, PermissionError) as e:
    logging.debug("failed", exc_info=True)  # the traceback with --verbosity=1
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
