"""meta_rewarding/hlo_bytes.py: XLA's HloCostAnalysis rules and the memory-space split on small
hand-written TPU-style modules (no libtpu needed: the parser reads HLO text), and its total against
XLA:CPU's own `cost_analysis()`."""

import jax
import jax.numpy as jnp
import pytest

from meta_rewarding import hlo_bytes as t

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
  totals = t.analyze(MODULE)
  assert totals.hbm == whole + cache + 2 * update + 512 == t.hbm_bytes(MODULE)
  assert totals.total == sum(c.total for c in a.costs())
  assert totals.total == totals.hbm + totals.onchip + totals.counted


def _entry(body: str, params: str, result: str, fused: str = "") -> str:
  return f"HloModule m\n\n{fused}\nENTRY %main ({params}) -> {result} {{\n{body}\n}}\n"


def test_slices_and_dynamic_slices_count_twice_the_slice():
  text = _entry("""
  %x = f32[64,128]{1,0} parameter(0)
  %i = s32[] parameter(1)
  %s = f32[16,128]{1,0} slice(%x), slice={[0:16], [0:128]}
  ROOT %d = f32[8,128]{1,0} dynamic-slice(%s, %i, %i), dynamic_slice_sizes={8,128}""",
                "x: f32[64,128], i: s32[]", "f32[8,128]")
  costs = {c.instr.name: c for c in t.Analysis(t.parse_module(text)).costs()}
  assert costs["s"].total == 2 * 16 * 128 * 4
  assert costs["d"].total == 2 * 8 * 128 * 4 + 4               # + the first index operand
  assert t.analyze(text).hbm == costs["s"].total + costs["d"].total


def test_fusion_reads_a_sliced_parameter_as_the_slice_and_writes_an_update_in_place():
  fused = """
%f (p0: f32[64,128], p1: f32[4,128], p2: s32[]) -> f32[64,128] {
  %p0 = f32[64,128]{1,0} parameter(0)
  %p1 = f32[4,128]{1,0} parameter(1)
  %p2 = s32[] parameter(2)
  %z = s32[] constant(0)
  %n = f32[4,128]{1,0} negate(%p1)
  ROOT %u = f32[64,128]{1,0} dynamic-update-slice(%p0, %n, %p2, %z)
}

%g (q0: f32[64,128]) -> f32[8,128] {
  %q0 = f32[64,128]{1,0} parameter(0)
  %s = f32[8,128]{1,0} slice(%q0), slice={[0:8], [0:128]}
  ROOT %e = f32[8,128]{1,0} exponential(%s)
}
"""
  text = _entry("""
  %c = f32[64,128]{1,0} parameter(0)
  %v = f32[4,128]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %upd = f32[64,128]{1,0} fusion(%c, %v, %i), kind=kLoop, calls=%f
  ROOT %head = f32[8,128]{1,0} fusion(%upd), kind=kLoop, calls=%g""",
                "c: f32[64,128], v: f32[4,128], i: s32[]", "f32[8,128]", fused)
  costs = {c.instr.name: c for c in t.Analysis(t.parse_module(text)).costs()}
  update = 4 * 128 * 4
  # The buffer written in place is not read; the update is read and written; the index read.
  assert costs["upd"].total == update + update + 4
  assert costs["head"].total == 2 * 8 * 128 * 4                  # the slice read, the output
  assert t.analyze(text).counted == 0


def test_async_collective_done_writes_its_result_to_hbm():
  text = _entry("""
  %x = bf16[8,128]{1,0:T(8,128)(2,1)} parameter(0)
  %ags = (bf16[8,128]{1,0:T(8,128)(2,1)}, bf16[32,128]{1,0:T(8,128)(2,1)}) all-gather-start(%x), dimensions={0}, replica_groups={{0,1,2,3}}
  ROOT %agd = bf16[32,128]{1,0:T(8,128)(2,1)} all-gather-done(%ags)""",
                "x: bf16[8,128]", "bf16[32,128]")
  totals = t.analyze(text)
  small, big = 8 * 128 * 2, 32 * 128 * 2
  assert totals.total == (small + 16) + (16 + big)     # XLA: the start's tuple, the done's result
  assert (totals.hbm_read, totals.hbm_write) == (small, big)
  assert totals.counted == 32


def test_a_custom_scatter_fusion_updates_in_place():
  """TPU's insert: a kCustom fusion holding a scatter into a cache buffer costs 3 x the updates +
  the indices (HandleScatter), not the whole buffer read and written."""
  fused = """
%scatter_comp (p0: bf16[35,64,128], p1: s32[4], p2: bf16[4,64,128]) -> bf16[35,64,128] {
  %p0 = bf16[35,64,128]{2,1,0:T(8,128)(2,1)} parameter(0)
  %p1 = s32[4]{0:T(128)S(3)} parameter(1)
  %p2 = bf16[4,64,128]{2,1,0:T(8,128)(2,1)S(3)} parameter(2)
  ROOT %scatter = bf16[35,64,128]{2,1,0:T(8,128)(2,1)} scatter(%p0, %p1, %p2), update_window_dims={1,2}, inserted_window_dims={0}, scatter_dims_to_operand_dims={0}, index_vector_dim=1, to_apply=%add
}
"""
  text = _entry("""
  %c = bf16[35,64,128]{2,1,0:T(8,128)(2,1)} parameter(0), metadata={op_name="state.cache[0]['k']"}
  %i = s32[4]{0:T(128)S(3)} parameter(1)
  %u = bf16[4,64,128]{2,1,0:T(8,128)(2,1)S(3)} parameter(2)
  ROOT %scatter_fusion = bf16[35,64,128]{2,1,0:T(8,128)(2,1)} fusion(%c, %i, %u), kind=kCustom, calls=%scatter_comp""",
                "c: bf16[35,64,128], i: s32[4], u: bf16[4,64,128]", "bf16[35,64,128]", fused)
  totals = t.analyze(text)
  update, index = 4 * 64 * 128 * 2, 128 * 4
  assert totals.total == 3 * update + index
  assert (totals.hbm_read, totals.hbm_write, totals.onchip) == (update, update, update + index)


def test_while_bodies_count_once():
  body = """
%body (s: (s32[], f32[128])) -> (s32[], f32[128]) {
  %s = (s32[], f32[128]{0}) parameter(0)
  %k = s32[] get-tuple-element(%s), index=0
  %v = f32[128]{0} get-tuple-element(%s), index=1
  %one = s32[] constant(1)
  %k1 = s32[] add(%k, %one)
  %v1 = f32[128]{0} tanh(%v)
  ROOT %t = (s32[], f32[128]{0}) tuple(%k1, %v1)
}

%cond (s: (s32[], f32[128])) -> pred[] {
  %s = (s32[], f32[128]{0}) parameter(0)
  %k = s32[] get-tuple-element(%s), index=0
  %n = s32[] constant(5)
  ROOT %lt = pred[] compare(%k, %n), direction=LT
}
"""
  text = _entry("""
  %init = (s32[], f32[128]{0}) parameter(0)
  ROOT %w = (s32[], f32[128]{0}) while(%init), condition=%cond, body=%body""",
                "init: (s32[], f32[128])", "(s32[], f32[128])", body)
  totals = t.analyze(text)
  # add (3 x 4) + tanh (2 x 512) + the body's tuple (16) + compare (4 + 4 + 1).
  assert totals.total == 12 + 1024 + 16 + 9
  assert totals.hbm == totals.total - 16


def test_tiled_sizes():
  shape, _ = t.parse_shape("bf16[21,1,1,128]{3,0,2,1:T(8,128)(2,1)S(1)}")
  assert shape.array.bytes == 24 * 128 * 2 and shape.array.memory_space == 1
  shape, _ = t.parse_shape("s32[21]{0:T(128)}")
  assert shape.array.bytes == 128 * 4
  shape, _ = t.parse_shape("(bf16[4,8]{1,0}, (s32[], u32[]{:S(2)}))")
  assert shape.is_tuple and shape.bytes == 16 and len(list(shape.leaves())) == 3


def _scan(x, w):
  def body(c, _):
    return jnp.tanh(c @ w[:, :128]), None
  return jax.lax.scan(body, x, None, length=3)[0]


@pytest.mark.parametrize("name,fn,args", [
    ("matmul", lambda x, w: jnp.tanh(x @ w).sum(0), ("x", "w")),
    ("slice", lambda x: x[3:20, :64] * 2, ("x",)),
    ("dynamic_update_slice",
     lambda x, u, i: jax.lax.dynamic_update_slice(x, u, (i, 0)), ("x", "u", "i")),
    ("dynamic_slice", lambda x, i: jax.lax.dynamic_slice(x, (i, 0), (8, 128)) + 1, ("x", "i")),
    ("gather", lambda x, idx: x[idx], ("x", "idx")),
    ("softmax", lambda x: jax.nn.softmax(x, -1), ("x",)),
    ("scatter", lambda x, idx: x.at[idx].set(x[:5] * 2), ("x", "idx")),
    ("scan", _scan, ("x", "w")),
])
def test_total_equals_xla_cpu_cost_analysis(name, fn, args):
  """On XLA:CPU (no memory spaces, no tiles) the analysis reproduces cost_analysis()'s bytes
  exactly, and every byte but the tuples' pointers is an HBM byte."""
  values = dict(x=jnp.ones((64, 128), jnp.float32), w=jnp.ones((128, 256), jnp.float32),
                u=jnp.ones((4, 128), jnp.float32), i=jnp.int32(3), idx=jnp.arange(5))
  compiled = jax.jit(fn).lower(*(values[a] for a in args)).compile()
  ca = compiled.cost_analysis()
  ca = ca[0] if isinstance(ca, (list, tuple)) else ca
  totals = t.analyze(compiled.as_text())
  assert totals.total == ca["bytes accessed"], name
  assert totals.onchip == 0 and totals.hbm == totals.total - totals.counted, name
  assert totals.counted <= 64, name


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
