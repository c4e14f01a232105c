"""Compression as registered steps and quantization schemes as registered entries: recipes become ordered step
lists every name of which is registered, compress_model runs whatever steps it is given, every scheme codes,
restores and sizes a tensor consistently, and recipe keys tell every distinct recipe apart."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math

import pytest
import torch
from torch import nn

from nas.compress import pipeline
from nas.compress.quantize import dequantize, quantize_tensor
from nas.compress.recipe import PRUNE_METHODS, PRUNE_SCHEDULES, PRUNE_STRUCTURES, QUANT_SCHEMES, CompressionRecipe, StepConfig
from nas.compress.schemes import SCHEMES
from nas.compress.size import stored_size_bytes
from nas.compress.steps import STEPS, CompressionStep
from nas.errors import NasUserError
from nas.registry import Registry


def _recipes(bits=(4, 8, 16, 32), embedding_bits=(None, 4, 8, 32), act_bits=(8, 32), rates=(0.0, 0.3, 0.3 + 1e-9, 0.5),
             qat_steps=(0, 10)):
    fields = (PRUNE_METHODS, PRUNE_STRUCTURES, rates, PRUNE_SCHEDULES, bits, embedding_bits, act_bits, SCHEMES.names(), qat_steps)
    for values in itertools.product(*fields):
        yield CompressionRecipe(*values)


def test_keys_of_all_distinct_recipes_are_distinct():
    """Over 16,384 recipes (every method, structure, schedule and scheme; close rates; bits): one key per recipe.

    ``embedding_bits=None`` means "as ``weight_bits``", so it is the same recipe as naming that width.
    """
    def canonical(r: CompressionRecipe) -> CompressionRecipe:
        return dataclasses.replace(r, embedding_bits=r.weight_bits if r.embedding_bits is None else r.embedding_bits)

    recipes = list(_recipes())
    keys = {r.key for r in recipes}
    assert len(recipes) == 16384 and len(keys) == len({canonical(r) for r in recipes})
    assert CompressionRecipe(prune_rate=0.3, weight_bits=8).key == "p0.3muo-w8e8a32-asym"  # keys of stored studies keep their form


def test_every_step_a_recipe_names_is_registered_and_takes_its_arguments():
    seen = set()
    for recipe in _recipes(bits=(4, 16, 32), embedding_bits=(None, 8), rates=(0.0, 0.5)):
        steps = recipe.steps()
        for step in steps:
            entry = STEPS.get(step.name)
            inspect.signature(entry.apply).bind(entry(), None, **step.params)  # raises if a parameter is missing or extra
            seen.add(step.name)
        stages = [STEPS.get(s.name).stage for s in steps]
        assert stages == sorted(stages, key=["prune", "quantize"].index)  # prune before any quantization
        assert [s.name for s in steps if s.name == "quantize-activations"] == (["quantize-activations"] if recipe.act_bits < 32 else [])
    assert seen == set(STEPS.names())  # and every registered step is reachable from some recipe
    assert CompressionRecipe().steps() == []


def test_recipe_steps_follow_the_recipe_fields():
    recipe = CompressionRecipe(prune_structure="heads+neurons", prune_rate=0.25, prune_schedule="gradual", weight_bits=4,
                               embedding_bits=8, act_bits=8, quant_scheme="log", qat_steps=5)
    assert recipe.steps() == [
        StepConfig("prune-structured", {"rate": 0.25, "method": "magnitude", "gradual": True, "heads": True, "neurons": True}),
        StepConfig("quantize-qat", {"bits": 4, "embedding_bits": 8, "scheme": "log", "act_bits": 8, "steps": 5}),
        StepConfig("quantize-activations", {"bits": 8}),
    ]
    # 16-bit weights have no integer codes to train: QAT falls back to post-training quantization
    assert [s.name for s in CompressionRecipe(weight_bits=16, qat_steps=5).steps()] == ["quantize-ptq"]
    assert CompressionRecipe(weight_bits=8, embedding_bits=4).steps()[0].params["bits"] == {"embeddings": 4, "default": 8}


def test_compress_model_runs_whatever_steps_the_recipe_yields(monkeypatch):
    """The pipeline is a loop over registered steps: a step registered elsewhere runs, in order, with its stage timed."""
    calls = []
    steps: Registry[type[CompressionStep]] = Registry("compression step")
    for name, entry in STEPS.items():
        steps.register(name)(entry)

    @steps.register("scale-weights")
    class ScaleWeights(CompressionStep):
        stage = "prune"

        def needs_batches(self, params):
            return True

        def apply(self, run, *, factor):
            calls.append(factor)
            with torch.no_grad():
                run.model.weight.mul_(factor)

    monkeypatch.setattr(pipeline, "STEPS", steps)
    monkeypatch.setattr(CompressionRecipe, "steps", lambda self: [StepConfig("scale-weights", {"factor": 0.0}),
                                                                  StepConfig("quantize-ptq", {"bits": 8, "scheme": "symmetric"}),
                                                                  StepConfig("scale-weights", {"factor": 2.0})])
    model = nn.Linear(4, 3)
    with pytest.raises(NasUserError, match="needs calibration_batches"):  # the step's own requirement is checked first
        pipeline.compress_model(model, CompressionRecipe(weight_bits=8), calibration_batches=[])
    assert calls == []
    out = pipeline.compress_model(model, CompressionRecipe(weight_bits=8), calibration_batches=[{}])
    assert calls == [0.0, 2.0] and torch.count_nonzero(model.weight) == 0
    assert set(out.timings_s) == {"prune_s", "quantize_s"} and out.size_bytes == 12 + 3 * 8 + 3 * 4  # the recipe's 8-bit asymmetric codes, scale+offset per row, fp32 bias


@pytest.mark.parametrize("name", SCHEMES.names())
def test_every_scheme_codes_restores_and_sizes_a_tensor(name):
    torch.manual_seed(0)
    scheme, bits = SCHEMES.get(name), 4
    weight = torch.randn(6, 40)
    qt = quantize_tensor(weight, bits, scheme=name, per_channel=True)
    codes = qt.codes()
    assert qt.scheme == name and codes.dtype == torch.uint8 and int(codes.max()) < 2**bits
    restored = dequantize(qt)
    assert restored.unique().numel() <= (2**bits if qt.axis is None else 6 * 2**bits)
    assert float((restored - weight).abs().max()) < 0.5 * float(weight.abs().max())
    linear = nn.Linear(40, 6, bias=False)
    size = stored_size_bytes(linear, weight_bits=bits, scheme=name, per_channel=True)
    assert size.total_bytes == math.ceil(240 * bits / 8) + scheme.param_bytes(bits, 6)


def test_recipes_accept_exactly_the_registered_schemes_and_unknown_ones_list_the_valid_ones():
    assert sorted(QUANT_SCHEMES) == SCHEMES.names()  # recipe.py lists them: exported HF folders copy it without lightnas
    assert len({name[:4] for name in SCHEMES.names()}) == len(SCHEMES)  # recipe keys abbreviate schemes to 4 letters
    assert {name for name, entry in SCHEMES.items() if entry.nonlinear} == {"log", "kmeans"}
    with pytest.raises(NasUserError, match="choose one of asymmetric, kmeans, log, symmetric"):
        quantize_tensor(torch.ones(2, 2), 4, scheme="ternary")
    with pytest.raises(ValueError, match="quant_scheme must be one of"):
        CompressionRecipe(quant_scheme="ternary")
