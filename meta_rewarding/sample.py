"""Sample completions from a Hugging Face Llama checkpoint with the jitted sampler.

  python -m meta_rewarding.sample --checkpoint=HF_DIR --prompts=prompts.jsonl --output=out.jsonl
      [--n=4 --temperature=0.8 --top_p=0.95 --top_k=0 --max_new_tokens=256 --greedy --seed=0 --raw
       --batch_size=16 --share_prefix --skip_long --dtype=float32 --mesh=fsdp=-1 --strict_config]

Input: JSONL (UTF-8), one object per line with a "prompt" field (a string, or a list of
{"role", "content"} chat messages); blank lines are skipped. A string prompt is wrapped as one
user message in the tokenizer's chat template unless --raw: then it is encoded exactly as
transformers' `tokenizer(text)` encodes it (the tokenizer's own rule decides whether a BOS goes
first). Inside chat messages, special-token strings ("<|eot_id|>", "</s>", ...) stay text; in a
--raw prompt they are the tokens they name.
Output: JSONL, one line per completion, in input order: {"index", "prompt", "n", "completion",
"finish_reason" ("stop" | "length"), "num_tokens", "logprob"}; to stdout without --output.
The tokenizer is loaded from the checkpoint directory. config.json keys the model does not know
are ignored with a warning, as transformers does; --strict_config refuses them instead. Bad input
(a flag out of range, a malformed or non-UTF-8 line, a missing file, an unsupported config.json, a
prompt too long for the sampler without --skip_long) exits with status 1 and a one-line
"sample: error: ..." reason naming the flag, the file and line, or the prompt.
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
flags.DEFINE_bool("strict_config", False, "Refuse config.json keys this Llama does not know "
                  "instead of ignoring them (keys that change the computation are refused by "
                  "name either way).")
flags.DEFINE_string("mesh", "", "Optional mesh, e.g. 'fsdp=-1' or 'data=2,tensor=4' (default: one "
                    "device).")


DTYPES = ("float32", "bfloat16")


def check_flags():
  """Every numeric and choice flag in range, before anything is read or loaded; a
  `app.UsageError` naming the flag and the allowed values otherwise."""
  checks = [
      ("n", FLAGS.n >= 1, "an integer >= 1"),
      ("batch_size", FLAGS.batch_size >= 1, "an integer >= 1"),
      ("max_new_tokens", FLAGS.max_new_tokens >= 1, "an integer >= 1"),
      ("temperature", FLAGS.temperature >= 0, "a number >= 0 (0 = greedy)"),
      ("top_p", 0 < FLAGS.top_p <= 1, "a number in (0, 1] (1 = off)"),
      ("top_k", FLAGS.top_k >= 0, "an integer >= 0 (0 = off)"),
      ("dtype", FLAGS.dtype in DTYPES, " | ".join(DTYPES)),
  ]
  for name, ok, allowed in checks:
    if not ok:
      raise app.UsageError(f"--{name}={getattr(FLAGS, name)!r} is out of range; expected {allowed}")


def _json_error(e: json.JSONDecodeError) -> str:
  # Some messages already end in "at" ("Unterminated string starting at"): no "at at column".
  where = "column" if e.msg.endswith(" at") else "at column"
  return f"{e.msg} {where} {e.colno}"


def read_prompts(path: str) -> list[Any]:
  """The "prompt" of every non-blank line; a `app.UsageError` naming file and line otherwise."""
  if not artifacts.exists(path) or artifacts.isdir(path):
    raise app.UsageError(f"--prompts: {path} does not exist")
  prompts = []
  with artifacts.open_file(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:  # line by line, so an error names the line (a whole-file decode gives a byte offset)
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
      except UnicodeDecodeError as e:
        raise app.UsageError(f"{path}:{lineno}: not UTF-8 text (byte {e.start + 1} of the line is "
                             f"0x{raw[e.start]:02x}); save the prompts file as UTF-8")
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise app.UsageError(f"{path}:{lineno}: invalid JSON ({_json_error(e)})")
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
  check_flags()
  prompts = read_prompts(FLAGS.prompts)  # before the slow model load: bad input fails fast

  from meta_rewarding import runtime, sampling, sharding
  from meta_rewarding.tokenizer import TokenizerError, load_tokenizer
  try:
    tokenizer = load_tokenizer(FLAGS.checkpoint)
  except TokenizerError as e:
    raise app.UsageError(f"--checkpoint: {e}")
  try:
    strategy = (sampling.Greedy() if FLAGS.greedy or FLAGS.temperature == 0 else
                sampling.Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                                  top_p=FLAGS.top_p))
    mesh_shape = parse_mesh(FLAGS.mesh) if FLAGS.mesh else None
  except ValueError as e:
    raise app.UsageError(str(e))
  try:
    # The run's factory (runtime.py); no --mesh samples on the first device.
    rt = runtime.build_for_checkpoint(FLAGS.checkpoint, tokenizer, dtype=FLAGS.dtype,
                                      mesh_shape=mesh_shape, strict=FLAGS.strict_config,
                                      seed=FLAGS.seed)
  except sharding.MeshError as e:
    raise app.UsageError(f"--mesh: {e}")
  except ValueError as e:  # CheckpointError, an unsupported config.json, a foreign tokenizer
    raise app.UsageError(f"--checkpoint: {e}")
  try:
    sampler = sampling.Sampler(rt.model_config, rt.params, tokenizer, mesh=rt.mesh,
                               rules=rt.decode_rules, batch_size=FLAGS.batch_size)
    # --raw text is encoded here, as `tokenizer(text)` encodes it (the tokenizer's own BOS rule);
    # the sampler takes token ids as they are. Chat prompts go through the chat template there.
    inputs = ([tokenizer.encode(p) if isinstance(p, str) else p for p in prompts] if FLAGS.raw
              else prompts)
  except ValueError as e:
    raise app.UsageError(str(e))
  chat = not FLAGS.raw
  try:
    # Too-long prompts: an error naming them before anything is sampled, or (--skip_long) empty
    # "too_long" rows left out of the output and counted.
    results = sampler.generate(inputs, n=FLAGS.n, strategy=strategy,
                               max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed, chat=chat,
                               share_prefix=FLAGS.share_prefix, desc="sample",
                               too_long="report" if FLAGS.skip_long else "raise")
  except ValueError as e:
    raise app.UsageError(str(e))
  index = [i for i, row in enumerate(results) if row[0].finish_reason != "too_long"]
  if len(index) < len(prompts):
    logging.warning("skipped %d of %d prompts longer than %d tokens", len(prompts) - len(index),
                    len(prompts), sampler.max_prompt_length(FLAGS.max_new_tokens))
  results = [results[i] for i in index]
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
  except KeyboardInterrupt:
    print("sample: interrupted", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  flags.mark_flags_as_required(["checkpoint", "prompts"])
  app.run(main)
