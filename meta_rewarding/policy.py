"""`JaxPolicy`: the pipeline's model — one Llama (params + tokenizer) that samples and trains.

It adapts the sampler (`sampling.Sampler`) and the trainers (`train.run_dpo`, `train.run_sft`) to the pipeline's
`Policy` protocol, holds the parameters between stages, and saves / loads each iteration's model as
a Hugging Face directory (safetensors + config + tokenizer), so any iteration can be served by vLLM,
evaluated by AlpacaEval or reloaded by `transformers`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping, Sequence

from absl import logging

from meta_rewarding import (artifacts, checkpoints, data, distributed, model_files, runtime, sampling,
                            train)
from meta_rewarding.recipe_types import Generation, PipelineError
from meta_rewarding.tokenizer import Tokenizer, load_tokenizer, train_sentencepiece

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "chat_template.jinja", "generation_config.json")


def build_tokenizer(config, workdir: str, pool: Sequence[str]) -> Tokenizer:
  """The tokenizer the config names: a path, the checkpoint's, or "train:<vocab>" (sentencepiece
  trained once on the prompt pool and the templates, kept in workdir/tokenizer)."""
  spec = config.model.tokenizer or config.model.checkpoint
  if not spec:
    raise PipelineError("config.model.tokenizer is empty and there is no model.checkpoint to take "
                        "one from; set model.tokenizer to a path or to 'train:<vocab_size>'")
  if spec.startswith("train:"):
    directory = artifacts.join(workdir, "tokenizer")
    model_file = artifacts.join(directory, "tokenizer.model")
    if distributed.is_main_process() and not artifacts.exists(model_file):
      texts = list(pool) + [config.judge.template, config.meta_judge.template]
      # Trained into a local temporary directory (sentencepiece writes local files), then copied
      # into place, tokenizer.model last: its presence means the tokenizer is complete.
      with tempfile.TemporaryDirectory(prefix="meta_rewarding_spm-") as local:
        tmp_prefix = os.path.join(local, "tokenizer")
        train_sentencepiece(texts, tmp_prefix, int(spec.split(":", 1)[1]))
        artifacts.makedirs(directory)
        if os.path.exists(tmp_prefix + ".vocab"):
          artifacts.copy_file(tmp_prefix + ".vocab", artifacts.join(directory, "tokenizer.vocab"))
        artifacts.copy_file(tmp_prefix + ".model", model_file)
    distributed.sync("tokenizer")  # the other processes read the one process 0 trained
    spec = model_file
  return load_tokenizer(spec, chat_format=config.model.chat_format)


class JaxPolicy:
  """The real model behind the pipeline's `Policy` protocol."""

  def __init__(self, config, rt: runtime.Runtime, tokenizer: Tokenizer):
    self.config = config
    self.runtime = rt
    self.tokenizer = tokenizer
    self._sampler = None

  @classmethod
  def from_config(cls, config, workdir: str, pool: Sequence[str]) -> "JaxPolicy":
    tokenizer = build_tokenizer(config, workdir, pool)
    try:
      rt = runtime.build(config, tokenizer)
    except runtime.RuntimeConfigError as e:
      raise PipelineError(str(e)) from e
    return cls(config, rt, tokenizer)

  # The runtime's parts under the names the evaluation hooks and tests read.
  model_config = property(lambda self: self.runtime.model_config)
  mesh = property(lambda self: self.runtime.mesh)
  rules = property(lambda self: self.runtime.decode_rules)

  @property
  def params(self):
    return self.runtime.params

  @params.setter
  def params(self, value):
    self.runtime.params = value

  # --- sampling ---------------------------------------------------------------------------------
  @property
  def sampler(self) -> "sampling.Sampler":
    """Samples on the runtime's mesh, with the params in their shardings and the decode rules.

    With several processes that mesh is the global one: every process runs the same decode
    programs over all devices, each holding only its shards of the params (sampling.py's
    "Multi-process decoding")."""
    if self._sampler is None:
      s = self.config.sampling
      self._sampler = sampling.Sampler(
          self.model_config, self.params, self.tokenizer, mesh=self.mesh, rules=self.rules,
          batch_size=s.batch_size, prompt_buckets=tuple(s.prompt_buckets),
          max_cache_length=s.max_cache_length or None,
          batching=s.get("batching", "continuous"), decode_block=s.get("decode_block", 32))
    return self._sampler

  def generate(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int,
               share_prefix: bool, desc: str) -> list[list[Generation]]:
    s = self.config.sampling
    strategy = sampling.strategy_from_config(s)
    # Every process passes the whole list (they hold the same records): on a multi-process mesh
    # each one feeds its devices' rows of every batch and gets every prompt's completions back.
    results = self.sampler.generate(list(prompts), n=n, strategy=strategy,
                                    max_new_tokens=max_new_tokens, seed=seed, chat=True,
                                    share_prefix=share_prefix, desc=desc, too_long="report")
    # Strip: chat formats put whitespace around the answer (Llama-2's "[/INST] {answer} </s>"), so
    # a completion can end in a space that is template, not content. Responses and judgments are
    # pasted into the judge / meta-judge templates, where it would change the prompt's tokens.
    return [[Generation(c.text.strip(), c.num_tokens, c.finish_reason) for c in row]
            for row in results]

  # --- training ---------------------------------------------------------------------------------
  def train_dpo(self, pairs: Sequence[Mapping[str, str]], *, checkpoint_dir: str, seed: int):
    t = self.config.train
    examples, report = data.tokenize_pairs(pairs, self.tokenizer, max_length=t.max_length,
                                           truncation=t.truncation)
    logging.info("DPO data: %s", report)
    if not examples:
      logging.warning("all %d pairs were dropped by the length policy (%s)", len(pairs), report)
      return []
    self.params, steps = train.run_dpo(self.model_config, self.params, examples, self.config.train,
                                       mesh=self.mesh, rules=self.runtime.train_rules,
                                       checkpoint_dir=checkpoint_dir, seed=seed)
    self._sampler = None
    if steps:  # the length policy's counts travel with the step metrics into the iteration's
      steps[0] = {**steps[0], "data/pairs_skipped_too_long": report.skipped,
                  "data/pairs_truncated": report.truncated}
    return steps

  def train_sft(self, records: Sequence[Mapping[str, str]], *, checkpoint_dir: str, seed: int,
                system_prompt: str = "", train_config=None):
    """SFT on {prompt, response} records (the prompt in the chat template, after `system_prompt`
    when given), the loss on the response tokens only (`train.run_sft`), with the
    hyper-parameters `train_config` (stage 0: `sft.train`; None: the config's `train`)."""
    t = self.config.train if train_config is None else train_config
    examples, report = data.tokenize_sft(records, self.tokenizer, max_length=t.max_length,
                                         truncation=t.truncation,
                                         system_prompt=system_prompt or None)
    logging.info("SFT data: %s", report)
    if not examples:
      logging.warning("all %d SFT records were dropped by the length policy (%s)", len(records),
                      report)
      return []
    self.params, steps = train.run_sft(self.model_config, self.params, examples, t,
                                       mesh=self.mesh, rules=self.runtime.train_rules,
                                       checkpoint_dir=checkpoint_dir, seed=seed)
    self._sampler = None
    if steps:
      steps[0] = {**steps[0], "data/sft_skipped_too_long": report.skipped,
                  "data/sft_truncated": report.truncated}
    return steps

  # --- persistence ------------------------------------------------------------------------------
  def save(self, path: str):
    checkpoints.save_hf(path, self.model_config, self.params, extra_files=self.tokenizer_files())
    distributed.sync("save:" + path)  # written by process 0; the others may read it next

  def tokenizer_files(self) -> dict[str, bytes]:
    """The tokenizer files a saved model directory holds, read from the tokenizer's source."""
    files = {}
    tokenizer_dir = self.tokenizer.path if os.path.isdir(self.tokenizer.path) else os.path.dirname(
        self.tokenizer.path)
    for name in TOKENIZER_FILES:
      src = os.path.join(tokenizer_dir, name)
      if os.path.exists(src):
        with open(src, "rb") as f:
          files[name] = f.read()
    if self.tokenizer.path.endswith(".model") and "tokenizer.model" not in files:
      with open(self.tokenizer.path, "rb") as f:
        files["tokenizer.model"] = f.read()
    return files

  def restore_model_files(self, path: str, names: Sequence[str]) -> list[str]:
    """Writes back those of `names` (files a saved model directory lost) that this policy can make
    again byte for byte: the tokenizer files, from the tokenizer's source. Returns those written;
    the caller checks them against the directory's marker."""
    files = self.tokenizer_files()
    restored = [n for n in names if n in files]
    if distributed.is_main_process():
      for name in restored:
        artifacts.write_bytes(artifacts.join(path, name), files[name])
    distributed.sync("restore:" + path)
    return restored

  def missing_model_files(self, path: str) -> list[str]:
    """What the model directory `path`, saved by this policy, lacks ([] when complete); the
    pipeline asks before loading an iteration's model/ and trains it again when something is
    missing."""
    return model_files.missing_files(path, require_marker=True)

  def load(self, path: str):
    missing = model_files.missing_files(path)
    if missing:
      raise PipelineError(f"{path}: incomplete model directory (missing {', '.join(missing)}); "
                          "delete it to have it made again, or restore it")
    # keep_local_copy=False: a remote iteration model is read once; its local copy is not kept.
    self.params = self.runtime.load_params(path, keep_local_copy=False)
    self._sampler = None
