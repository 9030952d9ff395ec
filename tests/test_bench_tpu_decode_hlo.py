"""bench/tpu_decode_hlo.py's HloCostAnalysis rules and memory-space split on a small TPU-style module
(no libtpu needed: the parser reads HLO text)."""

import pytest

from bench import tpu_decode_hlo as t

# A weight prefetched into VMEM in two async slices, joined, read by a matvec fusion; a cache
# updated in place; a copy-start into VMEM. Sizes: bf16[256,128] = 64 KiB, halves 32 KiB.
MODULE = """
HloModule m

%fused_mv (p0: bf16[256,128], p1: bf16[8,256]) -> f32[8,128] {
  %p0 = bf16[256,128]{1,0:T(8,128)(2,1)S(1)} parameter(0)
  %p1 = bf16[8,256]{1,0:T(8,128)(2,1)S(1)} parameter(1)
  ROOT %dot = f32[8,128]{1,0:T(8,128)S(1)} convolution(%p1, %p0), dim_labels=bf_io->bf
}

ENTRY %main (w: bf16[256,128], x: bf16[8,256], c: bf16[8,1,64,128], u: bf16[8,1,1,128], i: s32[]) -> (f32[8,128], bf16[8,1,64,128]) {
  %w = bf16[256,128]{1,0:T(8,128)(2,1)} parameter(0), metadata={op_name="params['w']"}
  %x = bf16[8,256]{1,0:T(8,128)(2,1)S(1)} parameter(1), metadata={op_name="x"}
  %c = bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)} parameter(2), metadata={op_name="state.cache[0]['k']"}
  %u = bf16[8,1,1,128]{3,2,1,0:T(2,128)(2,1)} parameter(3)
  %i = s32[]{:T(128)} parameter(4)
  %slice-start = ((bf16[256,128]{1,0:T(8,128)(2,1)}), bf16[128,128]{1,0:T(8,128)(2,1)S(1)}, s32[]{:S(2)}) slice-start(%w), slice={[0:128], [0:128]}
  %slice-start.1 = ((bf16[256,128]{1,0:T(8,128)(2,1)}), bf16[128,128]{1,0:T(8,128)(2,1)S(1)}, s32[]{:S(2)}) slice-start(%w), slice={[128:256], [0:128]}
  %slice-done = bf16[128,128]{1,0:T(8,128)(2,1)S(1)} slice-done(%slice-start)
  %slice-done.1 = bf16[128,128]{1,0:T(8,128)(2,1)S(1)} slice-done(%slice-start.1)
  %custom-call = bf16[256,128]{1,0:T(8,128)(2,1)S(1)} custom-call(%slice-done, %slice-done.1), custom_call_target="ConcatBitcast"
  %fusion = f32[8,128]{1,0:T(8,128)S(1)} fusion(%custom-call, %x), kind=kOutput, calls=%fused_mv
  %dynamic-update-slice = bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)} dynamic-update-slice(%c, %u, %i, %i, %i, /*index=5*/%i)
  %copy-start = (bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)S(1)}, bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)}, u32[]{:S(2)}) copy-start(%dynamic-update-slice)
  %copy-done = bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)S(1)} copy-done(%copy-start)
  ROOT %tuple = (f32[8,128]{1,0:T(8,128)S(1)}, bf16[8,1,64,128]{3,2,1,0:T(8,128)(2,1)}) tuple(%fusion, %dynamic-update-slice)
}
"""

KiB = 1024


def test_rules_and_memory_spaces():
  a = t.Analysis(t.parse_module(MODULE))
  costs = {c.instr.name: c for c in a.costs()}
  half, whole, cache = 32 * KiB, 64 * KiB, 8 * 64 * 128 * 2
  assert costs["slice-start"].total == 2 * half               # the wrapped slice: read + write
  assert costs["slice-done"].total == half + 8 * 3            # its output again + the tuple's pointers
  assert costs["custom-call"].total == -1                     # XLA: unknown
  assert costs["fusion"].total == whole + 8 * 256 * 2 + 8 * 128 * 4
  # In place: 2 x the [8,1,1,128] update (its tile (2,128) pads the slot dim to 2) + the index.
  update = 8 * 2 * 128 * 2
  assert costs["dynamic-update-slice"].total == 2 * update + 512
  assert costs["copy-start"].total == 3 * cache               # operand + both arrays of its tuple
  assert costs["tuple"].total == 16
  _, rows = t.breakdown(a)
  hbm_read = sum(r["hbm_read"] for r in rows.values())
  # Over the HBM: the weight once (the two slices), the cache once (the copy into VMEM), the
  # update and its index; written: the update.
  assert hbm_read == whole + cache + update + 512
  assert sum(r["hbm_write"] for r in rows.values()) == update
  counted = sum(r["counted"] for r in rows.values())
  assert counted == 2 * (half + 24) + cache + (cache + 24) + 16 - 1
  by = t.hbm_by_origin(a, a.costs())
  assert by[("weights", "read")] == whole and by[("kv cache", "read")] == cache


def test_tiled_sizes():
  shape, _ = t.parse_shape("bf16[21,1,1,128]{3,0,2,1:T(8,128)(2,1)S(1)}")
  assert shape.array.bytes == 24 * 128 * 2 and shape.array.memory_space == 1
  shape, _ = t.parse_shape("s32[21]{0:T(128)}")
  assert shape.array.bytes == 128 * 4
  shape, _ = t.parse_shape("(bf16[4,8]{1,0}, (s32[], u32[]{:S(2)}))")
  assert shape.is_tuple and shape.bytes == 16 and len(list(shape.leaves())) == 3


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
