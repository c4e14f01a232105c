"""benchmarks/search_efficiency.py's arithmetic: trials-to-reach against random search on a fixed reference point,
the speed-up's median and spread, and the search loop's cache (a hit is a trial like any other) — on a tiny real
space with a pure-Python score, so no teacher or supernet is needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nas.search.space import load_space
from sampler_problems import TINY_SPACE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_efficiency", REPO / "benchmarks" / "search_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trials(points):
    return [{"accuracy": a, "latency_ms": lat, "feasible": True, "cached": False} for a, lat in points]


def test_trials_to_reach_and_speedup_use_the_fixed_reference(bench):
    reference = (0.5, 10.0)
    random_run = _trials([(0.6, 8.0)] * 9 + [(0.8, 5.0)])  # random reaches its final HV at trial 10
    fast = _trials([(0.6, 8.0), (0.85, 4.0)] + [(0.55, 9.0)] * 8)  # beyond random's HV@10 at trial 2
    slow = _trials([(0.55, 9.0)] * 10)  # never
    runs = [{"sampler": "random", "seed": 0, "trials": random_run}, {"sampler": "a", "seed": 0, "trials": fast},
            {"sampler": "random", "seed": 1, "trials": random_run}, {"sampler": "a", "seed": 1, "trials": slow}]
    summary = bench.summarise(runs, reference, 10)
    assert summary["a"]["trials_to_reach"] == {"0": 2, "1": None}
    assert summary["a"]["speedup"] == {"0": 5.0, "1": 0.0}  # a seed that never gets there counts lowest
    assert summary["a"]["speedup_vs_random"]["median"] == 2.5 and summary["a"]["reached"] == 1
    # HV ÷ the reference box (1 − 0.5) × 10 ms: random's front in losses is (0.2, 5), which dominates (0.4, 8)
    assert bench.hv_curve(random_run, reference)[-1] == pytest.approx((0.5 - 0.2) * (10 - 5) / 5.0)
    assert "random" not in summary  # the baseline against itself says nothing
    assert bench.choose_default(summary) == "a"


def test_search_loop_counts_cache_hits_as_trials(bench, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)

    class ToyScorer:  # the Scorer's interface: space, score(candidate) -> (row, cached), new, score_s
        space = load_space(path)
        new, score_s, seen = 0, 0.0, {}

        def score(self, candidate):
            key = bench.Scorer.key(candidate)
            if key in self.seen:
                return self.seen[key], True
            arch = candidate.architecture
            row = {"accuracy": 0.5 + arch.hidden_size / 200 - 0.1 * candidate.compression.prune_rate,
                   "latency_ms": arch.hidden_size * len(arch.layers) / 10, "feasible": True, "score_s": 0.0}
            self.seen[key], self.new = row, self.new + 1
            return row, False

    scorer = ToyScorer()
    run = bench.run_search(scorer, "tpe", 0, 40)
    assert run["n_trials"] == len(run["trials"]) == 40
    assert run["new_scores"] == scorer.new == sum(not t["cached"] for t in run["trials"])
    assert run["new_scores"] < 40  # distillation settings differ, architecture and compression repeat: cache hits
