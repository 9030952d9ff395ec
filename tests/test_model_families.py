"""Mistral, Qwen2/2.5, Qwen3, Gemma 2 and Gemma 3 (text) against transformers' own implementations.

Each family is a tiny random checkpoint that transformers builds and saves (eager attention,
float32), with the family's switches on: Mistral with a sliding window and Nemo's head_dim,
Qwen2 with tied embeddings and `use_sliding_window` honoured on its upper layers, Qwen3 with q/k
norms and its own head_dim, Gemma 2 with soft-capping, `query_pre_attn_scalar` and alternating
sliding/global layers, Gemma 3 with q/k norms, 2:1 layers, a local rope base and linear rope
scaling on the global layers. Every sequence here is longer than the window (8), so the sliding
layers' masks matter in the forward, in prefill, in decoding (static and continuous batching with
ring wrap-around) and in the packed DPO rows.
"""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from absl import flags

import tiny_tokenizers
from test_run import tiny_config as run_config
from meta_rewarding.config import base as config_base, rules as config_rules
from meta_rewarding import artifacts, checkpoints, data, run, sample, sharding, train, train_step
from meta_rewarding.model import config as config_module
from meta_rewarding.model import llama
from meta_rewarding.sampling import Sampler
from meta_rewarding.strategies import Greedy
from meta_rewarding.tokenizer import load_tokenizer

WINDOW = 8
VOCAB = 512
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
# family -> (transformers config class, model class, the family's switches, tokenizer builder).
FAMILIES = {
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(head_dim=24, sliding_window=WINDOW, rope_theta=1e6),
                tiny_tokenizers.build_mistral_v3_hf),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(tie_word_embeddings=True, rope_theta=1e6, use_sliding_window=True,
                   sliding_window=WINDOW, max_window_layers=1),
              tiny_tokenizers.build_qwen25_hf),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
              dict(head_dim=24, rope_theta=1e6), tiny_tokenizers.build_qwen25_hf),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=24,
                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
               lambda d: tiny_tokenizers.build_gemma_hf(d, version=2)),
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
                    dict(head_dim=16, sliding_window=WINDOW,
                         layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                         rope_parameters={
                             "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                "rope_theta": 1e6},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
                    lambda d: tiny_tokenizers.build_gemma_hf(d, version=3)),
}
NAMES = sorted(FAMILIES)


def _torch_model(name, seed=0, scale=1.0):
  config_cls, model_cls, switches, _ = FAMILIES[name]
  torch.manual_seed(seed)
  model = model_cls(config_cls(**BASE, **switches, attn_implementation="eager")).float().eval()
  with torch.no_grad():  # weights well away from init, so every term shows in the logits
    for p in model.parameters():
      if p.dim() > 1:
        p.mul_(4.0 * scale)
      else:  # biases and norm weights (zero at init in several families)
        p.add_(0.1 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def families(tmp_path_factory):
  """name -> (directory with the checkpoint and the family's tokenizer, the torch model)."""
  built = {}

  def get(name):
    if name not in built:
      directory = tmp_path_factory.mktemp(name)
      model = _torch_model(name)
      model.save_pretrained(str(directory), safe_serialization=True)
      FAMILIES[name][3](str(directory))  # the family's tokenizer beside it
      built[name] = (str(directory), model)
    return built[name]
  return get


def _tokens(batch, length, seed=0):
  return np.random.RandomState(seed).randint(3, VOCAB, (batch, length)).astype(np.int32)


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def _load(directory, **run_options):
  return checkpoints.load_hf(directory, dtype="float32", param_dtype="float32", **run_options)


@pytest.mark.parametrize("scan", [False, True], ids=["layers", "scanned"])
@pytest.mark.parametrize("name", NAMES)
def test_logits_equal_transformers_past_the_window(families, name, scan):
  directory, model = families(name)
  config, params = _load(directory, scan_layers=scan)
  assert config.model_type == name
  if name != "qwen3":
    assert config.has_sliding_layers and config.sliding_window == WINDOW
  tokens = _tokens(2, 3 * WINDOW)
  got = np.asarray(llama.forward(config, params, tokens))
  assert np.abs(got - _torch_logits(model, tokens)).max() <= 1e-4


def test_the_family_switches_are_read(families):
  read = {name: _load(families(name)[0])[0] for name in NAMES}
  assert read["mistral"].sliding_layers == (True,) * 3 and read["mistral"].head_dim == 24
  assert read["qwen2"].attention_bias and not read["qwen2"].attention_out_bias
  assert read["qwen2"].sliding_layers == (False, True, True) and read["qwen2"].tie_word_embeddings
  assert read["qwen3"].qk_norm and read["qwen3"].head_dim == 24 and not read["qwen3"].attention_bias
  g2, g3 = read["gemma2"], read["gemma3_text"]
  assert g2.sliding_layers == (True, False, True) and g2.sandwich_norms and g2.scale_embeddings
  assert (g2.attn_logit_softcapping, g2.final_logit_softcapping) == (5.0, 3.0)
  assert g2.attention_scale == 24 ** -0.5 and g2.hidden_act == "gelu_pytorch_tanh"
  assert g3.sliding_layers == (True, True, False) and g3.qk_norm and g3.rope_local_theta == 1e4
  assert g3.rope_theta == 1e6 and g3.rope_scaling.rope_type == "linear"


@pytest.mark.parametrize("name", NAMES)
def test_save_hf_is_what_transformers_loads(families, name, tmp_path):
  directory, model = families(name)
  config, params = _load(directory)
  out = str(tmp_path / "saved")
  checkpoints.save_hf(out, config, params)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
  assert type(reloaded) is type(model)
  tokens = _tokens(2, 2 * WINDOW, seed=1)
  np.testing.assert_array_equal(_torch_logits(reloaded.float().eval(), tokens),
                                _torch_logits(model, tokens))
  assert checkpoints.read_hf_config(out, dtype="float32", param_dtype="float32") == config
  saved = json.loads(open(f"{out}/config.json").read())
  assert config_module.DecoderConfig.from_hf(saved, strict=True).replace(
      dtype="float32", param_dtype="float32") == config


# --------------------------------------------------------------------------------------------------
# Decoding: prefill + decode equals a full forward.

PROMPT_LENGTHS = (5, 19, 2, 13, 26)
M = 12


def _prompts(seed=0):
  rng = np.random.RandomState(seed)
  prompts = [[int(t) for t in rng.randint(3, VOCAB, n)] for n in PROMPT_LENGTHS]
  shared = [int(t) for t in rng.randint(3, VOCAB, 10)]  # two prompts share a 10-token prefix
  return prompts + [shared + [5, 6, 7], shared + [9] * 4]


def _greedy(config, params, batching, **kw):
  # One prompt bucket: one prefill program per layout (the suite compiles these per family).
  sampler = Sampler(config, params, None, batch_size=kw.pop("batch_size", 2),
                    prompt_buckets=(32,), batching=batching, min_shared_prefix=8,
                    decode_block=kw.pop("decode_block", 3), **kw)
  return sampler.generate(_prompts(), n=1, strategy=Greedy(), max_new_tokens=M, seed=0,
                          share_prefix=True, stop_ids=(), progress=False)


def _full_forward_check(config, params, results):
  """Every generated token is the argmax of a full forward over prompt + generation, and its
  log-prob is that forward's."""
  rows = [p + list(c.token_ids) for p, (c,) in zip(_prompts(), results)]
  T = max(len(r) for r in rows)
  tokens = np.zeros((len(rows), T), np.int32)
  valid = np.zeros((len(rows), T), bool)
  for i, r in enumerate(rows):
    tokens[i, :len(r)], valid[i, :len(r)] = r, True
  logits = np.asarray(jax.jit(llama.padded_forward, static_argnums=0)(config, params, tokens, valid),
                      np.float64)
  for i, (prompt, (c,)) in enumerate(zip(_prompts(), results)):
    assert c.num_tokens == M
    z = logits[i, len(prompt) - 1:len(prompt) - 1 + M]
    assert tuple(z.argmax(-1)) == c.token_ids, i
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    assert (z[np.arange(M), list(c.token_ids)] - lse).sum() == pytest.approx(c.logprob, abs=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_prefill_and_decode_equal_a_full_forward(families, name):
  config, params = _load(families(name)[0])
  static = _greedy(config, params, "static")
  continuous = _greedy(config, params, "continuous")  # 2 rows, 7 prompts: refills, ring wraps
  assert [c.token_ids for (c,) in continuous] == [c.token_ids for (c,) in static]
  _full_forward_check(config, params, static)


@pytest.mark.parametrize("name", NAMES)
def test_sharded_equals_unsharded(families, name):
  directory, model = families(name)
  config, params = _load(directory)
  reference = _greedy(config, params, "static")
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  _, sharded_params = _load(directory, shardings=lambda c: sharding.param_shardings(
      c, mesh, config_rules.DECODE_RULES))
  got = _greedy(config, sharded_params, "continuous", mesh=mesh, rules=config_rules.DECODE_RULES,
                batch_size=4)
  assert [c.token_ids for (c,) in got] == [c.token_ids for (c,) in reference]
  np.testing.assert_allclose([c.logprob for (c,) in got], [c.logprob for (c,) in reference],
                             atol=1e-4)
  # The forward on the training mesh rules too.
  _, train_params = _load(directory, shardings=lambda c: sharding.param_shardings(
      c, mesh, config_rules.TRAIN_RULES))
  tokens = _tokens(8, 2 * WINDOW, seed=2)
  with sharding.activate(mesh, config_rules.TRAIN_RULES):
    ours = np.asarray(llama.forward(config, train_params, tokens))
  assert np.abs(ours - _torch_logits(model, tokens)).max() <= 1e-4


# --------------------------------------------------------------------------------------------------
# The sample command, greedy, equals transformers' greedy generate.

sample.define_flags()


@pytest.mark.parametrize("name", NAMES)
def test_sample_cli_greedy_equals_transformers_generate(families, name, tmp_path):
  directory, model = families(name)
  texts = ["the cat sat on the mat and the dog ran in the park", "hello world"]
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
  out = tmp_path / "out.jsonl"
  flags.FLAGS(["sample", f"--checkpoint={directory}", f"--prompts={prompts}",
               f"--output={out}", "--greedy", "--raw", "--max_new_tokens=10",
               "--batch_size=2"])
  try:
    sample.run()
  finally:
    flags.FLAGS.unparse_flags()
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  tokenizer = load_tokenizer(directory)
  stops = list(tokenizer.stop_ids)
  for text, row in zip(texts, rows):
    ids = tokenizer.encode(text)
    with torch.no_grad():
      generated = model.generate(torch.as_tensor([ids]), max_new_tokens=10, do_sample=False,
                                 eos_token_id=stops, pad_token_id=stops[0])[0, len(ids):].tolist()
    body = generated
    for k, t in enumerate(generated):
      if t in stops:
        body = generated[:k]
        break
    assert row["completion"] == tokenizer.decode(body), (text, generated)
    assert row["num_tokens"] == min(len(body) + (len(body) < len(generated)), 10)


# --------------------------------------------------------------------------------------------------
# A DPO step: its loss at step 0 is the DPO formula on transformers' log-probs.

def _pairs(n, seed=0):
  rng = np.random.RandomState(seed)
  ids = lambda lo, hi: rng.randint(3, VOCAB, rng.randint(lo, hi)).astype(np.int32)
  return [dict(prompt_ids=ids(6, 11), chosen_ids=ids(6, 10), rejected_ids=ids(6, 10))
          for _ in range(n)]


def _torch_logp(model, prompt, response):
  tokens = np.concatenate([prompt, response])[None]
  z = torch.log_softmax(torch.as_tensor(_torch_logits(model, tokens), dtype=torch.float64), -1)
  p = len(prompt)
  return float(z[0, np.arange(p - 1, len(tokens[0]) - 1), response].sum())


@pytest.mark.parametrize("name", NAMES)
def test_dpo_step_loss_is_the_formula_on_transformers_logps(families, name):
  directory, policy = families(name)
  reference = _torch_model(name, seed=0, scale=0.9)  # the reference: the same weights, scaled
  config, params = _load(directory)
  pairs = _pairs(4)
  for p in pairs:
    p["ref_chosen_logp"] = _torch_logp(reference, p["prompt_ids"], p["chosen_ids"])
    p["ref_rejected_logp"] = _torch_logp(reference, p["prompt_ids"], p["rejected_ids"])
  cfg = config_base.train_config()
  cfg.update(dict(batch_size=4, grad_accum_steps=1, max_length=32, length_buckets=(32,),
                  warmup_steps=0, decay="constant"))
  spec = train_step.LossSpec.from_config(cfg, "dpo")
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  rules = config_rules.normalize_rules(config_rules.TRAIN_RULES)
  optimizer = train_step.OptimizerSpec.from_config(cfg)
  step, init, _, batch_sh = train.make_train_step(config, spec, optimizer, mesh, rules)
  batch = data.collate(pairs, np.arange(4), kind="dpo", num_micro=1, length_buckets=(32,),
                       max_length=32, pad_id=0)
  batch.pop("num_tokens")
  with sharding.activate(mesh, rules):
    _, metrics = step(init(params), train.put_batch(batch, batch_sh), np.float32(0.0))
  margins = [(_torch_logp(policy, p["prompt_ids"], p["chosen_ids"]) - p["ref_chosen_logp"])
             - (_torch_logp(policy, p["prompt_ids"], p["rejected_ids"]) - p["ref_rejected_logp"])
             for p in pairs]
  want = float(np.mean([np.logaddexp(0.0, -spec.beta * m) for m in margins]))  # −log σ(β·margin)
  assert float(metrics["loss"]) == pytest.approx(want, rel=1e-4, abs=1e-6)
  assert max(abs(m) for m in margins) > 0.1  # the margins are not all ~0: the test can fail


def test_gemma3_multimodal_config_is_refused_with_the_way_out():
  with pytest.raises(config_module.UnsupportedConfigError, match=r"model_type='gemma3'.*gemma3_text"):
    config_module.DecoderConfig.from_hf({"model_type": "gemma3", "text_config": {}})


def test_a_sliding_model_decoding_from_a_cache_needs_key_positions(families):
  config, params = _load(families("mistral")[0])
  cache = llama.init_cache(config, 1, 16)
  one = np.ones((1, 1), np.int32)
  with pytest.raises(ValueError, match="key_positions"):
    llama.Llama(config).apply({"params": params}, one, one * 0, np.ones((1, 1, 16), bool),
                              cache=cache, cache_index=0)


# --------------------------------------------------------------------------------------------------
# The pipeline: one Meta-Rewarding iteration of a random tiny Gemma 2 through the real stack.

def test_one_pipeline_iteration_of_a_tiny_gemma2(tmp_path):
  config = run_config(num_iterations=1)
  config.model.architecture = ml_collections.ConfigDict(dict(
      model_type="gemma2", vocab_size=400, hidden_size=32, intermediate_size=64,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
      query_pre_attn_scalar=8, sliding_window=WINDOW, max_position_embeddings=512))
  (result,) = run.run(config, str(tmp_path))
  assert result["iteration"] == 1 and result["actor/responses"] > 0
  model_dir = tmp_path / "iter_1" / "model"
  saved = json.loads((model_dir / "config.json").read_text())
  assert saved["model_type"] == "gemma2" and saved["sliding_window"] == WINDOW
  assert artifacts.read_jsonl(str(tmp_path / "iter_1" / "judge.jsonl"))
  # What the iteration trained and saved is a Gemma 2 that transformers loads, with our logits.
  config_read, params = _load(str(model_dir))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir),
                                                               attn_implementation="eager")
  tokens = _tokens(1, 3 * WINDOW) % 400
  assert np.abs(np.asarray(llama.forward(config_read, params, tokens))
                - _torch_logits(reloaded.float().eval(), tokens)).max() <= 1e-4


def test_a_tied_checkpoint_that_also_writes_lm_head(families, tmp_path):
  """Qwen2 ties its output layer here: an export that writes lm_head.weight too loads when it is
  the embedding, and is refused by name when it differs (transformers would untie them)."""
  directory, model = families("qwen2")
  for case, same in (("same", True), ("different", False)):
    copy = tmp_path / case
    shutil.copytree(directory, copy)
    (copy / "model.done.json").unlink(missing_ok=True)
    tensors = safetensors.numpy.load_file(str(copy / "model.safetensors"))
    embed = tensors["model.embed_tokens.weight"]
    tensors["lm_head.weight"] = embed if same else embed + 1.0
    safetensors.numpy.save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
    if same:
      config, params = _load(str(copy))
      tokens = _tokens(1, 2 * WINDOW)
      assert np.abs(np.asarray(llama.forward(config, params, tokens))
                    - _torch_logits(model, tokens)).max() <= 1e-4
    else:
      with pytest.raises(checkpoints.CheckpointError, match=r"lm_head\.weight differs .*tie_word_embeddings"):
        _load(str(copy))
