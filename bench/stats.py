"""The statistics the benches share: Student's t, paired confidence intervals, a paired bootstrap
and the verdict a confidence interval supports.

Pure Python (numpy only inside `bootstrap_ci`); no scipy, so the benches need nothing the project
does not. Importing this module imports nothing of the project, defines no flags and runs nothing.
bench/testbed.py and bench/ste.py compare paired per-seed differences with it; it is tested by
tests/test_bench_stats.py.
"""

from __future__ import annotations

import math

NO_DECISION = "no decision (CI spans 0)"  # `verdict` of an interval that contains 0, or of none
# `bootstrap_ci`'s defaults: the fixed RNG seed makes a report reproducible.
BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta (modified Lentz; Numerical Recipes 6.4)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c = 1.0
  d = 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  # Converges in O(sqrt(max(a, b))) terms; the cap covers df up to ~1e8.
  for m in range(1, 100000):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    h *= d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    delta = d * c
    h *= delta
    if abs(delta - 1.0) < eps:
      return h
  raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
  """Regularized incomplete beta I_x(a, b)."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
               + b * math.log1p(-x))
  front = math.exp(log_front)
  # The continued fraction converges fast only below the mean; use the symmetry above it.
  if x < (a + 1.0) / (a + b + 2.0):
    return front * _betacf(a, b, x) / a
  return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
  """P(T > t) for Student's t with df degrees of freedom (df = inf: the normal)."""
  if math.isinf(df):
    return 0.5 * math.erfc(t / math.sqrt(2.0))
  # The tail itself (not 1 - cdf) so that far quantiles keep their precision.
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
  return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
  """The p-quantile of Student's t: bisection on the exact tail, to ~1e-12."""
  if not 0.0 < p < 1.0:
    raise ValueError(f"p must be in (0, 1), got {p}")
  if not df > 0:
    raise ValueError(f"df must be > 0, got {df}")
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  q = 1.0 - p
  lo, hi = 0.0, 1.0
  while t_sf(hi, df) > q:  # t_sf falls in t: widen until it brackets q
    lo, hi = hi, 2.0 * hi
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_sf(mid, df) > q:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-12 * max(1.0, hi):
      break
  return 0.5 * (lo + hi)


def clean(values) -> list[float]:
  """The finite numbers among `values` (missing metrics are None or NaN, not zero)."""
  out = []
  for v in values:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      continue
    if math.isfinite(v):
      out.append(float(v))
  return out


def mean_halfwidth(values, confidence: float = 0.95) -> tuple[float, float, int]:
  """(mean, t-interval half-width, n) over the finite values; half-width NaN for n < 2."""
  xs = clean(values)
  n = len(xs)
  if n == 0:
    return math.nan, math.nan, 0
  mean = sum(xs) / n
  if n < 2:
    return mean, math.nan, n
  sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
  return mean, t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n), n


def paired_t_ci(diffs, confidence: float = 0.95) -> tuple[float, float, float]:
  """(mean, lo, hi): the paired-t confidence interval of the mean of per-seed differences.

  Fewer than 2 differences give NaN bounds (no interval, hence no decision).
  """
  mean, half, _ = mean_halfwidth(diffs, confidence)
  return mean, mean - half, mean + half


def bootstrap_ci(diffs, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean difference (seeds resampled with replacement).

  A fixed RNG seed makes the report reproducible. NaN bounds for fewer than 2 differences.
  """
  import numpy as np
  xs = np.asarray(clean(diffs), dtype=np.float64)
  if xs.size < 2:
    return math.nan, math.nan
  rng = np.random.default_rng(seed)
  means = xs[rng.integers(0, xs.size, size=(resamples, xs.size))].mean(axis=1)
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def verdict(lo: float, hi: float, x: str = "X", y: str = "Y") -> str:
  """The call a CI of (X - Y) supports: only an interval that excludes 0 decides."""
  if lo > 0:  # NaN compares False: no interval, no decision
    return f"{x} > {y}"
  if hi < 0:
    return f"{x} < {y}"
  return NO_DECISION
