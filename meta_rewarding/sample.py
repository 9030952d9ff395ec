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
are ignored with a warning, as transformers does; --strict_config refuses them instead.

Errors are one line on stderr, "error: ...", naming the flag, the file and line, or the prompt,
without a traceback:
  exit 2, before anything is read or loaded: a flag that is malformed, unknown, missing or out of
    range (its message says the allowed values: --n, --batch_size, --max_new_tokens >= 1;
    --temperature >= 0; --top_p in (0, 1]; --top_k >= 0; --seed in [0, 2**32 - 1]; --dtype
    float32 | bfloat16; --mesh axis=size pairs over data, fsdp, tensor that fit the devices;
    --output not a directory);
  exit 1: bad input (a malformed line, a line that is not UTF-8, a missing file, an unsupported
    config.json, a prompt too long for the sampler without --skip_long, an --output that cannot
    be written).
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Iterable, Iterator

from absl import app, flags, logging

from meta_rewarding import artifacts, errors, runtime
from meta_rewarding.choices import MESH_AXES
from meta_rewarding.errors import UserError
from meta_rewarding.tokenizer import TokenizerError, load_tokenizer

FLAGS = flags.FLAGS
DTYPES = ("float32", "bfloat16")
MAX_SEED = 2**32 - 1  # the sampler keys its draws with a uint32 seed


def define_flags():
  """The command's flags. Defined only when sample is the program (or a test asks for them), so that
  importing this module (judge_eval uses `parse_mesh` and the UTF-8 line reader) defines nothing."""
  if "prompts" in FLAGS:
    return
  flags.DEFINE_string("checkpoint", None, "Hugging Face model directory (safetensors + tokenizer).")
  flags.DEFINE_string("prompts", None, "JSONL file with a 'prompt' field per line.")
  flags.DEFINE_string("output", "", "Output JSONL path (default: stdout); not a directory.")
  flags.DEFINE_integer("n", 1, "Completions per prompt (>= 1).")
  flags.DEFINE_float("temperature", 0.8, "Sampling temperature (>= 0; 0 = greedy).")
  flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass, in (0, 1] (1 = off).")
  flags.DEFINE_integer("top_k", 0, "Top-k sampling (>= 0; 0 = off).")
  flags.DEFINE_integer("max_new_tokens", 256, "Most tokens generated per completion (>= 1).")
  flags.DEFINE_bool("greedy", False, "Argmax decoding (overrides temperature / top-p / top-k).")
  flags.DEFINE_integer("seed", 0, f"Sampling seed, in [0, {MAX_SEED}].")
  flags.DEFINE_bool("raw", False, "Use prompts as-is, without the chat template.")
  flags.DEFINE_integer("batch_size", 16, "Sequences decoded together (>= 1).")
  flags.DEFINE_bool("share_prefix", False, "Prefill prompts' common prefixes once.")
  flags.DEFINE_bool("skip_long", False, "Skip prompts too long for the sampler instead of failing.")
  flags.DEFINE_string("dtype", "float32", "Compute and parameter dtype (float32 | bfloat16).")
  flags.DEFINE_bool("strict_config", False, "Refuse config.json keys this Llama does not know "
                    "instead of ignoring them (keys that change the computation are refused by "
                    "name either way).")
  flags.DEFINE_string("mesh", "", "Optional mesh, e.g. 'fsdp=-1' or 'data=2,tensor=4' (default: "
                      "one device).")


class FlagError(app.UsageError):
  """A flag value out of range (exit 2); other `app.UsageError`s are bad input (exit 1)."""


class NotUTF8Error(app.UsageError):
  """A line of an input file is not UTF-8 (the message names the file, line, byte and column)."""


def check_flags():
  """Every numeric and choice flag in range, before anything is read or loaded; a `FlagError`
  naming the flag and the allowed values otherwise."""
  checks = [
      ("n", FLAGS.n >= 1, "an integer >= 1"),
      ("batch_size", FLAGS.batch_size >= 1, "an integer >= 1"),
      ("max_new_tokens", FLAGS.max_new_tokens >= 1, "an integer >= 1"),
      ("temperature", math.isfinite(FLAGS.temperature) and FLAGS.temperature >= 0,
       "a finite number >= 0 (0 = greedy)"),
      ("top_p", 0 < FLAGS.top_p <= 1, "a number in (0, 1] (1 = off)"),
      ("top_k", FLAGS.top_k >= 0, "an integer >= 0 (0 = off)"),
      ("seed", 0 <= FLAGS.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
      ("dtype", FLAGS.dtype in DTYPES, " | ".join(DTYPES)),
  ]
  for name, ok, allowed in checks:
    if not ok:
      raise FlagError(f"--{name}={getattr(FLAGS, name)!r} is out of range; expected {allowed}")
  if FLAGS.output:
    check_output_path(FLAGS.output)
  if FLAGS.mesh:
    check_mesh(FLAGS.mesh)


def check_output_path(path: str):
  """A `FlagError` when `path` cannot become a file: it is a directory, or what should be one of
  its parent directories is a file (found before the model is loaded and sampled, not after)."""
  if artifacts.isdir(path):
    raise FlagError(f"--output={path} is a directory; expected the path of the JSONL file to write")
  if artifacts.is_remote(path):
    return
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise FlagError(f"--output={path}: {parent} is a file, not a directory")


def _json_error(e: json.JSONDecodeError) -> str:
  # Some messages already end in "at" ("Unterminated string starting at"): no "at at column".
  where = "column" if e.msg.endswith(" at") else "at column"
  return f"{e.msg} {where} {e.colno}"


def not_utf8_message(path: str, line_number: int, raw: bytes, e: UnicodeDecodeError) -> str:
  """'FILE:LINE: not UTF-8 (byte 0xNN at column C)', C counted in characters as an editor counts
  them (a whole-file decode only knows a byte offset into the file, which no editor shows)."""
  column = len(raw[:e.start].decode("utf-8", errors="replace")) + 1
  return (f"{path}:{line_number}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); save "
          "the file as UTF-8")


def decode_lines(path: str, lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
  """(line number, text) of each line; `NotUTF8Error` naming the first line that is not UTF-8. A
  UTF-8 byte-order mark before the first line is not text."""
  for line_number, raw in enumerate(lines, 1):
    if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
      raw = raw[3:]  # not "utf-8-sig": its error offsets would not count the mark's bytes
    try:
      yield line_number, raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise NotUTF8Error(not_utf8_message(path, line_number, raw, e)) from e


def find_not_utf8(path: str) -> str | None:
  """`not_utf8_message` of the first line of the file `path` that is not UTF-8; None when every
  line is. For loaders that decode a whole file at once and report a byte offset (data.load_pairs),
  to say which line is wrong once they have failed."""
  try:
    with artifacts.open_file(path, "rb") as f:
      for _ in decode_lines(path, f):
        pass
  except NotUTF8Error as e:
    return str(e)
  except OSError:
    return None
  return None


def read_prompts(path: str) -> list[Any]:
  """The "prompt" of every non-blank line; a `app.UsageError` naming file and line otherwise."""
  if not artifacts.exists(path) or artifacts.isdir(path):
    raise app.UsageError(f"--prompts: {path} does not exist")
  prompts = []
  with artifacts.open_file(path, "rb") as f:
    for lineno, line in decode_lines(path, f):
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
  """{'fsdp': -1} from 'fsdp=-1': axis=size pairs, each axis one of MESH_AXES at most once, sizes
  positive or -1 (fills); a `FlagError` naming --mesh and what is allowed otherwise."""
  expected = (f"expected axis=size pairs like 'fsdp=-1' or 'data=2,tensor=4' (axes: "
              f"{', '.join(MESH_AXES)}; sizes >= 1, or -1 for one axis to fill the devices)")
  shape = {}
  for part in spec.split(","):
    name, equals, size = (x.strip() for x in part.partition("="))
    try:
      value = int(size)
    except ValueError:
      value = 0
    if not equals or name not in MESH_AXES or name in shape or value == 0 or value < -1:
      raise FlagError(f"--mesh={spec!r}: bad entry {part.strip()!r}; {expected}")
    shape[name] = value
  if list(shape.values()).count(-1) > 1:
    raise FlagError(f"--mesh={spec!r}: only one axis may be -1; {expected}")
  return shape


def check_mesh(spec: str) -> dict[str, int]:
  """`parse_mesh`, and the shape fits this process's devices (a `FlagError` otherwise)."""
  shape = parse_mesh(spec)
  import jax  # jax: judge_eval and the pipeline import this module without it
  from meta_rewarding import sharding  # jax: as above
  try:
    sharding.resolve_mesh_shape(shape, jax.device_count())
  except sharding.MeshError as e:
    raise FlagError(f"--mesh={spec!r}: {e}") from e
  return shape


def run():
  """The command, from parsed FLAGS; bad input raises `app.UsageError` with a one-line reason."""
  check_flags()
  prompts = read_prompts(FLAGS.prompts)  # before the slow model load: bad input fails fast

  # jax: judge_eval and the pipeline import this module without it (tests/test_layering.py)
  from meta_rewarding import sampling, sharding, strategies
  try:
    tokenizer = load_tokenizer(FLAGS.checkpoint)
  except TokenizerError as e:
    raise app.UsageError(f"--checkpoint: {e}")
  try:
    strategy = (strategies.Greedy() if FLAGS.greedy or FLAGS.temperature == 0 else
                strategies.Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                                    top_p=FLAGS.top_p))
  except ValueError as e:
    raise FlagError(str(e))
  mesh_shape = parse_mesh(FLAGS.mesh) if FLAGS.mesh else None
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
  try:
    artifacts.write_text(FLAGS.output, "".join(lines))
  except OSError as e:  # a parent that is a file, a read-only directory, a full disk
    raise app.UsageError(f"--output={FLAGS.output}: cannot write ({e.strerror or e})") from e
  logging.info("wrote %d completions to %s", sum(map(len, results)), FLAGS.output)


EXIT_USAGE = 2  # a bad flag: nothing was read or loaded
EXIT_INPUT = 1  # bad input found while running (the prompts file, the checkpoint)


def fail(message, code: int):
  """Exits with `code` after one `error:` line on stderr (the command-line tools' error form)."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv):
  """absl's flag parsing, with a malformed, unknown or missing flag as one `error:` line (exit 2)
  instead of absl's "FATAL Flags parsing error" and its hint line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(e, EXIT_USAGE)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}", EXIT_USAGE)
  try:
    run()
  except FlagError as e:
    fail(e, EXIT_USAGE)
  except (app.UsageError, UserError) as e:  # the reason, without a traceback or the flag listing
    fail(e, EXIT_INPUT)
  except OSError as e:  # an unreadable file, a full disk: the path and the reason
    fail(errors.os_error_line(e), EXIT_INPUT)
  except KeyboardInterrupt:
    print("sample: interrupted", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["checkpoint", "prompts"])
  app.run(main, flags_parser=parse_flags)
