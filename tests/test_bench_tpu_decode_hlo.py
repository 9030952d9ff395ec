"""bench/tpu_decode_hlo.py's report on a small TPU-style module (no libtpu needed: it reads HLO text
and a saved cost dictionary; the analysis itself is tested in tests/test_hlo_bytes.py)."""

import json

import pytest

from bench import tpu_decode_hlo
from meta_rewarding import hlo_bytes

# A weight prefetched into VMEM by an async slice, read by a fusion; a cache copied into VMEM.
MODULE = """
HloModule step

%fused_mv (p0: bf16[512,128], p1: bf16[8,512]) -> f32[8,128] {
  %p0 = bf16[512,128]{1,0:T(8,128)(2,1)S(1)} parameter(0)
  %p1 = bf16[8,512]{1,0:T(8,128)(2,1)} parameter(1)
  ROOT %dot = f32[8,128]{1,0:T(8,128)} convolution(%p1, %p0), dim_labels=bf_io->bf
}

ENTRY %main (w: bf16[1024,128], x: bf16[8,512], c: bf16[8,64,128]) -> (f32[8,128], bf16[8,64,128]) {
  %w = bf16[1024,128]{1,0:T(8,128)(2,1)} parameter(0), metadata={op_name="params['w']"}
  %x = bf16[8,512]{1,0:T(8,128)(2,1)} parameter(1), metadata={op_name="x"}
  %c = bf16[8,64,128]{2,1,0:T(8,128)(2,1)} parameter(2), metadata={op_name="state.cache[0]['k']"}
  %slice-start = ((bf16[1024,128]{1,0:T(8,128)(2,1)}), bf16[512,128]{1,0:T(8,128)(2,1)S(1)}, s32[]{:S(2)}) slice-start(%w), slice={[0:512], [0:128]}
  %slice-done = bf16[512,128]{1,0:T(8,128)(2,1)S(1)} slice-done(%slice-start)
  %fusion = f32[8,128]{1,0:T(8,128)} fusion(%slice-done, %x), kind=kOutput, calls=%fused_mv
  %copy-start = (bf16[8,64,128]{2,1,0:T(8,128)(2,1)S(1)}, bf16[8,64,128]{2,1,0:T(8,128)(2,1)}, u32[]{:S(2)}) copy-start(%c)
  %copy-done = bf16[8,64,128]{2,1,0:T(8,128)(2,1)S(1)} copy-done(%copy-start)
  ROOT %tuple = (f32[8,128]{1,0:T(8,128)}, bf16[8,64,128]{2,1,0:T(8,128)(2,1)S(1)}) tuple(%fusion, %copy-done)
}
"""


def test_report_of_a_saved_module(tmp_path, capsys):
  a = hlo_bytes.Analysis(hlo_bytes.parse_module(MODULE))
  costs = a.costs()
  total = sum(c.total for c in costs)
  xla = {"bytes accessed": total, **hlo_bytes.per_key_sums(costs)}
  floor = {"floor": 128 * 1024 + 8 * 64 * 128 * 2, "weights": 128 * 1024,
           "kv_cache": 8 * 64 * 128 * 2, "rows": 8}
  path = tmp_path / "step.hlo"
  path.write_text(MODULE)
  (tmp_path / "step.hlo.cost.json").write_text(json.dumps({"cost": xla, "floor": floor}))
  out = tmp_path / "report.md"
  tpu_decode_hlo.main([f"--hlo={path}", f"--out={out}", "--top=3"])
  text = out.read_text()
  assert "(1.0000 of XLA's)" in text                       # the analysis reproduces the total
  assert "copy-start of kv cache into S(1)" in text        # categories by origin and space
  assert "slice-start of weights into S(1)" in text
  assert "Entry computation:" in text and "slice-start 1" in text
  assert text in capsys.readouterr().out


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
