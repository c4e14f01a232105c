"""Compression behaviour: exact sparsity, structured pruning that keeps outputs, quantization error bounds,
distillation-loss identities and size accounting checked against a real packed serialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.compress import (
    QATLinear,
    apply_masks_,
    attention_loss,
    calibrate_activations,
    convert_qat_,
    cubic_sparsity_schedule,
    dequantize,
    distillation_loss,
    fake_quantize_activations_,
    fake_quantize_weights_,
    hidden_projection,
    hidden_state_loss,
    kmeans_quantize,
    layer_mapping,
    linear_quantize,
    log_quantize,
    magnitude_prune_,
    pack_bits,
    prepare_qat_,
    prune_ffn_neurons_,
    prune_heads_,
    sparsity,
    stored_size_bytes,
    taylor_importance,
    taylor_prune_,
    torch_dynamic_int8,
    unpack_bits,
)
from nas.compress.prune import prunable_weights
from nas.compress.structured import attention_blocks, ffn_blocks
from nas.errors import NasUserError

HIDDEN, HEADS, FFN, LAYERS, VOCAB, SEQ = 32, 4, 64, 2, 60, 8
HEAD_SIZE = HIDDEN // HEADS


def hf_bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=32, num_labels=2, attn_implementation="eager",
    )
    return BertForSequenceClassification(config).eval()


def student() -> nn.Module:
    from nas.candidate import Candidate
    from nas.models.student import build_student

    torch.manual_seed(0)
    candidate = Candidate(n_layers=LAYERS, hidden_size=HIDDEN, n_heads=HEADS, ffn_size=FFN)
    return build_student(candidate, num_labels=2, vocab_size=VOCAB, max_positions=32)


# Both BERT-protocol models structured pruning must handle: Hugging Face's and our own same-named student.
MODELS: dict[str, Callable[[], nn.Module]] = {"hf_bert": hf_bert, "student": student}


def logits_of(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return out if isinstance(out, torch.Tensor) else out.logits


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1, VOCAB, (3, SEQ), generator=generator), "labels": torch.tensor([0, 1, 1])}


def classification_loss(model: nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(logits_of(model, b["input_ids"]), b["labels"])


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, input_ids: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        logits_of(model, input_ids)
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------------------------------
# Unstructured pruning


@pytest.mark.parametrize("scope", ["per_tensor", "global"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.73, 0.999])
def test_magnitude_prune_hits_exact_sparsity(rate: float, scope: str) -> None:
    model = hf_bert()
    masks = magnitude_prune_(model, rate, scope=scope)
    weights = prunable_weights(model)
    assert set(masks) == set(weights) and len(masks) == 6 * LAYERS  # q, k, v, attn-out, ffn-in, ffn-out
    assert all("encoder.layer." in name for name in masks)
    if scope == "per_tensor":
        for name, mask in masks.items():
            assert int((~mask).sum()) == round(rate * mask.numel())
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == pytest.approx(rate * total, abs=len(masks))
    assert sparsity(model, masks) == pytest.approx(sparsity(model))  # the zeros are exactly the masked entries
    for name, weight in weights.items():
        assert torch.all(weight[~masks[name]] == 0)
    if scope == "per_tensor":  # magnitude: every kept weight was at least as large as every pruned one
        for name, weight in prunable_weights(hf_bert()).items():
            kept, dropped = weight[masks[name]].abs(), weight[~masks[name]].abs()
            if kept.numel() and dropped.numel():
                assert kept.min() >= dropped.max()


def test_ties_are_broken_deterministically_and_masks_reapply() -> None:
    layer = nn.Sequential(nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        layer[0].weight.fill_(1.0)
    masks = magnitude_prune_(layer, 0.5, include=lambda name, m: isinstance(m, nn.Linear))
    assert masks["0.weight"].flatten().tolist() == [False] * 8 + [True] * 8  # lower flat index pruned first
    with torch.no_grad():
        layer[0].weight.add_(0.3)  # an "optimizer step" regrows pruned weights
    apply_masks_(layer, masks)
    assert int((layer[0].weight == 0).sum()) == 8


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_invalid_rate_is_a_user_error(bad: float) -> None:
    with pytest.raises(NasUserError, match="rate="):
        magnitude_prune_(hf_bert(), bad)


def test_taylor_ranks_large_grad_times_weight_above_zero_grad() -> None:
    linear = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0]])  # the second input is 0, so ∂L/∂w₂ = 0 despite equal magnitudes

    def loss_fn(model: nn.Module, b: torch.Tensor) -> torch.Tensor:
        return model(b).pow(2).sum()

    include = lambda name, m: isinstance(m, nn.Linear)  # noqa: E731
    scores = taylor_importance(linear, [x, x], loss_fn, include=include)["weight"].flatten()
    assert scores[0] == pytest.approx(2 * 5.0 * 10.0)  # Σ over 2 batches of |w · 2·(w·x)·x|
    assert scores[1] == 0
    masks = taylor_prune_(linear, 0.5, [x], loss_fn, include=include)
    assert masks["weight"].flatten().tolist() == [True, False]
    assert linear.weight.grad is None  # importance does not leave gradients behind


def test_cubic_schedule_endpoints_and_monotonicity() -> None:
    values = [cubic_sparsity_schedule(step, 100, 0.1, 0.8, begin_step=10) for step in range(0, 131)]
    assert values[0] == values[10] == pytest.approx(0.1)
    assert values[110] == values[130] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[60] == pytest.approx(0.8 - 0.7 * 0.5**3)
    with pytest.raises(NasUserError, match="final="):
        cubic_sparsity_schedule(0, 10, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Structured pruning


@pytest.mark.parametrize("factory", list(MODELS.values()), ids=list(MODELS))
def test_removing_a_silenced_head_keeps_outputs_and_shrinks_params_and_flops(factory: Callable[[], nn.Module]) -> None:
    model = factory()
    layer, head = 1, 2
    block = attention_blocks(model)[layer].module
    with torch.no_grad():  # silence the head: its slice of the output projection contributes nothing
        block.output.dense.weight[:, head * HEAD_SIZE : (head + 1) * HEAD_SIZE] = 0
    input_ids = batch()["input_ids"][:1]
    before_logits, before_params, before_flops = logits_of(model, input_ids), n_params(model), flops(model, input_ids)

    removed = prune_heads_(model, {layer: [head]})

    assert removed == {0: [], 1: [head]}
    torch.testing.assert_close(logits_of(model, input_ids), before_logits, rtol=1e-5, atol=1e-6)
    assert before_params - n_params(model) == 3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HEAD_SIZE * HIDDEN
    # q, k, v and output projections (2 FLOPs per MAC) plus Q·Kᵀ and P·V for one head of size d.
    expected_flops = 2 * SEQ * (4 * HIDDEN * HEAD_SIZE) + 2 * 2 * SEQ * SEQ * HEAD_SIZE
    assert before_flops - flops(model, input_ids) == expected_flops
    attn = block.self
    assert attn.query.out_features == attn.value.out_features == (HEADS - 1) * HEAD_SIZE
    assert getattr(attn, "num_attention_heads", HEADS - 1) == HEADS - 1  # HF keeps a count; the student reads its weights


@pytest.mark.parametrize("factory", list(MODELS.values()), ids=list(MODELS))
def test_removing_silenced_ffn_neurons_keeps_outputs(factory: Callable[[], nn.Module]) -> None:
    model = factory()
    neurons = [3, 10, 63]
    _, block = ffn_blocks(model)[0]
    with torch.no_grad():
        block.output.dense.weight[:, neurons] = 0
    input_ids = batch()["input_ids"][:1]
    before_logits, before_params, before_flops = logits_of(model, input_ids), n_params(model), flops(model, input_ids)

    prune_ffn_neurons_(model, {0: neurons})

    torch.testing.assert_close(logits_of(model, input_ids), before_logits, rtol=1e-5, atol=1e-6)
    assert before_params - n_params(model) == len(neurons) * (2 * HIDDEN + 1)
    assert before_flops - flops(model, input_ids) == len(neurons) * 2 * SEQ * 2 * HIDDEN
    assert block.intermediate.dense.out_features == block.output.dense.in_features == FFN - len(neurons)


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_rate_based_structured_pruning_keeps_a_working_model(importance: str) -> None:
    model = student()
    kwargs = {"batches": [batch(0), batch(1)], "loss_fn": classification_loss} if importance == "taylor" else {}
    heads = prune_heads_(model, rate=0.5, importance=importance, **kwargs)
    neurons = prune_ffn_neurons_(model, rate=0.25, importance=importance, **kwargs)
    assert all(len(h) == HEADS // 2 for h in heads.values())
    assert all(len(n) == FFN // 4 for n in neurons.values())
    assert logits_of(model, batch()["input_ids"]).shape == (3, 2)
    assert n_params(model) < n_params(student())
    # The rate cap keeps one head per layer even when the global budget would take more.
    one_head = prune_heads_(model, rate=0.9, scope="global")
    assert [block.n_heads for block in attention_blocks(model)] == [1, 1] and sum(map(len, one_head.values())) == 2


def test_taylor_head_importance_removes_the_silenced_heads_first() -> None:
    model = student()
    for block in attention_blocks(model):
        with torch.no_grad():  # head 1 of every layer contributes nothing, so its gate gradient is exactly 0
            block.module.output.dense.weight[:, HEAD_SIZE : 2 * HEAD_SIZE] = 0
    input_ids = batch()["input_ids"]
    before = logits_of(model, input_ids)
    removed = prune_heads_(model, rate=0.25, importance="taylor", batches=[batch(0), batch(1)], loss_fn=classification_loss)
    assert removed == {0: [1], 1: [1]}
    torch.testing.assert_close(logits_of(model, input_ids), before, rtol=1e-5, atol=1e-6)


def test_removing_every_head_of_a_layer_is_a_user_error() -> None:
    with pytest.raises(NasUserError, match="keep at least one"):
        prune_heads_(hf_bert(), {0: list(range(HEADS))})


# ----------------------------------------------------------------------------------------------------------
# Quantization


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("axis", [None, 0])
def test_linear_quantization_error_is_at_most_half_a_step(bits: int, symmetric: bool, axis: int | None) -> None:
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(bits)) * torch.linspace(0.1, 3, 16)[:, None]
    qt = linear_quantize(x, bits, symmetric=symmetric, axis=axis)
    error = (dequantize(qt) - x).abs()
    assert torch.all(error <= qt.scale / 2 + 1e-6)
    if symmetric:
        assert qt.q.abs().max() <= 2 ** (bits - 1) - 1
    else:
        assert qt.q.min() == 0 and qt.q.max() == 2**bits - 1  # the extremes land on the end codes
        span = x.max() - x.min() if axis is None else x.amax(1, keepdim=True) - x.amin(1, keepdim=True)
        torch.testing.assert_close(qt.scale, span / (2**bits - 1))
    assert qt.n_groups == (1 if axis is None else 16)


def test_asymmetric_formula_and_float16_and_bad_bits() -> None:
    x = torch.tensor([-1.0, -0.2, 0.4, 2.0])
    qt = linear_quantize(x, 3)
    assert qt.q.tolist() == [round((v + 1.0) / 3.0 * 7) for v in x.tolist()]
    torch.testing.assert_close(dequantize(qt), qt.q.float() / 7 * 3.0 - 1.0)
    assert linear_quantize(x, 16).q.dtype == torch.float16
    for bad in (1, 9, 12):
        with pytest.raises(NasUserError, match=f"bits={bad}"):
            linear_quantize(x, bad)


def test_kmeans_beats_linear_mse_on_gaussian_weights() -> None:
    weights = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))
    for bits in range(2, 9):
        linear_mse = (dequantize(linear_quantize(weights, bits)) - weights).pow(2).mean()
        kmeans = kmeans_quantize(weights, bits)
        kmeans_mse = (dequantize(kmeans) - weights).pow(2).mean()
        assert kmeans_mse < linear_mse
        assert kmeans.codebook.numel() == 2**bits and kmeans.q.shape == weights.shape


def test_log_quantization_uses_signed_powers_of_two() -> None:
    x = torch.tensor([0.0, 0.001, -0.3, 0.5, 1.0, -3.9])
    restored = dequantize(log_quantize(x, 4))
    nonzero = restored[restored != 0]
    torch.testing.assert_close(torch.log2(nonzero.abs()), torch.log2(nonzero.abs()).round())
    assert restored[0] == 0 and restored[1] == 0  # below half the smallest level
    assert torch.equal(torch.sign(restored[2:]), torch.sign(x[2:]))
    assert restored[-1] == -4.0 and restored[4] == 1.0


def test_per_layer_bits_mapping_and_ptq_report() -> None:
    model = hf_bert()
    report = fake_quantize_weights_(model, {"embeddings": 8, "attention": 4, "classifier": 32, "default": 8})
    assert report["bert.encoder.layer.0.attention.self.query"].bits == 4
    assert report["bert.encoder.layer.0.intermediate.dense"].bits == 8
    assert report["bert.embeddings.word_embeddings"].bits == 8
    assert "classifier" not in report
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert all(len(torch.unique(row)) <= 16 for row in query)  # 4 bits per output channel
    with pytest.raises(NasUserError, match="attentoin"):
        fake_quantize_weights_(hf_bert(), {"attentoin": 4, "default": 8})


def test_activation_calibration_and_fake_quant() -> None:
    model = student()
    batches = [(batch(i)["input_ids"],) for i in range(2)]
    ranges = calibrate_activations(model, batches, mode="percentile", percentile=99.0)
    assert set(ranges) == {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert all(lo <= 0 <= hi and hi > lo for lo, hi in ranges.values())
    reference = logits_of(model, batches[0][0])
    handles = fake_quantize_activations_(model, ranges, bits=8)
    quantized = logits_of(model, batches[0][0])
    assert not torch.equal(quantized, reference)
    torch.testing.assert_close(quantized, reference, atol=0.05, rtol=0)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(logits_of(model, batches[0][0]), reference)


def test_qat_gradients_flow_through_the_ste_and_convert_matches() -> None:
    model = student()
    wrapped = prepare_qat_(model, {"attention": 4, "default": 8}, act_bits=8)
    assert len(wrapped) == LAYERS * 6 + 2  # encoder Linears, pooler, classifier
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, QATLinear) and query.bits == 4
    model.train()
    classification_loss(model, batch()).backward()
    assert query.weight.grad is not None and query.weight.grad.abs().sum() > 0
    model.eval()
    before = logits_of(model, batch()["input_ids"])
    converted = convert_qat_(model)
    assert converted == wrapped and not any(isinstance(m, QATLinear) for m in model.modules())
    # The converted layer holds exactly the weight the QAT forward saw; only activation fake-quant is gone.
    assert torch.equal(query.quantized_weight(), model.bert.encoder.layer[0].attention.self.query.weight)
    torch.testing.assert_close(logits_of(model, batch()["input_ids"]), before, atol=0.05, rtol=0)


def test_torch_dynamic_int8_baseline_runs() -> None:
    model = student()
    quantized = torch_dynamic_int8(model)
    input_ids = batch()["input_ids"]
    torch.testing.assert_close(logits_of(quantized, input_ids), logits_of(model, input_ids), atol=0.05, rtol=0)
    assert "DynamicQuantizedLinear" in repr(quantized.classifier)


def test_onnxruntime_dynamic_int8_baseline(tmp_path) -> None:
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    from nas.compress import onnxruntime_dynamic_int8

    weight = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [numpy_helper.from_array(weight, "w")],
    )
    source = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    target = onnxruntime_dynamic_int8(source, tmp_path / "int8.onnx")
    assert any(node.op_type.startswith(("MatMulInteger", "DynamicQuantize")) for node in onnx.load(target).graph.node)
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    (y,) = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weight, atol=0.3)


# ----------------------------------------------------------------------------------------------------------
# Distillation


def test_distillation_loss_identities() -> None:
    generator = torch.Generator().manual_seed(0)
    student_logits, teacher_logits = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1])
    ce = F.cross_entropy(student_logits, labels)
    torch.testing.assert_close(distillation_loss(student_logits, teacher_logits, labels, alpha=1.0, temperature=3.0), ce)
    assert float(distillation_loss(student_logits, student_logits, labels, alpha=0.0, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    for temperature in (1.0, 2.0, 4.0):
        soft = distillation_loss(student_logits, teacher_logits, labels, alpha=0.0, temperature=temperature)
        kl = F.kl_div(F.log_softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1), reduction="batchmean")
        torch.testing.assert_close(soft, temperature**2 * kl)
    mixed = distillation_loss(student_logits, teacher_logits, labels, alpha=0.3, temperature=2.0)
    torch.testing.assert_close(mixed, 0.3 * ce + 0.7 * distillation_loss(student_logits, teacher_logits, labels, 0.0, 2.0))
    with pytest.raises(NasUserError, match="alpha="):
        distillation_loss(student_logits, teacher_logits, labels, alpha=1.5)
    with pytest.raises(NasUserError, match="temperature="):
        distillation_loss(student_logits, teacher_logits, labels, temperature=0.0)


def test_feature_losses_and_layer_mapping() -> None:
    assert layer_mapping(2, 6) == [2, 5]
    assert layer_mapping(3, 6) == [1, 3, 5]
    assert layer_mapping(6, 6) == list(range(6))
    with pytest.raises(NasUserError, match="deeper"):
        layer_mapping(4, 2)

    teacher_hidden = torch.randn(2, 5, 12)
    projection = hidden_projection(8, 12)
    loss = hidden_state_loss(torch.randn(2, 5, 8, requires_grad=True), teacher_hidden, projection)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert float(hidden_state_loss(teacher_hidden, teacher_hidden)) == 0.0
    with pytest.raises(NasUserError, match="projection"):
        hidden_state_loss(torch.randn(2, 5, 8), teacher_hidden)

    teacher_attn = torch.softmax(torch.randn(2, 4, 5, 5), dim=-1)
    assert float(attention_loss(teacher_attn, teacher_attn)) == pytest.approx(0.0, abs=1e-6)
    student_attn = torch.softmax(torch.randn(2, 2, 5, 5), dim=-1)
    assert float(attention_loss(student_attn, teacher_attn)) > 0  # 2 heads vs 4: compared as head averages
    same_mean = teacher_attn.mean(1, keepdim=True).expand(2, 2, 5, 5)
    assert float(attention_loss(same_mean, teacher_attn)) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Stored size


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_size_accounting_matches_a_real_packed_serialisation(bits: int) -> None:
    linear = nn.Linear(24, 10, bias=False)
    for scheme, per_channel in [("asymmetric", True), ("asymmetric", False), ("symmetric", True), ("kmeans", False)]:
        if scheme == "kmeans":
            qt = kmeans_quantize(linear.weight, bits)
            side_bytes = qt.codebook.numel() * 4
        else:
            qt = linear_quantize(linear.weight, bits, symmetric=scheme == "symmetric", axis=0 if per_channel else None)
            side_bytes = qt.scale.numel() * 4 + (qt.xmin.numel() * 4 if qt.xmin is not None else 0)
        packed = pack_bits(qt.codes(), bits)
        assert torch.equal(unpack_bits(packed, bits, qt.q.numel()), qt.codes().flatten())
        report = stored_size_bytes(linear, weight_bits=bits, scheme=scheme, per_channel=per_channel)
        assert report.total_bytes == len(packed) + side_bytes == math.ceil(240 * bits / 8) + side_bytes


def test_model_size_with_sparsity_and_per_layer_bits() -> None:
    model = hf_bert()
    dense = stored_size_bytes(model)
    assert dense.total_bytes == dense.fp32_bytes == 4 * n_params(model)
    int8 = stored_size_bytes(model, weight_bits=8)
    int4_attention = stored_size_bytes(model, weight_bits={"attention": 4, "default": 8})
    assert int4_attention.total_bytes < int8.total_bytes < dense.total_bytes
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert int8.by_tensor[query] == HIDDEN * HIDDEN + HIDDEN * 8  # codes + fp32 scale & offset per row
    assert int8.by_tensor["bert.encoder.layer.0.attention.self.query.bias"] == HIDDEN * 4

    masks = magnitude_prune_(model, 0.75)
    sparse = stored_size_bytes(model, weight_bits=8, masks=masks, store_sparse=True)
    kept = int(masks[query].sum())
    assert sparse.by_tensor[query] == kept + HIDDEN * 8 + math.ceil(HIDDEN * HIDDEN / 8)
    assert stored_size_bytes(model, weight_bits=8, masks=masks).total_bytes == int8.total_bytes  # dense storage
    assert sparse.total_bytes < int8.total_bytes
    apply_masks_(model, masks)  # masks still fit the unchanged shapes


# ----------------------------------------------------------------------------------------------------------
# Gaps filled for issue 5: observer modes and the STE identity for every QAT scheme


def test_minmax_observer_is_exact_and_percentile_clips_outliers() -> None:
    from nas.compress import ActivationObserver

    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4000, generator=generator) for _ in range(3)]
    batches[1][7] = 50.0  # one outlier, as a GELU spike would be
    minmax, percentile = ActivationObserver("minmax"), ActivationObserver("percentile", percentile=99.9)
    for values in batches:
        minmax.observe(values)
        percentile.observe(values)
    everything = torch.cat(batches)
    assert minmax.range() == (float(everything.min()), 50.0)
    lo, hi = percentile.range()
    expected_hi = sum(float(torch.quantile(b, 0.999)) for b in batches) / 3  # mean of per-batch percentiles
    assert hi == pytest.approx(expected_hi, rel=1e-5) and 2.0 < hi < 5.0  # the outlier does not stretch the range
    assert -5.0 < lo < -2.0


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric", "log", "kmeans"])
def test_qat_weight_gradient_is_the_straight_through_identity(scheme: str) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    qat = QATLinear(linear, 3, scheme=scheme)
    x = torch.randn(5, 16)
    qat(x).pow(2).sum().backward()
    # The same loss through a plain layer holding the quantized weight: its weight gradient is what the STE
    # must hand to the float weight unchanged.
    frozen = qat.quantized_weight().detach().requires_grad_(True)
    F.linear(x, frozen, linear.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(linear.weight.grad, frozen.grad)
    assert not torch.equal(frozen, linear.weight)  # 3 bits really changed the forward weight
    levels = len(torch.unique(frozen)) if scheme in ("kmeans",) else max(len(torch.unique(r)) for r in frozen)
    assert levels <= 2**3
