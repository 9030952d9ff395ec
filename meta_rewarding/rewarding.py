"""From parsed judgments to preference pairs: scores, length-controlled actor pairs, meta-judge
battles, position-debiased Elo, judge pairs (docs/design.md#one-iteration, steps 3-5), plus the judge/meta-judge
statistics the iteration report needs (4.3).

Every function is a pure, deterministic function of its inputs (Python + numpy float64, no jax,
no randomness), so any number in an iteration's report can be recomputed offline from the stored
judgments.

Conventions: a score of ``None`` means "no valid judgment" (a parse failure); a battle is a tuple
``(a, b, winner)`` where ``a`` is the index of the judgment shown in the first position
("Judgment A"), ``b`` the one in the second, and ``winner`` is ``"A"``, ``"B"`` or ``None`` (the
meta-judgment did not parse). Indices refer to one prompt's list of valid judgments.

Typical use for one prompt (meta-judge step)::

    r = highest_variance_response(per_response_scores)
    valid = [j for j, s in enumerate(per_response_scores[r]) if s is not None]
    orders = battle_orders(range(len(valid)))         # ask the meta-judge about each (a, b)
    battles = [(a, b, parse_winner(text)) for (a, b), text in zip(orders, meta_judgments)]
    # ... once the whole iteration's battles are in:
    w1, w2 = position_weights(*count_position_wins(all_battles_of_the_iteration))
    pair = judge_pair_from_battles(len(valid), battles, w1, w2, lengths, max_chosen_chars)
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence

import numpy as np

# Absolute tolerance of the actor-pair score bounds (docs/design.md#step-4-actor-pairs-with-length-control).
SCORE_TOL = 1e-9
# Two Elo scores closer than this are a tie (Newton converges to ~1e-12; this is far above noise
# and far below any difference one battle makes).
ELO_TIE_TOL = 1e-9
# Variances closer than this are a tie (they are computed with math.fsum, so permutations of the
# same scores give bit-identical variances anyway).
VARIANCE_TIE_TOL = 1e-12


# --------------------------------------------------------------------------------------------
# Input checks.

def _is_real(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_score(name, s):
  if s is None:
    return None
  if not _is_real(s) or not math.isfinite(s):
    raise ValueError(f"{name} must be a finite number or None, got {s!r}")
  return float(s)


def _check_scores(name, scores):
  return [_check_score(f"{name}[{i}]", s) for i, s in enumerate(scores)]


def _check_rho(rho):
  if not _is_real(rho) or not 0.0 <= rho < 0.5:
    raise ValueError(f"rho must be in [0, 0.5), got {rho!r}")
  return float(rho)


def _check_winner(winner):
  if winner not in ("A", "B", None):
    raise ValueError(f"a battle's winner must be 'A', 'B' or None, got {winner!r}")
  return winner


# --------------------------------------------------------------------------------------------
# Judge scores and actor pairs (steps 3-4).

def response_score(judgment_scores: Sequence[float | None]) -> float | None:
  """Mean of a response's valid judge scores; None when no judgment parsed."""
  valid = [s for s in _check_scores("judgment_scores", judgment_scores) if s is not None]
  if not valid:
    return None
  return math.fsum(valid) / len(valid)


def select_actor_pair(scores: Sequence[float | None], lengths: Sequence[float],
                      rho: float) -> tuple[int, int] | None:
  """Length-controlled (chosen, rejected) response indices for one prompt, or None.

  Over the responses with a score (``None`` = no valid judgment, ignored): S_max, S_min; no pair
  with fewer than two scored responses or S_max = S_min. Chosen = the shortest response with
  score >= (1-rho)·S_max + rho·S_min; rejected = the longest with score <= (1-rho)·S_min +
  rho·S_max (both bounds with a 1e-9 tolerance). Length ties break on the higher (chosen) / lower
  (rejected) score, then the lower index. rho = 0 is plain best-vs-worst.

  Scores within 1e-9 count as equal throughout (means of the same judge scores summed in another
  order differ by rounding only): S_max − S_min <= 1e-9 is "S_max = S_min". For rho < 0.5 the two
  bounds are (1−2rho)(S_max−S_min) > 0 apart, so the chosen and rejected sets are disjoint; only
  the tolerance could let them overlap. A pair whose chosen score is not above its rejected score
  by more than 1e-9 is no preference, so it gives None (this covers chosen == rejected).

  ``lengths`` is in whatever unit the caller controls for (characters or tokens).
  """
  rho = _check_rho(rho)
  scores = _check_scores("scores", scores)
  if len(lengths) != len(scores):
    raise ValueError(f"scores and lengths differ in length: {len(scores)} != {len(lengths)}")
  for i, n in enumerate(lengths):
    if not _is_real(n) or not math.isfinite(n) or n < 0:
      raise ValueError(f"lengths[{i}] must be a finite non-negative number, got {n!r}")
  scored = [i for i, s in enumerate(scores) if s is not None]
  if len(scored) < 2:
    return None
  s_max = max(scores[i] for i in scored)
  s_min = min(scores[i] for i in scored)
  if s_max - s_min <= SCORE_TOL:
    return None
  upper = (1.0 - rho) * s_max + rho * s_min
  lower = (1.0 - rho) * s_min + rho * s_max
  chosen_pool = [i for i in scored if scores[i] >= upper - SCORE_TOL]
  rejected_pool = [i for i in scored if scores[i] <= lower + SCORE_TOL]
  chosen = min(chosen_pool, key=lambda i: (lengths[i], -scores[i], i))
  rejected = min(rejected_pool, key=lambda i: (-lengths[i], scores[i], i))
  if scores[chosen] - scores[rejected] <= SCORE_TOL:
    return None
  return chosen, rejected


def _variance(xs):
  mean = math.fsum(xs) / len(xs)
  return math.fsum((x - mean) ** 2 for x in xs) / len(xs)


def highest_variance_response(
    per_response_scores: Sequence[Sequence[float | None]]) -> int | None:
  """Index of the response whose valid judge scores vary most: the one the meta-judge studies.

  Variance is the population variance (divide by n) of the response's valid scores, computed
  with exactly rounded sums so it does not depend on the order of the judgments. Responses with
  fewer than two valid scores are not eligible (no judgments to compare). Ties (within 1e-12)
  go to the lowest index. None if no response is eligible. A winner with variance 0 is still
  returned: its judgments agree on the number but may differ in their reasoning; whether such a
  prompt is worth meta-judging is the caller's decision.
  """
  variances = []
  for r, scores in enumerate(per_response_scores):
    valid = [s for s in _check_scores(f"per_response_scores[{r}]", scores) if s is not None]
    variances.append(_variance(valid) if len(valid) >= 2 else None)
  eligible = [v for v in variances if v is not None]
  if not eligible:
    return None
  best_var = max(eligible)
  return next(r for r, v in enumerate(variances)
              if v is not None and v >= best_var - VARIANCE_TIE_TOL)


# --------------------------------------------------------------------------------------------
# Meta-judge battles, position weights, Elo, judge pairs (step 5).

def battle_orders(valid_judgment_indices: Sequence[int]) -> list[tuple[int, int]]:
  """Every unordered pair {m, n} of the given judgments, in both orders: (m, n) then (n, m).

  Indices are sorted first; pairs come in lexicographic order with their two orders adjacent:
  [0, 1, 2] -> (0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1). Each tuple is (first position "A",
  second position "B"). N judgments give N(N-1) battles.
  """
  idx = []
  for i in valid_judgment_indices:
    if not isinstance(i, numbers.Integral) or isinstance(i, bool):
      raise ValueError(f"judgment indices must be integers, got {i!r}")
    idx.append(int(i))
  if len(set(idx)) != len(idx):
    raise ValueError(f"judgment indices must be distinct, got {idx}")
  orders = []
  for m, n in itertools.combinations(sorted(idx), 2):
    orders.append((m, n))
    orders.append((n, m))
  return orders


def count_position_wins(battles) -> tuple[int, int]:
  """(wins in the first position, wins in the second position) over battles; None winners skipped."""
  first = second = 0
  for _, _, winner in battles:
    winner = _check_winner(winner)
    if winner == "A":
      first += 1
    elif winner == "B":
      second += 1
  return first, second


def position_weights(wins_first: float, wins_second: float) -> tuple[float, float]:
  """Weights (w1, w2) for a win in the first / second position (docs/design.md#step-5-judge-pairs-via-the-meta-judge).

  w1 = wins_second / (wins_first + wins_second), w2 = wins_first / (wins_first + wins_second), so
  w1 + w2 = 1 and the weighted totals of the two positions are equal (w1·wins_first =
  w2·wins_second): a meta-judge that favours the first position has its first-position wins
  discounted.

  Degenerate cases: no wins at all -> (0.5, 0.5) (no evidence of bias; nothing is weighted
  anyway). Wins in one position only -> the literal formula, e.g. (0.0, 1.0) when every win was
  in the first position. That is deliberate: a meta-judge that always says "A" tells us nothing
  about which judgment is better, so its verdicts get zero weight, the battle matrix is zero,
  all Elo scores tie, and no judge pair is built.
  """
  for name, v in (("wins_first", wins_first), ("wins_second", wins_second)):
    if not _is_real(v) or not math.isfinite(v) or v < 0:
      raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
  total = float(wins_first) + float(wins_second)
  if total == 0:
    return 0.5, 0.5
  return float(wins_second) / total, float(wins_first) / total


def battle_matrix(num_judgments: int, battles, w1: float, w2: float) -> np.ndarray:
  """Weighted win matrix ``B[m, n]`` (float64 ``[N, N]``) from one prompt's battles.

  B[m, n] += w1 for each battle where m, in the first position, beat n; += w2 for each where m,
  in the second position, beat n. Battles with winner None (unparsed) add nothing.
  """
  if not isinstance(num_judgments, numbers.Integral) or num_judgments < 0:
    raise ValueError(f"num_judgments must be a non-negative integer, got {num_judgments!r}")
  for name, w in (("w1", w1), ("w2", w2)):
    if not _is_real(w) or not math.isfinite(w) or w < 0:
      raise ValueError(f"{name} must be a finite non-negative number, got {w!r}")
  wins = np.zeros((num_judgments, num_judgments), np.float64)
  for battle in battles:
    a, b, winner = battle
    for i in (a, b):
      if not isinstance(i, numbers.Integral) or isinstance(i, bool) or not 0 <= i < num_judgments:
        raise ValueError(f"battle {battle!r}: index {i!r} not in [0, {num_judgments})")
    if a == b:
      raise ValueError(f"battle {battle!r}: a judgment cannot battle itself")
    winner = _check_winner(winner)
    if winner == "A":
      wins[a, b] += w1
    elif winner == "B":
      wins[b, a] += w2
  return wins


def _sigmoid(x):
  # Full relative precision in both tails (1 + tanh(x/2) would cancel for x << 0, and the
  # gradient near a lopsided optimum is made of such tiny terms).
  z = np.exp(-np.abs(x))
  return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def _elo_objective(eps, wins, l2):
  d = eps[:, None] - eps[None, :]
  # log σ(d) = -log(1 + e^{-d}); the diagonal of wins is zero here.
  return -np.sum(wins * np.logaddexp(0.0, -d)) - 0.5 * l2 * np.dot(eps, eps)


def elo_gradient(eps: np.ndarray, wins: np.ndarray, l2: float = 1e-3) -> np.ndarray:
  """Gradient of the Elo objective (see ``elo_scores``) at ``eps``; zero at the optimum.

  d/dε_k = Σ_n W[k,n]·σ(ε_n−ε_k) − Σ_m W[m,k]·σ(ε_k−ε_m) − l2·ε_k. The first two terms cancel in
  the sum over k, so Σ_k grad_k = −l2·Σε: a zero gradient forces Σε = 0.
  """
  eps = np.asarray(eps, np.float64)
  wins = _check_wins(wins)
  np.fill_diagonal(wins, 0.0)
  r = wins * _sigmoid(eps[None, :] - eps[:, None])  # r[m, n] = W[m, n]·σ(ε_n − ε_m)
  return r.sum(axis=1) - r.sum(axis=0) - l2 * eps


def _check_wins(wins):
  w = np.array(wins, dtype=np.float64, copy=True)
  if w.ndim != 2 or w.shape[0] != w.shape[1]:
    raise ValueError(f"wins must be a square [N, N] matrix, got shape {w.shape}")
  if not np.all(np.isfinite(w)):
    raise ValueError("wins must be finite (found NaN or Inf)")
  if np.any(w < 0):
    raise ValueError("wins must be non-negative")
  return w


def elo_scores(wins, l2: float = 1e-3, *, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
  """Bradley-Terry (Elo) scores ε ``[N]`` from a weighted win matrix (docs/design.md#elo-scores).

  ``wins[m, n]`` is the (weighted) number of battles m won against n. Returns the unique maximiser
  of the concave objective

      f(ε) = Σ_{m≠n} wins[m, n]·log σ(ε_m − ε_n) − (l2/2)·Σ_k ε_k²

  (the diagonal of ``wins`` is ignored). The L2 term makes the maximiser unique and finite even
  when a judgment won all its battles, and centres it: the likelihood is shift-invariant and the
  gradient sums to −l2·Σε, so Σε = 0 at the optimum.

  Solved by damped Newton in float64 from ε = 0: the Hessian is −(L + l2·I) with L the Laplacian of
  the weights (wins[m,n] + wins[n,m])·σ(d)σ(−d), which is negative definite, so each step solves a
  symmetric positive definite system; a backtracking line search keeps f increasing, and iterates
  are re-centred (which never lowers f). Stops when the Newton step is below ``tol`` (relative to
  1 + max|ε|) or no step increases f at float64 precision; deterministic. Raises RuntimeError if
  neither happens in ``max_iter`` steps.
  """
  if not _is_real(l2) or not math.isfinite(l2) or l2 <= 0:
    raise ValueError(f"l2 must be a finite positive number, got {l2!r}")
  w = _check_wins(wins)
  np.fill_diagonal(w, 0.0)
  n = w.shape[0]
  eps = np.zeros(n, np.float64)
  if n == 0:
    return eps
  pair_w = w + w.T
  f = _elo_objective(eps, w, l2)
  for _ in range(max_iter):
    grad = elo_gradient(eps, w, l2)
    d = eps[:, None] - eps[None, :]
    c = pair_w * _sigmoid(d) * _sigmoid(-d)
    hess = np.diag(c.sum(axis=1)) - c + l2 * np.eye(n)  # = −∇²f, SPD with eigenvalues >= l2
    # Solve through eigh with eigenvalues clamped at their true lower bound l2: with lopsided
    # wins and a tiny l2 the matrix is too ill-conditioned for a plain solve (directions such as
    # the offset between judgments that never met have eigenvalue exactly l2).
    vals, vecs = np.linalg.eigh(hess)
    step = vecs @ ((vecs.T @ grad) / np.maximum(vals, l2))
    step -= step.mean()
    if np.max(np.abs(step)) <= tol * (1.0 + np.max(np.abs(eps))):
      return eps + step  # quadratic convergence: this last step is far below its own size
    slope = float(grad @ step)  # = stepᵀ(−∇²f)step: twice the increase Newton predicts
    if 0.5 * slope <= 1e-12 * (1.0 + abs(f)):
      # The predicted increase is below what f can resolve in float64, so a line search on f
      # would stall; this close to the optimum the full Newton step is safe.
      eps = eps + step
      eps -= eps.mean()
      f = _elo_objective(eps, w, l2)
      continue
    # Backtracking (Armijo) line search along the ascent direction.
    t = 1.0
    while t >= 1e-10:
      cand = eps + t * step
      cand -= cand.mean()
      f_cand = _elo_objective(cand, w, l2)
      if f_cand >= f + 1e-4 * t * slope:
        break
      t *= 0.5
    else:
      return eps  # no ascent left at float64 precision: this is the optimum
    eps, f = cand, f_cand
  raise RuntimeError(f"elo_scores did not converge in {max_iter} Newton steps "
                     f"(last step {np.max(np.abs(step)):.3g}); wins max {w.max():.3g}, l2 {l2}")


def select_judge_pair(elo: Sequence[float], judgment_lengths: Sequence[int],
                      max_chosen_chars: int | None) -> tuple[int, int] | None:
  """(chosen, rejected) judgment indices from Elo scores, or None.

  Chosen = argmax ε, rejected = argmin ε, ties (within 1e-9) to the lowest index. None with fewer
  than two judgments, when the two tie (max − min < 1e-9: no battle evidence, e.g. an all-zero
  matrix), or when the chosen judgment is longer than ``max_chosen_chars`` characters (None = no
  limit; a long chosen judgment would teach the judge to ramble).
  """
  elo = np.asarray(elo, np.float64)
  if elo.ndim != 1:
    raise ValueError(f"elo must be 1-D, got shape {elo.shape}")
  if not np.all(np.isfinite(elo)):
    raise ValueError("elo must be finite")
  if len(judgment_lengths) != elo.shape[0]:
    raise ValueError(f"elo and judgment_lengths differ in length: {elo.shape[0]} != "
                     f"{len(judgment_lengths)}")
  if elo.shape[0] < 2:
    return None
  hi, lo = float(elo.max()), float(elo.min())
  if hi - lo < ELO_TIE_TOL:
    return None
  chosen = int(np.flatnonzero(elo >= hi - ELO_TIE_TOL)[0])
  rejected = int(np.flatnonzero(elo <= lo + ELO_TIE_TOL)[0])
  if max_chosen_chars is not None and judgment_lengths[chosen] > max_chosen_chars:
    return None
  return chosen, rejected


def judge_pair_from_battles(num_judgments: int, battles, w1: float, w2: float,
                            judgment_lengths: Sequence[int], max_chosen_chars: int | None,
                            l2: float = 1e-3) -> tuple[int, int] | None:
  """battle_matrix -> elo_scores -> select_judge_pair for one prompt."""
  elo = elo_scores(battle_matrix(num_judgments, battles, w1, w2), l2)
  return select_judge_pair(elo, judgment_lengths, max_chosen_chars)


# --------------------------------------------------------------------------------------------
# Report statistics (docs/design.md#what-each-iteration-reports). Rates are None when their denominator is zero.

def _rate(num, den):
  return num / den if den else None


def first_position_win_rate(battles) -> float | None:
  """Share of decided battles (winner not None) won by the judgment in the first position."""
  first, second = count_position_wins(battles)
  return _rate(first, first + second)


def meta_judge_stats(battles, judgment_scores: Sequence[float | None]) -> dict:
  """Meta-judge report numbers for battles over judgments with the given judge scores.

  ``judgment_scores[i]`` is the score judgment i gave (what separates "same-score" from
  "different-score" battles). Keys: ``battles``, ``parse_failures``, ``parse_failure_rate``,
  ``first_position_win_rate`` (all decided battles), ``first_position_win_rate_same_score``,
  ``first_position_win_rate_diff_score``, ``higher_score_pick_rate`` (decided battles between
  judgments with different scores: share won by the higher-scoring judgment).
  """
  scores = _check_scores("judgment_scores", judgment_scores)
  total = failures = 0
  same, diff = [0, 0], [0, 0]  # [first-position wins, decided battles]
  higher = 0
  for a, b, winner in battles:
    winner = _check_winner(winner)
    total += 1
    if winner is None:
      failures += 1
      continue
    sa, sb = scores[a], scores[b]
    if sa is None or sb is None:
      raise ValueError(f"battle {(a, b, winner)!r} involves a judgment without a score")
    bucket = same if abs(sa - sb) <= SCORE_TOL else diff
    bucket[0] += winner == "A"
    bucket[1] += 1
    if bucket is diff:
      winner_score, loser_score = (sa, sb) if winner == "A" else (sb, sa)
      higher += winner_score > loser_score
  return {
      "battles": total,
      "parse_failures": failures,
      "parse_failure_rate": _rate(failures, total),
      "first_position_win_rate": _rate(same[0] + diff[0], same[1] + diff[1]),
      "first_position_win_rate_same_score": _rate(same[0], same[1]),
      "first_position_win_rate_diff_score": _rate(diff[0], diff[1]),
      "higher_score_pick_rate": _rate(higher, diff[1]),
  }


def judge_score_stats(scores: Sequence[float | None]) -> dict:
  """Judge report numbers over parsed scores (None = parse failure).

  Keys: ``judgments``, ``parse_failures``, ``parse_failure_rate``, ``mean`` (score drift),
  ``fractional_share`` (valid scores that are not whole numbers), ``histogram`` (counts of valid
  scores in the six bins centred on 0..5, i.e. [k−0.5, k+0.5), the last one closed).
  """
  scores = _check_scores("scores", scores)
  valid = [s for s in scores if s is not None]
  hist = [0] * 6
  for s in valid:
    hist[max(0, min(int(math.floor(s + 0.5)), 5))] += 1
  return {
      "judgments": len(scores),
      "parse_failures": len(scores) - len(valid),
      "parse_failure_rate": _rate(len(scores) - len(valid), len(scores)),
      "mean": math.fsum(valid) / len(valid) if valid else None,
      "fractional_share": _rate(sum(s != math.floor(s) for s in valid), len(valid)),
      "histogram": hist,
  }
