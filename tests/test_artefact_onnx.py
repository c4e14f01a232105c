"""The low-bit ONNX file stores the campaign's codes: a fraction of the fp32 file's bytes, and stock ONNX Runtime
(with lightnas unimportable) computes the torch student's logits from it."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch

from nas.artefacts.onnx_lowbit import export_lowbit_onnx
from nas.artefacts.parity import score_without_lightnas
from nas.candidate import Candidate
from nas.compress.pipeline import compress_model
from nas.compress.recipe import CompressionRecipe
from nas.data.tokenize import TokenizedSplit
from nas.artefacts.onnx_fp32 import export_onnx
from nas.models.student import build_student
from nas.train import accuracy

SEQ = 32
SHAPE = Candidate(n_layers=2, hidden_size=128, n_heads=2, ffn_size=512)


def _batch(n=16):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (n, SEQ), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (n,), generator=g)}


def _compressed(recipe):
    torch.manual_seed(0)
    model = build_student(SHAPE, num_labels=2).eval()
    compress_model(model, recipe, calibration_batches=[_batch()])
    return model.eval()


@pytest.fixture(scope="module")
def fp32_bytes(tmp_path_factory):
    torch.manual_seed(0)
    path = export_onnx(build_student(SHAPE, num_labels=2).eval(), SEQ, tmp_path_factory.mktemp("fp32") / "fp32.onnx")
    return os.path.getsize(path)


@pytest.mark.parametrize("bits, scheme, share, tolerance", [
    (8, "asymmetric", 0.30, 5e-3),  # int8 compute: activations quantized dynamically, so not bit-exact
    (8, "symmetric", 0.30, 5e-3),
    (4, "asymmetric", 0.20, 1e-5),  # MatMulNBits dequantizes to fp32: exact up to accumulation order
    (4, "kmeans", 0.20, 1e-5),
    (4, "log", 0.20, 1e-5),
])
def test_low_bit_file_is_small_and_ort_computes_the_students_logits(tmp_path, fp32_bytes, bits, scheme, share, tolerance):
    import onnxruntime as ort

    recipe = CompressionRecipe(weight_bits=bits, quant_scheme=scheme)
    model = _compressed(recipe)
    artefact = export_lowbit_onnx(model, recipe, SEQ, tmp_path / "model.onnx")
    assert artefact.file_bytes == os.path.getsize(artefact.path) < share * fp32_bytes
    batch = _batch()
    session = ort.InferenceSession(str(artefact.path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})[0]
    expected = model(batch["input_ids"], batch["attention_mask"]).detach().numpy()
    assert np.abs(got - expected).max() <= tolerance * max(1.0, np.abs(expected).max()) * 10
    ops = {node.op_type for node in onnx.load(str(artefact.path)).graph.node}
    if bits == 8:
        assert "MatMulInteger" in ops  # int8 compute, not fp32 in disguise
    if bits == 4 and scheme == "asymmetric":
        assert "MatMulNBits" in ops


def test_low_bit_file_loads_and_scores_like_torch_without_lightnas(tmp_path):
    recipe = CompressionRecipe(weight_bits=4, quant_scheme="asymmetric")
    model = _compressed(recipe)
    artefact = export_lowbit_onnx(model, recipe, SEQ, tmp_path / "model.onnx")
    b = _batch(48)
    split = TokenizedSplit(b["input_ids"], b["attention_mask"], b["labels"])
    (score,) = score_without_lightnas(split, onnx=artefact.path)
    assert score.loads_without_lightnas and score.accuracy == pytest.approx(accuracy(model, split))
