"""`python -m meta_rewarding.sample` on a tiny saved checkpoint with a tiny Llama-3-style tokenizer."""

import json
import os
import subprocess
import sys

import pytest
from absl import app, flags

import community_models
from hf_models import save_hf_model
from meta_rewarding import checkpoints, sample, sampling, strategies
from meta_rewarding.tokenizer import load_tokenizer

sample.define_flags()  # the command defines them in its __main__ only

PROMPTS = ["What is 12 + 7?", [{"role": "system", "content": "You are a helpful assistant."},
                               {"role": "user", "content": "Count the letters in banana."}],
           "Write a short poem about the sea."]


@pytest.fixture(scope="module")
def checkpoint(llama3_checkpoint):
  return llama3_checkpoint


@pytest.fixture
def prompts_file(tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text("\n".join(json.dumps({"prompt": p, "id": k}) for k, p in enumerate(PROMPTS)) + "\n\n")
  return str(path)


def _run_main(*args):
  flags.FLAGS(["sample", *args])
  try:
    sample.run()
  finally:
    flags.FLAGS.unparse_flags()


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_cli_writes_one_line_per_completion_matching_the_sampler(checkpoint, prompts_file, tmp_path):
  out = str(tmp_path / "out.jsonl")
  _run_main(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", f"--output={out}", "--n=2",
            "--temperature=1.0", "--top_p=0.9", "--max_new_tokens=6", "--seed=7", "--batch_size=8")
  rows = _read(out)
  assert [(r["index"], r["n"]) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
  assert [r["prompt"] for r in rows[::2]] == PROMPTS
  for r in rows:
    assert r["finish_reason"] in ("stop", "length") and 1 <= r["num_tokens"] <= 6
    assert isinstance(r["completion"], str) and isinstance(r["logprob"], float)
    assert r["finish_reason"] == "stop" or r["num_tokens"] == 6
  # Exactly what the library driver returns for the same settings.
  tokenizer = load_tokenizer(checkpoint)
  config, params = checkpoints.load_hf(checkpoint, dtype="float32", param_dtype="float32")
  sampler = sampling.Sampler(config, params, tokenizer, batch_size=8)
  results = sampler.generate(PROMPTS, n=2, strategy=strategies.Sampling(temperature=1.0, top_p=0.9),
                             max_new_tokens=6, seed=7, progress=False)
  assert [c.text for cs in results for c in cs] == [r["completion"] for r in rows]
  for cs in results:
    for c in cs:
      body = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
      assert c.finish_reason == "length" or c.token_ids[-1] in tokenizer.stop_ids
      assert c.text == tokenizer.decode(body) and c.num_tokens == len(c.token_ids)


def test_cli_greedy_raw_is_deterministic(checkpoint, prompts_file, tmp_path):
  outs = []
  for k in range(2):
    out = str(tmp_path / f"greedy{k}.jsonl")
    _run_main(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", f"--output={out}",
              "--greedy", "--raw", "--max_new_tokens=6", f"--seed={k}", "--batch_size=8")
    outs.append([(r["completion"], r["num_tokens"]) for r in _read(out)])
  assert outs[0] == outs[1] and len(outs[0]) == 3


@pytest.mark.parametrize("content, message", [
    # json's messages that end in "at" read once, not "at at column".
    ('{"prompt": "ok"}\n{"prompt": "broken\n',
     r"bad\.jsonl:2: invalid JSON \(Invalid control character at column 19\)"),
    ('{"prompt": "ok"}\n{"prompt": "broken',
     r"bad\.jsonl:2: invalid JSON \(Unterminated string starting at column 12\)"),
    ('{"prompt": }\n', r"bad\.jsonl:1: invalid JSON \(Expecting value at column 12\)"),
    ('{"prompt": "ok"}\n\n["a list"]\n', r"bad\.jsonl:3: expected a JSON object"),
    ('{"text": "no prompt"}\n', r"bad\.jsonl:1: missing 'prompt' field"),
    ('{"prompt": 5}\n', r"bad\.jsonl:1: 'prompt' must be a string"),
])
def test_malformed_prompts_file_names_file_and_line(tmp_path, content, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(content)
  with pytest.raises(app.UsageError, match=message):
    sample.read_prompts(str(path))


def test_malformed_line_exits_nonzero_without_traceback(checkpoint, tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "fine"}\n{not json}\n')
  proc = subprocess.run([sys.executable, "-m", "meta_rewarding.sample", f"--checkpoint={checkpoint}",
                         f"--prompts={path}"], capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: {path}:2: invalid JSON (Expecting property name enclosed in double "
                    "quotes at column 2)"], proc.stderr


def test_too_long_prompt_is_a_usage_error_or_skipped(checkpoint, tmp_path):
  path = tmp_path / "long.jsonl"
  path.write_text(json.dumps({"prompt": "hello " * 200}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
  with pytest.raises(app.UsageError, match=r"prompt 0 has \d+ tokens"):
    _run_main(f"--checkpoint={checkpoint}", f"--prompts={path}", "--max_new_tokens=6", "--raw")
  out = str(tmp_path / "out.jsonl")
  _run_main(f"--checkpoint={checkpoint}", f"--prompts={path}", "--max_new_tokens=6", "--raw",
            "--skip_long", "--greedy", "--batch_size=8", f"--output={out}")
  assert [r["index"] for r in _read(out)] == [1]


# -- a transformers-saved SmolLM2-style checkpoint ----------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
  """(directory, transformers model): SmolLM2's config keys, ChatML tokenizer without BOS."""
  directory = str(tmp_path_factory.mktemp("smollm2"))
  return directory, community_models.tiny_smollm2(directory)


@pytest.fixture(scope="module")
def llama3_bos_checkpoint(tmp_path_factory):
  """A checkpoint whose tokenizer's post-processor puts <|begin_of_text|> first (as Llama 3's)."""
  directory = str(tmp_path_factory.mktemp("llama3_bos"))
  save_hf_model("llama3", directory, vocab_size=400, bos_token_id=0, eos_token_id=[1, 4])
  community_models.build_llama3_bos_hf(directory)
  return directory


RAW_PROMPTS = ["Hello world", "The quick brown fox", "What is 12 + 7? The answer is"]


def _write_prompts(tmp_path, prompts):
  path = tmp_path / "prompts.jsonl"
  path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
  return str(path)


def test_sample_runs_on_a_transformers_saved_smollm2_style_directory(smollm2, tmp_path):
  directory, model = smollm2
  hf = json.loads(open(os.path.join(directory, "config.json")).read())
  for key in ("_model_name_or_path", "unk_token_id", "is_llama_config", "rope_interleaved"):
    assert key in hf  # the keys that stopped `sample` before
  out = str(tmp_path / "out.jsonl")
  proc = subprocess.run([sys.executable, "-m", "meta_rewarding.sample", f"--checkpoint={directory}",
                         f"--prompts={_write_prompts(tmp_path, RAW_PROMPTS)}", "--raw", "--greedy",
                         "--max_new_tokens=5", "--batch_size=4", f"--output={out}"],
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  rows = _read(out)
  assert [r["prompt"] for r in rows] == RAW_PROMPTS
  # Greedy decoding from exactly tokenizer(text)'s ids gives transformers' own greedy tokens.
  import torch
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
  for row, text in zip(rows, RAW_PROMPTS):
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
      new = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=2,
                           pad_token_id=2)[0, ids.shape[1]:]
    assert row["completion"] == tok.decode(new, skip_special_tokens=True), text


def test_sample_chat_on_smollm2_style_directory(smollm2, tmp_path):
  directory, _ = smollm2
  out = str(tmp_path / "out.jsonl")
  _run_main(f"--checkpoint={directory}", f"--prompts={_write_prompts(tmp_path, PROMPTS)}",
            f"--output={out}", "--greedy", "--max_new_tokens=4", "--batch_size=4")
  assert [r["prompt"] for r in _read(out)] == PROMPTS


def _sampled_inputs(monkeypatch, *args):
  """The prompts `sample` hands the sampler (token ids for --raw text)."""
  seen = []
  original = sampling.Sampler.generate

  def spy(self, prompts, **kwargs):
    seen.extend(prompts)
    return original(self, prompts, **kwargs)

  monkeypatch.setattr(sampling.Sampler, "generate", spy)
  _run_main(*args)
  return seen


@pytest.mark.parametrize("which, adds_bos", [("smollm2", False), ("llama3_bos", True)])
def test_raw_prompts_are_encoded_as_the_tokenizer_encodes_them(request, monkeypatch, tmp_path,
                                                               which, adds_bos):
  from transformers import AutoTokenizer
  directory = (request.getfixturevalue("smollm2")[0] if which == "smollm2"
               else request.getfixturevalue("llama3_bos_checkpoint"))
  tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
  seen = _sampled_inputs(monkeypatch, f"--checkpoint={directory}",
                         f"--prompts={_write_prompts(tmp_path, RAW_PROMPTS)}", "--raw", "--greedy",
                         "--max_new_tokens=2", "--batch_size=4", f"--output={tmp_path / 'o.jsonl'}")
  assert seen == [list(tok(text)["input_ids"]) for text in RAW_PROMPTS]
  assert all((ids[0] == tok.bos_token_id) == adds_bos for ids in seen)


def test_strict_config_refuses_unknown_keys(smollm2, tmp_path):
  directory, _ = smollm2
  prompts = _write_prompts(tmp_path, ["Hi"])
  # Every key of SmolLM2's config.json is accounted for: strict mode loads it too.
  _run_main(f"--checkpoint={directory}", f"--prompts={prompts}", "--strict_config", "--raw",
            "--greedy", "--max_new_tokens=2", f"--output={tmp_path / 'o.jsonl'}")
  copy = tmp_path / "copy"
  copy.mkdir()
  for name in os.listdir(directory):
    (copy / name).symlink_to(os.path.join(directory, name))
  hf = json.loads(open(os.path.join(directory, "config.json")).read())
  (copy / "config.json").unlink()
  (copy / "config.json").write_text(json.dumps({**hf, "sliding_window": 4096}))
  with pytest.raises(app.UsageError, match=r"--checkpoint: .*config\.json: unknown Llama config "
                                           r"fields \['sliding_window'\]"):
    _run_main(f"--checkpoint={copy}", f"--prompts={prompts}", "--strict_config", "--raw")
  _run_main(f"--checkpoint={copy}", f"--prompts={prompts}", "--raw", "--greedy",
            "--max_new_tokens=2", f"--output={tmp_path / 'o2.jsonl'}")  # ignored by default


# -- one error line, no traceback ---------------------------------------------------------------


def _main_exit(capsys, *args):
  """Runs `sample.main` as the command does; returns (exit code, its stderr lines)."""
  flags.FLAGS(["sample", *args])
  code = 0
  try:
    sample.main(["sample"])
  except SystemExit as e:
    code = e.code
  finally:
    flags.FLAGS.unparse_flags()
  return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("flag, message", [
    ("--batch_size=0", "error: --batch_size=0 is out of range; expected an integer >= 1"),
    ("--dtype=float65", "error: --dtype='float65' is out of range; expected float32 | bfloat16"),
    ("--n=0", "error: --n=0 is out of range"),
    ("--max_new_tokens=0", "error: --max_new_tokens=0 is out of range"),
    ("--temperature=-1", "error: --temperature=-1.0 is out of range"),
    ("--temperature=inf", "error: --temperature=inf is out of range; expected a finite number"),
    ("--top_p=0", "error: --top_p=0.0 is out of range; expected a number in (0, 1]"),
    ("--top_k=-2", "error: --top_k=-2 is out of range"),
    ("--seed=4294967296", "error: --seed=4294967296 is out of range; expected an integer in "
                          "[0, 4294967295]"),
])
def test_flag_out_of_range_is_one_error_line(checkpoint, prompts_file, capsys, flag, message):
  code, lines = _main_exit(capsys, f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", flag)
  assert code == 2 and len(lines) == 1 and lines[0].startswith(message), lines


def test_non_utf8_prompts_file_names_file_and_line(checkpoint, tmp_path, capsys):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes(b'{"prompt": "fine"}\n\n{"prompt": "caf\xe9"}\n')
  code, lines = _main_exit(capsys, f"--checkpoint={checkpoint}", f"--prompts={path}")
  assert code == 1
  assert lines == [f"error: {path}:3: not UTF-8 (byte 0xe9 at column 16); save the file as UTF-8"]
  # The column counts characters, not bytes.
  path.write_bytes('{"prompt": "é'.encode() + b'\xff"}\n')
  with pytest.raises(app.UsageError, match=r"latin1\.jsonl:1: not UTF-8 \(byte 0xff at column 14\)"):
    sample.read_prompts(str(path))
  # A UTF-8 byte-order mark is not an error, nor a column.
  path.write_bytes(b'\xef\xbb\xbf{"prompt": "fine"}\n')
  assert sample.read_prompts(str(path)) == ["fine"]
  path.write_bytes(b'\xef\xbb\xbf{"prompt": "f\x80"}\n')
  with pytest.raises(app.UsageError, match=r"latin1\.jsonl:1: not UTF-8 \(byte 0x80 at column 14\)"):
    sample.read_prompts(str(path))


def _sample(*args):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.sample", *args], capture_output=True,
                        text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)


def _one_error_line(proc) -> str:
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


def test_bad_input_exits_1_without_traceback(checkpoint, tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes(b'{"prompt": "caf\xe9"}\n')
  proc = _sample(f"--checkpoint={checkpoint}", f"--prompts={path}")
  assert proc.returncode == 1
  assert _one_error_line(proc) == (f"error: {path}:1: not UTF-8 (byte 0xe9 at column 16); save "
                                   "the file as UTF-8")


@pytest.mark.parametrize("flag, message", [
    # OverflowError before: the sampler's uint32 seed.
    ("--seed=-1", "error: --seed=-1 is out of range; expected an integer in [0, 4294967295]"),
    ("--output={tmp}", "error: --output={tmp} is a directory; expected the path of the JSONL "
                       "file to write"),
    ("--output={prompts}/out.jsonl", "error: --output={prompts}/out.jsonl: {prompts} is a file, "
                                     "not a directory"),
    ("--batch_size=0", "error: --batch_size=0 is out of range; expected an integer >= 1"),
    ("--dtype=float65", "error: --dtype='float65' is out of range"),
    ("--top_p=2", "error: --top_p=2.0 is out of range; expected a number in (0, 1]"),
    ("--mesh=fsdp", "error: --mesh='fsdp': bad entry 'fsdp'; expected axis=size pairs"),
    ("--mesh=pipeline=2", "error: --mesh='pipeline=2': bad entry 'pipeline=2'"),
    ("--mesh=data=3", "error: --mesh='data=3': mesh shape"),
    ("--n=lots", "error: flag --n=lots: invalid literal for int()"),
    ("--no_such_flag", "error: Unknown command line flag 'no_such_flag'"),
])
def test_bad_flag_exits_2_with_one_error_line(checkpoint, prompts_file, tmp_path, flag, message):
  fill = dict(tmp=tmp_path, prompts=prompts_file)
  proc = _sample(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", flag.format(**fill))
  assert proc.returncode == 2
  assert _one_error_line(proc).startswith(message.format(**fill))


def test_missing_flag_and_stray_argument_exit_2(checkpoint, prompts_file):
  proc = _sample(f"--checkpoint={checkpoint}")
  assert proc.returncode == 2
  assert _one_error_line(proc).startswith("error: flag --prompts=None")
  proc = _sample(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", "stray")
  assert proc.returncode == 2 and _one_error_line(proc) == "error: unexpected arguments ['stray']"
