"""bench/gpu_figures.py: the command lines it builds (nothing runs: no bench, no compilation) and
the per-stage seconds it reads from a pipeline workdir."""

import json
import os
import subprocess
import sys

import pytest

from bench import gpu_figures as gf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(argv):
  """--name=value flags of a command line as a dict (a bare --name as True)."""
  out = {}
  for a in argv:
    if a.startswith("--"):
      name, _, value = a[2:].partition("=")
      out[name] = value if "=" in a else True
  return out


def _items(tiny, references=False, tmp="/out"):
  items = gf.build_items(tiny, tmp, references=references, workdir_root="/wd")
  assert [i.name for i in items] == list(gf.ITEM_NAMES)
  return {i.name: i for i in items}


def test_importing_it_pulls_in_neither_jax_nor_torch():
  # The parent process must stay off the GPU (the children need its memory).
  code = ("import sys; from bench import gpu_figures as m; "
          "m.build_items(False, '/o'); m.build_items(True, '/o'); "
          "assert 'jax' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_full_decode_items_have_the_llama_shapes_in_bf16():
  items = _items(tiny=False)
  d8 = _flags(items["decode_8b"].argv)
  assert items["decode_8b"].argv[1:3] == ("-m", "bench.decode")
  assert d8["batch_sizes"] == "1,64" and d8["dtype"] == "bfloat16"
  assert (d8["vocab_size"], d8["hidden_size"], d8["num_layers"], d8["intermediate_size"],
          d8["num_heads"], d8["num_kv_heads"]) == ("128256", "4096", "32", "14336", "32", "8")
  assert d8["skewed_prompts"] == "0" and d8["shared_batch"] == "0"
  assert d8["output"] == "/out/decode_8b.md" and d8["allow_loaded"] is True
  assert d8["skip_transformers"] is True  # references off
  d1 = _flags(items["decode_1b"].argv)
  assert (d1["vocab_size"], d1["hidden_size"], d1["num_layers"], d1["intermediate_size"],
          d1["num_heads"], d1["num_kv_heads"]) == ("128256", "2048", "16", "8192", "32", "8")
  assert d1["batch_sizes"] == "1,64" and d1["dtype"] == "bfloat16"
  assert int(d1["skewed_prompts"]) > 0 and int(d1["skewed_slots"]) == 64
  assert d1["output"] == "/out/decode_1b.md"
  assert all(not i.steps[0].env for i in items.values() if i.name != "iteration_1b")


def test_references_follow_the_switch():
  on = _items(tiny=False, references=True)
  assert "skip_transformers" not in _flags(on["decode_8b"].argv)
  assert "skip_transformers" not in _flags(on["decode_1b"].argv)
  assert "skip_trl" not in _flags(on["dpo_1b"].argv)
  off = _items(tiny=False, references=False)
  assert _flags(off["dpo_1b"].argv)["skip_trl"] is True


def test_full_dpo_item_is_the_1b_shape():
  dpo = _flags(_items(tiny=False)["dpo_1b"].argv)
  assert _items(tiny=False)["dpo_1b"].argv[1:3] == ("-m", "bench.dpo_step")
  assert (dpo["vocab_size"], dpo["hidden_size"], dpo["num_layers"], dpo["intermediate_size"],
          dpo["num_heads"], dpo["num_kv_heads"], dpo["dtype"]) == (
              "128256", "2048", "16", "8192", "32", "8", "bfloat16")
  assert int(dpo["steps"]) >= 5 and dpo["output"] == "/out/dpo_1b.md"


def test_full_iteration_item_is_the_testbed_config_at_1b_with_the_tokenizers_vocab():
  item = _items(tiny=False)["iteration_1b"]
  assert [s.label for s in item.steps] == ["random", "seed", "seeded"]
  random, seed, seeded = item.steps
  for step in (random, seeded):
    f = _flags(step.argv)
    assert step.argv[1:3] == ("-m", "meta_rewarding.main")
    assert f["config"] == "configs/local_cpu.py"
    assert f["config.model.checkpoint"] == ""  # random init from model.architecture
    assert f["config.model.tokenizer"] == "meta_rewarding/testbed/seed"
    arch = {k.split(".")[-1]: v for k, v in f.items() if k.startswith("config.model.architecture.")}
    assert arch == dict(hidden_size="2048", intermediate_size="8192", num_hidden_layers="16",
                        num_attention_heads="32", num_key_value_heads="8",
                        tie_word_embeddings="True", vocab_size=str(gf.TESTBED_VOCAB))
    assert f["config.model.dtype"] == "bfloat16"
    assert f["config.pipeline.num_iterations"] == "1"
    assert f["workdir"] == step.workdir and step.workdir.startswith("/wd/")
  # The seed runs as shipped (its own checkpoint), on the CPU; its stages seed the third run.
  f = _flags(seed.argv)
  assert not any(k.startswith("config.model.") for k in f)
  assert dict(seed.env) == {"JAX_PLATFORMS": "cpu"}
  assert seeded.copy_stages_from == seed.workdir and not random.copy_stages_from
  assert len({random.workdir, seed.workdir, seeded.workdir}) == 3


def test_testbed_vocab_is_the_seed_tokenizers():
  from meta_rewarding.testbed import settings
  assert settings.ARCHITECTURE["vocab_size"] == gf.TESTBED_VOCAB


def test_tiny_mode_scales_every_item_down_onto_the_cpu():
  items = _items(tiny=True)
  for item in items.values():
    for step in item.steps:
      assert dict(step.env).get("JAX_PLATFORMS") == "cpu", (item.name, step.label)
  for name in ("decode_8b", "decode_1b", "dpo_1b"):
    f = _flags(items[name].argv)
    assert int(f["hidden_size"]) <= 128 and int(f["num_layers"]) <= 2, name
    assert int(f["vocab_size"]) <= 512 and f["repeats"] == "1", name
  d8 = _flags(items["decode_8b"].argv)
  assert int(d8["new_tokens"]) <= 16 and d8["batch_sizes"] == "1,4"
  d1 = _flags(items["decode_1b"].argv)
  assert int(d1["skewed_prompts"]) <= 32 and d1["skewed_repeats"] == "1"
  assert int(_flags(items["dpo_1b"].argv)["steps"]) == 1
  for step in items["iteration_1b"].steps:
    f = _flags(step.argv)
    assert f["config"] == "configs/local_cpu.py:smoke"
    if step.label != "seed":
      assert f["config.model.architecture.hidden_size"] == "64"


def test_stage_seconds_from_the_stage_files(tmp_path):
  it = tmp_path / "iter_1"
  it.mkdir()
  t0 = 1_000_000.0
  # prompts and actor copied in before the run (older than its start): 0 s each.
  times = {"prompts.jsonl": t0 - 50, "actor.jsonl": t0 - 40, "judge.jsonl": t0 + 3,
           "actor_pairs.jsonl": t0 + 3.5, "judge_pairs.jsonl": t0 + 9, "dpo.jsonl": t0 + 20,
           "metrics.json": t0 + 21, "timings.json": t0 + 21}
  for name, t in times.items():
    (it / name).write_text("")
    if name.endswith(".jsonl"):  # the data a moment before its completion marker
      os.utime(it / name, (t - 0.1, t - 0.1))
      marker = it / (name + ".done.json")
      marker.write_text("{}")
    else:
      marker = it / name
    os.utime(marker, (t, t))
  got = gf.stage_seconds(str(it), wall_seconds=21.0)
  assert got["prompts"] == 0 and got["actor"] == 0
  assert got["judge"] == pytest.approx(3.0) and got["actor_pairs"] == pytest.approx(0.5)
  assert got["meta_judge"] is None  # no file: the stage did not run
  assert got["judge_pairs"] == pytest.approx(5.5)
  assert got["dpo (reference log-probs, training, model save)"] == pytest.approx(11.0)
  assert got["evaluate (metrics)"] == pytest.approx(1.0)


def test_summary_collects_every_item_record(tmp_path):
  (tmp_path / "items").mkdir()
  (tmp_path / "dpo_1b.md").write_text("# x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\ntext\n")
  record = dict(name="dpo_1b", title="DPO", command="python -m bench.dpo_step", rc=0,
                timed_out=False, wall_s=1.0, load_before=0.5, load_after=0.7, cores=16,
                started_utc="2026-01-01 00:00:00", results="dpo_1b.md", results_exists=True,
                log="logs/dpo_1b.log", stdout_tail=["done"])
  (tmp_path / "items" / "dpo_1b.json").write_text(json.dumps(record))
  path = gf.write_summary(str(tmp_path), {"probe": {"backend": "gpu", "devices": ["gpu:0 H200"]},
                                          "nvidia_smi": "name\nNVIDIA H200"}, ["--items=dpo_1b"])
  text = open(path).read()
  assert "[dpo_1b.md](dpo_1b.md)" in text and "| 1 | 2 |" in text and "NVIDIA H200" in text
  assert "gpu:0 H200" in text
