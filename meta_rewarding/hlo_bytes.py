"""XLA's "bytes accessed" of a compiled program, instruction by instruction, split by memory space.

`cost_analysis()["bytes accessed"]` is one number per program. On TPU it counts bytes that never
cross the chip's HBM bus: the compiler stages weights and cache layers in on-chip memory (async
`slice-start` / `copy-start` into VMEM or CMEM) and XLA's cost rule then counts a staged weight four
times (read from HBM and written on chip by the start, again by the `-done`, read again by the
matmul). This module parses a compiled module's post-optimization HLO text (`compiled.as_text()`;
pure text parsing, no jax) and recomputes XLA's figure with the rules of XLA's `HloCostAnalysis`
(the analysis `cost_analysis()` reports; the TPU compiler's per-instruction figures are not
exposed), keeping for each byte the memory space of the array it belongs to:

  * every instruction: its operands' bytes + its output's bytes (`Preprocess`), except
  * parameter, constant, get-tuple-element, bitcast: 0; tuple: its own (pointer) size;
  * slice / dynamic-slice / gather: 2 x the output (+ the index operand);
  * dynamic-update-slice: 2 x the update (the buffer is updated in place);
  * scatter: 3 x the updates (the buffer read and written in place at the updates' size, the
    updates read) + the indices;
  * fusion: each fused parameter as its users inside read it (a sliced parameter: the slice; the
    buffer a dynamic-update-slice writes into: nothing) + the outputs (a dynamic-update-slice root:
    its update) + non-scalar constants; a custom fusion that holds a gather or a scatter: that
    op's rule;
  * an async start (`slice-start`): its wrapped computation (a slice: 2 x the slice);
    `copy-start`: its operand + both arrays of its output tuple (destination and source; what
    matches XLA's per-key sums, the generic rule would count the tuple's pointers);
    `slice-done`, `copy-done`, all-gather, all-reduce, ...: operands + output as above (an async
    collective's `-done` writes the collective's result: counted in the result's memory space);
  * while / conditional / call: their computations' instructions, each counted once (as XLA
    counts a loop's body once: callers extrapolate loops themselves);
  * custom-call (ConcatBitcast, TopK, ...): -1 (XLA's convention: unknown).
Array sizes are the tiled on-device sizes (the `T(...)` tiles of each layout pad the minor
dimensions); a tuple counts 8 bytes per element (XLA's `ShapeUtil::ByteSizeOf` with pointer size
8). Checked against `cost_analysis()`: within 0.7% on the TPU decode steps, total and per operand
index (bench/results/tpu_decode_hlo.md), and on XLA:CPU programs (tests/test_hlo_bytes.py).

Memory spaces: each array's is the `S(n)` of its layout. None (0) is HBM; S(1) is the
TensorCore's VMEM, the on-chip vector memory (jax-ml.github.io/scaling-book, "profiling"); S(2)/S(6)
hold sync flags and scalars; S(3) appears on v4 only, for whole weight matrices and KV-cache layers
up to the 131 MB LM head, which fits v4's 128 MiB CMEM and not its VMEM: S(3) = CMEM is an
inference from the sizes, the HLO does not name the spaces. Every instruction's bytes are split
into parts (`Cost.parts`: role, memory space, bytes): reads and writes of arrays in memory space 0,
on-chip reads and writes (S(1), S(3), ...), and bytes XLA's rule counts with no transfer behind
them (memory space -1: an async op's `-done` counting its output again, the source half of a
copy-start's tuple, tuples' pointer tables, custom-calls' -1).

**HBM bytes** (`hbm_bytes`, `Totals.hbm`) = the bytes of the parts in memory space 0: what the
chip's HBM bandwidth limits, the figure for a memory-bound roofline. Its limits: it is XLA's rule
restricted to HBM arrays, not a simulation. An instruction reading an HBM array is counted at the
array's (or the slice's) size whatever the hardware fetches; a fused operand read twice inside a
fusion counts once; collectives count their HBM operands and results, not the interconnect; a
custom-call's bytes are unknown (0 here, XLA's -1 is kept in the total). On a backend without
memory spaces (XLA:CPU, GPU) every array is in space 0, so HBM bytes = XLA's bytes less the
tuples' pointers and custom-calls' -1.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

# ------------------------------------------------------------------------------------------------
# Shapes.

_BITS = {"pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "f16": 16,
         "bf16": 16, "s32": 32, "u32": 32, "f32": 32, "s64": 64, "u64": 64, "f64": 64,
         "c64": 64, "c128": 128, "f8e4m3fn": 8, "f8e5m2": 8, "token": 0}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([0-9,]*)\](?:\{([^}]*)\})?")


@dataclasses.dataclass(frozen=True)
class Array:
  dtype: str
  dims: tuple
  layout: str          # minor_to_major and tiles, as printed

  @property
  def memory_space(self) -> int:
    m = re.search(r"S\((\d+)\)", self.layout)
    return int(m.group(1)) if m else 0

  @property
  def elements(self) -> int:
    return math.prod(self.dims)

  @property
  def bytes(self) -> int:
    """On-device size: the dims in physical (major-to-minor) order, the minor ones padded to the
    first tile's multiples (`T(8,128)`: the last two physical dims to 8 and 128)."""
    bits = _BITS.get(self.dtype, 32)
    dims = list(self.dims)
    body, _, tail = self.layout.partition(":")
    order = [int(x) for x in body.split(",") if x.strip()] if body.strip() else []
    if order and len(order) == len(dims):
      dims = [dims[i] for i in reversed(order)]           # major-to-minor
    tiles = re.findall(r"T\(([0-9,]+)\)", tail)
    if tiles:
      tile = [int(x) for x in tiles[0].split(",")]
      if len(tile) > len(dims):
        dims = [1] * (len(tile) - len(dims)) + dims
      for k, t in enumerate(tile):
        i = len(dims) - len(tile) + k
        dims[i] = -(-dims[i] // t) * t
    m = re.search(r"E\((\d+)\)", tail)
    if m:
      bits = int(m.group(1))
    return math.prod(dims) * bits // 8

  def __str__(self):
    space = f" S({self.memory_space})" if self.memory_space else ""
    return f"{self.dtype}[{','.join(map(str, self.dims))}]{space}"


@dataclasses.dataclass
class Shape:
  """An array, or a tuple of shapes."""
  array: Array | None = None
  items: list = dataclasses.field(default_factory=list)

  @property
  def is_tuple(self) -> bool:
    return self.array is None

  def leaves(self):
    if self.array is not None:
      yield self.array
    for s in self.items:
      yield from s.leaves()

  @property
  def bytes(self) -> int:
    """XLA's shape size: an array's bytes; a tuple's pointer table (8 bytes per element)."""
    return self.array.bytes if self.array is not None else 8 * len(self.items)

  def __str__(self):
    return str(self.array) if self.array is not None else \
        "(" + ", ".join(str(s) for s in self.items) + ")"


def parse_shape(text: str, i: int = 0) -> tuple[Shape, int]:
  """The shape starting at text[i] -> (shape, index after it)."""
  while text[i] == " ":
    i += 1
  if text[i] == "(":
    i += 1
    items = []
    while True:
      while text[i] in " ,":
        i += 1
      if text[i] == ")":
        return Shape(items=items), i + 1
      s, i = parse_shape(text, i)
      items.append(s)
  m = _ARRAY.match(text, i)
  if not m:
    raise ValueError(f"no shape at: {text[i:i + 80]!r}")
  dims = tuple(int(d) for d in m.group(2).split(",") if d)
  return Shape(array=Array(m.group(1), dims, m.group(3) or "")), m.end()


# ------------------------------------------------------------------------------------------------
# The module.

@dataclasses.dataclass
class Instr:
  name: str
  shape: Shape
  opcode: str
  operands: list
  attrs: str
  root: bool = False
  computation: str = ""

  def attr(self, key: str) -> str | None:
    m = re.search(key + r'=("[^"]*"|[%\w.\-]+)', self.attrs)
    return m.group(1).strip('"') if m else None

  @property
  def calls(self) -> list[str]:
    out = []
    for key in ("calls", "to_apply", "body", "condition"):
      v = self.attr(key)
      if v:
        out.append(v.lstrip("%"))
    m = re.search(r"branch_computations=\{([^}]*)\}", self.attrs)
    if m:
      out += [x.strip().lstrip("%") for x in m.group(1).split(",")]
    return out

  @property
  def op_name(self) -> str:
    m = re.search(r'op_name="([^"]*)"', self.attrs)
    return m.group(1).replace("\\'", "'") if m else ""

  @property
  def kind(self) -> str:
    return self.attr("kind") or ""


@dataclasses.dataclass
class Computation:
  name: str
  instrs: list
  entry: bool = False

  def __post_init__(self):
    self.by_name = {x.name: x for x in self.instrs}
    self.users = collections.defaultdict(list)
    for x in self.instrs:
      for o in dict.fromkeys(x.operands):
        self.users[o].append(x)

  @property
  def root(self) -> Instr:
    return next(x for x in self.instrs if x.root)


_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")


def _matching(text: str, i: int) -> int:
  """Index of the ')' closing the '(' at text[i]."""
  depth = 0
  for j in range(i, len(text)):
    c = text[j]
    if c == "(":
      depth += 1
    elif c == ")":
      depth -= 1
      if depth == 0:
        return j
  raise ValueError("unbalanced parentheses")


def parse_module(text: str) -> dict[str, Computation]:
  comps: dict[str, Computation] = {}
  current, instrs, entry = None, [], False
  for line in text.splitlines():
    line = re.sub(r"/\*.*?\*/", "", line)
    if current is None:
      m = _HEADER.match(line)
      if m and not line.startswith(" ") and "=" not in line.split("(")[0]:
        current, instrs, entry = m.group(2), [], bool(m.group(1))
      continue
    if line.strip() == "}":
      comps[current] = Computation(current, instrs, entry)
      current = None
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    shape, i = parse_shape(line, m.end())
    rest = line[i:].lstrip()
    op = re.match(r"([\w\-]+)\(", rest)
    if not op:
      continue
    start = op.end() - 1
    end = _matching(rest, start)
    inside = rest[start + 1:end]
    operands = [] if op.group(1) in ("constant", "parameter", "iota") else \
        re.findall(r"%([\w.\-]+)", inside)
    instrs.append(Instr(name=m.group(2), shape=shape, opcode=op.group(1), operands=operands,
                        attrs=(inside if op.group(1) == "parameter" else "") + rest[end + 1:],
                        root=bool(m.group(1)), computation=current))
  return comps


# ------------------------------------------------------------------------------------------------
# XLA's HloCostAnalysis, per instruction, split by memory space.

@dataclasses.dataclass
class Cost:
  """One instruction's bytes as (role, memory space, bytes) parts. role: "read i" (operand i),
  "read index", "write", "constant", ...; memory space -1: counted by XLA's rule with no transfer
  behind it (or a tuple)."""
  instr: Instr
  parts: list

  @property
  def total(self) -> float:
    return sum(b for _, _, b in self.parts)


_COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "reduce-scatter", "all-to-all",
                "collective-broadcast", "ragged-all-to-all")


def _space(shape: Shape) -> int:
  leaves = list(shape.leaves())
  return leaves[0].memory_space if len(leaves) == 1 else -1


class Analysis:
  def __init__(self, comps: dict[str, Computation]):
    self.comps = comps
    self.entry = next(c for c in comps.values() if c.entry)

  def operand(self, x: Instr, i: int) -> Instr:
    return self.comps[x.computation].by_name[x.operands[i]]

  # -- a fused parameter's read bytes (HloCostAnalysis::FusionParameterReadBytes) --------------
  def _param_read(self, comp: Computation, p: Instr) -> int:
    size, seen = 0, False
    full = p.shape.bytes
    for user in comp.users[p.name]:
      op = user.opcode
      if op == "fusion":
        sub = self.comps[user.calls[0]]
        params = {_param_index(q): q for q in sub.instrs if q.opcode == "parameter"}
        for idx, name in enumerate(user.operands):
          if name == p.name and idx in params and not seen:
            size += self._param_read(sub, params[idx])
            seen = True
      elif op in ("slice",):
        size += user.shape.bytes
      elif op == "dynamic-slice":
        if user.operands[0] == p.name:
          size += user.shape.bytes
        elif not seen:
          seen, size = True, size + full
      elif op == "dynamic-update-slice":
        if user.operands[0] != p.name and not seen:
          seen, size = True, size + full
      elif op in ("broadcast", "reshape"):
        size += full
      elif not seen:
        seen, size = True, size + full
    return size

  def _fusion(self, x: Instr) -> list:
    comp = self.comps[x.calls[0]]
    if x.kind == "kCustom":
      for y in comp.instrs:
        if y.opcode == "gather":
          out = y.shape.bytes
          idx = comp.by_name[y.operands[1]].shape.bytes
          return [("read 0", _space(self.operand(x, 0).shape), out),
                  ("read index", _space(comp.by_name[y.operands[1]].shape), idx),
                  ("write", _space(x.shape), out)]
        if y.opcode == "scatter":
          return self._scatter(x, y, comp)
    parts = []
    root = comp.root
    if x.shape.is_tuple:
      for k, s in enumerate(x.shape.items):
        r = comp.by_name[root.operands[k]] if root.opcode == "tuple" else root
        size = comp.by_name[r.operands[1]].shape.bytes if r.opcode == "dynamic-update-slice" \
            else s.bytes
        parts.append(("write", _space(s), size))
    else:
      size = comp.by_name[root.operands[1]].shape.bytes if root.opcode == "dynamic-update-slice" \
          else x.shape.bytes
      parts.append(("write", _space(x.shape), size))
    for y in comp.instrs:
      if y.opcode == "constant" and not y.shape.is_tuple and y.shape.array.elements > 1:
        parts.append(("constant", 0, y.shape.bytes))
    params = {_param_index(y): y for y in comp.instrs if y.opcode == "parameter"}
    for i, name in enumerate(x.operands):
      p = params.get(i)
      if p is None:
        continue
      parts.append((f"read {i}", _space(self.operand(x, i).shape), self._param_read(comp, p)))
    return parts

  def _scatter(self, x: Instr, y: Instr, comp: Computation | None = None) -> list:
    """HloCostAnalysis::HandleScatter: the updated buffer is read and written at the updates'
    size (in place), the updates read once, the indices read: 3 x updates + indices. `y` is the
    scatter, `x` the instruction XLA costs (the scatter itself, or a custom fusion holding it)."""
    def where(name: str) -> tuple[str, int, Instr]:
      q = (comp or self.comps[x.computation]).by_name[name]
      if comp is not None and q.opcode == "parameter":      # a fused parameter: the operand's
        i = _param_index(q)
        return f"read {i}", _space(self.operand(x, i).shape), q
      return f"read {y.operands.index(name)}", _space(q.shape), q
    n = len(y.operands) // 2                                # operands..., indices, updates...
    parts = []
    for k in range(n):
      role, space, _ = where(y.operands[k])
      _, uspace, upd = where(y.operands[n + 1 + k])
      parts += [(role, space, upd.shape.bytes),
                (where(y.operands[n + 1 + k])[0], uspace, upd.shape.bytes)]
    _, ispace, idx = where(y.operands[n])
    parts.append(("read index", ispace, idx.shape.bytes))
    parts.append(("write", _space(x.shape), sum(b for r, _, b in parts[:2 * n:2])))
    return parts

  def cost(self, x: Instr) -> Cost:
    op = x.opcode
    opnds = [self.operand(x, i) for i in range(len(x.operands))]
    default = ([(f"read {i}", _space(o.shape), o.shape.bytes) for i, o in enumerate(opnds)]
               + [("write", _space(x.shape), x.shape.bytes)])
    if op in ("parameter", "constant", "get-tuple-element", "bitcast", "after-all",
              "add-dependency", "domain"):
      parts = []
    elif op == "tuple":
      parts = [("write", -1, x.shape.bytes)]
    elif op == "custom-call":
      parts = [("custom-call", -1, -1)]
    elif op in ("slice", "dynamic-slice"):
      out = x.shape.bytes
      parts = [("read 0", _space(opnds[0].shape), out), ("write", _space(x.shape), out)]
      if op == "dynamic-slice":
        parts.append(("read index", _space(opnds[1].shape), opnds[1].shape.bytes))
    elif op == "dynamic-update-slice":
      upd = opnds[1].shape.bytes
      parts = [("read 1", _space(opnds[1].shape), upd), ("write", _space(x.shape), upd),
               ("read index", _space(opnds[2].shape), opnds[2].shape.bytes)]
    elif op == "gather":
      out = x.shape.bytes
      parts = [("read 0", _space(opnds[0].shape), out), ("write", _space(x.shape), out),
               ("read index", _space(opnds[1].shape), opnds[1].shape.bytes)]
    elif op == "scatter":
      parts = self._scatter(x, x)
    elif op == "fusion":
      parts = self._fusion(x)
    elif op == "copy-start":
      # Matched to cost_analysis()'s per-key sums (this script's check): the TPU analysis counts a
      # copy-start's output as both arrays of its tuple (destination and source), not the tuple's
      # pointer size. The source half is no second transfer: counted, but in no memory space.
      dst, src = x.shape.items[0], x.shape.items[1]
      parts = [("read 0", _space(opnds[0].shape), opnds[0].shape.bytes),
               ("write", _space(dst), dst.bytes), ("write (source, counted)", -1, src.bytes)]
    elif op.endswith("-start") and op[:-len("-start")] not in _COLLECTIVES:
      # An async op wrapping a computation (`slice-start`): that computation's cost. Printed
      # without its computation: the wrapped op is the start's name without "-start".
      wrapped = op[:-len("-start")]
      out_shape = x.shape.items[1] if x.shape.is_tuple and len(x.shape.items) > 1 else x.shape
      if wrapped == "slice":
        b = out_shape.bytes
        parts = [("read 0", _space(opnds[0].shape), b), ("write", _space(out_shape), b)]
      else:
        parts = default
    elif op.endswith("-done") and op[:-len("-done")] in _COLLECTIVES:
      # An async collective's end (all-gather-done, ...): its start counted the operand and its
      # tuple's pointers; the done writes the collective's result (XLA counts it here).
      parts = [(role, -1 if role.startswith("read") else s, b) for role, s, b in default]
    elif op.endswith("-done"):
      # The end of an async op (slice-done, copy-done, ...): XLA counts its operand (the start's
      # tuple: pointers) and its output again; the transfer was the start's. No memory space.
      parts = [(role, -1, b) for role, _, b in default]
    else:
      parts = default
    return Cost(x, parts)

  def costs(self, comp: Computation | None = None) -> list[Cost]:
    """Every instruction of the entry computation (and of while bodies/conditions, counted once
    per instruction as XLA does)."""
    comp = comp or self.entry
    out = []
    for x in comp.instrs:
      if x.opcode in ("while", "conditional", "call"):
        for c in x.calls:
          out += self.costs(self.comps[c])
        continue
      out.append(self.cost(x))
    return out

  # -- what an operand is: follow copies and slices back to an entry parameter -----------------
  def origin(self, x: Instr, depth: int = 0) -> str:
    through = ("get-tuple-element", "bitcast", "copy-start", "copy-done", "slice-done", "copy",
               "dynamic-update-slice", "all-gather", "all-gather-start", "all-gather-done",
               "reshape", "convert")
    if x.opcode == "parameter":
      name = x.op_name
      if name.startswith("params"):
        return "weights"
      if name.startswith("state.cache"):
        return "kv cache"
      return "state/other args"
    if depth < 12 and (x.opcode in through or x.opcode.endswith("-start")
                       or (x.opcode == "custom-call"
                           and x.attr("custom_call_target") == "ConcatBitcast")):
      if x.operands:
        return self.origin(self.operand(x, 0), depth + 1)
    return "activations"


def _param_index(x: Instr) -> int:
  return int(re.match(r"\s*(\d+)", x.attrs).group(1))


# ------------------------------------------------------------------------------------------------
# Categories.

def category(a: Analysis, c: Cost) -> str:
  x = c.instr
  op = x.opcode
  target = x.attr("custom_call_target") or ""
  if op == "fusion":
    reads = [(b, a.origin(a.operand(x, int(r.split()[1]))))
             for r, _, b in c.parts if r.startswith("read ") and r.split()[1].isdigit()]
    big = max(reads, default=(0, "activations"))[1]
    fused = a.comps[x.calls[0]]
    has = lambda name: any(y.opcode == name for y in fused.instrs)
    what = ("matmul" if has("convolution") or has("dot") else
            "reduce" if has("reduce") else "gather" if x.kind == "kCustom" else "elementwise")
    return f"fusion ({what}) reading {big}"
  if op in ("copy-start", "copy-done", "slice-done", "copy") or op.endswith("-start"):
    src = a.origin(x)
    if not x.shape.is_tuple:
      dst = x.shape
    else:  # copy-start: (destination, source, context); other starts: ((operands), output, ...)
      dst = x.shape.items[0] if op == "copy-start" else x.shape.items[1]
    space = _space(dst)
    return f"{op} of {src} into {'HBM' if space == 0 else f'S({space})'}"
  if op == "dynamic-update-slice":
    return f"dynamic-update-slice into {a.origin(x)}"
  if op == "custom-call":
    return f"custom-call {target}"
  return op


def bucket(role: str, space: int) -> str:
  """Where a part's bytes go: "hbm_read", "hbm_write", "onchip" or "counted" (module doc)."""
  if space == 0:
    return "hbm_write" if role.startswith("write") else "hbm_read"
  return "onchip" if space > 0 else "counted"


def breakdown(a: Analysis):
  costs = a.costs()
  rows = collections.OrderedDict()
  for c in costs:
    if not c.parts:
      continue
    key = category(a, c)
    r = rows.setdefault(key, dict(bytes=0.0, hbm_read=0.0, hbm_write=0.0, onchip=0.0,
                                  counted=0.0, count=0, example=None, example_bytes=-1))
    r["bytes"] += c.total
    r["count"] += 1
    for role, space, b in c.parts:
      r[bucket(role, space)] += b
    if c.total > r["example_bytes"]:
      r["example"], r["example_bytes"] = c, c.total
  return costs, rows


def hbm_by_origin(a: Analysis, costs: list[Cost]) -> dict:
  """HBM bytes (memory space 0) by what they are: ("weights"/"kv cache"/..., "read"/"write")."""
  out = collections.Counter()
  for c in costs:
    x = c.instr
    for role, space, b in c.parts:
      if space != 0:
        continue
      if role.startswith("write"):
        out[(a.origin(x), "write")] += b
      elif role.startswith("read ") and role.split()[1].isdigit():
        out[(a.origin(a.operand(x, int(role.split()[1]))), "read")] += b
      else:
        out[("activations", "read")] += b
  return out


def per_key_sums(costs: list[Cost]) -> dict:
  """Our sums in cost_analysis()'s keys: 'bytes accessed{i}{}' (operand i), 'bytes accessedout{}'."""
  out = collections.Counter()
  for c in costs:
    for role, _, b in c.parts:
      if role.startswith("write"):
        out["bytes accessedout{}"] += b
      elif role.startswith("read ") and role.split()[1].isdigit():
        out[f"bytes accessed{role.split()[1]}{{}}"] += b
      elif role == "read index":
        i = {"dynamic-slice": 1, "dynamic-update-slice": 2, "gather": 1, "fusion": 1}.get(
            c.instr.opcode, 1)
        out[f"bytes accessed{i}{{}}"] += b
  return out




# ------------------------------------------------------------------------------------------------
# Totals.

@dataclasses.dataclass(frozen=True)
class Totals:
  """A module's bytes by XLA's rule (`total`, what `cost_analysis()` reports), split: `hbm_read`
  and `hbm_write` (arrays in memory space 0), `onchip` (S(1), S(3), ...), `counted` (no transfer:
  memory space -1)."""
  total: float
  hbm_read: float
  hbm_write: float
  onchip: float
  counted: float

  @property
  def hbm(self) -> float:
    return self.hbm_read + self.hbm_write


def totals(costs: list[Cost]) -> Totals:
  sums = collections.Counter()
  for c in costs:
    for role, space, b in c.parts:
      sums[bucket(role, space)] += b
  return Totals(total=float(sum(c.total for c in costs)),
                **{k: float(sums[k]) for k in ("hbm_read", "hbm_write", "onchip", "counted")})


def analyze(text: str) -> Totals:
  """The totals of a compiled module's HLO text (`compiled.as_text()`)."""
  return totals(Analysis(parse_module(text)).costs())


def hbm_bytes(text: str) -> float:
  """The bytes of arrays in HBM (memory space 0) that the module's instructions read and write,
  by XLA's cost rules (module doc)."""
  return analyze(text).hbm
