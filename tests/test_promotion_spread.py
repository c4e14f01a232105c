"""Supernet promotions are spread over the latency range: wide, slow, accurate students are trained
stand-alone alongside the fast ones, not only the top supernet scores (which tie and land on one width).
Synthetic trials, no training: seconds."""

from __future__ import annotations

import optuna
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.search.schedule import SupernetPromotion, non_dominated, promotion_profile, spread_promotions


def _supernet_scores() -> list[tuple[int, float, float]]:
    """(trial, inherited accuracy, host ms): 64-wide students score highest by a hair (supernet noise), the
    192/256-wide ones a little lower, so every wide one is dominated by a narrow one."""
    points = []
    for i, (width, depth) in enumerate((w, d) for w in (64, 128, 192, 256) for d in (1, 2, 3)):
        ms = 0.2 * depth * (width / 64) ** 1.5
        acc = 0.80 + 0.004 * depth - 0.003 * (width // 64)  # narrow and deep: the supernet's favourite
        points.append((i, acc, ms))
    return points


def _width(number: int) -> int:
    return (64, 128, 192, 256)[number // 3]


def test_wide_slow_students_are_promoted_alongside_fast_ones():
    points = _supernet_scores()
    # the former rule (the accuracy-latency front, best first) would train only 64-wide students
    front = [p[0] for p in points if non_dominated([p[1], p[2]], [[o[1], o[2]] for o in points], ["maximize", "minimize"])]
    assert {_width(n) for n in front} == {64}

    picked = spread_promotions(points, 4)
    assert len(picked) == len(set(picked)) == 4
    latencies = {p[0]: p[2] for p in points}
    assert min(_width(n) for n in picked) == 64  # and the fast ones stay
    assert max(_width(n) for n in picked) >= 192  # a wide, slow student is among them
    assert max(latencies[n] for n in picked) > 4 * min(latencies[n] for n in picked)  # spread, not one cluster
    # most accurate first, and the overall best supernet score is always promoted
    accuracy = {p[0]: p[1] for p in points}
    assert picked[0] == max(points, key=lambda p: p[1])[0]
    assert [accuracy[n] for n in picked] == sorted((accuracy[n] for n in picked), reverse=True)


def test_spread_fills_empty_bins_and_handles_small_pools():
    assert spread_promotions([], 3) == []
    assert spread_promotions([(7, 0.9, 1.0)], 3) == [7]
    same_latency = [(i, 0.5 + i / 100, 2.0) for i in range(5)]  # one bin: the rest by accuracy
    assert spread_promotions(same_latency, 3) == [4, 3, 2]
    two_clusters = [(0, 0.90, 1.0), (1, 0.89, 1.01), (2, 0.88, 1.02), (3, 0.70, 50.0)]
    assert spread_promotions(two_clusters, 2) == [0, 3]  # the slow cluster gets its slot


def _inherited_study(points: list[tuple[int, float, float]], feasible: set[int]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize"])
    dist = {"x": optuna.distributions.IntDistribution(0, 100)}
    for number, acc, ms in points:
        study.add_trial(optuna.trial.create_trial(
            params={"x": number}, distributions=dist, values=[acc],
            user_attrs={"fidelity": "supernet", "feasible": number in feasible,
                        "metrics": {"accuracy": acc, "latency": {"host": {"median_ms": ms}}}}))
    return study


def test_a_budget_campaign_promotes_feasible_trials_over_its_latency_budget():
    """One objective (accuracy) with a latency constraint: the old front had one member, so promote_top: 4
    trained one trial; now four feasible ones, spread below the budget, and never an infeasible one."""
    config = CampaignConfig.model_validate(small_campaign_dict(
        objectives=[{"metric": "accuracy", "direction": "maximize"}],
        constraints=[{"metric": "latency_ms", "profile": "host", "max": 2.0}],
        fidelity={"scorer": "supernet", "promote_top": 4}))
    assert promotion_profile(config) == "host"
    points = _supernet_scores()
    feasible = {n for n, _, ms in points if ms <= 2.0}
    study = _inherited_study(points, feasible)
    best = max((p for p in points if p[0] in feasible), key=lambda p: p[1])
    study.add_trial(optuna.trial.create_trial(  # a sampler's repeat of the best: told its values, never promoted twice
        params={"x": best[0]}, distributions={"x": optuna.distributions.IntDistribution(0, 100)}, values=[best[1]],
        user_attrs={**study.trials[best[0]].user_attrs, "repeat_of": best[0]}))
    numbers = [t.number for t in SupernetPromotion(config).promotions(study)]
    assert len(numbers) == 4 and set(numbers) <= feasible and numbers[0] == best[0]
    assert max(_width(n) for n in numbers) >= 128 and min(_width(n) for n in numbers) == 64


def test_rank_fidelity_reports_the_top_quarter_apart_from_the_whole():
    """benchmarks/supernet_fidelity.py's τ among the top 25 % by stand-alone accuracy: a supernet that sorts good
    from bad (high τ overall) but scrambles the best few (τ < 0 there) is told apart."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "supernet_fidelity.py"
    spec = importlib.util.spec_from_file_location("supernet_fidelity_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trained = [0.50 + 0.01 * i for i in range(16)]
    scores = list(trained[:12]) + [0.70, 0.69, 0.68, 0.67]  # the top 4 in reverse order
    result = bench.rank_fidelity(scores, trained)
    assert result["n_top"] == 4 and result["top_share"] == 0.25
    assert result["kendall_tau"] > 0.8 and result["kendall_tau_top"] == -1.0
    assert bench.rank_fidelity(trained, trained)["kendall_tau_top"] == 1.0
