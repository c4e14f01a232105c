"""Samplers come from one registry: the campaign file is validated against it (no Literal of names to keep in step),
and each registered name builds its seeded Optuna sampler, sized to the budget, with the campaign's constraints."""

from __future__ import annotations

import optuna
import pytest

import nas.config
from nas.config import CampaignConfig
from nas.errors import NasUserError
from nas.registry import Registry
from nas.samplers import DEFAULT_SAMPLER, SAMPLERS, build_sampler, population_for
from nas.samplers.evolution import EvolutionSampler
from nas.search.campaign import make_sampler
from nas.yamlio import load_model

EXPECTED = {"evolution": EvolutionSampler, "gp": optuna.samplers.GPSampler, "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}
NAMES = "evolution, gp, nsga2, random, tpe"


def _first_proposals(sampler: optuna.samplers.BaseSampler) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return [t.params["x"] for t in study.trials]


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_registered_sampler_builds_seeded(name):
    sampler = make_sampler(name, seed=3, constrained=True)
    assert type(sampler) is EXPECTED[name]
    assert _first_proposals(sampler) == _first_proposals(build_sampler(name, 3))  # same seed, same first proposals
    if name != "random":  # random search takes no constraints
        assert sampler._constraints_func is not None  # Optuna keeps it private; nothing public shows the wiring


def test_names_are_the_registry_and_unknown_ones_are_refused_with_the_list():
    assert SAMPLERS.names() == sorted(EXPECTED)
    with pytest.raises(NasUserError, match=rf"sampler = 'cmaes' is invalid: .*choose one of {NAMES}"):
        load_model(CampaignConfig, {"sampler": "cmaes"}, "c.yaml")
    with pytest.raises(NasUserError, match=f"choose one of {NAMES}"):
        build_sampler("cmaes", 0)


def test_the_default_is_registered_and_is_the_campaign_default():
    assert DEFAULT_SAMPLER in SAMPLERS.names()
    assert CampaignConfig().sampler == DEFAULT_SAMPLER


def test_config_accepts_a_newly_registered_sampler(monkeypatch):
    samplers = Registry("sampler")
    samplers.register("grid-like")(lambda seed, constraints, n_trials=None: optuna.samplers.RandomSampler(seed=seed))
    monkeypatch.setattr(nas.config, "SAMPLERS", samplers)
    assert CampaignConfig(sampler="grid-like").sampler == "grid-like"
    with pytest.raises(ValueError, match="choose one of grid-like"):
        CampaignConfig(sampler="nsga2")


def test_nsga2_population_follows_the_budget():
    """About ten generations whatever the budget, within 8..50 members (8 when no budget is known)."""
    assert [population_for(n) for n in (None, 12, 200, 400, 5000)] == [8, 8, 20, 40, 50]
    assert build_sampler("nsga2", 0, n_trials=300)._population_size == 30


def test_tpe_is_grouped_multivariate_with_the_constant_liar():
    tpe = build_sampler("tpe", 0, n_trials=400)
    assert (tpe._multivariate, tpe._group, tpe._constant_liar, tpe._n_startup_trials) == (True, True, True, 20)
