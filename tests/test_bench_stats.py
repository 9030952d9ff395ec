"""bench/stats.py's statistics and bench/testbed.py's report, on hand-worked numbers and synthetic
runs (no jax)."""

import json
import math
import os
import subprocess
import sys

import pytest

from bench import stats, testbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("df,expected", [(1, 12.706), (2, 4.303), (9, 2.262), (29, 2.045),
                                         (1e6, 1.960), (math.inf, 1.960)])
def test_t_quantile_975(df, expected):
  assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_t_quantile_tails_and_symmetry():
  assert stats.t_quantile(0.9995, 1) == pytest.approx(636.619, abs=1e-2)  # far tail, df 1
  assert stats.t_quantile(0.995, 4) == pytest.approx(4.604, abs=1e-3)
  assert stats.t_quantile(0.025, 9) == pytest.approx(-stats.t_quantile(0.975, 9), abs=1e-12)
  assert stats.t_quantile(0.5, 3) == 0.0
  # The quantile inverts the tail it was solved on.
  assert stats.t_sf(stats.t_quantile(0.9, 7), 7) == pytest.approx(0.1, abs=1e-12)
  with pytest.raises(ValueError):
    stats.t_quantile(1.0, 5)


def test_betainc_known_values():
  assert stats.betainc(1, 1, 0.3) == pytest.approx(0.3, abs=1e-14)      # uniform
  assert stats.betainc(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-12)   # 1 - sum of binomials
  assert stats.betainc(0.5, 0.5, 0.5) == pytest.approx(0.5, abs=1e-12)  # symmetric


def test_paired_t_ci_hand_worked():
  mean, lo, hi = stats.paired_t_ci([1, 2, 3, 4, 5])
  half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975,4} * sd / sqrt(n)
  assert mean == pytest.approx(3.0)
  assert lo == pytest.approx(3 - half, abs=1e-5)
  assert hi == pytest.approx(3 + half, abs=1e-5)


def test_paired_t_ci_edge_cases():
  mean, lo, hi = stats.paired_t_ci([0.4])  # one seed: no interval
  assert mean == 0.4 and math.isnan(lo) and math.isnan(hi)
  assert stats.paired_t_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread: a point interval
  # Missing metrics (None, NaN) are dropped, not counted as zero.
  assert stats.paired_t_ci([1, None, 3, math.nan])[0] == pytest.approx(2.0)


def test_clean_and_mean_halfwidth():
  # Only finite numbers count: missing metrics (None, NaN, inf) and bools are dropped, not zeros.
  assert stats.clean([1, 2.5, None, math.nan, math.inf, True, "3"]) == [1.0, 2.5]
  mean, half, n = stats.mean_halfwidth([1, 2, 3, None])
  assert (mean, n) == (2.0, 3)
  assert half == pytest.approx(stats.t_quantile(0.975, 2) * 1.0 / math.sqrt(3))
  mean, half, n = stats.mean_halfwidth([7.0])
  assert (mean, n) == (7.0, 1) and math.isnan(half)
  mean, half, n = stats.mean_halfwidth([None])
  assert n == 0 and math.isnan(mean) and math.isnan(half)


def test_verdict_rules():
  assert stats.verdict(0.1, 2.0, "A", "B") == "A > B"
  assert stats.verdict(-2.0, -0.1, "A", "B") == "A < B"
  assert stats.verdict(-1.0, 1.0, "A", "B") == "no decision (CI spans 0)"
  assert stats.verdict(0.0, 1.0) == "no decision (CI spans 0)"  # touching 0 does not decide
  assert stats.verdict(math.nan, math.nan) == "no decision (CI spans 0)"


def test_bootstrap_ci_contains_mean_and_is_deterministic():
  diffs = [0.03, -0.01, 0.05, 0.02, 0.04, 0.00, 0.06, 0.01, 0.03, 0.02]
  lo, hi = stats.bootstrap_ci(diffs)
  mean = sum(diffs) / len(diffs)
  assert lo < mean < hi
  assert (lo, hi) == stats.bootstrap_ci(diffs)  # fixed RNG seed
  t_mean, t_lo, t_hi = stats.paired_t_ci(diffs)
  # Same data, two methods: the percentile interval is close to (a bit narrower than) the t one.
  assert t_lo - 0.01 < lo and hi < t_hi + 0.01
  assert all(math.isnan(x) for x in stats.bootstrap_ci([1.0]))


def _heldout(actor, judge_bal):
  return {"heldout/actor_accuracy": actor, "heldout/actor_accuracy_greedy": actor,
          "heldout/judge_balanced_accuracy": judge_bal, "heldout/judge_accuracy": 0.8,
          "heldout/judge_score_mean": 3.1, "heldout/judge_parse_rate": 1.0,
          "heldout/meta_accuracy": 0.7, "heldout/meta_picks_higher_rate": 0.5,
          "heldout/meta_first_position_rate": 0.5, "heldout/tasks": 200}


def _write_synthetic_runs(root):
  """2 seeds x every arm x M_0..M_3, written as the pipeline does (iteration 0 only in the file).

  By construction: self_rewarding's actor gain over M_0 is +10 / +20 points (n=2: the t interval
  spans 0); meta_rewarding's balanced judge accuracy is self_rewarding's + 5 points on both seeds
  and meta_rewarding_every's is - 3 points (no spread: decided).
  """
  returned = {}
  for seed in (0, 1):
    for arm in testbed.ARMS:
      actor0, judge0 = 0.50 + 0.01 * seed, 0.70
      final_actor = actor0 + {"self_rewarding": 0.10 * (seed + 1)}.get(arm, 0.02)
      final_judge = 0.72 + {"meta_rewarding": 0.05, "meta_rewarding_every": -0.03}.get(arm, 0.0)
      records = [{"iteration": 0, **_heldout(actor0, judge0)}]
      for t in (1, 2, 3):
        frac = t / 3
        records.append({
            "iteration": t, **_heldout(actor0 + frac * (final_actor - actor0),
                                       judge0 + frac * (final_judge - judge0)),
            "oracle/actor_accuracy": 0.6, "oracle/judge_accuracy": 0.7,
            "oracle/meta_judge_accuracy": 0.65, "pairs/actor": 10 + t, "pairs/judge": 4,
            "pairs/judge_identical_dropped": 1, "judge/score_mean": 3.2,
            "meta/picks_higher_score_rate": 0.55, "dpo/rewards/accuracies": 0.8,
            "wall_seconds": 30.0, "judge/score_histogram": [1, 2, 3]})
      workdir = testbed.run_dir(str(root), arm, seed)
      os.makedirs(workdir)
      with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for rec in records:
          f.write(json.dumps(rec) + "\n")
        f.write('{"iteration": 4, "heldout/actor_acc')  # a write cut short by an interruption
      returned[(arm, seed)] = records[1:]
  return returned


def test_read_run_merges_returned_and_file(tmp_path):
  returned = _write_synthetic_runs(tmp_path)
  workdir = testbed.run_dir(str(tmp_path), "meta_rewarding", 1)
  records = testbed.read_run(workdir, returned[("meta_rewarding", 1)])
  assert sorted(records) == [0, 1, 2, 3]  # iteration 0 from the file; the cut line skipped
  assert records[0]["heldout/actor_accuracy"] == pytest.approx(0.51)
  assert "judge/score_histogram" not in records[1]  # only scalars are kept
  assert testbed.read_run(str(tmp_path / "absent")) == {}


def test_report_on_synthetic_runs(tmp_path):
  _write_synthetic_runs(tmp_path)
  arms = list(testbed.ARMS)
  runs = testbed.collect_runs(str(tmp_path), arms, [0, 1])
  assert [(r["arm"], r["seed"]) for r in runs][:len(arms) + 1] == [
      (arm, 0) for arm in arms] + [("meta_rewarding", 1)]  # seeds outermost
  assert arms[:3] == list(testbed.METHOD_ARMS) == [
      "meta_rewarding", "self_rewarding", "meta_rewarding_every"]
  text, results = testbed.build_report(runs, arms, n_iter=3, header_lines=["    python x"])
  by_key = {(c["metric"], c["x"], c["y"]): c for c in results}

  a = by_key[("actor_accuracy", "self_rewarding", None)]
  assert a["tag"] == "(a)" and a["n"] == 2 and a["seeds"] == [0, 1]
  assert a["mean"] == pytest.approx(15.0)
  half = 12.706205 * (10 / math.sqrt(2)) / math.sqrt(2)  # t_{0.975,1} * sd / sqrt(2), in points
  assert a["t_lo"] == pytest.approx(15.0 - half, abs=1e-3)
  assert a["verdict"] == "no decision (CI spans 0)"
  b = by_key[("judge_balanced_accuracy", "meta_rewarding", "self_rewarding")]
  assert b["tag"] == "(b)" and b["mean"] == pytest.approx(5.0)
  assert b["verdict"] == "meta_rewarding > self_rewarding"
  every = by_key[("judge_balanced_accuracy", "meta_rewarding_every", "self_rewarding")]
  assert every["verdict"] == "meta_rewarding_every < self_rewarding"
  assert ("actor_accuracy", "meta_rewarding", "self_rewarding") in by_key
  for oracle_arm in ("oracle_meta_verdict", "oracle_meta_check"):   # the diagnostic upper bounds
    assert by_key[("judge_balanced_accuracy", oracle_arm, "self_rewarding")]["mean"] == \
        pytest.approx(0.0)
  for arm in arms:  # every arm against the seed model, on both headline metrics
    assert ("actor_accuracy", arm, None) in by_key
    assert ("judge_balanced_accuracy", arm, None) in by_key

  lines = text.splitlines()
  row_a = next(l for l in lines if l.startswith("| (a) |"))
  assert "self_rewarding M_3 − seed M_0" in row_a and "+15.0" in row_a
  assert row_a.rstrip(" |").endswith("no decision (CI spans 0)")
  row_b = next(l for l in lines if l.startswith("| (b) |"))
  assert "meta_rewarding − self_rewarding" in row_b and "[+5.0, +5.0]" in row_b
  assert "meta_rewarding > self_rewarding" in row_b
  assert "**(a) Self-Rewarding raises held-out actor accuracy above the seed model's: not shown" \
      in text
  assert "**(b) Meta-Rewarding's balanced judge accuracy beats Self-Rewarding's: yes.**" in text
  assert "Held-out tasks per evaluation (as recorded): 200." in text
  # The per-arm held-out table: M_0 ... M_3 with n = 2 seeds; M_0 actor 50.5 ± t_1 * sd.
  assert "| M_0 | 2 | 50.5 ± 6.4 |" in text
  assert "| self_rewarding | 3 | 2 | 60.0 ± 0.0 |" in text  # pipeline table, oracle actor acc


def test_report_with_missing_runs(tmp_path):
  _write_synthetic_runs(tmp_path)
  runs = [r for r in testbed.collect_runs(str(tmp_path), list(testbed.ARMS), [0, 1])
          if not (r["arm"] == "self_rewarding" and r["seed"] == 1)]
  text, results = testbed.build_report(runs, list(testbed.ARMS), n_iter=3)
  assert "**(a) Self-Rewarding raises held-out actor accuracy above the seed model's: not " \
      "measured**" in text
  text, _ = testbed.build_report(runs, ["meta_rewarding"], n_iter=3)
  assert "**(b): not measured** — the bench did not run meta_rewarding and self_rewarding." in text


@pytest.mark.parametrize("module", ["bench.stats", "bench.testbed"])
def test_import_runs_nothing(module):
  # The modules are imported by tests next to modules that define --workdir: they must define no
  # absl flags and import no jax until run as a script (`python -m bench.testbed`).
  code = (f"import sys, {module}; "
          "assert not {'jax', 'absl.flags', 'meta_rewarding'} & set(sys.modules), "
          "sorted(sys.modules)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
