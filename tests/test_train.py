"""The trainer: DPO/SFT learn, reference pass, exact resume, sharding, NaN stop, accumulation, CLI."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import configs
from meta_rewarding.config import base as config_base, rules as config_rules
from meta_rewarding import checkpoints, data, sharding, stages, train, train_step
from meta_rewarding.model.config import tiny_config
from meta_rewarding.model.llama import forward, init_params

REPO = pathlib.Path(__file__).resolve().parents[1]
RULES = config_rules.TRAIN_RULES
CONFIG = tiny_config()


def _pairs(n, seed=0, vocab=256):
  rng = np.random.RandomState(seed)
  ids = lambda lo, hi: rng.randint(3, vocab, rng.randint(lo, hi)).astype(np.int32)
  return [dict(prompt_ids=ids(3, 9), chosen_ids=ids(2, 7), rejected_ids=ids(2, 7)) for _ in range(n)]


def _sft(n, seed=1):
  rng = np.random.RandomState(seed)
  ids = lambda lo, hi: rng.randint(3, 256, rng.randint(lo, hi)).astype(np.int32)
  return [dict(prompt_ids=ids(3, 8), response_ids=ids(3, 8)) for _ in range(n)]


def _cfg(**overrides):
  cfg = config_base.train_config()
  # Tests share a few compiled programs: the same optimizer everywhere, DPO steps of 8 pairs as
  # 8x1 or 4x2 microbatches, SFT steps of 4 sequences, the reference pass 8 pairs at a time, T=32.
  # adam_eps=1e-3 keeps Adam's update lr·g/(|g|+eps) smooth in g, so runs that differ only by
  # float rounding (sharded vs not, accumulated vs not) stay comparable after an update (with
  # eps=1e-8 it is ~lr·sign(g), amplifying rounding in tiny gradients by up to lr/eps).
  cfg.update(dict(learning_rate=1e-2, warmup_steps=0, decay="constant", batch_size=8,
                  grad_accum_steps=1, num_epochs=1, max_length=32, length_buckets=(32,),
                  checkpoint_every=100, log_every=100, async_checkpointing=False,
                  adam_eps=1e-3, reference_batch_size=8))
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="module")
def params():
  return init_params(CONFIG, jax.random.key(0))


@pytest.fixture(scope="module")
def mesh1():
  return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def mesh8():
  return sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _assert_tree_equal(a, b):
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def _live_logps(params, examples, key):
  """Summed response log-probs from the plain causal `forward` (float64 numpy log-softmax).

  Rows are right-padded to 16 tokens, which a causal forward cannot see from earlier positions;
  one program for every example.
  """
  tokens = np.zeros((len(examples), 16), np.int32)
  for r, ex in enumerate(examples):
    row = np.concatenate([ex["prompt_ids"], ex[key]])
    tokens[r, :len(row)] = row
  logits = np.asarray(forward(CONFIG, params, tokens), np.float64)
  out = []
  for r, ex in enumerate(examples):
    p, n = len(ex["prompt_ids"]), len(ex[key])
    z = logits[r, p - 1:p + n - 1]
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    out.append(logp[np.arange(n), ex[key]].sum())
  return np.array(out)


# ------------------------------------------------------------------------------------------------
# Learning.

@pytest.fixture(scope="module")
def overfit_run(params, mesh1, tmp_path_factory):
  examples = _pairs(8)
  cfg = _cfg(num_epochs=30, checkpoint_every=10, keep_checkpoints=2)
  directory = str(tmp_path_factory.mktemp("overfit"))
  trained, history = train.run_dpo(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                                   checkpoint_dir=directory, seed=0, progress=False)
  return examples, trained, history, directory


def test_dpo_overfits_eight_pairs(overfit_run, params, mesh1):
  examples, trained, history, _ = overfit_run
  assert len(history) == 30 and [m["step"] for m in history] == list(range(1, 31))
  # Policy == reference at the start: zero rewards, loss log 2.
  assert abs(history[0]["rewards/margins"]) < 1e-5
  assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
  assert history[-1]["rewards/accuracies"] == 1.0
  assert history[-1]["loss"] < 0.2
  for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
              "grad_norm", "learning_rate", "tokens_per_second"):
    assert all(math.isfinite(m[key]) for m in history), key
  # The pipeline's iteration report reads these step metrics by the same names.
  report = stages.iteration_metrics(1, [], [], [], [], None, None, history, None, {})
  assert report["dpo/tokens_per_second"] == pytest.approx(
      np.mean([m["tokens_per_second"] for m in history]))
  assert report["dpo/steps"] == 30 and "dpo/final_tokens_per_second" in report
  # Every pair, scored afresh: the trained policy prefers chosen over rejected relative to π_ref.
  ref = train.compute_reference_logps(CONFIG, params, examples, mesh=mesh1, rules=RULES,
                                      batch_size=8, max_length=32, length_buckets=(32,))
  now = train.compute_reference_logps(CONFIG, trained, examples, mesh=mesh1, rules=RULES,
                                      batch_size=8, max_length=32, length_buckets=(32,))
  margins = [(b["ref_chosen_logp"] - a["ref_chosen_logp"]) - (b["ref_rejected_logp"] -
                                                               a["ref_rejected_logp"])
             for a, b in zip(ref, now)]
  assert min(margins) > 0


def test_checkpoints_keep_last_n_and_exports(overfit_run):
  _, trained, history, directory = overfit_run
  assert sorted(os.listdir(os.path.join(directory, "state"))) == ["20", "30"]
  import orbax.checkpoint as ocp
  exported = ocp.StandardCheckpointer().restore(os.path.join(directory, "params"))
  _assert_tree_equal(exported, trained)
  with open(os.path.join(directory, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [m["step"] for m in logged] == list(range(1, 31))
  assert logged[-1]["loss"] == history[-1]["loss"]


def test_completed_run_is_not_repeated(overfit_run, params, mesh1):
  examples, trained, history, directory = overfit_run
  again, history2 = train.run_dpo(CONFIG, params, examples, _cfg(num_epochs=30, checkpoint_every=10,
                                                                  keep_checkpoints=2),
                                   mesh=mesh1, rules=RULES, checkpoint_dir=directory, seed=0,
                                   progress=False)
  _assert_tree_equal(again, trained)
  assert [m["loss"] for m in history2] == [m["loss"] for m in history]


def test_a_different_run_in_the_same_directory_is_refused(overfit_run, params, mesh1):
  _, _, _, directory = overfit_run
  with pytest.raises(train.TrainConfigError, match="different run"):
    train.run_dpo(CONFIG, params, _pairs(8, seed=5), _cfg(num_epochs=30, checkpoint_every=10),
                  mesh=mesh1, rules=RULES, checkpoint_dir=directory, seed=0, progress=False)


def test_sft_drives_nll_near_zero(params, mesh1, tmp_path):
  examples = _sft(4)
  cfg = _cfg(num_epochs=40, batch_size=4)  # 4 sequences, one step per epoch
  trained, history = train.run_sft(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                                   checkpoint_dir=str(tmp_path), seed=0, progress=False)
  assert history[0]["nll"] > 4.0
  # NLL of the fixed set, computed independently of the trainer.
  total = -_live_logps(trained, examples, "response_ids").sum()
  tokens = sum(len(ex["response_ids"]) for ex in examples)
  assert total / tokens < 0.05
  assert history[-1]["nll"] == pytest.approx(history[-1]["loss"])


# ------------------------------------------------------------------------------------------------
# Reference pass.

@pytest.mark.parametrize("chunk_size", [0, 4])
def test_reference_logps_equal_a_live_forward(params, mesh1, chunk_size):
  examples = _pairs(11, seed=3)  # two batches, the second with padding rows
  examples[0]["ref_chosen_logp"] = 123.0  # recomputed, not trusted
  out = train.compute_reference_logps(CONFIG, params, examples, mesh=mesh1, rules=RULES,
                                      batch_size=8, max_length=32, length_buckets=(32,),
                                      chunk_size=chunk_size)
  assert len(out) == len(examples)
  for key, ref in (("chosen_ids", "ref_chosen_logp"), ("rejected_ids", "ref_rejected_logp")):
    np.testing.assert_allclose([got[ref] for got in out], _live_logps(params, examples, key),
                               rtol=0, atol=1e-4)
  for ex, got in zip(examples, out):
    np.testing.assert_array_equal(got["prompt_ids"], ex["prompt_ids"])
  assert examples[0]["ref_chosen_logp"] == 123.0  # inputs untouched


# ------------------------------------------------------------------------------------------------
# Resume, NaN, sharding, accumulation.

class _Killed(Exception):
  pass


def test_kill_and_resume_is_bitwise_identical(params, mesh1, tmp_path, monkeypatch):
  examples = _pairs(16, seed=7)
  # 4 pairs x 2 microbatches: 2 steps per epoch, 3 epochs; checkpoints every 2 steps.
  cfg = _cfg(batch_size=4, grad_accum_steps=2, num_epochs=3, checkpoint_every=2,
             decay="cosine", warmup_steps=2, learning_rate=3e-3, async_checkpointing=True)
  full, full_history = train.run_dpo(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                                     checkpoint_dir=str(tmp_path / "full"), seed=11, progress=False)
  assert len(full_history) == 6

  real = data.step_indices

  def dies_at_step_3(seed, step, n, global_batch):  # the process dies while preparing step 4
    if step == 3:
      raise _Killed()
    return real(seed, step, n, global_batch)

  monkeypatch.setattr(data, "step_indices", dies_at_step_3)
  with pytest.raises(_Killed):
    train.run_dpo(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                  checkpoint_dir=str(tmp_path / "killed"), seed=11, progress=False)
  monkeypatch.setattr(data, "step_indices", real)
  assert sorted(os.listdir(tmp_path / "killed" / "state")) == ["2"]  # step 3 was never saved
  resumed, history = train.run_dpo(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                                   checkpoint_dir=str(tmp_path / "killed"), seed=11, progress=False)
  _assert_tree_equal(resumed, full)
  assert [m["step"] for m in history] == list(range(1, 7))
  assert [m["loss"] for m in history] == [m["loss"] for m in full_history]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(params, mesh1, tmp_path):
  examples = _pairs(32, seed=2)
  seed, global_batch = 0, 8
  bad_step = 4  # 1-based: the 4th update (of 4 in the epoch) sees the poisoned pair
  _, indices = data.step_indices(seed, bad_step - 1, len(examples), global_batch)
  examples = train.compute_reference_logps(CONFIG, params, examples, mesh=mesh1, rules=RULES,
                                           batch_size=8, max_length=32, length_buckets=(32,))
  examples[int(indices[0])]["ref_chosen_logp"] = float("nan")
  cfg = _cfg(checkpoint_every=1)
  with pytest.raises(train.TrainingDivergedError, match=f"diverged at step {bad_step}:") as info:
    train.run_dpo(CONFIG, params, examples, cfg, mesh=mesh1, rules=RULES,
                  checkpoint_dir=str(tmp_path), seed=seed, progress=False)
  assert info.value.step == bad_step and info.value.last_checkpoint == bad_step - 1
  assert f"last good checkpoint is step {bad_step - 1}" in str(info.value)
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(str(tmp_path / "state"))
  assert manager.latest_step() == bad_step - 1
  restored = manager.restore(bad_step - 1, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), run=ocp.args.JsonRestore()))["state"]
  assert int(restored["step"]) == bad_step - 1
  assert all(np.isfinite(v).all() for v in _flat(restored["params"]).values())
  # The good checkpoint is exactly what training up to that step produces.
  clean = [dict(ex) for ex in examples]
  clean[int(indices[0])]["ref_chosen_logp"] = 0.0
  good, _ = train.run_dpo(CONFIG, params, clean, _cfg(max_steps=bad_step - 1),
                          mesh=mesh1, rules=RULES, checkpoint_dir=str(tmp_path / "clean"),
                          seed=seed, progress=False)
  _assert_tree_equal(restored["params"], good)


def _one_step(model_config, params, examples, *, kind, mesh, batch_size, grad_accum):
  cfg = _cfg(batch_size=batch_size, grad_accum_steps=grad_accum)
  spec = train_step.LossSpec.from_config(cfg, kind)
  opt = train_step.OptimizerSpec.from_config(cfg)
  rules = config_rules.normalize_rules(RULES)
  step, init, _, batch_sh = train.make_train_step(model_config, spec, opt, mesh, rules)
  indices = np.arange(len(examples))
  batch = data.collate(examples, indices, kind=kind, num_micro=grad_accum,
                       length_buckets=(32,), max_length=32, pad_id=0)
  batch.pop("num_tokens")
  with sharding.activate(mesh, rules):
    state, metrics = step(init(params), train.put_batch(batch, batch_sh), np.float32(1e-2))
  return state, jax.device_get(metrics)


@pytest.fixture(scope="module")
def ref_pairs(params, mesh1):
  return train.compute_reference_logps(CONFIG, jax.tree.map(lambda x: x * 0.9, params),
                                       _pairs(8, seed=4), mesh=mesh1, rules=RULES, batch_size=8,
                                       max_length=32, length_buckets=(32,))


def test_sharded_step_equals_unsharded(params, ref_pairs, mesh1, mesh8):
  one, m1 = _one_step(CONFIG, params, ref_pairs, kind="dpo", mesh=mesh1, batch_size=4, grad_accum=2)
  eight, m8 = _one_step(CONFIG, params, ref_pairs, kind="dpo", mesh=mesh8, batch_size=4, grad_accum=2)
  q = eight.params["layers_0"]["attn"]["q"]
  assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated
  mu = eight.opt_state[1].mu["layers_0"]["attn"]["q"]
  assert mu.sharding == q.sharding  # optimizer moments are sharded like their parameters
  for k in m1:
    assert m8[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-6), k
  f1, f8 = _flat(one.params), _flat(eight.params)
  for k in f1:
    np.testing.assert_allclose(f8[k], f1[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("kind", ["dpo", "sft"])
def test_grad_accumulation_equals_the_large_batch_step(params, ref_pairs, mesh1, kind):
  examples, size = (ref_pairs, 8) if kind == "dpo" else (_sft(4), 4)
  big, mb = _one_step(CONFIG, params, examples, kind=kind, mesh=mesh1, batch_size=size, grad_accum=1)
  acc, ma = _one_step(CONFIG, params, examples, kind=kind, mesh=mesh1, batch_size=size // 2,
                      grad_accum=2)
  for k in mb:
    assert ma[k] == pytest.approx(mb[k], rel=1e-5, abs=1e-6), k
  fb, fa = _flat(big.params), _flat(acc.params)
  for k in fb:
    np.testing.assert_allclose(fa[k], fb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_schedule_warmup_and_decay():
  schedule = train_step.Schedule.from_config(
      _cfg(learning_rate=1.0, warmup_steps=4, decay="cosine", end_learning_rate_ratio=0.1),
      total_steps=14)
  lr = [float(schedule(s)) for s in range(15)]
  np.testing.assert_allclose(lr[:5], [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-6)
  assert lr[9] == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5) and lr[14] == pytest.approx(0.1)
  linear = train_step.Schedule.from_config(
      _cfg(learning_rate=1.0, warmup_steps=0, decay="linear", end_learning_rate_ratio=0.0),
      total_steps=10)
  assert float(linear(5)) == pytest.approx(0.5)


def test_optimizer_is_adamw_after_clipping():
  params = {"w": jnp.arange(6.0).reshape(2, 3) / 7, "scale": jnp.ones(3)}
  grads = {"w": jnp.full((2, 3), 3.0), "scale": jnp.array([1.0, -2.0, 0.5])}
  spec = train_step.OptimizerSpec(weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, max_grad_norm=1.0)
  ours = train_step.make_optimizer(spec)
  reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(
      0.01, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask={"w": True, "scale": False}))
  u, v = jax.jit(lambda: (ours.update(grads, ours.init(params), params)[0],
                          reference.update(grads, reference.init(params), params)[0]))()
  for k in params:
    np.testing.assert_allclose(-0.01 * u[k], v[k], rtol=1e-6)


def test_bad_configs_are_named(params, mesh8, tmp_path):
  with pytest.raises(train.TrainConfigError, match="decay='exp'"):
    train.run_dpo(CONFIG, params, _pairs(4), _cfg(decay="exp"), mesh=mesh8, rules=RULES,
                  checkpoint_dir=str(tmp_path), seed=0, progress=False)
  with pytest.raises(train.TrainConfigError, match="multiple of the 4 batch shards"):
    train.run_dpo(CONFIG, params, _pairs(4), _cfg(batch_size=6), mesh=mesh8, rules=RULES,
                  checkpoint_dir=str(tmp_path), seed=0, progress=False)
  with pytest.raises(data.DataError, match="missing"):
    train.run_dpo(CONFIG, params, _sft(4), _cfg(), mesh=mesh8, rules=RULES,
                  checkpoint_dir=str(tmp_path), seed=0, progress=False)


# ------------------------------------------------------------------------------------------------
# CLI.



def _write_pairs(path, n=8):
  with open(path, "w") as f:
    for k in range(n):
      f.write(json.dumps({"prompt": f"What is {k} + {k}?", "chosen": f"The answer is {2 * k}.",
                          "rejected": "I do not know, sorry."}) + "\n")


def test_cli_trains_and_exports_hf(hf_model, tmp_path):
  from meta_rewarding import train_dpo
  config = configs.load("dpo_example")
  pairs = tmp_path / "pairs.jsonl"
  _write_pairs(pairs)
  config.model.checkpoint = hf_model
  config.model.dtype = "float32"
  config.data.pairs = str(pairs)
  config.mesh.shape = {"data": 1, "fsdp": -1, "tensor": 1}
  config.train.update(dict(learning_rate=1e-2, warmup_steps=0, batch_size=8, grad_accum_steps=1,
                           num_epochs=3, max_length=128, length_buckets=(64, 128), log_every=1))
  config.progress = False
  summary = train_dpo.run(config, str(tmp_path / "work"))
  assert summary["steps"] == 3 and summary["data"]["kept"] == 8
  assert summary["final"]["rewards/accuracies"] >= 0.5
  exported = tmp_path / "work" / "hf"
  assert (exported / "tokenizer.json").exists()
  _, reloaded = checkpoints.load_hf(str(exported), dtype="float32")
  assert np.isfinite(np.asarray(reloaded["embed"])).all()
  # Same command again: resumes the finished run instead of training again.
  again = train_dpo.run(config, str(tmp_path / "work"))
  assert again["final"] == summary["final"]


def test_example_config_loads():
  config = configs.load("dpo_example")
  assert config.mode == "dpo" and config.train.beta == 0.1


def test_cli_bad_input_is_a_clear_message(hf_model, tmp_path):
  pairs = tmp_path / "pairs.jsonl"
  _write_pairs(pairs, 3)
  with open(pairs, "a") as f:
    f.write('{"prompt": "x", "chosen": "y"}\n')
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "meta_rewarding.train_dpo", f"--config={REPO}/configs/dpo_example.py",
       f"--config.model.checkpoint={hf_model}", f"--config.data.pairs={pairs}",
       f"--workdir={tmp_path / 'work'}"],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
  assert proc.returncode == 1, proc.stderr
  assert f"{pairs}:4: missing field 'rejected'" in proc.stderr
  assert "Traceback" not in proc.stderr
