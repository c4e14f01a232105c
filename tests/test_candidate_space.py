"""Candidate values and search spaces: round trips, validation, sampling."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from nas.candidate import Candidate
from nas.errors import NasUserError
from nas.search.space import SearchSpace, list_spaces, load_space


def test_candidate_survives_json_round_trip():
    c = Candidate(n_layers=3, hidden_size=192, n_heads=4, ffn_size=384, prune_rate=0.3, weight_bits=4,
                  distill_alpha=0.2, distill_temperature=3.5)
    again = Candidate.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c and hash(again) == hash(c)
    assert c.key == "L3-H192-A4-F384-p0.3-w4-a0.2-T3.5"


@pytest.mark.parametrize(
    "field, value",
    [("n_layers", 0), ("n_heads", 3), ("prune_rate", 1.0), ("weight_bits", 1), ("distill_alpha", 1.5), ("distill_temperature", 0)],
)
def test_candidate_rejects_invalid_values(field, value):
    base = dict(n_layers=2, hidden_size=128, n_heads=2, ffn_size=256)
    with pytest.raises(ValueError, match=field):
        Candidate(**{**base, field: value})


def test_candidate_from_dict_rejects_unknown_field():
    with pytest.raises(ValueError, match="n_layer"):
        Candidate.from_dict({"n_layer": 2, "hidden_size": 128, "n_heads": 2, "ffn_size": 256})


@pytest.mark.parametrize("name", list_spaces())
def test_every_bundled_space_loads_and_samples_valid_candidates(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        candidate = space.sample(trial)
        assert space.candidate_from_params(trial.params) == candidate
        study.tell(trial, 0.0)


def test_default_space_size_is_the_product_of_choices():
    space = load_space("default")
    # n_layers 4, hidden 4, heads 2, ffn 8, prune 7, bits 3, alpha 11; the temperature is continuous.
    assert space.size() is None
    fixed_t = SearchSpace.model_validate({**space.model_dump(), "params": {k: v for k, v in space.model_dump()["params"].items() if k != "distill_temperature"}})
    assert fixed_t.size() == 4 * 4 * 2 * 8 * 7 * 3 * 11


def test_seeded_sampling_is_reproducible():
    space = load_space("default")

    def sequence():
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=7))
        out = []
        for _ in range(10):
            t = study.ask()
            out.append(space.sample(t))
            study.tell(t, [0.5, 1.0])
        return out

    assert sequence() == sequence()


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"params": {"n_layer": {"type": "int", "low": 1, "high": 2}}}, "'n_layer' is not a candidate field"),
        ({"params": {"n_layers": {"type": "int", "low": 4, "high": 1}}}, "low (4) is above high (1)"),
        ({"params": {}}, "searches nothing"),
        ({"params": {"hidden_size": {"type": "categorical", "choices": [90]}}}, "divisible by n_heads"),
        ({"params": {"n_layers": {"type": "integer", "low": 1, "high": 2}}}, "n_layers"),
        ({"extra_key": 1}, "unknown key 'extra_key'"),
    ],
)
def test_bad_space_files_give_one_sentence(tmp_path, patch, message):
    data = yaml.safe_load(open(load_space.__globals__["space_path"]("default")))
    if "params" in patch and patch["params"]:
        data["params"].update(patch["params"])
    elif "params" in patch:
        data["params"] = {}
    else:
        data.update(patch)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(NasUserError) as info:
        load_space(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unknown_space_name_lists_choices():
    with pytest.raises(NasUserError, match="choose one of .*default"):
        load_space("nope")


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nparams: {n_layers: [\n")
    with pytest.raises(NasUserError, match=r"bad.yaml: YAML syntax error at line"):
        load_space(path)
