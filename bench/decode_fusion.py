"""Decode-step microbenchmark on XLA:CPU: fused q/k/v and gate/up projections, and the continuous
sampler's decode block (issue 17: "measure what fusing ... and a larger decode block give").

  python -m bench.decode_fusion                         # all sections, bench/decode.py's model
                                                        # (2-core CPU: ~10 min, ~7 of them
                                                        # the block section)
  python -m bench.decode_fusion --sections=matmul,step  # only the projections / the decode step
  python -m bench.decode_fusion --sections=block        # only the decode block
  python -m bench.decode_fusion --hlo                   # also count the dots XLA emits per step

The model is bench/decode.py's (vocab 32000, hidden 512, mlp 1536, 6 layers, 8 heads / 4 kv heads,
float32), random weights. Every time is the best of --repeats rounds after a compile run, the
variants alternating within a round (a shared machine's quiet and busy moments fall on all of
them). The 1-minute load average before and after, the cores and XLA's flags are printed.

Sections:
  matmul  The projections of all L layers alone, x [B, D] against distinct per-layer weights (so
          they stream from memory as in a real step), 32 times in a `fori_loop` (loop-invariant
          weights, as in the decode loop): separate (q, k, v: 3 dots; gate, up: 2 dots) vs fused
          (one [D, K, G+2, H] dot: each kv head's G query heads, its key and its value; one
          [D, 2, F] dot). ms per step.
  gemm    One weight shape ([D, 2F], 6 distinct copies) at batch 1 and B, stored [D, N] and [N, D]:
          weight GB/s and GFLOP/s, i.e. whether a small-M product is bound by memory, FLOPs or
          neither.
  step    A whole greedy decode step (embed, L layers with the KV cache [B, K, S, H] written at one
          slot, LM head, argmax), 32 steps in a `fori_loop`: the real model (`Llama.apply`, as the
          decode loop calls it) and this file's copy of its decode path with the projections
          separate, fused, and with the dense weights stored [out, in] (all but o: the `gemm` lead). The
          copy, unfused, is checked against the real model (same logits),
          and its time against the real model's: the fused figure is only meaningful if they match.
  block   `Sampler.generate` of B prompts of --prompt_len tokens, exactly --new_tokens each
          (no stop ids), static and continuous at each --blocks decode block; and the
          length-skewed workload of bench/decode.py (lognormal lengths, forced stop) continuous at
          each block. Seconds per call.
Results and conclusions: bench/results/decode_fusion.md (written by hand from this output; in
short: fusion did not pay on XLA:CPU, nor did a longer decode block, so neither is built).
"""

from __future__ import annotations

import functools
import os
import time

from absl import app, flags

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from meta_rewarding import sampling, strategies  # noqa: E402
from meta_rewarding.model import llama  # noqa: E402
from meta_rewarding.model.config import LlamaConfig  # noqa: E402
from meta_rewarding.model.llama import init_params  # noqa: E402
from meta_rewarding.model.config import rope_inverse_frequencies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sections", ["matmul", "gemm", "step", "block"], "Sections to run.")
flags.DEFINE_integer("batch", 16, "Decode rows.")
flags.DEFINE_integer("cache", 192, "KV cache slots (S) of the step section.")
flags.DEFINE_integer("steps", 32, "Decode steps per timed call (matmul, step).")
flags.DEFINE_integer("repeats", 7, "Timed rounds (matmul, step); the best is reported.")
flags.DEFINE_integer("block_repeats", 3, "Timed rounds of the block section.")
flags.DEFINE_list("blocks", ["32", "64", "128"], "Decode blocks of the block section.")
flags.DEFINE_integer("prompt_len", 64, "block: prompt tokens.")
flags.DEFINE_integer("new_tokens", 128, "block: generated tokens per row.")
flags.DEFINE_integer("skewed_prompts", 128, "block: prompts of the length-skewed run (0: skip).")
flags.DEFINE_bool("hlo", False, "Count the dot ops in the optimised HLO of each step variant.")


def config() -> LlamaConfig:
  return LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
                     num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                     rope_theta=500000.0, dtype="float32", param_dtype="float32",
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)


def best_interleaved(fns, repeats):
  for fn in fns:
    fn()  # compile
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for k, fn in enumerate(fns):
      t = time.perf_counter()
      fn()
      best[k] = min(best[k], time.perf_counter() - t)
  return best


def fuse_layer(p, c: LlamaConfig):
  """One layer's {"qkv": [D,K,G+2,H], "gate_up": [D,2,F]} from its separate weights."""
  D, K, G, H = c.hidden_size, c.num_key_value_heads, c.num_groups, c.head_dim
  a, m = p["attn"], p["mlp"]
  q = a["q"].reshape(D, K, G, H)
  qkv = jnp.concatenate([q, a["k"][:, :, None], a["v"][:, :, None]], axis=2)
  return {"qkv": qkv, "gate_up": jnp.stack([m["gate"], m["up"]], axis=1)}


# ------------------------------------------------------------------------------------------------
# matmul: the projections alone.

def projections(weights, x, fused: bool, c: LlamaConfig):
  """x [B,D] through each layer's q/k/v and gate/up, and back to [B,D] with elementwise ops (the
  products' consumers, as in the model: XLA may fuse them into the dots)."""
  B, D, K, G, H = x.shape[0], c.hidden_size, c.num_key_value_heads, c.num_groups, c.head_dim
  for w in weights:
    if fused:
      qkv = jnp.einsum("BD,DKEH->BKEH", x, w["qkv"])
      q = qkv[:, :, :G].reshape(B, K * G * H)
      k, v = qkv[:, :, G].reshape(B, K * H), qkv[:, :, G + 1].reshape(B, K * H)
      gu = jnp.einsum("BD,DEF->BEF", x, w["gate_up"])
      g, u = gu[:, 0], gu[:, 1]
    else:
      q = jnp.einsum("BD,DNH->BNH", x, w["q"]).reshape(B, -1)
      k = jnp.einsum("BD,DKH->BKH", x, w["k"]).reshape(B, -1)
      v = jnp.einsum("BD,DKH->BKH", x, w["v"]).reshape(B, -1)
      g = jnp.einsum("BD,DF->BF", x, w["gate"])
      u = jnp.einsum("BD,DF->BF", x, w["up"])
    attn = q[:, :D] + jnp.concatenate([k, v], axis=1)[:, :D]
    mlp = (jax.nn.silu(g) * u).reshape(B, -1, D).sum(1)
    x = x + 1e-3 * (attn + mlp)
  return x


def run_matmul(c: LlamaConfig, params):
  layers = [params[f"layers_{i}"] for i in range(c.num_hidden_layers)]
  separate = [dict(q=l["attn"]["q"], k=l["attn"]["k"], v=l["attn"]["v"], gate=l["mlp"]["gate"],
                   up=l["mlp"]["up"]) for l in layers]
  fused = [fuse_layer(l, c) for l in layers]
  x0 = jax.random.normal(jax.random.key(1), (FLAGS.batch, c.hidden_size), jnp.float32)

  def looped(weights, is_fused):
    @jax.jit
    def f(weights, x):
      def body(_, x):  # the next x depends on this step's products: no hoisting out of the loop
        return projections(weights, x, is_fused, c)
      return jax.lax.fori_loop(0, FLAGS.steps, body, x)
    return lambda: f(weights, x0).block_until_ready()

  t_sep, t_fus = best_interleaved([looped(separate, False), looped(fused, True)], FLAGS.repeats)
  n = FLAGS.steps
  print(f"[matmul] B={FLAGS.batch}: q/k/v + gate/up of {c.num_hidden_layers} layers per step: "
        f"separate {1e3 * t_sep / n:.3f} ms, fused {1e3 * t_fus / n:.3f} ms "
        f"({100 * (t_sep - t_fus) / t_sep:+.1f}% saved)", flush=True)
  D, F = c.hidden_size, c.intermediate_size
  cols = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim + 2 * F
  flops = 2 * FLAGS.batch * D * cols * c.num_hidden_layers
  wbytes = 4 * D * cols * c.num_hidden_layers
  for name, t in (("separate", t_sep), ("fused", t_fus)):
    print(f"[matmul]   {name}: {flops * n / t / 1e9:.1f} GFLOP/s, weights {wbytes * n / t / 1e9:.1f} "
          f"GB/s ({wbytes / 1e6:.0f} MB of weights per step)", flush=True)


# ------------------------------------------------------------------------------------------------
# step: a whole decode step.

def rms(x, scale, eps):
  return scale * (x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps))


def copy_step(c: LlamaConfig, params, fused_w, cache, token, position, visible, slot, fused: bool):
  """The model's decode path (T = 1; model/llama.py), written out; fused: the fused projections."""
  K, G, H = c.num_key_value_heads, c.num_groups, c.head_dim
  B = token.shape[0]
  inv_freq = jnp.asarray(rope_inverse_frequencies(c), jnp.float32)
  positions = position[:, None]
  x = jnp.take(params["embed"], token[:, None], axis=0)  # [B,1,D]
  mask = visible[:, None, None, None, :]                  # [B,1,1,T=1,S]
  new_cache = []
  for i in range(c.num_hidden_layers):
    p = params[f"layers_{i}"]
    a, m = p["attn"], p["mlp"]
    h = rms(x, p["attn_norm"]["scale"], c.rms_norm_eps)
    if fused == "transposed":  # weights stored [out, in]
      t = fused_w["t"][i]
      q = jnp.einsum("BTD,NHD->BTNH", h, t["q"])
      k = jnp.einsum("BTD,KHD->BTKH", h, t["k"])
      v = jnp.einsum("BTD,KHD->BTKH", h, t["v"])
    elif fused:
      qkv = jnp.einsum("BTD,DKEH->BTKEH", h, fused_w["fused"][i]["qkv"])
      q = qkv[:, :, :, :G].reshape(B, 1, K * G, H)
      k, v = qkv[:, :, :, G], qkv[:, :, :, G + 1]
    else:
      q = jnp.einsum("BTD,DNH->BTNH", h, a["q"])
      k = jnp.einsum("BTD,DKH->BTKH", h, a["k"])
      v = jnp.einsum("BTD,DKH->BTKH", h, a["v"])
    q = llama.apply_rope(q, positions, inv_freq)
    k = jnp.swapaxes(llama.apply_rope(k, positions, inv_freq), 1, 2)
    v = jnp.swapaxes(v, 1, 2)
    ck = jax.lax.dynamic_update_slice_in_dim(cache[i]["k"], k, slot, axis=2)
    cv = jax.lax.dynamic_update_slice_in_dim(cache[i]["v"], v, slot, axis=2)
    new_cache.append({"k": ck, "v": cv})
    q = q.reshape(B, 1, K, G, H)
    logits = jnp.einsum("BTKGH,BKSH->BKGTS", q, ck) * (H ** -0.5)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask.any(axis=-1, keepdims=True), probs, 0)
    out = jnp.einsum("BKGTS,BKSH->BKGTH", probs, cv)
    x = x + llama.output_projection(out, a["o"], per_kv_head=True)
    h = rms(x, p["mlp_norm"]["scale"], c.rms_norm_eps)
    if fused == "transposed":
      gate = jnp.einsum("BTD,FD->BTF", h, t["gate"])
      up = jnp.einsum("BTD,FD->BTF", h, t["up"])
      x = x + jnp.einsum("BTF,DF->BTD", jax.nn.silu(gate) * up, t["down"])
      continue
    if fused:
      gu = jnp.einsum("BTD,DEF->BTEF", h, fused_w["fused"][i]["gate_up"])
      gate, up = gu[:, :, 0], gu[:, :, 1]
    else:
      gate = jnp.einsum("BTD,DF->BTF", h, m["gate"])
      up = jnp.einsum("BTD,DF->BTF", h, m["up"])
    x = x + jnp.einsum("BTF,FD->BTD", jax.nn.silu(gate) * up, m["down"])
  x = rms(x, params["final_norm"]["scale"], c.rms_norm_eps)
  if fused == "transposed":
    logits = jnp.einsum("BTD,VD->BTV", x, fused_w["lm_head_t"])
  else:
    logits = jnp.einsum("BTD,DV->BTV", x, params["lm_head"])
  return logits[:, 0], tuple(new_cache)


def real_step(c: LlamaConfig, params, fused_w, cache, token, position, visible, slot, fused):
  del fused_w, fused
  logits, cache = llama.Llama(c).apply({"params": params}, token[:, None], position[:, None],
                                       visible[:, None, :], cache=cache, cache_index=slot)
  return logits[:, 0], cache


def decode_loop(step_fn, c: LlamaConfig, fused: bool):
  """`steps` greedy steps from slot S - steps (the earlier slots visible, as after a prefill)."""
  @jax.jit
  def f(params, fused_w, cache, token):
    S = cache[0]["k"].shape[2]
    start = S - FLAGS.steps

    def body(t, carry):
      cache, token = carry
      slot = start + t
      visible = jnp.broadcast_to(jnp.arange(S) <= slot, (token.shape[0], S))
      position = jnp.full(token.shape, slot, jnp.int32)
      logits, cache = step_fn(c, params, fused_w, cache, token, position, visible, slot, fused)
      return cache, jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.lax.fori_loop(0, FLAGS.steps, body, (cache, token))
  return f


def count_dots(fn, *args) -> str:
  text = fn.lower(*args).compile().as_text()
  dots = text.count(" dot(") + text.count("custom-call-target=\"__onednn")
  return f"{dots} dot ops"


def run_step(c: LlamaConfig, params):
  B, S = FLAGS.batch, FLAGS.cache
  rng = np.random.default_rng(0)
  layers = [params[f"layers_{i}"] for i in range(c.num_hidden_layers)]
  # The fused layout; and every dense weight but o stored [out, in] (a copy, not a view).
  tr = lambda w, axes: jnp.asarray(np.ascontiguousarray(np.transpose(np.asarray(w), axes)))
  fused_w = {"fused": [fuse_layer(l, c) for l in layers],
             "t": [dict(q=tr(l["attn"]["q"], (1, 2, 0)), k=tr(l["attn"]["k"], (1, 2, 0)),
                        v=tr(l["attn"]["v"], (1, 2, 0)), gate=tr(l["mlp"]["gate"], (1, 0)),
                        up=tr(l["mlp"]["up"], (1, 0)), down=tr(l["mlp"]["down"], (1, 0)))
                   for l in layers],
             "lm_head_t": tr(params["lm_head"], (1, 0))}
  # A filled cache (random keys / values), as after a prefill.
  cache = tuple({n: jnp.asarray(rng.standard_normal((B, c.num_key_value_heads, S, c.head_dim)),
                                jnp.float32) for n in ("k", "v")} for _ in range(c.num_hidden_layers))
  token = jnp.asarray(rng.integers(3, c.vocab_size, B), jnp.int32)

  # The copy computes what the model computes: one step's logits.
  visible = jnp.broadcast_to(jnp.arange(S) <= S - 1, (B, S))
  position = jnp.full((B,), S - 1, jnp.int32)
  ref = jax.jit(functools.partial(real_step, c, fused=False))(params, None, cache, token, position,
                                                                visible, S - 1)[0]
  for fused in (False, True, "transposed"):
    got = jax.jit(functools.partial(copy_step, c, fused=fused))(params, fused_w, cache, token,
                                                                  position, visible, S - 1)[0]
    err = float(jnp.max(jnp.abs(got - ref)))
    print(f"[step] copy (fused={fused}) vs model: max |logit diff| {err:.2e}", flush=True)
    assert err < 1e-3, err

  variants = {"model (Llama.apply)": decode_loop(real_step, c, False),
              "copy, separate": decode_loop(copy_step, c, False),
              "copy, fused": decode_loop(copy_step, c, True),
              "copy, [out, in] weights": decode_loop(copy_step, c, "transposed")}
  if FLAGS.hlo:
    for name, f in variants.items():
      print(f"[step] {name}: {count_dots(f, params, fused_w, cache, token)} in the loop program")
  calls = [functools.partial(lambda f: jax.block_until_ready(f(params, fused_w, cache, token)), f)
           for f in variants.values()]
  times = best_interleaved(calls, FLAGS.repeats)
  base = times[1]
  for name, t in zip(variants, times):
    print(f"[step] B={B} S={S}: {name}: {1e3 * t / FLAGS.steps:.2f} ms/step "
          f"({100 * (base - t) / base:+.1f}% vs copy, separate)", flush=True)




# ------------------------------------------------------------------------------------------------
# gemm: one weight shape at batch 1 and B, in both storage orders.

def run_gemm(c: LlamaConfig, params):
  """L distinct [D, 2F] weights (the fused gate/up's size), x [b, D] through them `steps` times:
  ms per step, weight GB/s and GFLOP/s at b = 1 and b = B, weights stored [D, N] (the model's) and
  [N, D]. Says whether a small-M product is bound by memory, by FLOPs, or by neither."""
  del params
  D, N, L, steps = c.hidden_size, 2 * c.intermediate_size, c.num_hidden_layers, FLAGS.steps
  rng = np.random.default_rng(0)
  w_dn = [jnp.asarray(0.02 * rng.standard_normal((D, N)), jnp.float32) for _ in range(L)]
  w_nd = [jnp.asarray(np.asarray(w).T.copy()) for w in w_dn]

  def looped(ws, eq, b):
    x0 = jnp.asarray(rng.standard_normal((b, D)), jnp.float32)

    @jax.jit
    def f(ws, x):
      def body(_, x):
        for w in ws:
          x = x + 1e-3 * jnp.einsum(eq, x, w).reshape(b, -1, D).sum(1)
        return x
      return jax.lax.fori_loop(0, steps, body, x)
    return lambda: f(ws, x0).block_until_ready()

  variants = [(f"[D,N] b={b}", looped(w_dn, "BD,DN->BN", b), b) for b in (1, FLAGS.batch)]
  variants += [(f"[N,D] b={b}", looped(w_nd, "BD,ND->BN", b), b) for b in (1, FLAGS.batch)]
  times = best_interleaved([v[1] for v in variants], FLAGS.repeats)
  mb = 4 * D * N * L / 1e6
  for (name, _, b), t in zip(variants, times):
    print(f"[gemm] {name}: {1e3 * t / steps:.2f} ms/step for {mb:.0f} MB of weights: "
          f"{mb * steps / t / 1e3:.1f} GB/s, {2 * b * D * N * L * steps / t / 1e9:.1f} GFLOP/s",
          flush=True)
# ------------------------------------------------------------------------------------------------
# block: the continuous sampler's decode block.

def run_block(c: LlamaConfig, params):
  strategy = strategies.Sampling(temperature=0.8, top_k=64, top_p=0.95)
  rng = np.random.default_rng(16)
  prompts = rng.integers(3, c.vocab_size, (FLAGS.batch, FLAGS.prompt_len)).tolist()
  blocks = [int(b) for b in FLAGS.blocks]
  samplers = [("static", sampling.Sampler(c, params, None, batch_size=FLAGS.batch,
                                          batching="static"))]
  samplers += [(f"continuous, decode_block {b}", sampling.Sampler(
      c, params, None, batch_size=FLAGS.batch, batching="continuous", decode_block=b))
      for b in blocks]

  def call(s):
    out = s.generate(prompts, strategy=strategy, max_new_tokens=FLAGS.new_tokens, seed=0,
                     stop_ids=(), progress=False)
    assert all(cs[0].num_tokens == FLAGS.new_tokens for cs in out)
  times = best_interleaved([functools.partial(call, s) for _, s in samplers], FLAGS.block_repeats)
  for (name, _), t in zip(samplers, times):
    print(f"[block] {FLAGS.batch} prompts x {FLAGS.new_tokens} tokens, {name}: {t:.2f} s "
          f"({1e3 * t / FLAGS.new_tokens:.2f} ms per step, prefill included)", flush=True)

  if not FLAGS.skewed_prompts:
    return
  from bench import decode as bench_decode  # the length-skewed workload's strategy
  M = 128
  hz = bench_decode.hazard(bench_decode.skewed_length_pmf(M, 32.0, 0.8))
  forced = bench_decode.ForcedLength(base=strategy, stop_id=2, hazard=hz)
  skewed = rng.integers(3, c.vocab_size, (FLAGS.skewed_prompts, FLAGS.prompt_len)).tolist()
  runs = [sampling.Sampler(c, params, None, batch_size=FLAGS.batch, batching="continuous",
                           decode_block=b) for b in blocks]
  stats = {}

  def skewed_call(k):
    out = runs[k].generate(skewed, strategy=forced, max_new_tokens=M, seed=0, stop_ids=(2,),
                           progress=False)
    stats[k] = (sum(cs[0].num_tokens for cs in out), runs[k].last_stats)
  times = best_interleaved([functools.partial(skewed_call, k) for k in range(len(blocks))],
                           FLAGS.block_repeats)
  for k, (b, t) in enumerate(zip(blocks, times)):
    useful, st = stats[k]
    print(f"[block] skewed, {FLAGS.skewed_prompts} prompts on {FLAGS.batch} rows, decode_block {b}: "
          f"{t:.2f} s, {useful / t:.1f} useful tok/s, utilisation {100 * st.utilisation:.1f}%, "
          f"{st.decode_steps} decode steps", flush=True)


def main(argv):
  del argv
  print(f"load before: {os.getloadavg()}; cores {len(os.sched_getaffinity(0))}; "
        f"jax {jax.__version__} ({jax.default_backend()}); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  c = config()
  params = init_params(c, jax.random.key(0))
  for section, fn in (("matmul", run_matmul), ("gemm", run_gemm), ("step", run_step),
                      ("block", run_block)):
    if section in FLAGS.sections:
      fn(c, params)
      print(f"load after {section}: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
  app.run(main)
