"""Budget-targeted search: accuracy as the one objective, host latency and size as constraints.

The constraints steer the study (lightnas's samplers and constraint code, through the real driver and
teller, avoid infeasible candidates far more often than random search does), and an accuracy-only
campaign finishes with a front, a report and a selection that are the best *feasible* trial, not the
best trial. Trial results are synthetic (a fixed function of the candidate) so the study's behaviour,
not training noise, is what is tested: seconds, plus the cached test teacher for the campaign test.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import optuna
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.hardware.measure import LatencyResult
from nas.output import Output
from nas.search.objective import TrialMetrics

LATENCY_MAX_MS = 0.8
SIZE_MAX_BYTES = 8_000_000
BUDGET = [{"metric": "latency_ms", "profile": "host", "max": LATENCY_MAX_MS},
          {"metric": "size_bytes", "max": SIZE_MAX_BYTES}]


def synthetic_metrics(candidate, ctx=None, seed: int = 0) -> TrialMetrics:
    """A stand-in for a trained trial: accuracy and latency grow with width and depth, size with width and bits.

    About half the default space breaks the latency budget (wide and deep) and fp32 above width 64 breaks
    the size budget, while the most accurate students of all are the widest and deepest: an accuracy-only
    search that ignored the constraints would head straight for infeasible ones.
    """
    arch, recipe = candidate.architecture, candidate.compression
    width, depth = arch.hidden_size, len(arch.layers)
    ms = 0.1 * depth * (width / 64) ** 1.5
    accuracy = 0.70 + 0.04 * math.log2(width / 64) + 0.02 * depth - 0.03 * recipe.prune_rate \
        - (0.02 if recipe.weight_bits == 4 else 0.0)
    latency = LatencyResult(profile="host", backend="tvm", median_ms=ms, mean_ms=ms, std_ms=0.0, min_ms=ms, max_ms=ms,
                            repeats=3, number=1, threads=1, is_measured=True, is_tuned=False, target="")
    return TrialMetrics(accuracy=accuracy, latency={"host": latency}, reference_latency={},
                        size_bytes=int(30_522 * width * recipe.weight_bits / 8), num_params=30_522 * width,
                        sparsity=recipe.prune_rate, final_loss=0.5, timings_s={"train_s": 0.0})


def _feasible(metrics: TrialMetrics) -> bool:
    return metrics.latency["host"].median_ms <= LATENCY_MAX_MS and metrics.size_bytes <= SIZE_MAX_BYTES


class _NoTracker:
    """The tracker seam (``CampaignTracker.log_trial``), logging nothing: MLflow is not what this tests."""

    def log_trial(self, *args, **kwargs) -> None:
        pass


def _search(sampler: str, seed: int, n_trials: int, monkeypatch) -> list[optuna.trial.FrozenTrial]:
    """An accuracy-only study under the budget, run by lightnas's driver, teller and sampler factory."""
    from nas.search import objective
    from nas.search.campaign import make_sampler
    from nas.search.driver import Driver
    from nas.search.executor import InProcessExecutor
    from nas.search.schedule import make_scheduler
    from nas.search.space import load_space
    from nas.search.tell import Teller

    monkeypatch.setattr(objective, "evaluate_candidate", synthetic_metrics)
    config = CampaignConfig.model_validate(small_campaign_dict(
        objectives=[{"metric": "accuracy", "direction": "maximize"}], constraints=BUDGET, sampler=sampler,
        n_trials=n_trials, seed=seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"], sampler=make_sampler(sampler, seed, constrained=True))
    out = Output(quiet=True)
    ctx = SimpleNamespace(train_settings=SimpleNamespace(steps=config.fidelity.steps))  # all run_trial reads
    Driver(study, load_space("default"), ctx, InProcessExecutor(), Teller(study, _NoTracker(), config, out),
           make_scheduler(config, study), config, out).run()
    return [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "repeat_of" not in t.user_attrs]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_budget_constraints_steer_the_study_away_from_infeasible_candidates(sampler, monkeypatch):
    """After the samplers' random start, far fewer proposals break the budget than random search makes."""
    def infeasible_share(trials: list) -> float:
        later = trials[16:]  # past TPE's 10 random start-up trials and NSGA-II's first two generations (8 each)
        return sum(not t.user_attrs["feasible"] for t in later) / len(later)

    shares = {name: [infeasible_share(_search(name, seed, 48, monkeypatch)) for seed in (0, 1)] for name in (sampler, "random")}
    guided, random_ = sum(shares[sampler]) / 2, sum(shares["random"]) / 2
    assert random_ > 0.4  # the budget cuts through the space: random search breaks it often
    assert guided < random_ - 0.2, shares


def test_accuracy_only_campaign_with_a_budget_gives_the_best_feasible_trial(tmp_path, monkeypatch):
    """``pareto.json``, ``nas status``, the report and ``nas select`` all name the most accurate trial within
    the budget, while a more accurate trial that breaks it is left out."""
    from nas.commands.status import campaign_status
    from nas.report import build_report
    from nas.search import objective
    from nas.search.campaign import load_study, run_campaign
    from nas.select import SelectionCriteria, choose_trial

    monkeypatch.setattr(objective, "evaluate_candidate", synthetic_metrics)
    config = CampaignConfig.model_validate(small_campaign_dict(
        name="budget", objectives=[{"metric": "accuracy", "direction": "maximize"}], constraints=BUDGET,
        sampler="tpe", n_trials=12))
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert result.n_complete >= 12
    study, _ = load_study(tmp_path / "c")
    trials = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "repeat_of" not in t.user_attrs]
    feasible = [t for t in trials if t.user_attrs["feasible"]]
    best = max(feasible, key=lambda t: t.values[0])
    assert any(not t.user_attrs["feasible"] and t.values[0] > best.values[0] for t in trials)  # the budget mattered

    pareto = json.loads((tmp_path / "c" / "pareto.json").read_text())
    assert [p["trial"] for p in pareto] == [t.number for t in feasible if t.values[0] == best.values[0]]
    assert pareto[0]["objectives"] == {"accuracy": best.values[0]}
    files = build_report(tmp_path / "c", tracking_uri=result.tracking_uri)
    summary = json.loads(files.json.read_text())
    assert [p["trial"] for p in summary["pareto"]] == [p["trial"] for p in pareto]
    assert [r["trial"] for r in summary["trials"] if r["pareto"]] == [p["trial"] for p in pareto]
    assert "accuracy" in files.html.read_text()
    assert [p["trial"] for p in campaign_status(tmp_path / "c").pareto] == [p["trial"] for p in pareto]
    choice = choose_trial(study, config, SelectionCriteria(profile="host"))
    assert choice.trial == pareto[0]["trial"]
    assert choice.latency["median_ms"] <= LATENCY_MAX_MS and choice.metrics["size_bytes"] <= SIZE_MAX_BYTES
