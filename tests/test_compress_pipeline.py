"""compress_model applies a whole CompressionRecipe: exact sparsity on a cubic schedule with recovery between
steps, structured pruning that keeps a model exportable, per-layer bits, QAT through a real fine-tuning loop,
activation ranges, and a stored size equal to the bytes of the model's actual packed serialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert as shared_tiny_bert
from torch import nn

from nas.compress import QATLinear, dequantize, linear_quantize, pack_bits, unpack_bits
from nas.compress.pipeline import CompressionOutcome, compress_model
from nas.compress.prune import cubic_sparsity_schedule, prunable_weights
from nas.compress.recipe import CompressionRecipe
from nas.errors import NasUserError

HIDDEN, HEADS, FFN, LAYERS, VOCAB, SEQ = 32, 4, 64, 2, 60, 8
HEAD_SIZE = HIDDEN // HEADS


def tiny_bert() -> nn.Module:
    """The shared tiny BERT (tests/conftest.py) at this module's sizes, eager attention."""
    return shared_tiny_bert(layers=LAYERS, hidden=HIDDEN, heads=HEADS, ffn=FFN, vocab=VOCAB, max_positions=32,
                            attn_implementation="eager")


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (4, SEQ), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.tensor([0, 1, 1, 0])}


BATCHES = [make_batch(0), make_batch(1)]


def logits_of(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    return out if isinstance(out, torch.Tensor) else out.logits


class Recorder:
    """A real recovery loop (Adam on cross-entropy, masks re-applied each step) that records its calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model: nn.Module, steps: int, masks: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        zeros = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        self.calls.append({
            "steps": steps, "sparsity": zeros / total if total else 0.0, "n_masks": len(masks),
            "has_qat": any(isinstance(m, QATLinear) for m in model.modules()),
            "heads": model.bert.encoder.layer[0].attention.self.query.out_features // HEAD_SIZE,
        })
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(steps):
            loss = F.cross_entropy(logits_of(model, BATCHES[step % 2]), BATCHES[step % 2]["labels"])
            optimizer.zero_grad()
            loss.backward()
            self.calls[-1].setdefault("grad_norm", sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None))
            optimizer.step()
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)
        model.eval()


def test_identity_recipe_changes_nothing() -> None:
    model, reference = tiny_bert(), tiny_bert()
    out = compress_model(model, CompressionRecipe(), calibration_batches=BATCHES)
    torch.testing.assert_close(logits_of(model, BATCHES[0]), logits_of(reference, BATCHES[0]), rtol=0, atol=0)
    assert out.size_bytes == out.size.fp32_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert out.sparsity == 0.0 and out.masks == {} and not out.activation_hooks
    assert set(out.bits_by_layer.values()) == {32}


@pytest.mark.parametrize("method", ["magnitude", "taylor"])
def test_gradual_unstructured_follows_the_cubic_schedule_with_recovery(method: str) -> None:
    model, recover = tiny_bert(), Recorder()
    recipe = CompressionRecipe(prune_method=method, prune_rate=0.6, prune_schedule="gradual")
    out = compress_model(model, recipe, calibration_batches=BATCHES, recover=recover, recovery_steps=10, prune_stages=4)

    # recover ran after every pruning step, at that step's cubic-schedule sparsity, with the budget split evenly
    assert [c["steps"] for c in recover.calls] == [3, 3, 2, 2]
    for stage, call in enumerate(recover.calls, start=1):
        assert call["sparsity"] == pytest.approx(cubic_sparsity_schedule(stage, 4, 0.0, 0.6), abs=0.01)
        assert call["n_masks"] == 6 * LAYERS and call["grad_norm"] > 0
    weights = prunable_weights(model)
    for name, mask in out.masks.items():
        assert int((~mask).sum()) == round(0.6 * mask.numel())  # exact, per tensor
        assert torch.all(weights[name][~mask] == 0)
    assert out.sparsity == pytest.approx(0.6, abs=1e-3) and out.recovery_steps == 10


def test_gradual_masks_only_grow() -> None:
    model, seen = tiny_bert(), []

    def recover(m: nn.Module, steps: int, masks: dict[str, torch.Tensor]) -> None:
        seen.append({k: v.clone() for k, v in masks.items()})
        Recorder()(m, steps, masks)  # real training moves the weights, so magnitudes get re-ranked

    compress_model(model, CompressionRecipe(prune_rate=0.5, prune_schedule="gradual"), calibration_batches=BATCHES,
                   recover=recover, recovery_steps=6, prune_stages=3)
    for earlier, later in zip(seen, seen[1:]):
        assert all(torch.all(later[n] <= earlier[n]) for n in earlier)  # pruned once, pruned for good


@pytest.mark.parametrize("schedule", ["oneshot", "gradual"])
def test_structured_pruning_shrinks_updates_config_and_exports(schedule: str) -> None:
    model, recover = tiny_bert(), Recorder()
    recipe = CompressionRecipe(prune_structure="heads+neurons", prune_rate=0.5, prune_schedule=schedule, weight_bits=8, act_bits=8)
    out = compress_model(model, recipe, calibration_batches=BATCHES, recover=recover, recovery_steps=4, prune_stages=2)

    assert out.layer_shapes == {i: {"heads": HEADS // 2, "head_size": HEAD_SIZE, "ffn_size": FFN // 2} for i in range(LAYERS)}
    assert all(len(h) == HEADS // 2 and len(set(h)) == len(h) and max(h) < HEADS for h in out.removed_heads.values())
    assert all(len(n) == FFN // 2 and len(set(n)) == len(n) and max(n) < FFN for n in out.removed_neurons.values())
    if schedule == "gradual":  # cubic(1 of 2) = 0.4375 of 4 heads rounds to 2 already; FFN 28 then 32 neurons
        assert [c["heads"] for c in recover.calls] == [2, 2]
    config = model.config
    assert (config.num_attention_heads, config.intermediate_size, config.attention_head_size) == (HEADS // 2, FFN // 2, HEAD_SIZE)
    # Matrices really shrank: each removed head takes 4·H·d + 3·d parameters, each neuron 2·H + 1.
    removed = LAYERS * ((HEADS // 2) * (4 * HIDDEN * HEAD_SIZE + 3 * HEAD_SIZE) + (FFN // 2) * (2 * HIDDEN + 1))
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tiny_bert().parameters()) - removed
    assert out.sparsity == pytest.approx(0.5)

    eager = logits_of(model, BATCHES[0])
    exported = torch.export.export(model, (), {"input_ids": BATCHES[0]["input_ids"], "attention_mask": BATCHES[0]["attention_mask"]})
    torch.testing.assert_close(logits_of(exported.module(), BATCHES[0]), eager)
    assert len(out.activation_ranges) == LAYERS * 6 + 2  # every nn.Linear input, including pooler and classifier


def test_per_layer_bits_ptq_and_size_equal_the_packed_serialisation() -> None:
    model = tiny_bert()
    out = compress_model(model, CompressionRecipe(weight_bits=4, embedding_bits=8), calibration_batches=[])
    assert out.bits_by_layer["bert.embeddings.word_embeddings"] == 8
    assert out.bits_by_layer["bert.encoder.layer.1.attention.self.query"] == 4
    assert out.bits_by_layer["classifier"] == 4

    # Serialise for real: per-channel asymmetric codes, bit-packed, plus fp32 scale/offset per row and fp32 rest.
    serialised = 0
    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        module_name, _, kind = name.rpartition(".")
        bits = out.bits_by_layer.get(module_name) if kind == "weight" else None
        if bits is None:
            serialised += len(param.detach().numpy().astype("float32").tobytes())
            continue
        qt = linear_quantize(param, bits, axis=0)
        packed = pack_bits(qt.codes(), bits)
        restored = dequantize(linear_quantize(param, bits, axis=0)).flatten()
        assert torch.equal(unpack_bits(packed, bits, param.numel()), qt.codes().flatten())
        torch.testing.assert_close(restored, param.detach().flatten(), rtol=0, atol=1e-6)  # the model *is* these codes
        serialised += len(packed) + len(qt.scale.numpy().tobytes()) + len(qt.xmin.numpy().tobytes())
        assert isinstance(modules[module_name], (nn.Linear, nn.Embedding))
    assert out.size_bytes == serialised
    assert out.size_bytes < out.size.fp32_bytes / 4  # 4-bit codes; per-row scales and fp32 biases keep it above 1/8


@pytest.mark.parametrize("scheme", ["asymmetric", "log", "kmeans"])
def test_qat_runs_through_recover_then_converts(scheme: str) -> None:
    model, recover = tiny_bert(), Recorder()
    before = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    recipe = CompressionRecipe(prune_rate=0.5, weight_bits=4, embedding_bits=8, quant_scheme=scheme, qat_steps=4)
    out = compress_model(model, recipe, calibration_batches=BATCHES, recover=recover)

    assert len(recover.calls) == 1 and recover.calls[0]["has_qat"] and recover.calls[0]["grad_norm"] > 0  # STE: grads flow
    assert out.recovery_steps == 4 and not any(isinstance(m, QATLinear) for m in model.modules())
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(query, before)
    assert torch.all(query[~out.masks["bert.encoder.layer.0.attention.self.query.weight"]] == 0)  # masks held in QAT
    levels = 2**4 + 1  # the 4-bit levels plus the exact 0 of pruned weights (asymmetric grids may miss 0)
    if scheme == "kmeans":  # one codebook per tensor
        assert len(torch.unique(query)) <= levels
    else:  # per output channel
        assert all(len(torch.unique(row)) <= levels for row in query)
    assert len(torch.unique(model.bert.embeddings.word_embeddings.weight[0])) <= 256
    assert out.is_stored_sparse  # 50 % zeros at 4 bits: kept codes + bitmap beat dense codes


def test_activation_quantization_hooks_are_calibrated_and_removable() -> None:
    model = tiny_bert()
    reference = logits_of(model, BATCHES[0])
    out = compress_model(model, CompressionRecipe(act_bits=4), calibration_batches=BATCHES, act_calibration="minmax")
    assert all(lo <= 0 <= hi for lo, hi in out.activation_ranges.values())
    quantized = logits_of(model, BATCHES[0])
    assert not torch.equal(quantized, reference)
    for hook in out.activation_hooks:
        hook.remove()
    torch.testing.assert_close(logits_of(model, BATCHES[0]), reference, rtol=0, atol=0)  # weights untouched (32 bits)


def test_user_errors_name_the_fix() -> None:
    with pytest.raises(NasUserError, match="recover="):
        compress_model(tiny_bert(), CompressionRecipe(weight_bits=8, qat_steps=5), calibration_batches=BATCHES)
    with pytest.raises(NasUserError, match="recover="):
        compress_model(tiny_bert(), CompressionRecipe(prune_rate=0.3), calibration_batches=BATCHES, recovery_steps=5)
    with pytest.raises(NasUserError, match="calibration_batches"):
        compress_model(tiny_bert(), CompressionRecipe(act_bits=8), calibration_batches=[])
    unlabeled = [{k: v for k, v in BATCHES[0].items() if k != "labels"}]
    with pytest.raises(NasUserError, match="labels"):
        compress_model(tiny_bert(), CompressionRecipe(prune_rate=0.3, prune_method="taylor"), calibration_batches=unlabeled)


def test_outcome_is_a_plain_record() -> None:
    out = compress_model(tiny_bert(), CompressionRecipe(prune_rate=0.25, weight_bits=8), calibration_batches=[])
    assert isinstance(out, CompressionOutcome) and out.size_bytes == out.size.total_bytes
    assert math.isclose(out.sparsity, 0.25, abs_tol=1e-3) and set(out.timings_s) == {"prune_s", "quantize_s"}


def test_pruned_student_rebuilds_from_its_config() -> None:
    """The seam with the student builder: after structured pruning, config → model → load_state_dict works."""
    from nas.candidate import Candidate
    from nas.models.student import build_student

    torch.manual_seed(0)
    model = build_student(Candidate(n_layers=2, hidden_size=64, n_heads=2, ffn_size=128), num_labels=2,
                          vocab_size=VOCAB, max_positions=32)
    out = compress_model(model, CompressionRecipe(prune_structure="heads+neurons", prune_rate=0.5), calibration_batches=BATCHES)
    assert out.layer_shapes == {0: {"heads": 1, "head_size": 32, "ffn_size": 64}, 1: {"heads": 1, "head_size": 32, "ffn_size": 64}}
    rebuilt = type(model)(type(model.config).from_dict(model.config.to_dict())).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: every shape agrees
    torch.testing.assert_close(logits_of(rebuilt, BATCHES[0]), logits_of(model, BATCHES[0]))


def test_recipe_keys_tell_every_prune_structure_apart():
    from nas.compress.recipe import PRUNE_STRUCTURES

    keys = {CompressionRecipe(prune_rate=0.3, prune_structure=s).key for s in PRUNE_STRUCTURES}
    assert len(keys) == len(PRUNE_STRUCTURES)
