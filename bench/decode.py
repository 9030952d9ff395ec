"""Decode throughput: the jitted sampler vs `transformers` generate, side by side, plus the roofline.

  python -m bench.decode                          # ~50M Llama, vocab 32000, batch 1 and 16, then the
                                                  # length-skewed workload (2-core CPU: ~10 + ~20 min)
  python -m bench.decode --batch_sizes= --shared_batch=0   # only the length-skewed workload
  python -m bench.decode --batch_sizes=1,64 --vocab_size=128256 --hidden_size=2048 --num_layers=16
      --intermediate_size=8192 --num_heads=32 --num_kv_heads=8 --dtype=bfloat16
                                                  # a Llama-3.2-1B-shaped config on a GPU (transformers
                                                  # runs there too when torch sees it)

Both generate exactly --new_tokens tokens after --prompt_len random prompt tokens (no stop ids for
ours; min_new_tokens for transformers), with the same weights (written by `save_hf`, loaded by
`LlamaForCausalLM.from_pretrained`) and the same sampling settings: temperature 0.8, top-k 64,
top-p 0.95 (`--greedy` for argmax). transformers runs its default generate loop: PyTorch eager,
dynamic KV cache on. Tokens/s counts generated tokens (batch x new_tokens) over the whole call,
prefill included; the best of --repeats rounds after one warm-up (compilation) run, the two
frameworks alternating within each round so that both see the same load on a shared machine.

Roofline: the time the hardware needs at least, per call: the prefill's matmul FLOPs at the
measured matmul rate, plus per decode step max(matmul FLOPs / rate, weight bytes / measured memory
bandwidth) -- reading every weight once per step. Both rates are measured here (best of a few
kernels). roofline fraction = roofline time / measured time. KV-cache and activation traffic are not
counted, so the fraction is an upper bound's complement: 100% is unreachable.

Length-skewed workload (--skewed_prompts; 0 skips it): the case continuous batching is for.
Each row's target length L is drawn from a lognormal clipped to [16, --skewed_max_new_tokens]
(L = clip(round(X), 16, M), ln X ~ Normal(ln --skewed_median, --skewed_sigma^2)), and the row is
forced to emit the stop id (EOS) as its L-th token and nothing else before. Ours forces it with a
bench-only strategy (`ForcedLength`): at each step it stops with the distribution's hazard
P(L = l | L >= l), drawn from the row's own uniform, so the lengths are those of the distribution
and the same under static and continuous batching; transformers gets the same per-row lengths
through a LogitsProcessor and runs plain `generate` over batches of --skewed_slots rows (its own
batching). Reported: useful tokens/s (tokens of the completions, stop included, / wall time) of
the static sampler, the continuous one and transformers, and each sampler's slot utilisation
(`Sampler.last_stats`: kept tokens / (decode rows x decode steps)).

Prints one table and writes bench/results/decode.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app, flags

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import machine  # noqa: E402
from meta_rewarding import checkpoints, decode, sampling, strategies  # noqa: E402
from meta_rewarding.model.config import LlamaConfig  # noqa: E402
from meta_rewarding.model.llama import init_params  # noqa: E402

FLAGS = flags.FLAGS
def _define_flags():
  """The command line's flags, defined only when this file runs as a script: the tests load it
  as a module next to others (meta_rewarding.sample) that define flags of the same names."""
  flags.DEFINE_list("batch_sizes", ["1", "16"], "Batch sizes to measure.")
  flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
  flags.DEFINE_integer("new_tokens", 128, "Generated tokens per row.")
  flags.DEFINE_integer("vocab_size", 32000, "")
  flags.DEFINE_integer("hidden_size", 512, "")
  flags.DEFINE_integer("intermediate_size", 1536, "")
  flags.DEFINE_integer("num_layers", 6, "")
  flags.DEFINE_integer("num_heads", 8, "")
  flags.DEFINE_integer("num_kv_heads", 4, "")
  flags.DEFINE_string("dtype", "float32", "Compute and parameter dtype (both frameworks).")
  flags.DEFINE_bool("greedy", False, "Argmax instead of sampling.")
  flags.DEFINE_integer("repeats", 3, "Timed runs per setting (the best is reported).")
  flags.DEFINE_bool("skip_transformers", False, "Only measure this project's sampler.")
  flags.DEFINE_integer("shared_batch", 16, "Shared-prefix section: prompts per batch (0: skip it).")
  flags.DEFINE_integer("shared_prefix_len", 448, "Shared-prefix section: tokens all prompts share.")
  flags.DEFINE_integer("shared_suffix_len", 64, "Shared-prefix section: tokens of each prompt's own.")
  flags.DEFINE_integer("shared_new_tokens", 32, "Shared-prefix section: tokens generated per prompt.")
  flags.DEFINE_integer("skewed_prompts", 256, "Length-skewed section: prompts (0: skip it).")
  flags.DEFINE_integer("skewed_slots", 16, "Length-skewed section: decode rows (both samplers' "
                       "batch_size; transformers' batch).")
  flags.DEFINE_integer("skewed_max_new_tokens", 128, "Length-skewed section: M, the longest row.")
  flags.DEFINE_float("skewed_median", 32.0, "Length-skewed section: the lognormal's median.")
  flags.DEFINE_float("skewed_sigma", 0.8, "Length-skewed section: the lognormal's sigma.")
  flags.DEFINE_integer("skewed_repeats", 2, "Length-skewed section: timed runs (the best is reported).")
  flags.DEFINE_integer("skewed_decode_block", 32, "Length-skewed section: the continuous sampler's "
                       "most decode steps between refills.")
  flags.DEFINE_bool("allow_loaded", False, "Write the results file even when the machine was "
                    "loaded before the run (marked NOT COMPARABLE).")
  flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                             "decode.md"), "Markdown report path ('' for none).")


TEMPERATURE, TOP_K, TOP_P = 0.8, 64, 0.95


def _best_time(fn, repeats: int, warmup=None) -> float:
  (warmup or fn)()  # compile / first-call set-up
  return _best_interleaved([fn], repeats)[0]


def _best_interleaved(fns, repeats: int) -> list[float]:
  """Best wall time of each function over `repeats` rounds, the functions alternating within a
  round: on a shared machine both see the same quiet and busy moments."""
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for k, fn in enumerate(fns):
      t = time.perf_counter()
      fn()
      best[k] = min(best[k], time.perf_counter() - t)
  return best


def measure_matmul_flops(dtype) -> float:
  """Best FLOP/s over a few square matmuls (jitted JAX on the default device)."""
  best = 0.0
  sizes = (1024, 2048, 3072) if jax.default_backend() == "cpu" else (2048, 4096, 8192)
  for n in sizes:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda x: x @ x)
    t = _best_time(lambda: f(a).block_until_ready(), 5)
    best = max(best, 2 * n ** 3 / t)
  return best


def measure_bandwidth() -> float:
  """Best read bandwidth (bytes/s) over a large array: a jitted reduction, numpy and torch sums."""
  n = 64 * 2 ** 20  # 256 MB of float32, far beyond the caches
  host = np.ones(n, np.float32)
  dev = jnp.asarray(host)
  f = jax.jit(lambda x: jnp.sum(x))
  rates = [4 * n / _best_time(lambda: f(dev).block_until_ready(), 5),
           4 * n / _best_time(lambda: host.sum(), 5)]
  try:
    import torch
    th = torch.ones(n, device=torch_device())
    rates.append(4 * n / _best_time(lambda: th.sum().item(), 5))
  except ImportError:
    pass
  return max(rates)


def torch_device() -> str:
  """Where transformers runs: the GPU when JAX runs on one (and this torch build sees it)."""
  import torch
  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def bench_config() -> LlamaConfig:
  return LlamaConfig(vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.hidden_size,
                     intermediate_size=FLAGS.intermediate_size, num_hidden_layers=FLAGS.num_layers,
                     num_attention_heads=FLAGS.num_heads, num_key_value_heads=FLAGS.num_kv_heads,
                     max_position_embeddings=max(2048, FLAGS.prompt_len + FLAGS.new_tokens,
                                                 FLAGS.prompt_len + FLAGS.skewed_max_new_tokens),
                     rope_theta=500000.0, dtype=FLAGS.dtype, param_dtype=FLAGS.dtype,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)


def ours_call(config, params, prompts: np.ndarray, strategy):
  """A call generating exactly new_tokens per row; the first call compiles."""
  batch = decode.make_batch([list(p) for p in prompts], length=prompts.shape[1])
  batch = jax.tree.map(jnp.asarray, batch)

  def call():
    out = decode.generate_tokens(config, params, batch, strategy=strategy,
                                 max_new_tokens=FLAGS.new_tokens, seed=0, stop_ids=())
    lengths = np.asarray(out.lengths)
    assert (lengths == FLAGS.new_tokens).all(), lengths
  return call


def transformers_call(model_dir: str, prompts: np.ndarray):
  """The same with `transformers` generate (PyTorch eager: nothing to compile)."""
  import torch
  import transformers
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
  device = torch_device()
  model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).eval().to(device)
  ids = torch.as_tensor(prompts, dtype=torch.long, device=device)
  mask = torch.ones_like(ids)
  kwargs = dict(do_sample=False) if FLAGS.greedy else dict(
      do_sample=True, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)

  def call(new_tokens=FLAGS.new_tokens):
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, use_cache=True, pad_token_id=0, **kwargs)
    if device == "cuda":
      torch.cuda.synchronize()
    assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
  call(4)  # first-call set-up
  return call


def run_shared_prefix(config, params, strategy) -> tuple[float, float]:
  """Seconds for `shared_batch` judge-like prompts (one long common prefix + own tokens) through
  the driver, without and with share_prefix."""
  rng = np.random.default_rng(0)
  prefix = rng.integers(3, config.vocab_size, FLAGS.shared_prefix_len).tolist()
  prompts = [prefix + rng.integers(3, config.vocab_size, FLAGS.shared_suffix_len).tolist()
             for _ in range(FLAGS.shared_batch)]
  sampler = sampling.Sampler(config, params, None, batch_size=FLAGS.shared_batch)
  calls = [functools.partial(sampler.generate, prompts, strategy=strategy,
                             max_new_tokens=FLAGS.shared_new_tokens, share_prefix=share,
                             stop_ids=(), progress=False) for share in (False, True)]
  for call in calls:
    call()  # compile
  plain, shared = _best_interleaved(calls, FLAGS.repeats)
  return plain, shared


# ------------------------------------------------------------------------------------------------
# The length-skewed workload.

MIN_SKEWED_LENGTH = 16


def skewed_length_pmf(max_new_tokens: int, median: float, sigma: float) -> list[float]:
  """P(L = l) for l = 1..M: L = clip(round(X), 16, M), ln X ~ Normal(ln median, sigma^2)."""
  cdf = lambda x: 0.5 * (1 + math.erf((math.log(x) - math.log(median)) / (sigma * math.sqrt(2))))
  lo, M = MIN_SKEWED_LENGTH, max_new_tokens
  pmf = [0.0] * (M + 1)
  for l in range(lo, M + 1):
    upper = 1.0 if l == M else cdf(l + 0.5)
    lower = 0.0 if l == lo else cdf(l - 0.5)
    pmf[l] = upper - lower
  return pmf[1:]


def hazard(pmf: Sequence[float]) -> tuple[float, ...]:
  """h[c] = P(L = c + 1 | L >= c + 1): the chance that the row's (c+1)-th token is its last."""
  out, left = [], 1.0
  for p in pmf:
    out.append(min(p / left, 1.0) if left > 1e-12 else 1.0)
    left -= p
  out[-1] = 1.0
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class ForcedLength:
  """Bench-only strategy: ends each row with `stop_id` at a length drawn with `hazard`, and
  otherwise samples with `base` (never the stop id).

  The stop decision uses the row's uniform u in (0, 1] for this step: stop iff u <= h[count]; when
  not stopping, (u - h) / (1 - h) is again uniform in (0, 1] and drives `base`. The uniforms come
  from (seed, prompt, sample, step) keys, so the lengths do not depend on the batching."""
  base: Any
  stop_id: int
  hazard: tuple[float, ...]
  needs_rng = True
  needs_count = True

  def sample(self, logits, uniforms, count):
    h = jnp.asarray(self.hazard, jnp.float32)[jnp.minimum(count, len(self.hazard) - 1)]
    stop = uniforms <= h
    rest = jnp.where(stop, 1.0, (uniforms - h) / jnp.maximum(1.0 - h, 1e-6))
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    logits = jnp.where(ids == self.stop_id, -jnp.inf, logits)
    token = self.base.sample(logits, rest if self.base.needs_rng else None)
    return jnp.where(stop, self.stop_id, token)


def transformers_skewed_call(model_dir: str, prompts: np.ndarray, lengths: np.ndarray,
                             stop_id: int, slots: int):
  """transformers generate over batches of `slots` rows, row r forced to end with stop_id as its
  lengths[r]-th token (a LogitsProcessor); returns the call (it checks the lengths)."""
  import torch
  import transformers
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[FLAGS.dtype]
  device = torch_device()
  model = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).eval().to(device)
  kwargs = dict(do_sample=False) if FLAGS.greedy else dict(
      do_sample=True, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)
  prompt_len = prompts.shape[1]

  class ForceLengths(transformers.LogitsProcessor):
    def __init__(self, targets):
      self.targets = torch.as_tensor(targets, device=device)

    def __call__(self, input_ids, scores):
      step = input_ids.shape[1] - prompt_len  # tokens generated before this one
      end = self.targets - 1 == step
      scores[:, stop_id] = -float("inf")
      scores[end] = -float("inf")
      scores[end, stop_id] = 0.0
      return scores

  chunks = [(torch.as_tensor(prompts[k:k + slots], dtype=torch.long, device=device),
             lengths[k:k + slots]) for k in range(0, len(prompts), slots)]

  def call():
    for ids, targets in chunks:
      with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=int(targets.max()), use_cache=True, pad_token_id=0,
                             eos_token_id=stop_id,
                             logits_processor=transformers.LogitsProcessorList(
                                 [ForceLengths(targets)]), **kwargs)
      if device == "cuda":
        torch.cuda.synchronize()
      new = out[:, prompt_len:].cpu().numpy()
      got = [int(np.flatnonzero(row == stop_id)[0]) + 1 for row in new]
      assert got == list(targets), (got, list(targets))
  return call


def run_skewed(config, params, strategy, model_dir: str | None) -> dict:
  """The length-skewed workload: static vs continuous (vs transformers). Returns the figures."""
  M = FLAGS.skewed_max_new_tokens
  stop_id = config.eos_token_id
  pmf = skewed_length_pmf(M, FLAGS.skewed_median, FLAGS.skewed_sigma)
  forced = ForcedLength(base=strategy, stop_id=stop_id, hazard=hazard(pmf))
  prompts = np.random.default_rng(1).integers(3, config.vocab_size,
                                              (FLAGS.skewed_prompts, FLAGS.prompt_len))
  prompt_lists = [list(map(int, p)) for p in prompts]
  samplers = {b: sampling.Sampler(config, params, None, batch_size=FLAGS.skewed_slots,
                                  prompt_buckets=(FLAGS.prompt_len,), batching=b,
                                  decode_block=FLAGS.skewed_decode_block)
              for b in ("static", "continuous")}
  runs = {b: functools.partial(s.generate, prompt_lists, strategy=forced, max_new_tokens=M,
                               stop_ids=(stop_id,), seed=0, progress=False)
          for b, s in samplers.items()}
  outputs = {b: run() for b, run in runs.items()}  # compiles; the same rows either way
  tokens = {b: [c.token_ids for cs in out for c in cs] for b, out in outputs.items()}
  # The lengths are forced from each row's own uniforms, so they match whatever the logits; the
  # tokens match to the bit on the tests' tiny models, but here the two batchings round the
  # 32000-way logits differently (other batch shapes, a wider attention ring), and a sampled token
  # near a top-p / top-k cut-off can flip. The share of identical rows is reported.
  lengths = np.array([len(t) for t in tokens["static"]])
  assert list(lengths) == [len(t) for t in tokens["continuous"]], "forced lengths differ"
  identical = sum(a == b for a, b in zip(tokens["static"], tokens["continuous"]))
  assert all(t[-1] == stop_id for t in tokens["static"]), "a row did not end with the stop id"
  useful = int(lengths.sum())
  stats = {b: samplers[b].last_stats for b in runs}
  calls = [runs["static"], runs["continuous"]]
  if model_dir:
    calls.append(transformers_skewed_call(model_dir, prompts, lengths, stop_id, FLAGS.skewed_slots))
    calls[-1]()  # first-call set-up
  times = _best_interleaved(calls, FLAGS.skewed_repeats) + [float("nan")]
  return dict(lengths=lengths, useful=useful, stats=stats, static=times[0], continuous=times[1],
              transformers=times[2], identical=identical)


def _cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    return f"{name}, {os.cpu_count()} cores"
  except Exception:
    return platform.processor() or "unknown CPU"


def skewed_table(r: dict) -> str:
  lengths, useful = r["lengths"], r["useful"]
  q = np.percentile(lengths, [50, 90, 99])
  head = (
      f"Length-skewed workload, through `Sampler.generate`: {FLAGS.skewed_prompts} prompts of "
      f"{FLAGS.prompt_len} tokens, {FLAGS.skewed_slots} decode rows; target lengths "
      f"clip(round(X), {MIN_SKEWED_LENGTH}, {FLAGS.skewed_max_new_tokens}) with ln X ~ "
      f"Normal(ln {FLAGS.skewed_median:g}, {FLAGS.skewed_sigma:g}^2), each row forced to end with "
      f"the stop id there: mean {lengths.mean():.1f}, median {q[0]:.0f}, p90 {q[1]:.0f}, "
      f"p99 {q[2]:.0f}, max {lengths.max()} tokens; {useful} useful tokens (the completions', "
      f"stop included). Continuous: refills between blocks of at most "
      f"{FLAGS.skewed_decode_block} decode steps. transformers: `generate` over batches of "
      f"{FLAGS.skewed_slots} rows (static), the same lengths forced by a LogitsProcessor. "
      f"Static and continuous wrote identical tokens in {r['identical']} of {len(lengths)} rows "
      f"(the rest differ by float rounding at a sampled token; same lengths).\n\n")
  lines = ["| sampler | useful tok/s | seconds | slot utilisation | decode steps | vs static |",
           "|---|---|---|---|---|---|"]
  for name in ("static", "continuous"):
    st = r["stats"][name]
    lines.append(f"| meta_rewarding, {name} | {useful / r[name]:.1f} | {r[name]:.2f} | "
                 f"{100 * st.utilisation:.1f}% | {st.decode_steps} | "
                 f"{r['static'] / r[name]:.2f}x |")
  if not math.isnan(r["transformers"]):
    lines.append(f"| transformers generate | {useful / r['transformers']:.1f} | "
                 f"{r['transformers']:.2f} | - | - | {r['static'] / r['transformers']:.2f}x |")
  return head + "\n".join(lines)


def main(argv):
  del argv
  state = machine.MachineState.before()  # before any work of ours: the load of other jobs
  print(state.describe(), flush=True)
  if FLAGS.output:
    state.check(FLAGS.allow_loaded)  # fail before the run, not after it
  config = bench_config()
  dtype = jnp.dtype(FLAGS.dtype)
  strategy = strategies.Greedy() if FLAGS.greedy else strategies.Sampling(
      temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)
  dev = jax.devices()[0]
  device = _cpu_name() if dev.platform == "cpu" else f"{dev.device_kind} ({dev.platform})"
  print(f"device: {device}; jax {jax.__version__}")
  params = init_params(config, jax.random.key(0))
  matmul_params = config.num_params() - config.vocab_size * config.hidden_size  # embed is a gather
  weight_bytes = matmul_params * dtype.itemsize
  print(f"config: {config.num_params() / 1e6:.1f}M params ({matmul_params / 1e6:.1f}M in matmuls), "
        f"{FLAGS.dtype}; measuring matmul FLOP/s and memory bandwidth ...")
  flops = measure_matmul_flops(dtype)
  bandwidth = measure_bandwidth()
  print(f"matmul {flops / 1e9:.1f} GFLOP/s, memory {bandwidth / 1e9:.1f} GB/s")

  model_dir = None
  if not FLAGS.skip_transformers:
    model_dir = tempfile.mkdtemp(prefix="bench_decode_")
    checkpoints.save_hf(os.path.join(model_dir, "model"), config, params)
    model_dir = os.path.join(model_dir, "model")

  rows = []
  for b in map(int, FLAGS.batch_sizes):
    prompts = np.random.default_rng(b).integers(3, config.vocab_size, (b, FLAGS.prompt_len))
    generated = b * FLAGS.new_tokens
    calls = [ours_call(config, params, prompts, strategy)]
    calls[0]()  # compile
    if model_dir:
      calls.append(transformers_call(model_dir, prompts))
    ours, theirs = (_best_interleaved(calls, FLAGS.repeats) + [float("nan")])[:2]
    step_flops = 2 * matmul_params * b
    roofline = (step_flops * FLAGS.prompt_len / flops +
                FLAGS.new_tokens * max(step_flops / flops, weight_bytes / bandwidth))
    rows.append(dict(batch=b, ours=generated / ours, theirs=generated / theirs,
                     speedup=theirs / ours, ms_step=1e3 * ours / FLAGS.new_tokens,
                     roofline=roofline / ours, roofline_ms=1e3 * roofline / FLAGS.new_tokens,
                     hf_roofline=roofline / theirs,
                     weight_rate=weight_bytes * FLAGS.new_tokens / ours))
    print(f"batch {b}: ours {generated / ours:.1f} tok/s, transformers {generated / theirs:.1f} "
          f"tok/s", flush=True)

  skewed = None
  if FLAGS.skewed_prompts:
    skewed = run_skewed(config, params, strategy, model_dir)
    print(f"length-skewed: {skewed['useful']} useful tokens; static {skewed['static']:.2f} s, "
          f"continuous {skewed['continuous']:.2f} s, transformers {skewed['transformers']:.2f} s",
          flush=True)

  shared = None
  if FLAGS.shared_batch:
    shared = run_shared_prefix(config, params, strategy)
    print(f"shared prefix: {shared[0]:.2f} s without, {shared[1]:.2f} s with", flush=True)
  state.finish()

  header = ("| batch | meta_rewarding tok/s | transformers tok/s | speed-up | ms / token step "
            "| roofline ms / step | roofline fraction (ours) | roofline fraction (transformers) "
            "| weights read (ours) |")
  lines = [header, "|" + "---|" * 9]
  for r in rows:
    lines.append(f"| {r['batch']} | {r['ours']:.1f} | {r['theirs']:.1f} | {r['speedup']:.2f}x | "
                 f"{r['ms_step']:.2f} | {r['roofline_ms']:.2f} | {100 * r['roofline']:.0f}% | "
                 f"{100 * r['hf_roofline']:.0f}% | {r['weight_rate'] / 1e9:.1f} GB/s = "
                 f"{100 * r['weight_rate'] / bandwidth:.0f}% |")
  table = "\n".join(lines) if rows else "(no --batch_sizes: the fixed-length section was skipped)"
  if shared:
    table += (
        "\n\nShared-prefix prefill (the judge / meta-judge case), through `Sampler.generate`: "
        f"{FLAGS.shared_batch} prompts = one common {FLAGS.shared_prefix_len}-token prefix + "
        f"{FLAGS.shared_suffix_len} own tokens each, {FLAGS.shared_new_tokens} new tokens, one batch.\n\n"
        "| share_prefix=False | share_prefix=True | speed-up |\n|---|---|---|\n"
        f"| {shared[0]:.2f} s | {shared[1]:.2f} s | {shared[0] / shared[1]:.2f}x |")
  if skewed:
    table += "\n\n" + skewed_table(skewed)
  print(table)
  if FLAGS.output:
    versions = f"jax {jax.__version__}"
    try:
      import torch
      import transformers
      versions += (f", torch {torch.__version__}, transformers {transformers.__version__} "
                   f"(run on {torch_device()})")
    except ImportError:
      pass
    sampling_desc = "greedy" if FLAGS.greedy else (
        f"temperature {TEMPERATURE}, top-k {TOP_K}, top-p {TOP_P}")
    text = f"""# Decode throughput

`python -m bench.decode {' '.join(sys.argv[1:])}`

- device: {device}; {state.describe()} (both frameworks ran interleaved, so compare within a row)
- versions: {versions}
- model: Llama, {config.num_params() / 1e6:.1f}M params (vocab {config.vocab_size}, hidden {config.hidden_size}, \
{config.num_hidden_layers} layers, {config.num_attention_heads} heads / {config.num_key_value_heads} kv heads, \
mlp {config.intermediate_size}), {FLAGS.dtype} weights and compute
- work: {FLAGS.prompt_len}-token prompts, exactly {FLAGS.new_tokens} new tokens per row, {sampling_desc}; \
tokens/s = generated tokens / wall time of the whole call (prefill included), best of {FLAGS.repeats} \
rounds, the two frameworks alternating within each round
- measured: matmul {flops / 1e9:.1f} GFLOP/s, memory read bandwidth {bandwidth / 1e9:.1f} GB/s; roofline per \
step = max(2 x {matmul_params / 1e6:.1f}M x batch FLOPs at that rate, {weight_bytes / 1e6:.0f} MB of weights at \
that bandwidth), plus the prefill's FLOPs; weights read = {weight_bytes / 1e6:.0f} MB x new tokens / wall \
time of the call, and its share of the measured bandwidth (the prefill is inside that time, so it \
is a lower bound)

{table}
"""
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w") as f:
      f.write(text)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
