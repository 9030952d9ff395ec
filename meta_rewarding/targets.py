"""Accelerator slices the compile check (`python -m meta_rewarding.plan --compile_for=...`) knows.

One row per TPU generation: how a slice name maps to a topology `jax.experimental.topologies`
understands, HBM per chip, and the published per-chip bf16 peak FLOP/s and HBM bandwidth (Cloud
TPU's system-architecture pages). The roofline time of a program is max(FLOPs / peak, bytes
accessed / bandwidth): a lower bound, never a measurement.

Slice names follow Cloud TPU's accelerator types: v4 and v5p count TensorCores (two per chip, so
v4-32 is 16 chips), v5e and v6e count chips (v5e-16 is 16 chips).

No jax here: the table is data the planner and its tests read without a backend.
"""

from __future__ import annotations

import dataclasses
import re

from meta_rewarding.errors import UserError

GiB = 1 << 30


class UnknownTargetError(UserError, ValueError):
  """The `--compile_for` name is not a slice this table describes (the message lists them)."""


@dataclasses.dataclass(frozen=True)
class Generation:
  """A TPU generation: what every slice of it shares."""
  name: str                  # "v4"
  topology_prefix: str       # the name get_topology_desc takes before ":<shape>"
  chip_config_name: str | None  # "megacore" where two TensorCores act as one device
  cores_per_chip: int        # how the slice name counts: v4-32 = 32 cores = 16 chips
  hbm_gib: float             # per chip
  peak_bf16_flops: float     # per chip, FLOP/s
  hbm_bandwidth: float       # per chip, bytes/s
  shapes: dict               # chips -> topology shape ("2x2x4")


# Published figures (cloud.google.com/tpu/docs/<generation>): bf16 TFLOP/s and HBM GB/s per chip.
GENERATIONS = {
    "v4": Generation("v4", "v4", "megacore", 2, 32.0, 275e12, 1200e9, {
        4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
        256: "4x8x8", 512: "8x8x8"}),
    "v5e": Generation("v5e", "v5e", None, 1, 16.0, 197e12, 819e9, {
        1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
        256: "16x16"}),
    "v5p": Generation("v5p", "v5p", None, 2, 95.0, 459e12, 2765e9, {
        4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
        256: "4x8x8", 512: "8x8x8"}),
    "v6e": Generation("v6e", "v6e", None, 1, 32.0, 918e12, 1640e9, {
        1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
        256: "16x16"}),
}

# GPU names a user may try: they cannot be compiled without CUDA on the machine (see `parse`).
_GPU = re.compile(r"^(h100|h200|a100|a10g|l4|b200|gpu)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Target:
  """One slice: `v4-32` is 16 v4 chips."""
  name: str
  generation: Generation
  chips: int

  @property
  def topology(self) -> str:
    return f"{self.generation.topology_prefix}:{self.generation.shapes[self.chips]}"

  @property
  def hbm_bytes(self) -> int:
    return int(self.generation.hbm_gib * GiB)

  def roofline_seconds(self, flops: float, bytes_accessed: float) -> float:
    """max(compute time at peak, memory time at full bandwidth) on one chip."""
    g = self.generation
    return roofline_seconds(flops, bytes_accessed, g.peak_bf16_flops, g.hbm_bandwidth)

  def bound(self, flops: float, bytes_accessed: float) -> str:
    g = self.generation
    return "compute" if flops / g.peak_bf16_flops >= bytes_accessed / g.hbm_bandwidth else "memory"


def roofline_seconds(flops: float, bytes_accessed: float, peak_flops: float,
                     bandwidth: float) -> float:
  """max(FLOPs / peak FLOP/s, bytes / bandwidth): the time neither compute nor memory beats."""
  return max(flops / peak_flops, bytes_accessed / bandwidth)


def names() -> list[str]:
  """Every slice name the table describes, e.g. v4-8 ... v4-1024, v5e-1 ... v5e-256."""
  out = []
  for g in GENERATIONS.values():
    out += [f"{g.name}-{chips * g.cores_per_chip}" for chips in sorted(g.shapes)]
  return out


def parse(name: str) -> Target:
  """The `Target` of a slice name ("v4-32", "v5e-16"); `UnknownTargetError` says what exists."""
  text = str(name).strip().lower()
  if _GPU.match(text):
    raise UnknownTargetError(
        f"--compile_for={name}: GPU targets cannot be compiled here: XLA compiles for a GPU only "
        "on a machine with CUDA and that GPU. Run `python -m meta_rewarding.plan --config=...` "
        "(the planner) here, and the config's first iteration on the GPU node itself")
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", text.replace("v5litepod", "v5e"))
  if not m:
    raise UnknownTargetError(f"--compile_for={name}: not a TPU slice name; expected one of "
                             f"{', '.join(names())}")
  g = GENERATIONS[m.group(1)]
  count = int(m.group(2))
  chips = count // g.cores_per_chip if count % g.cores_per_chip == 0 else -1
  if chips not in g.shapes:
    raise UnknownTargetError(f"--compile_for={name}: {g.name} slices are "
                             + ", ".join(f"{g.name}-{c * g.cores_per_chip}" for c in sorted(g.shapes)))
  return Target(name=text, generation=g, chips=chips)
