"""Tests for meta_rewarding.rewarding, with hand-worked expected values."""

import itertools
import math

import numpy as np
import pytest

from meta_rewarding.rewarding import (battle_matrix, battle_orders, count_position_wins,
                                      elo_gradient, elo_scores, first_position_win_rate,
                                      highest_variance_response, judge_pair_from_battles,
                                      judge_score_stats, meta_judge_stats, position_weights,
                                      response_score, select_actor_pair, select_judge_pair)

# ---------------------------------------------------------------------------------------------
# Response scores.


@pytest.mark.parametrize("scores, expected", [
    ([4, 5, 3], 4.0),
    ([4, None, 5, None], 4.5),
    ([0.5], 0.5),
    ([None, None], None),
    ([], None),
    ([4.75, 4.25], 4.5),
])
def test_response_score(scores, expected):
  assert response_score(scores) == expected


def test_response_score_rejects_nan():
  with pytest.raises(ValueError, match="finite"):
    response_score([4, float("nan")])


# ---------------------------------------------------------------------------------------------
# Actor pairs.

# S_max = 5, S_min = 1.5.
#   rho = 0:    chosen >= 5,    rejected <= 1.5
#   rho = 0.32: chosen >= 3.88, rejected <= 2.62   (0.68·5 + 0.32·1.5, 0.68·1.5 + 0.32·5)
#   rho = 0.4:  chosen >= 3.6,  rejected <= 2.9
LC_SCORES = [5, 4.5, 3, 2, 1.5, 3.7, 2.8]
LC_LENGTHS = [100, 60, 40, 80, 90, 20, 200]


@pytest.mark.parametrize("rho, expected", [
    (0.0, (0, 4)),    # plain best vs worst
    (0.32, (1, 4)),   # {0, 1} -> shortest 1;  {3, 4} -> longest 4
    (0.4, (5, 6)),    # {0, 1, 5} -> shortest 5;  {3, 4, 6} -> longest 6
])
def test_select_actor_pair_length_control(rho, expected):
  assert select_actor_pair(LC_SCORES, LC_LENGTHS, rho) == expected


def test_select_actor_pair_bounds_are_inclusive_with_tolerance():
  # rho = 0.32 bounds are 3.88 and 2.62 exactly; float rounding of the bound must not exclude them.
  assert select_actor_pair([5, 3.88, 1.5, 2.62], [9, 1, 5, 8], 0.32) == (1, 3)
  # rho = 0.25 on [0, 4]: bounds 3 and 1.
  assert select_actor_pair([4, 3, 1, 0], [10, 2, 12, 3], 0.25) == (1, 2)
  assert select_actor_pair([4, 3 - 1e-6, 1 + 1e-6, 0], [10, 2, 12, 3], 0.25) == (0, 3)


def test_select_actor_pair_length_ties():
  # rho = 0.4, S in [1, 5]: chosen >= 3.4 -> {0, 1, 2} all length 10 -> higher score: 1;
  # rejected <= 2.6 -> {3, 4, 5} all length 7 -> lower score: 3.
  assert select_actor_pair([4, 5, 4, 1, 2, 2], [10, 10, 10, 7, 7, 7], 0.4) == (1, 3)
  # Same length and same score: lower index.
  assert select_actor_pair([4, 5, 5, 1, 1], [3, 6, 6, 2, 2], 0.0) == (1, 3)
  # Length wins over score: the shorter of two qualifying responses is chosen.
  assert select_actor_pair([5, 4, 1, 2], [50, 10, 5, 40], 0.4) == (1, 3)


def test_select_actor_pair_ignores_unscored():
  assert select_actor_pair([None, 3, None, 1], [1, 2, 3, 4], 0.0) == (1, 3)
  # The unscored response is the shortest and the longest; it is still never picked.
  assert select_actor_pair([5, None, 1, None], [5, 1, 6, 99], 0.0) == (0, 2)


@pytest.mark.parametrize("scores", [
    [],
    [None, None],
    [4, None, None],
    [3, 3, 3],
    [2, None, 2],
    [1.0, 1.0 + 1e-12],  # equal within the tolerance
])
def test_select_actor_pair_no_pair(scores):
  assert select_actor_pair(scores, list(range(len(scores))), 0.0) is None


def test_select_actor_pair_sets_overlapping_through_tolerance():
  # S_max − S_min = 2e-9 (> tolerance), rho = 0.4: bounds 1.2e-9 and 0.8e-9, so with the 1e-9
  # tolerance response 1 (0.9e-9) qualifies for both sides; it is the shortest chosen candidate
  # and the longest rejected one, so chosen == rejected -> None.
  assert select_actor_pair([0.0, 0.9e-9, 2e-9], [1, 5, 9], 0.4) is None
  # With distinct scores 5e-9 apart the pair is a (tiny) preference and is kept.
  assert select_actor_pair([1.0, 1.0 + 5e-9], [5, 10], 0.0) == (1, 0)


def test_select_actor_pair_chosen_score_always_above_rejected():
  rng = np.random.default_rng(0)
  for _ in range(300):
    k = int(rng.integers(2, 8))
    scores = [None if rng.random() < 0.2 else float(rng.integers(0, 11)) / 2 for _ in range(k)]
    lengths = [int(x) for x in rng.integers(1, 6, size=k)]
    for rho in (0.0, 0.32, 0.4, 0.49):
      pair = select_actor_pair(scores, lengths, rho)
      if pair is not None:
        c, r = pair
        assert scores[c] > scores[r]


@pytest.mark.parametrize("rho", [-0.1, 0.5, 0.7, float("nan"), True, "0.3"])
def test_select_actor_pair_bad_rho(rho):
  with pytest.raises(ValueError, match="rho"):
    select_actor_pair([1, 2], [1, 2], rho)


def test_select_actor_pair_bad_lengths():
  with pytest.raises(ValueError, match="differ"):
    select_actor_pair([1, 2], [1], 0.0)
  with pytest.raises(ValueError, match="lengths"):
    select_actor_pair([1, 2], [1, -3], 0.0)


# ---------------------------------------------------------------------------------------------
# Highest-variance response.


def test_highest_variance_response():
  # Population variances: 0, 2/3, 4; the last has one valid score (not eligible).
  assert highest_variance_response([[4, 4, 4], [5, 3, None, 4], [1, 5], [None, 2]]) == 2
  assert highest_variance_response([[1, 2], [1, 3]]) == 1
  # Ties go to the lowest index, including ties hidden by summation order.
  assert highest_variance_response([[1, 5], [5, 1], [3, 3]]) == 0
  assert highest_variance_response([[3, 3], [0.1, 0.2, 0.3], [0.3, 0.1, 0.2]]) == 1
  # All variances zero: still a choice (the lowest index).
  assert highest_variance_response([[None], [4, 4], [2, 2, 2]]) == 1


@pytest.mark.parametrize("per_response", [[], [[]], [[None, 3]], [[4], [None, None]]])
def test_highest_variance_response_none_eligible(per_response):
  assert highest_variance_response(per_response) is None


def test_highest_variance_uses_population_variance():
  # The definitions disagree here: population variances 1 vs 1.21 (second wins), sample
  # variances 2 vs 1.613 (first would win).
  assert highest_variance_response([[0, 2], [0, 0, 2.2, 2.2]]) == 1


# ---------------------------------------------------------------------------------------------
# Battles, position weights, battle matrix.


def test_battle_orders():
  assert battle_orders([0, 1, 2]) == [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
  assert battle_orders([4, 2]) == [(2, 4), (4, 2)]
  assert battle_orders([3]) == []
  assert battle_orders([]) == []
  orders = battle_orders(range(11))
  assert len(orders) == 110 == len(set(orders))  # 55 pairs x 2 orders (paper scale)


def test_battle_orders_rejects_duplicates():
  with pytest.raises(ValueError, match="distinct"):
    battle_orders([0, 1, 1])


def test_position_weights():
  w1, w2 = position_weights(30, 10)
  assert (w1, w2) == (0.25, 0.75)
  assert w1 * 30 == w2 * 10  # both positions carry the same weighted total
  assert position_weights(10, 10) == (0.5, 0.5)
  assert position_weights(0, 0) == (0.5, 0.5)
  assert position_weights(5, 0) == (0.0, 1.0)  # always "A": first-position wins worth nothing
  assert position_weights(0, 5) == (1.0, 0.0)
  with pytest.raises(ValueError, match="wins_first"):
    position_weights(-1, 3)


def test_count_position_wins_and_rate():
  battles = [(0, 1, "A"), (1, 0, "A"), (0, 2, "B"), (2, 0, None), (1, 2, "A")]
  assert count_position_wins(battles) == (3, 1)
  assert first_position_win_rate(battles) == 0.75
  assert first_position_win_rate([(0, 1, None)]) is None
  assert first_position_win_rate([]) is None
  with pytest.raises(ValueError, match="winner"):
    count_position_wins([(0, 1, "C")])


def test_battle_matrix():
  battles = [(0, 1, "A"), (1, 0, "A"), (0, 2, "B"), (2, 0, None), (1, 2, "B"), (2, 1, "A")]
  got = battle_matrix(3, battles, 0.25, 0.75)
  expected = np.array([[0.0, 0.25, 0.0],
                       [0.25, 0.0, 0.0],
                       [0.75, 1.0, 0.0]])
  np.testing.assert_array_equal(got, expected)
  assert got.dtype == np.float64
  assert battle_matrix(0, [], 0.5, 0.5).shape == (0, 0)


@pytest.mark.parametrize("battle, match", [
    ((0, 3, "A"), "not in"),
    ((-1, 0, "A"), "not in"),
    ((1, 1, "A"), "itself"),
    ((0, 1, "a"), "winner"),
])
def test_battle_matrix_bad_battle(battle, match):
  with pytest.raises(ValueError, match=match):
    battle_matrix(3, [battle], 0.5, 0.5)


# ---------------------------------------------------------------------------------------------
# Elo.


def test_elo_two_players_closed_form():
  # W12 = 3, W21 = 1: the likelihood alone gives ε1 − ε2 = log(3/1), split symmetrically.
  e = elo_scores(np.array([[0.0, 3.0], [1.0, 0.0]]), l2=1e-9)
  assert e[0] - e[1] == pytest.approx(math.log(3), abs=1e-7)
  assert e[0] == pytest.approx(-e[1], abs=1e-12)
  # With l2 = 1e-3 the difference shrinks by ≈ (l2·d/2) / (4·σ(d)σ(−d) + l2/2) = 7.32e-4 at d = log 3.
  e = elo_scores(np.array([[0.0, 3.0], [1.0, 0.0]]), l2=1e-3)
  d = math.log(3)
  shrink = (1e-3 * d / 2) / (4 * 0.75 * 0.25 + 1e-3 / 2)
  assert e[0] - e[1] == pytest.approx(d - shrink, abs=2e-6)


def test_elo_undefeated_is_finite():
  # One win, no loss: the MLE alone diverges; the L2 term keeps it finite: σ(−d) = l2·d/2.
  e = elo_scores([[0, 1], [0, 0]], l2=1e-3)
  d = e[0] - e[1]
  assert np.isfinite(d) and d > 5
  assert 1 / (1 + math.exp(d)) == pytest.approx(1e-3 * d / 2, rel=1e-8)


@pytest.mark.parametrize("seed", range(5))
def test_elo_zero_sum_and_stationary(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 12))
  wins = rng.integers(0, 3, size=(n, n)) * rng.choice([0.25, 0.75], size=(n, n))
  l2 = float(rng.choice([1e-6, 1e-3, 1e-1]))
  e = elo_scores(wins, l2=l2)
  assert abs(e.sum()) < 1e-10
  assert np.abs(elo_gradient(e, wins, l2)).max() < 1e-9
  # It is the maximum: no nearby point is better.
  obj = lambda x: (np.sum(np.where(np.eye(n, dtype=bool), 0.0, wins)
                          * -np.logaddexp(0, -(x[:, None] - x[None, :]))) - 0.5 * l2 * x @ x)
  for _ in range(10):
    assert obj(e) >= obj(e + 1e-3 * rng.standard_normal(n))


def test_elo_extreme_inputs_converge():
  w = np.zeros((5, 5))
  w[0, 1:] = 1e6  # one judgment beat all others a million times, no other results
  e = elo_scores(w, l2=1e-12)
  assert np.all(np.isfinite(e)) and abs(e.sum()) < 1e-9
  assert np.abs(elo_gradient(e, w, 1e-12)).max() < 1e-9
  assert e[0] > 0 and np.allclose(e[1:], e[1])
  # Two groups that never met: each pair fits log-odds, the groups are centred separately.
  w = np.zeros((4, 4))
  w[0, 1], w[1, 0], w[2, 3], w[3, 2] = 3, 1, 5, 1
  e = elo_scores(w, l2=1e-12)
  np.testing.assert_allclose(e, [math.log(3) / 2, -math.log(3) / 2, math.log(5) / 2,
                                 -math.log(5) / 2], atol=1e-9)


def test_elo_ordering_symmetry_and_determinism():
  # 0 beats 1 beats 2, 0 beats 2 (and a loss each way so the MLE is interior).
  w = np.array([[0, 3, 4], [1, 0, 3], [0.5, 1, 0]], float)
  e = elo_scores(w)
  assert e[0] > e[1] > e[2]
  np.testing.assert_array_equal(e, elo_scores(w.copy()))  # bit-identical
  perm = [2, 0, 1]
  np.testing.assert_allclose(elo_scores(w[np.ix_(perm, perm)]), e[perm], atol=1e-12)
  # Identical records give identical scores.
  e = elo_scores([[0, 1, 1], [1, 0, 1], [0, 0, 0]])
  assert e[0] == pytest.approx(e[1], abs=1e-12) and e[2] < e[0]


def test_elo_trivial_inputs():
  np.testing.assert_array_equal(elo_scores(np.zeros((3, 3))), np.zeros(3))
  assert elo_scores(np.zeros((0, 0))).shape == (0,)
  np.testing.assert_array_equal(elo_scores([[7.0]]), [0.0])
  # The diagonal is ignored (Σ over m ≠ n).
  w = np.array([[0, 2], [1, 0]], float)
  np.testing.assert_array_equal(elo_scores(w), elo_scores(w + np.diag([5.0, 9.0])))


@pytest.mark.parametrize("wins, l2, match", [
    (np.zeros((2, 3)), 1e-3, "square"),
    (np.zeros(3), 1e-3, "square"),
    ([[0, -1], [1, 0]], 1e-3, "non-negative"),
    ([[0, np.nan], [1, 0]], 1e-3, "finite"),
    ([[0, np.inf], [1, 0]], 1e-3, "finite"),
    ([[0, 1], [1, 0]], 0.0, "l2"),
    ([[0, 1], [1, 0]], -1.0, "l2"),
])
def test_elo_bad_input(wins, l2, match):
  with pytest.raises(ValueError, match=match):
    elo_scores(wins, l2=l2)


# ---------------------------------------------------------------------------------------------
# Position bias: weighting changes who wins.

# A meta-judge that favours the first position 4:1 over the iteration -> w1 = 0.2, w2 = 0.8.
BIASED_W = position_weights(40, 10)
X, Y, Z, W = 0, 1, 2, 3
# One prompt's battles (two unparsed). X wins 3 battles, all in the favoured first position: over Y
# (whose reverse battle failed to parse) and over Z and W, each of whom beat X back when they
# were shown first. Y wins only 2, but one of them in the disfavoured second position: Y sweeps W.
BIASED_BATTLES = [
    (X, Y, "A"), (Y, X, None),
    (X, Z, "A"), (Z, X, "A"),
    (X, W, "A"), (W, X, "A"),
    (Y, Z, None), (Z, Y, "A"),
    (Y, W, "A"), (W, Y, "B"),
    (Z, W, "B"), (W, Z, "A"),
]


def test_position_bias_flips_the_ranking():
  assert BIASED_W == (0.2, 0.8)
  raw = battle_matrix(4, BIASED_BATTLES, 1.0, 1.0)
  assert raw.sum(axis=1)[X] == 3 > raw.sum(axis=1)[Y] == 2
  assert all(w == "A" for a, _, w in BIASED_BATTLES if a == X and w is not None)
  naive = elo_scores(raw)
  weighted = elo_scores(battle_matrix(4, BIASED_BATTLES, *BIASED_W))
  assert naive[X] > naive[Y] and int(np.argmax(naive)) == X
  assert weighted[Y] > weighted[X] + 0.5 and int(np.argmax(weighted)) == Y
  # ... which changes the judge pair's chosen judgment.
  lengths = [100] * 4
  assert judge_pair_from_battles(4, BIASED_BATTLES, 1.0, 1.0, lengths, None)[0] == X
  assert judge_pair_from_battles(4, BIASED_BATTLES, *BIASED_W, lengths, None) == (Y, Z)


def test_always_first_meta_judge_gives_no_judge_pair():
  battles = [(a, b, "A") for a, b in battle_orders(range(4))]
  w1, w2 = position_weights(*count_position_wins(battles))
  assert (w1, w2) == (0.0, 1.0)
  assert not battle_matrix(4, battles, w1, w2).any()
  assert judge_pair_from_battles(4, battles, w1, w2, [10] * 4, None) is None


# ---------------------------------------------------------------------------------------------
# Judge pairs.


def test_select_judge_pair():
  assert select_judge_pair([0.5, -1.0, 0.5 - 1e-12, 0.5], [10, 20, 30, 40], 1000) == (0, 1)
  assert select_judge_pair([-0.2, 0.3, -0.2 + 1e-12], [10, 20, 30], None) == (1, 0)
  assert select_judge_pair(np.array([0.1, -0.1]), [10, 20], 10) == (0, 1)  # at the limit: kept


@pytest.mark.parametrize("elo, lengths, limit", [
    ([0.0, 0.0, 0.0], [1, 1, 1], None),            # all tied
    ([1e-10, -1e-10], [1, 1], None),               # tied within tolerance
    ([0.3], [1], None),                            # one judgment
    ([], [], None),
    ([0.1, -0.1], [11, 5], 10),                    # chosen judgment too long
])
def test_select_judge_pair_none(elo, lengths, limit):
  assert select_judge_pair(elo, lengths, limit) is None


def test_select_judge_pair_bad_input():
  with pytest.raises(ValueError, match="differ"):
    select_judge_pair([0.1, -0.1], [1], None)
  with pytest.raises(ValueError, match="finite"):
    select_judge_pair([np.nan, 0.1], [1, 1], None)


def test_judge_pair_end_to_end_round_robin():
  # Judgment 2 wins every battle, judgment 0 loses every one; no position bias.
  battles = []
  for a, b in battle_orders([0, 1, 2]):
    winner = "A" if a > b else "B"
    battles.append((a, b, winner))
  w = position_weights(*count_position_wins(battles))
  assert w == (0.5, 0.5)
  assert judge_pair_from_battles(3, battles, *w, [5, 5, 5], 100) == (2, 0)
  assert judge_pair_from_battles(3, battles, *w, [5, 5, 500], 100) is None


# ---------------------------------------------------------------------------------------------
# Report statistics.


def test_meta_judge_stats():
  scores = [4.0, 4.0, 2.0]
  battles = [
      (0, 1, "A"), (1, 0, "A"),   # same score (4 vs 4): first position wins twice
      (0, 2, "A"), (2, 0, "B"),   # different: higher (0) wins in both positions
      (1, 2, "B"), (2, 1, None),  # different: lower (2) wins in second; one failure
  ]
  s = meta_judge_stats(battles, scores)
  assert s["battles"] == 6 and s["parse_failures"] == 1
  assert s["parse_failure_rate"] == pytest.approx(1 / 6)
  assert s["first_position_win_rate"] == pytest.approx(3 / 5)
  assert s["first_position_win_rate_same_score"] == 1.0
  assert s["first_position_win_rate_diff_score"] == pytest.approx(1 / 3)
  assert s["higher_score_pick_rate"] == pytest.approx(2 / 3)
  empty = meta_judge_stats([], [])
  assert empty["parse_failure_rate"] is None and empty["higher_score_pick_rate"] is None


def test_judge_score_stats():
  s = judge_score_stats([4, 4.5, None, 5, 0, None, 2.75, 0.25])
  assert s["judgments"] == 8 and s["parse_failures"] == 2
  assert s["parse_failure_rate"] == 0.25
  assert s["mean"] == pytest.approx((4 + 4.5 + 5 + 0 + 2.75 + 0.25) / 6)
  assert s["fractional_share"] == pytest.approx(3 / 6)
  # Bins centred on 0..5: 0 and 0.25 -> 0; 2.75 -> 3; 4 -> 4; 4.5 and 5 -> 5.
  assert s["histogram"] == [2, 0, 0, 1, 1, 2]
  assert judge_score_stats([None])["mean"] is None


def test_all_battle_orders_cover_each_pair_twice():
  orders = battle_orders(range(5))
  for m, n in itertools.combinations(range(5), 2):
    assert orders.count((m, n)) == 1 and orders.count((n, m)) == 1
