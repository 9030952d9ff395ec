"""The train step's FLOPs split into one layer's and the rest, against the model's count.

  python -m bench.tpu_train_flops --config=configs/tpu_v4.py --target=v4-32
  python -m bench.tpu_train_flops --config=configs/tpu_v4.py:model=qwen2_5_1_5b_instruct \
      --target=v4-32

The compile check (`plan --compile_for`) reads a train step's FLOPs per chip from two analysis
copies, one and two unscanned layers (`compile_check.measure`), and compares the total with the
model's count (`compile_check.model_flops`). This prints the two parts that total is made of, each
against its own term of the model's count, so a ratio away from 1 says where it comes from:
  per layer:      XLA's FLOPs of one layer (the two-layer copy less the one-layer copy, the
                  optimizer update's share of their parameters taken off) against the layer's
                  weights and attention, forward + backward (+ one forward again under remat full);
  outside layers: the rest (embedding, final norm, the output projection and the loss) against the
                  output projection, forward + backward.
Only the train program is compiled (its analysis copies and the optimizer update), with the run's
shardings, for the config's TPU slice (libtpu, the [tpu] extra), or `--target=cpu`.
"""

from __future__ import annotations

import argparse
import json

import configs
from meta_rewarding import compile_check


def split(config, target_name: str) -> dict:
  """{"per_layer": (XLA, model), "outside_layers": (XLA, model), "update": XLA} FLOPs per chip per
  microbatch (the update: per step), and the train program's shapes."""
  from meta_rewarding import plan as plan_lib, sharding
  target, devices = compile_check.target_devices(config, target_name)
  hbm = target.hbm_bytes if target else None
  mesh = sharding.make_mesh(dict(config.mesh.shape), devices)
  p = plan_lib.plan(config, len(devices), device_memory=hbm)
  mc, _ = plan_lib.model_config_from(config)
  train = next(t for t in compile_check.programs(config, mesh, plan=p) if t.name == "train")
  analyse = train.analysis_compile or train.compile
  flops = {k: compile_check._cost(analyse(compile_check._analysis_copy(mc, k)))[0]
           for k in (1, 2)}
  update = compile_check._cost(train.optimizer_compile(mc))[0] if train.optimizer_compile else 0.0
  share = lambda k: compile_check._analysis_copy(mc, k).num_params() / mc.num_params()
  without_update = {k: flops[k] - update * share(k) for k in (1, 2)}
  per_layer = without_update[2] - without_update[1]
  outside = without_update[1] - per_layer
  info = dict(train.info)
  rows, T, chips = info["rows_per_microbatch"], info["row_length"], len(devices)
  one_layer = compile_check.model_flops(
      compile_check._analysis_copy(mc, 1), rows=rows, length=T, response_length=T, backward=True,
      remat=info["remat"]) / chips
  head = 3 * 2 * mc.hidden_size * mc.vocab_size * T * rows / chips   # forward + backward
  return {"per_layer": (per_layer, one_layer - head), "outside_layers": (outside, head),
          "update": update, "shapes": info}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="configs/NAME.py[:variant]")
  parser.add_argument("--target", required=True, help="a TPU slice (v4-32, ...) or cpu")
  args = parser.parse_args()
  if args.target != "cpu":
    compile_check.quiet_libtpu_environment()
  spec, _, variant = args.config.partition(":")
  out = split(configs.load(spec, variant), args.target)
  print(json.dumps(out["shapes"]))
  for part in ("per_layer", "outside_layers"):
    xla, model = out[part]
    print(f"{part:15s} XLA {xla / 1e12:9.3f} TFLOP per chip per microbatch, model "
          f"{model / 1e12:9.3f}: {xla / model:.2f}x")
  print(f"{'update':15s} XLA {out['update'] / 1e12:9.3f} TFLOP per chip per step")


if __name__ == "__main__":
  main()
