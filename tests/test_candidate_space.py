"""Candidate values and search spaces: round trips, validation, conditional sampling, size, the CLI."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from nas.candidate import Architecture, BlockSpec, Candidate, DistillSettings, PretrainSettings
from nas.compress.recipe import CompressionRecipe
from nas.errors import NasUserError
from nas.models.blocks import list_blocks
from nas.search.space import SearchSpace, list_spaces, load_space, space_path

optuna.logging.set_verbosity(optuna.logging.WARNING)

MIXED = Candidate(
    Architecture(
        128,
        (BlockSpec("transformer", heads=4, ffn_size=384), BlockSpec("transformer", heads=4, ffn_size=384),
         BlockSpec("conv", kernel_size=7, ffn_size=256, activation="relu"),
         BlockSpec("bottleneck", intra_size=64, heads=2, ffn_size=128, n_ffn=2, use_layernorm=False)),
        embedding_size=32, vocab_size=5000,
    ),
    CompressionRecipe(prune_rate=0.3, prune_structure="heads+neurons", weight_bits=4, embedding_bits=8),
    DistillSettings(alpha=0.2, temperature=3.5, hidden_weight=1.0),
    PretrainSettings("mlm", steps=100),
)


def test_candidate_survives_json_round_trip():
    again = Candidate.from_dict(json.loads(json.dumps(MIXED.to_dict())))
    assert again == MIXED and hash(again) == hash(MIXED)
    assert MIXED.key == "H128-2*t4f384.c7f256r.b64h2f128x2n-E32-V5000-p0.3mhno-w4e8a32-asym-a0.2T3.5h1-mlm100"
    assert (MIXED.n_layers, MIXED.hidden_size, MIXED.prune_rate, MIXED.weight_bits) == (4, 128, 0.3, 4)


def test_flat_shorthand_is_a_uniform_transformer_stack():
    c = Candidate(n_layers=3, hidden_size=192, n_heads=4, ffn_size=384, prune_rate=0.3, weight_bits=4,
                  distill_alpha=0.2, distill_temperature=3.5)
    assert c.architecture.layers == (BlockSpec("transformer", heads=4, ffn_size=384),) * 3
    assert c.compression == CompressionRecipe(prune_rate=0.3, weight_bits=4) and c.distill.alpha == 0.2
    assert c.key == "H192-3*t4f384-p0.3muo-w4e4a32-asym-a0.2T3.5"
    assert Candidate.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "field, value",
    [("n_layers", 0), ("n_heads", 3), ("prune_rate", 1.0), ("weight_bits", 1), ("distill_alpha", 1.5), ("distill_temperature", 0)],
)
def test_candidate_rejects_invalid_values(field, value):
    base = dict(n_layers=2, hidden_size=128, n_heads=2, ffn_size=256)
    with pytest.raises(ValueError, match=field):
        Candidate(**{**base, field: value})


def test_candidate_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="n_layer"):
        Candidate.from_dict({"n_layer": 2, "hidden_size": 128, "n_heads": 2, "ffn_size": 256})
    data = MIXED.to_dict()
    data["architecture"]["layers"][2]["heads"] = 2  # a conv block has no heads
    with pytest.raises(ValueError, match="conv block takes"):
        Candidate.from_dict(data)


@pytest.mark.parametrize("name", list_spaces())
def test_every_bundled_space_loads_and_samples_valid_candidates(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        candidate = space.sample(trial)
        assert space.candidate_from_params(trial.params) == candidate
        assert Candidate.from_dict(json.loads(json.dumps(candidate.to_dict()))) == candidate
        study.tell(trial, 0.0)
    json.dumps(space.model_dump(mode="json"))  # what the campaign logs to MLflow


def test_bundled_spaces_cover_every_block_type_and_the_compression_recipe():
    types = set()
    for name in list_spaces():
        types |= set(load_space(name).architecture.blocks["type"].choices)
    assert types == set(list_blocks())  # a new block type goes into at least one bundled space
    phone = load_space("phone")
    assert {"prune_method", "prune_structure", "prune_rate", "weight_bits", "act_bits", "qat_steps"} <= set(phone.compression)


SMALL = {
    "name": "small",
    "architecture": {
        "n_layers": {"type": "int", "low": 1, "high": 2},
        "hidden_size": {"type": "categorical", "choices": [32, 64]},
        "per_layer": True,
        "blocks": {
            "type": {"type": "categorical", "choices": ["transformer", "conv"]},
            "transformer": {"heads": {"type": "categorical", "choices": [2, 4]}, "ffn_size": 64},
            "conv": {"kernel_size": {"type": "categorical", "choices": [3, 5, 7]}, "ffn_size": 64},
        },
    },
    "compression": {"weight_bits": {"type": "categorical", "choices": [8, 32]}},
}


def _enumerate(space: SearchSpace) -> set[Candidate]:
    """Every candidate Optuna's brute-force sampler reaches (it stops the study when the space is exhausted)."""
    seen: set[Candidate] = set()

    def objective(trial: optuna.Trial) -> float:
        seen.add(space.sample(trial))
        return 0.0

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        sampler = optuna.samplers.BruteForceSampler(seed=0)
    optuna.create_study(sampler=sampler).optimize(objective, n_trials=500)
    return seen


def test_size_counts_conditional_per_layer_configurations():
    space = SearchSpace.model_validate(SMALL)
    # per layer: 2 transformer + 3 conv = 5 blocks; depth 1 or 2: 5 + 25; × 2 hidden × 2 bit-widths
    assert space.size() == (5 + 25) * 2 * 2 == 120
    assert len(_enumerate(space)) == 120  # Optuna's brute-force sampler reaches exactly that many
    shared = SearchSpace.model_validate({**SMALL, "architecture": {**SMALL["architecture"], "per_layer": False}})
    assert shared.size() == 2 * 5 * 2 * 2
    assert load_space("default").size() is None  # the temperature is continuous


def test_conditional_parameters_are_asked_only_for_their_block_type():
    space = SearchSpace.model_validate(SMALL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        candidate = space.sample(trial)
        for i, block in enumerate(candidate.architecture.layers):
            assert trial.params[f"layer{i}.type"] == block.type
            other = "conv" if block.type == "transformer" else "transformer"
            assert not any(k.startswith(f"layer{i}.{other}.") for k in trial.params)
        assert not any(k.startswith(f"layer{len(candidate.architecture.layers)}.") for k in trial.params)
        study.tell(trial, 0.0)


def test_seeded_sampling_is_reproducible():
    space = load_space("phone")

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
    "path, value, message",
    [
        (("architecture", "n_layer"), {"type": "int", "low": 1, "high": 2}, "unknown key 'architecture.n_layer'; did you mean 'n_layers'?"),
        (("architecture", "n_layers"), {"type": "int", "low": 4, "high": 1}, "low (4) is above high (1)"),
        (("architecture", "n_layers"), {"type": "integer", "low": 1, "high": 2}, "architecture.n_layers"),
        (("architecture", "hidden_size"), {"type": "categorical", "choices": [90]}, "divisible by n_heads"),
        (("architecture", "blocks", "type"), {"type": "categorical", "choices": ["transformer", "mbconv"]}, "'mbconv' is not a registered block type; choose one of"),
        (("architecture", "blocks", "conv", "heads"), 2, "blocks.conv.heads is not a conv block setting"),
        (("architecture", "blocks", "conv", "kernel_size"), {"type": "categorical", "choices": [3, 4]}, "kernel_size must be odd"),
        (("compression", "weight_bits"), {"type": "categorical", "choices": [1, 8]}, "compression.weight_bits = 1 is invalid"),
        (("compression", "prune_rat"), 0.1, "compression.prune_rat is not a CompressionRecipe field"),
        (("distill", "alpha"), {"type": "float", "low": 0.0, "high": 1.5}, "distill.alpha = 1.5 is invalid"),
        (("pretrain", "objective"), "mlmm", "pretrain.objective = 'mlmm' is invalid"),
        (("extra_key",), 1, "unknown key 'extra_key'"),
    ],
)
def test_bad_space_files_give_one_sentence(tmp_path, path, value, message):
    data = yaml.safe_load(space_path("default").read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    file = tmp_path / "space.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(NasUserError) as info:
        load_space(file)
    text = str(info.value)
    assert text.startswith(str(file)) and message in text and "\n" not in text


def test_unknown_space_name_lists_choices():
    with pytest.raises(NasUserError, match="choose one of .*default.*mcu.*phone"):
        load_space("nope")


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\narchitecture: {n_layers: [\n")
    with pytest.raises(NasUserError, match=r"bad.yaml: YAML syntax error at line"):
        load_space(path)


def test_cli_space_show_prints_fields_and_size(tmp_path):
    from typer.testing import CliRunner

    from nas.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["space", "show", "mcu", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["size"] == load_space("mcu").size() > 1_000_000
    result = runner.invoke(app, ["space", "show", "default"])
    assert result.exit_code == 0 and "continuous" in result.stdout and "blocks.conv.kernel_size" in result.stdout
    listing = runner.invoke(app, ["space"])
    assert listing.exit_code == 0 and all(name in listing.stdout for name in list_spaces())


def test_cli_broken_space_exits_1_with_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(space_path("default").read_text())
    data["architecture"]["blocks"]["type"] = "mbconv"
    bad.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-c", "from nas.cli import main; main()", "space", "show", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "'mbconv' is not a registered block type" in proc.stderr
