"""bench/decode.py's length-skewed workload: the length distribution and the forcing strategy."""

import jax
import numpy as np
import pytest

from bench import decode as bench_decode
from meta_rewarding.model.config import tiny_config
from meta_rewarding.model.llama import init_params
from meta_rewarding.sampling import Sampler
from meta_rewarding.strategies import Greedy, Sampling


def test_hazard_reproduces_the_clipped_lognormal():
  pmf = bench_decode.skewed_length_pmf(128, median=32.0, sigma=0.8)
  assert len(pmf) == 128 and sum(pmf) == pytest.approx(1.0)
  assert all(p == 0 for p in pmf[:15]) and pmf[15] > 0  # nothing shorter than 16 tokens
  h = bench_decode.hazard(pmf)
  survive, implied = 1.0, []
  for x in h:
    implied.append(survive * x)
    survive *= 1 - x
  np.testing.assert_allclose(implied, pmf, atol=1e-9)
  assert h[-1] == 1.0


@pytest.mark.parametrize("base", [Greedy(), Sampling(temperature=0.8, top_k=20)], ids=str)
def test_forced_lengths_end_with_the_stop_id_and_match_across_batching(base):
  config = tiny_config(vocab_size=300, max_position_embeddings=128)
  params = init_params(config, jax.random.key(0))
  M, stop = 40, config.eos_token_id
  hazard = bench_decode.hazard(bench_decode.skewed_length_pmf(M, 20.0, 0.8))
  forced = bench_decode.ForcedLength(base=base, stop_id=stop, hazard=hazard)
  prompts = np.random.default_rng(0).integers(3, 300, (10, 8)).tolist()
  out = {}
  for batching in ("static", "continuous"):
    sampler = Sampler(config, params, None, batch_size=4, prompt_buckets=(8,), batching=batching)
    out[batching] = [c.token_ids for cs in sampler.generate(
        prompts, strategy=forced, max_new_tokens=M, stop_ids=(stop,), progress=False) for c in cs]
  assert out["static"] == out["continuous"]
  lengths = [len(t) for t in out["static"]]
  assert all(t[-1] == stop and stop not in t[:-1] for t in out["static"])
  assert min(lengths) >= 16 and len(set(lengths)) > 3
