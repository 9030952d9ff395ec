"""The compile check (`plan --compile_for`), on the CPU backend: the same programs the TPU path
compiles, with a tiny config. The TPU path itself needs libtpu (the [tpu] extra, never the test
extra); its output is in bench/results/tpu_compile.md.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import pytest

import configs
from meta_rewarding import compile_check, targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(**changes):
  c = configs.load("tpu_v4", "runlocal")
  c.mesh.shape = {"data": 1, "fsdp": 1, "tensor": 1}
  for key, value in changes.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


# ------------------------------------------------------------------------------------------------
# Targets.

def test_target_names_map_to_topologies():
  v4 = targets.parse("v4-32")
  assert (v4.chips, v4.topology, v4.hbm_bytes) == (16, "v4:2x2x4", 32 << 30)
  v5e = targets.parse("v5e-16")
  assert (v5e.chips, v5e.topology) == (16, "v5e:4x4")
  assert targets.parse("V5LITEPOD-32").chips == 32
  assert targets.parse("v5p-8").chips == 4 and targets.parse("v6e-256").topology == "v6e:16x16"
  for name in targets.names():
    assert targets.parse(name).name == name


@pytest.mark.parametrize("name,listed", [("v4-31", "v4-32"), ("v5e-3", "v5e-4"),
                                         ("tpu", "v4-32"), ("v7-8", "v6e-16"), ("", "v5e-16")])
def test_unknown_targets_are_refused_with_the_list(name, listed):
  with pytest.raises(targets.UnknownTargetError, match=listed):
    targets.parse(name)


def test_gpu_targets_say_why_not():
  with pytest.raises(targets.UnknownTargetError, match="CUDA"):
    targets.parse("h100x8")


def test_roofline_is_the_slower_of_compute_and_memory():
  t = targets.parse("v5e-4")
  g = t.generation
  assert t.roofline_seconds(g.peak_bf16_flops, 0) == pytest.approx(1.0)
  assert t.roofline_seconds(0, 2 * g.hbm_bandwidth) == pytest.approx(2.0)
  assert t.bound(g.peak_bf16_flops, g.hbm_bandwidth * 2) == "memory"


# ------------------------------------------------------------------------------------------------
# One iteration's programs, compiled for the CPU.

@pytest.fixture(scope="module")
def report():
  return compile_check.run(_tiny_config(), "cpu", log=lambda line: None)


def test_every_program_of_the_iteration_is_compiled(report):
  names = [m.name for m in report.measured]
  for stage in ("actor", "judge", "meta_judge"):
    for program in ("prefill", "init", "insert", "decode_block"):
      assert f"{stage}/{program}" in names
  assert "reference" in names and "train" in names
  for m in report.measured:
    assert m.compiled > 0 and m.argument > 0, m.name
    assert m.flops >= 0 and m.bytes_accessed > 0, m.name


def test_threads_change_the_wall_time_not_the_figures(report):
  one = compile_check.run(_tiny_config(), "cpu", log=lambda line: None, threads=1)
  figures = lambda r: [{k: v for k, v in dataclasses.asdict(m).items() if k != "compile_seconds"}
                       for m in r.measured]
  assert figures(one) == figures(report)  # the same programs, in the same order, same figures


def test_planner_agrees_with_xla_per_phase(report):
  for phase, row in report.phase_peaks().items():
    assert 0.5 <= row["ratio"] <= 2.0, (phase, row)


def test_loop_accounting_matches_a_full_unscanned_compile():
  """The per-layer extrapolation (1 and 2 unscanned layers) equals compiling all L unscanned."""
  from meta_rewarding import plan as plan_lib, sharding
  config = _tiny_config()
  config.model.architecture.num_hidden_layers = 4
  mc, _ = plan_lib.model_config_from(config)
  assert mc.scan_layers and mc.num_hidden_layers > 2
  mesh = sharding.make_mesh(dict(config.mesh.shape), jax.devices()[:1])
  programs = {p.name: p for p in compile_check.programs(config, mesh)}
  reference = programs["reference"]
  assert reference.needs_analysis
  measured = compile_check.measure(reference, mc)
  flops, _ = compile_check._cost(reference.compile(mc.replace(scan_layers=False)))
  assert measured.flops == pytest.approx(flops, rel=0.02)
  # A scanned compile counts the layers' body once: the accounting is needed.
  scanned, _ = compile_check._cost(reference.compile(mc))
  assert scanned < 0.75 * flops
  # The sampler's programs run the unscanned decoding config: their figures need no copies.
  assert not programs["actor/prefill"].needs_analysis


@pytest.mark.parametrize("name", ["reference", "train"])
def test_loop_accounting_counts_each_kind_of_layer(name):
  """A model whose layers differ (sliding-window and global attention, as Gemma's): the analysis
  copies keep the layers' kinds (a copy with one layer of 34 kinds is no model), each layer is
  counted as its own kind, and the total equals compiling all L unscanned."""
  from meta_rewarding import plan as plan_lib, sharding
  config = _tiny_config()
  config.model.architecture.num_hidden_layers = 4
  mc, _ = plan_lib.model_config_from(config)
  mc = mc.replace(layer_types=("sliding_attention",) * 2 + ("full_attention",) * 2,
                  sliding_window=8)
  mesh = sharding.make_mesh(dict(config.mesh.shape), jax.devices()[:1])
  program = next(p for p in compile_check.programs(config, mesh) if p.name == name)
  measured = compile_check.measure(program, mc)
  flops, bytes_ = compile_check._cost(program.compile(mc.replace(scan_layers=False)))
  assert measured.flops == pytest.approx(flops, rel=0.02)
  assert measured.bytes_accessed == pytest.approx(bytes_, rel=0.05)


def test_train_step_counts_microbatches_and_one_update(report):
  train = next(m for m in report.measured if m.name == "train")
  check = report.train_checks()[0]
  # Model FLOPs (forward, backward, the full-remat forward) explain XLA's within 15%.
  assert 0.85 <= check["ratio"] <= 1.15, check


def test_a_chunked_loss_is_costed_whole():
  """`train.logps_chunk_size` makes the loss a loop over the sequence's chunks, whose body XLA's
  cost counts once: the analysis copies compute it unchunked, so the train step's and the
  reference pass's FLOPs are those of the unchunked program."""
  from meta_rewarding import plan as plan_lib, sharding
  figures = {}
  for chunk in (0, 64):
    config = _tiny_config(**{"train.logps_chunk_size": chunk})
    mc, _ = plan_lib.model_config_from(config)
    mesh = sharding.make_mesh(dict(config.mesh.shape), jax.devices()[:1])
    programs = {p.name: p for p in compile_check.programs(config, mesh)}
    figures[chunk] = {name: compile_check.measure(programs[name], mc)
                      for name in ("reference", "train")}
  for name in ("reference", "train"):
    whole, chunked = figures[0][name], figures[64][name]
    assert chunked.flops == pytest.approx(whole.flops, rel=0.02), name
    # Without the unchunked copies the loss would count one chunk of eight (512-token rows).
    undone = dataclasses.replace(programs[name], analysis_compile=None)
    assert compile_check.measure(undone, mc).flops < 0.98 * whole.flops, name


def test_programs_compile_in_groups_and_merge(report):
  """`only` compiles the programs its patterns name (a machine without the host memory for one
  process runs the check in groups); the groups' reports merge into the one a single run gives."""
  config = _tiny_config()
  first = compile_check.run(config, "cpu", log=lambda line: None, only=["train", "actor/i*"])
  second = compile_check.run(config, "cpu", log=lambda line: None, only=["judge/init"])
  assert [m.name for m in first.measured] == ["actor/init", "actor/insert", "train"]
  assert "judge/init" in first.skipped and "train" not in first.skipped
  assert first.iteration_estimate() is None  # a partial iteration has no time
  table = first.table()
  assert "not compiled (--compile_programs): " in table
  assert "verdict: every compiled program fits" in table
  merged = compile_check.merge_reports([first, second])
  assert [m.name for m in merged.measured] == ["actor/init", "actor/insert", "train", "judge/init"]
  assert set(merged.skipped) == {m.name for m in report.measured} - {
      "actor/init", "actor/insert", "train", "judge/init"}
  full = {m.name: m for m in report.measured}
  for m in merged.measured:
    assert (m.compiled, m.flops) == (full[m.name].compiled, full[m.name].flops), m.name
  # Saved and read back, the merged report keeps what was not compiled.
  again = compile_check.report_from_json(config, merged.to_json())
  assert again.skipped == merged.skipped


def test_a_program_pattern_that_matches_nothing_names_the_programs():
  with pytest.raises(compile_check.CompileCheckError, match="judge/prefill.*train|matches no"):
    compile_check.run(_tiny_config(), "cpu", log=lambda line: None, only=["judge/prefil"])


def test_json_has_the_documented_keys(report):
  out = report.to_json()
  assert {"target", "chips", "hbm_bytes", "phases"} <= set(out)
  for name, row in out["phases"].items():
    assert {"planned_bytes", "compiled_bytes", "flops", "bytes_accessed",
            "roofline_seconds"} <= set(row), name
  json.dumps(out)
  table = report.table()
  assert "decode steps" in table and "verdict: every program fits" in table


def test_hbm_bytes_are_counted_next_to_xlas(report):
  """Every program's HBM bytes (hlo_bytes.py) are in the table and the JSON. On XLA:CPU there are
  no memory spaces: they equal XLA's bytes accessed but for tuples' pointer tables (XLA's figure
  is a float32: 1e-6 relative)."""
  out = report.to_json()
  for m in report.measured:
    assert m.hbm_bytes is not None and m.hbm_bytes > 0, m.name
    assert m.hbm_bytes <= m.bytes_accessed * (1 + 1e-6), m.name
    assert m.hbm_bytes == pytest.approx(m.bytes_accessed, rel=0.01), m.name
    assert out["phases"][m.name]["hbm_bytes"] == m.hbm_bytes
    # XLA:CPU: the analysis reproduces XLA's figure (extrapolated programs: the same arithmetic).
    assert m.analysed_bytes == pytest.approx(m.bytes_accessed, rel=1e-4), m.name
    assert out["phases"][m.name]["analysed_bytes"] == m.analysed_bytes
    assert out["phases"][m.name]["roofline_seconds"] is None      # cpu: no peak figures
  header = next(l for l in report.table().splitlines() if l.startswith("program"))
  assert "GB read" in header and "GB HBM" in header
  assert "the HBM analysis reproduces 1.00-1.00 of XLA's bytes" in report.table()
  for check in report.decode_checks():
    m = next(m for m in report.measured if m.name == check["program"])
    assert check["bytes_per_step"] == check["hbm_bytes_per_step"] == m.hbm_bytes
    assert check["xla_bytes_per_step"] == m.bytes_accessed


def test_roofline_and_decode_check_use_hbm_bytes(report):
  """With a target's peak figures the roofline takes HBM bytes; a JSON without them (files
  written before the HBM column) reads back with XLA's bytes standing in."""
  v5e = targets.parse("v5e-4").generation
  tpu = compile_check.Report(**{**report.__dict__, "peak_flops": v5e.peak_bf16_flops,
                                "bandwidth": v5e.hbm_bandwidth})
  step = next(m for m in tpu.measured if m.loops == "steps")
  half = dataclasses.replace(step, hbm_bytes=step.bytes_accessed / 4, flops=0.0)
  tpu.measured = [half if m is step else m for m in tpu.measured]
  assert tpu.roofline(0.0, half.memory_bytes) == pytest.approx(
      step.bytes_accessed / 4 / v5e.hbm_bandwidth)
  check = next(c for c in tpu.decode_checks() if c["program"] == step.name)
  assert check["ratio"] == pytest.approx(check["xla_ratio"] / 4)
  data = json.loads(json.dumps(tpu.to_json()))
  assert data["phases"][step.name]["roofline_seconds"] == pytest.approx(
      step.bytes_accessed / 4 / v5e.hbm_bandwidth)
  for row in data["phases"].values():
    del row["hbm_bytes"], row["analysed_bytes"]
  old = compile_check.report_from_json(_tiny_config(), data)
  assert all(m.hbm_bytes is None and m.memory_bytes == m.bytes_accessed for m in old.measured)
  assert "GB HBM" in old.table()


def test_a_program_that_does_not_fit_is_named(report):
  small = compile_check.Report(**{**report.__dict__, "hbm_bytes": 1 << 20,
                                  "usable_bytes": 1 << 20})
  assert not small.all_fit
  assert "DOES NOT FIT" in small.table()


def test_a_program_xla_refuses_is_a_row_not_a_crash(report, tmp_path):
  """The TPU compiler refuses a program whose temporaries exceed the chip's HBM (it raises; the
  v5e-32's pure-FSDP meta-judge prefill did). The check keeps measuring the others, shows the
  refused one with the temporaries XLA named, says it does not fit, and its JSON says why."""
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (15.96G) exceeds available HBM (15.75G).")

  def refuse(mc):
    raise jax.errors.JaxRuntimeError(message)
  program = compile_check.Program("judge/prefill", "sampling", 3 << 30, 1 << 30, refuse)
  logged = []
  refused = compile_check.measure(program, report.model_config, log=logged.append)
  assert refused.error.startswith("RESOURCE_EXHAUSTED") and "XLA refused judge/prefill" in logged[0]
  assert refused.temp == int(15.96 * (1 << 30)) and refused.compiled == refused.temp
  others = [m for m in report.measured if m.name != "judge/prefill"]
  with_refused = compile_check.Report(**{**report.__dict__, "measured": others + [refused]})
  assert not with_refused.all_fit
  table = with_refused.table()
  assert "judge/prefill             XLA refused it (15.96 GiB of temporaries" in table
  assert "verdict: DOES NOT FIT: judge/prefill (XLA refused it)" in table
  assert with_refused.iteration_estimate() is None  # no cost for the refused program
  data = json.loads(json.dumps(with_refused.to_json()))
  assert data["phases"]["judge/prefill"]["error"].startswith("RESOURCE_EXHAUSTED")
  assert not data["phases"]["judge/prefill"]["fits"] and not data["fits"]
  again = compile_check.report_from_json(_tiny_config(), data)
  assert next(m for m in again.measured if m.name == "judge/prefill").error == refused.error


# ------------------------------------------------------------------------------------------------
# The command.

def _plan(*args, env=None):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.plan", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, **(env or {})))


def test_command_writes_json_for_static_batching(tmp_path):
  out = tmp_path / "check.json"
  r = _plan("--config=configs/tpu_v4.py:runlocal,self_rewarding", "--compile_for=cpu",
            "--config.sampling.batching=static", "--config.mesh.shape.fsdp=1",
            f"--output={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  data = json.loads(out.read_text())
  assert set(data["phases"]) == {"actor/generate", "judge/generate", "reference", "train"}
  assert "verdict: every program fits" in r.stdout


@pytest.mark.parametrize("target,message", [("v4-33", "v4-32"), ("h100x8", "CUDA")])
def test_command_refuses_a_bad_target_in_one_line(target, message):
  r = _plan("--config=configs/tpu_v4.py:runlocal", f"--compile_for={target}")
  assert r.returncode == 2
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]
  assert "Traceback" not in r.stderr


@pytest.mark.parametrize("failure, message", [
    ("ABORTED: Internal error when accessing libtpu multi-process lockfile.",
     "ALLOW_MULTIPLE_LIBTPU_LOAD=1"),
    ("No module named 'libtpu'", 'pip install -e ".[tpu]"')])
def test_topology_failures_say_what_to_do(monkeypatch, failure, message):
  """libtpu missing and libtpu held by another process (one per machine by default) are two
  different fixes; each error names its own."""
  from jax.experimental import topologies

  def fail(**kwargs):
    raise RuntimeError(failure)
  monkeypatch.setattr(topologies, "get_topology_desc", fail)
  with pytest.raises(compile_check.CompileCheckError, match=re.escape(message)):
    compile_check.topology_devices(targets.parse("v4-8"))


def test_attention_in_blocks_is_costed_as_all_at_once():
  """Blocks are a loop XLA's cost analysis counts once: the check takes the cost from a copy that
  attends all at once, so the FLOPs do not fall with the block size; the memory is the blocked
  program's own."""
  from meta_rewarding import plan as plan_lib, sharding
  config = _tiny_config(**{"train.logps_chunk_size": 0})
  mesh = sharding.make_mesh(dict(config.mesh.shape), jax.devices()[:1])
  figures = {}
  for chunk in (0, 64):
    config.model.attention_chunk = chunk
    mc, _ = plan_lib.model_config_from(config)
    train = next(p for p in compile_check.programs(config, mesh) if p.name == "train")
    assert train.attends_many_queries
    figures[chunk] = compile_check.measure(train, mc)
  whole, blocked = figures[0], figures[64]
  assert blocked.flops == pytest.approx(whole.flops, rel=1e-6)
  assert blocked.temp != whole.temp  # the memory is the blocked program's


def test_train_flops_split_into_layers_and_the_rest():
  """bench/tpu_train_flops.py on the CPU backend: one layer's FLOPs and the rest's each match
  their term of the model's count (the TPU runs of it are in bench/results/tpu_compile.md)."""
  from bench import tpu_train_flops
  out = tpu_train_flops.split(_tiny_config(), "cpu")
  for part in ("per_layer", "outside_layers"):
    xla, model = out[part]
    assert 0.8 <= xla / model <= 1.25, (part, xla, model)
  assert out["update"] > 0
