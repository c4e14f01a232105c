"""Artefact parity: each shipped file is scored as a user would run it, with lightnas unimportable for ONNX/HF."""

from __future__ import annotations

import torch

from nas.artefacts.parity import score_without_lightnas, tvm_accuracy
from nas.candidate import Candidate
from nas.data.tokenize import TokenizedSplit
from nas.artefacts.onnx_fp32 import export_onnx
from nas.artefacts.tvm_library import export_tvm
from nas.hardware.profiles import load_profile
from nas.models.student import build_student
from nas.train import accuracy

SEQ = 16


def _split(n=48):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (n, SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 10:] = 0
    return TokenizedSplit(ids, mask, torch.randint(0, 2, (n,), generator=g))


def test_onnx_and_tvm_files_score_like_the_torch_student_and_onnx_needs_no_lightnas(tmp_path):
    torch.manual_seed(0)
    model = build_student(Candidate(n_layers=1, hidden_size=32, n_heads=2, ffn_size=64), num_labels=2).eval()
    split = _split()
    expected = accuracy(model, split)
    onnx = export_onnx(model, SEQ, tmp_path / "model.onnx")
    (score,) = score_without_lightnas(split, onnx=onnx)
    assert score.loads_without_lightnas and score.accuracy == expected
    library, _ = export_tvm(model, load_profile("host"), SEQ, tmp_path / "host.so", tuning=None)
    assert tvm_accuracy(library, split).accuracy == expected


def test_a_folder_that_needs_lightnas_is_reported_as_not_loading(tmp_path):
    model = build_student(Candidate(n_layers=1, hidden_size=32, n_heads=2, ffn_size=64), num_labels=2).eval()
    model.save_pretrained(tmp_path / "hf")  # the student's own config class only: stock transformers cannot load it
    (score,) = score_without_lightnas(_split(8), hf=tmp_path / "hf")
    assert score.loads_without_lightnas is False and score.accuracy is None and score.error
