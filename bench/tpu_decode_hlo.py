"""Where a decode step's "bytes accessed" go: XLA's figure broken down per HLO instruction.

  python -m bench.tpu_decode_hlo --config=configs/tpu_v5e.py --target=v5e-32
  python -m bench.tpu_decode_hlo --config=configs/tpu_v4.py --target=v4-32 \
      --programs=actor/decode_block,actor/decode_block_batch1

Compiles only the decode step(s) the compile check measures (`compile_check.programs(...)`: the
program's `cost_compile`, i.e. `decode.decode_step` at the block's shapes with the run's
shardings and the sampler's model config), for the config's TPU slice, on the CPU (libtpu; no TPU).
Then it reads the compiled module's post-optimization HLO (`compiled.as_text()`) and recomputes
XLA's "bytes accessed" instruction by instruction (`meta_rewarding/hlo_bytes.py`: the rules of
XLA's `HloCostAnalysis`, the memory spaces, what counts as HBM bytes), and reports its total and
its per-operand-index sums ('bytes accessed0{}', ..., 'bytes accessedout{}') against
`cost_analysis()` (within 0.7% on the TPU decode steps, bench/results/tpu_decode_hlo.md), the
split into HBM reads and writes, on-chip bytes and bytes counted without a transfer, by category
of instruction. A weight prefetched into VMEM is counted four times in XLA's figure: read from HBM
and written into VMEM (slice-start), again by slice-done, and read by the matmul; it crosses the
HBM bus once. The compile check (`plan --compile_for`) takes its decode floor check and roofline
from the same HBM bytes.

Writes `--out` (markdown: per program, the totals and the table by category, then the largest
instructions), and with `--save_hlo=DIR` the HLO text and XLA's cost dictionary per program.
`--hlo=FILE` re-analyses a saved HLO text (with FILE.cost.json next to it) without compiling.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import configs
from meta_rewarding import compile_check
from meta_rewarding.hlo_bytes import (Analysis, Cost, breakdown, hbm_by_origin, parse_module,
                                      per_key_sums)
from meta_rewarding.config import rules as config_rules

# ------------------------------------------------------------------------------------------------
# Report.

def instr_line(a: Analysis, c: Cost) -> str:
  x = c.instr
  ops = [a.operand(x, i) for i in range(len(x.operands))]
  operand_text = ", ".join(f"{o.shape}" for o in ops[:4]) + (", ..." if len(ops) > 4 else "")
  return (f"{x.name} = {x.shape} {x.opcode}{'/' + x.kind if x.kind else ''}({operand_text})"
          .replace("|", "/"))

def report(name: str, a: Analysis, xla: dict, floor: dict | None, top: int) -> str:
  costs, rows = breakdown(a)
  ours = sum(c.total for c in costs)
  theirs = float(xla.get("bytes accessed", float("nan")))
  hbm = sum(r["hbm_read"] + r["hbm_write"] for r in rows.values())
  lines = [f"### {name}", ""]
  lines.append(f"XLA's bytes accessed: **{theirs / 1e9:.3f} GB**; this script's sum of the "
               f"instructions: {ours / 1e9:.3f} GB ({ours / theirs:.4f} of XLA's).")
  if floor:
    lines.append(f"Floor: {floor['floor'] / 1e9:.2f} GB ({floor['weights'] / 1e9:.2f} weights + "
                 f"{floor['kv_cache'] / 1e9:.2f} KV cache): XLA's figure is "
                 f"{theirs / floor['floor']:.2f}x; the HBM part of it (reads and writes of arrays "
                 f"in memory space 0) is {hbm / 1e9:.2f} GB = {hbm / floor['floor']:.2f}x.")
  by = hbm_by_origin(a, costs)
  total = lambda k: sum(r[k] for r in rows.values())
  hbm_parts = ", ".join(f"{what} {rw} {b / 1e9:.3f}" for (what, rw), b in
                        sorted(by.items(), key=lambda kv: -kv[1]) if b > 1e6)
  lines.append(f"Accounting (GB): XLA's {theirs / 1e9:.2f} = HBM {hbm / 1e9:.2f} ({hbm_parts}) "
               f"+ on-chip {total('onchip') / 1e9:.2f} + counted without a transfer "
               f"{total('counted') / 1e9:.2f} + not reproduced {(theirs - ours) / 1e9:.3f}.")
  lines.append("")
  keys = per_key_sums(costs)
  xkeys = {k: v for k, v in xla.items() if k.startswith("bytes accessed") and k != "bytes accessed"}
  check = []
  for k in sorted(set(keys) | set(xkeys), key=lambda k: (len(k), k)):
    if max(keys.get(k, 0), xkeys.get(k, 0)) > 1e6:
      check.append(f"{k.replace('bytes accessed', '')}: {keys.get(k, 0) / 1e9:.3f} / "
                   f"{xkeys.get(k, 0) / 1e9:.3f}")
  lines.append("Per cost-analysis key (operand index or out; GB, this script / XLA): "
               + "; ".join(check) + ".")
  lines.append("")
  lines.append("GB per chip per step. HBM read/write: arrays in memory space 0; on-chip: reads and "
               "writes of arrays in S(1)/S(3)/...; counted: what XLA's rule counts with no "
               "transfer behind it (an async op's `-done` counting its output again, the source "
               "half of a copy-start's tuple).")
  lines.append("")
  lines.append("| category | instrs | bytes (XLA's rule) | share | HBM read | HBM write | on-chip "
               "| counted | largest instruction |")
  lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
  for key, r in sorted(rows.items(), key=lambda kv: -kv[1]["bytes"]):
    if abs(r["bytes"]) < 1e5:
      continue
    lines.append(f"| {key} | {r['count']} | {r['bytes'] / 1e9:.3f} | "
                 f"{r['bytes'] / ours:.1%} | {r['hbm_read'] / 1e9:.3f} | "
                 f"{r['hbm_write'] / 1e9:.3f} | {r['onchip'] / 1e9:.3f} | "
                 f"{r['counted'] / 1e9:.3f} | `{instr_line(a, r['example'])[:170]}` |")
  small = sum(r["bytes"] for r in rows.values() if abs(r["bytes"]) < 1e5)
  lines.append(f"| (categories under 0.1 MB) | | {small / 1e9:.4f} | | | | | | |")
  gb = lambda k: total(k) / 1e9
  lines.append(f"| **total** | {len(costs)} | **{ours / 1e9:.3f}** | | {gb('hbm_read'):.3f} | "
               f"{gb('hbm_write'):.3f} | {gb('onchip'):.3f} | {gb('counted'):.3f} | |")
  lines.append("")
  lines.append(f"Largest {top} instructions (bytes by XLA's rule; parts: role@where):")
  lines.append("")
  lines.append("```")
  for c in sorted(costs, key=lambda c: -c.total)[:top]:
    where = lambda s: "HBM" if s == 0 else f"S({s})" if s > 0 else "no transfer"
    parts = " ".join(f"{r}@{where(s)}={b / 1e6:.2f}MB" for r, s, b in c.parts if b > 0)
    lines.append(f"{c.total / 1e6:9.2f} MB  {instr_line(a, c)[:230]}")
    lines.append(f"{'':13s}{parts}")
  lines.append("```")
  lines.append("")
  return "\n".join(lines)


def opcode_census(a: Analysis) -> str:
  count = collections.Counter()
  for x in a.entry.instrs:
    count[x.opcode + (f"/{x.attr('custom_call_target')}" if x.opcode == "custom-call" else "")] += 1
  return ", ".join(f"{k} {v}" for k, v in count.most_common() if k not in ("parameter",
                                                                           "constant"))


# ------------------------------------------------------------------------------------------------
# Compiling.

def compile_steps(config, target_name: str, names: list[str]):
  """{program name: (compiled decode step, floor dict)} through compile_check's own programs."""
  from meta_rewarding import plan as plan_lib, sharding, targets
  target = targets.parse(target_name)
  devices = compile_check.topology_devices(target)
  mesh = sharding.make_mesh(dict(config.mesh.shape), devices)
  p = plan_lib.plan(config, len(devices), device_memory=target.hbm_bytes)
  mc, _ = plan_lib.model_config_from(config)
  programs = {q.name: q for q in compile_check.programs(config, mesh, plan=p)}
  out = {}
  for name in names:
    program = programs[name]
    if program.cost_compile is None:
      raise SystemExit(f"{name} is not a decode block (no per-step program)")
    start = time.perf_counter()
    compiled = program.cost_compile(mc)
    seconds = time.perf_counter() - start
    # The compile check's own floor for this program (Report.decode_checks).
    measured = compile_check.Measured(
        name=name, phase=program.phase, planned=0, resident=0, argument=0, output=0, alias=0,
        temp=0, host=0, flops=0.0, bytes_accessed=compile_check._cost(compiled)[1],
        loops=program.loops, calls=0.0, compile_seconds=seconds, info=dict(program.info))
    rep = compile_check.Report(target=target.name, chips=len(devices), hbm_bytes=None,
                               usable_bytes=None, measured=[measured], plan=p, model_config=mc,
                               decode_rules=config_rules.rules_for(config)[1])
    floor = rep.decode_checks()[0]
    out[name] = (compiled, floor, seconds)
  return out, mesh


def cost_dict(compiled) -> dict:
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return {k: float(v) for k, v in (ca or {}).items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/tpu_v5e.py", help="config file[:arg]")
  parser.add_argument("--target", default="v5e-32", help="TPU slice (targets.py)")
  parser.add_argument("--programs", default="actor/decode_block",
                      help="comma-separated compile-check programs whose decode step to compile")
  parser.add_argument("--top", type=int, default=25, help="largest instructions listed")
  parser.add_argument("--out", default=None, help="append the markdown here (default: stdout)")
  parser.add_argument("--save_hlo", default=None, help="directory for the HLO text + cost JSON")
  parser.add_argument("--hlo", default=None, help="analyse this saved HLO text instead")
  args = parser.parse_args(argv)

  sections = []
  if args.hlo:
    text = open(args.hlo).read()
    xla = json.load(open(args.hlo + ".cost.json"))
    a = Analysis(parse_module(text))
    floor = xla.get("floor")
    title = os.path.basename(args.hlo) + (f", decode step at {floor['rows']} rows" if floor else "")
    sections.append(report(title, a, xla.get("cost", xla), floor, args.top)
                    + f"Entry computation: {opcode_census(a)}.\n")
  else:
    compile_check.quiet_libtpu_environment()
    config = configs.load(args.config)
    names = [n.strip() for n in args.programs.split(",") if n.strip()]
    compiled, _ = compile_steps(config, args.target, names)
    for name, (exe, floor, seconds) in compiled.items():
      text = exe.as_text()
      xla = cost_dict(exe)
      if args.save_hlo:
        os.makedirs(args.save_hlo, exist_ok=True)
        base = os.path.join(args.save_hlo, f"{os.path.basename(args.config.split(':')[0])[:-3]}"
                            f"_{args.target}_{name.replace('/', '_')}.hlo")
        with open(base, "w") as f:
          f.write(text)
        with open(base + ".cost.json", "w") as f:
          json.dump({"cost": xla, "floor": floor}, f, indent=1)
      a = Analysis(parse_module(text))
      title = (f"{args.config} on {args.target}: {name}, decode step at {floor['rows']} rows "
               f"(compiled in {seconds:.0f} s)")
      sections.append(report(title, a, xla, floor, args.top)
                      + f"Entry computation: {opcode_census(a)}.\n")
  text = "\n".join(sections)
  if args.out:
    with open(args.out, "a") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main(sys.argv[1:])
