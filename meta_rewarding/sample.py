"""Sample completions from a Hugging Face Llama checkpoint with the jitted sampler.

  python -m meta_rewarding.sample --checkpoint=HF_DIR --prompts=prompts.jsonl --output=out.jsonl
      [--n=4 --temperature=0.8 --top_p=0.95 --top_k=0 --max_new_tokens=256 --greedy --seed=0 --raw
       --batch_size=16 --share_prefix --skip_long --dtype=float32 --mesh=fsdp=-1]

Input: JSONL, one object per line with a "prompt" field (a string, or a list of {"role", "content"}
chat messages); blank lines are skipped. A string prompt is wrapped as one user message in the
tokenizer's chat template unless --raw (then it is used as-is, with BOS).
Output: JSONL, one line per completion, in input order: {"index", "prompt", "n", "completion",
"finish_reason" ("stop" | "length"), "num_tokens", "logprob"}; to stdout without --output.
The tokenizer is loaded from the checkpoint directory. Bad input (a malformed line, a missing
file, a prompt too long for the sampler without --skip_long) exits with status 1 and a one-line
reason naming the file and line or the prompt.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from absl import app, flags, logging

from meta_rewarding import artifacts

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Hugging Face model directory (safetensors + tokenizer).")
flags.DEFINE_string("prompts", None, "JSONL file with a 'prompt' field per line.")
flags.DEFINE_string("output", "", "Output JSONL path (default: stdout).")
flags.DEFINE_integer("n", 1, "Completions per prompt.")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0 = greedy).")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("top_k", 0, "Top-k sampling (0 = off).")
flags.DEFINE_integer("max_new_tokens", 256, "Most tokens generated per completion.")
flags.DEFINE_bool("greedy", False, "Argmax decoding (overrides temperature / top-p / top-k).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_bool("raw", False, "Use prompts as-is, without the chat template.")
flags.DEFINE_integer("batch_size", 16, "Sequences decoded together.")
flags.DEFINE_bool("share_prefix", False, "Prefill prompts' common prefixes once.")
flags.DEFINE_bool("skip_long", False, "Skip prompts too long for the sampler instead of failing.")
flags.DEFINE_string("dtype", "float32", "Compute and parameter dtype (float32 | bfloat16).")
flags.DEFINE_string("mesh", "", "Optional mesh, e.g. 'fsdp=-1' or 'data=2,tensor=4' (default: one "
                    "device).")


def read_prompts(path: str) -> list[Any]:
  """The "prompt" of every non-blank line; a `app.UsageError` naming file and line otherwise."""
  if not artifacts.exists(path) or artifacts.isdir(path):
    raise app.UsageError(f"--prompts: {path} does not exist")
  prompts = []
  with artifacts.open_file(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise app.UsageError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")
      if not isinstance(record, dict):
        raise app.UsageError(f"{path}:{lineno}: expected a JSON object with a 'prompt' field, "
                             f"got {type(record).__name__}")
      if "prompt" not in record:
        raise app.UsageError(f"{path}:{lineno}: missing 'prompt' field (keys: {sorted(record)})")
      prompt = record["prompt"]
      is_messages = isinstance(prompt, list) and prompt and all(
          isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
          for m in prompt)
      if not (isinstance(prompt, str) or is_messages):
        raise app.UsageError(f"{path}:{lineno}: 'prompt' must be a string or a list of "
                             f"{{'role', 'content'}} messages, got {json.dumps(prompt)[:80]}")
      prompts.append(prompt)
  if not prompts:
    raise app.UsageError(f"{path}: no prompts")
  return prompts


def parse_mesh(spec: str) -> dict[str, int]:
  shape = {}
  for part in filter(None, spec.split(",")):
    name, _, size = part.partition("=")
    try:
      shape[name.strip()] = int(size)
    except ValueError:
      raise app.UsageError(f"--mesh: expected axis=size pairs like 'fsdp=-1', got {part!r}")
  return shape


def run():
  """The command, from parsed FLAGS; bad input raises `app.UsageError` with a one-line reason."""
  prompts = read_prompts(FLAGS.prompts)  # before the slow model load: bad input fails fast

  from meta_rewarding import checkpoints, sampling, sharding
  from meta_rewarding.tokenizer import TokenizerError, load_tokenizer
  try:
    tokenizer = load_tokenizer(FLAGS.checkpoint)
  except TokenizerError as e:
    raise app.UsageError(f"--checkpoint: {e}")
  try:
    strategy = (sampling.Greedy() if FLAGS.greedy or FLAGS.temperature == 0 else
                sampling.Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                                  top_p=FLAGS.top_p))
    mesh = sharding.make_mesh(parse_mesh(FLAGS.mesh)) if FLAGS.mesh else None
  except ValueError as e:
    raise app.UsageError(str(e))
  shardings = None
  if mesh is not None:
    shardings = lambda c: sharding.param_shardings(c, mesh, sharding.DECODE_RULES)
  try:
    config, params = checkpoints.load_hf(FLAGS.checkpoint, shardings=shardings, dtype=FLAGS.dtype,
                                         param_dtype=FLAGS.dtype)
  except (checkpoints.CheckpointError, ValueError) as e:
    raise app.UsageError(f"--checkpoint: {e}")
  sampler = sampling.Sampler(config, params, tokenizer, mesh=mesh, batch_size=FLAGS.batch_size)
  chat = not FLAGS.raw
  index = list(range(len(prompts)))
  if FLAGS.skip_long:
    limit = sampler.max_prompt_length(FLAGS.max_new_tokens)
    lengths = sampler.prompt_lengths(prompts, chat=chat)
    index = [i for i in index if 0 < lengths[i] <= limit]
    if len(index) < len(prompts):
      logging.warning("skipped %d of %d prompts longer than %d tokens", len(prompts) - len(index),
                      len(prompts), limit)
  try:
    results = sampler.generate([prompts[i] for i in index], n=FLAGS.n, strategy=strategy,
                               max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed, chat=chat,
                               share_prefix=FLAGS.share_prefix, desc="sample")
  except ValueError as e:
    raise app.UsageError(str(e))
  lines = [json.dumps({"index": i, "prompt": prompts[i], "n": j, "completion": c.text,
                       "finish_reason": c.finish_reason, "num_tokens": c.num_tokens,
                       "logprob": c.logprob}, ensure_ascii=False) + "\n"
           for i, completions in zip(index, results) for j, c in enumerate(completions)]
  if not FLAGS.output:
    sys.stdout.writelines(lines)
    return
  # Complete or absent, never half-written (local: temp file + rename; gs://: one object upload).
  artifacts.write_text(FLAGS.output, "".join(lines))
  logging.info("wrote %d completions to %s", sum(map(len, results)), FLAGS.output)


def main(argv):
  if len(argv) > 1:
    sys.exit(f"sample: error: unexpected arguments {argv[1:]}")
  try:
    run()
  except app.UsageError as e:  # the reason, without a traceback or the whole flag listing
    sys.exit(f"sample: error: {e}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "prompts"])
  app.run(main)
