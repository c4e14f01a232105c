"""The student builder: shapes, export, Hugging Face round trip, teacher weight inheritance."""

from __future__ import annotations

import torch

from nas.candidate import Candidate
from nas.models.student import StudentForSequenceClassification, build_student, teacher_layer_for

TINY = Candidate(n_layers=2, hidden_size=64, n_heads=2, ffn_size=128)


def _inputs(batch=2, length=12):
    ids = torch.randint(1, 1000, (batch, length))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    return ids, mask


def test_forward_shapes_and_backward_reaches_every_parameter():
    model = build_student(TINY, num_labels=3).train()
    logits, hidden, attn = model.forward_features(*_inputs())
    assert logits.shape == (2, 3)
    assert len(hidden) == 3 and hidden[-1].shape == (2, 12, 64)
    assert attn[0].shape == (2, 2, 12, 12)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # Only embedding rows of unseen tokens get zero grads; every tensor must get one.
    assert missing == []


def test_padding_does_not_change_logits():
    model = build_student(TINY, num_labels=2)
    ids, mask = _inputs(batch=1, length=12)
    mask[:] = 1
    mask[0, 8:] = 0
    padded = model(ids, mask)
    trimmed = model(ids[:, :8], mask[:, :8])
    torch.testing.assert_close(padded, trimmed, atol=1e-5, rtol=1e-5)


def test_torch_export_matches_eager():
    model = build_student(TINY, num_labels=2)
    ids, mask = _inputs()
    exported = torch.export.export(model, (ids, mask))
    torch.testing.assert_close(exported.module()(ids, mask), model(ids, mask))


def test_save_pretrained_round_trip(tmp_path):
    model = build_student(TINY, num_labels=2)
    model.save_pretrained(tmp_path)
    again = StudentForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = _inputs()
    torch.testing.assert_close(again(ids, mask), model(ids, mask))
    assert (tmp_path / "model.safetensors").is_file()


def test_layer_selection_is_uniform_and_last_aligned():
    assert [teacher_layer_for(i, 2, 6) for i in range(2)] == [2, 5]
    assert [teacher_layer_for(i, 3, 6) for i in range(3)] == [1, 3, 5]
    assert [teacher_layer_for(i, 6, 6) for i in range(6)] == list(range(6))


def test_inheritance_copies_sliced_teacher_weights():
    from transformers import BertConfig, BertForSequenceClassification

    teacher = BertForSequenceClassification(
        BertConfig(vocab_size=30522, hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=192)
    )
    state = teacher.state_dict()
    student = build_student(TINY, num_labels=2, teacher_state=state, teacher_layers=4)
    s = student.state_dict()
    # student layer 1 ← teacher layer 3, first 64 rows/cols
    torch.testing.assert_close(s["bert.encoder.layer.1.attention.self.query.weight"],
                               state["bert.encoder.layer.3.attention.self.query.weight"][:64, :64])
    torch.testing.assert_close(s["bert.encoder.layer.0.intermediate.dense.weight"],
                               state["bert.encoder.layer.1.intermediate.dense.weight"][:128, :64])
    expected_pos = state["bert.embeddings.position_embeddings.weight"][:512, :64] + state["bert.embeddings.token_type_embeddings.weight"][0, :64]
    torch.testing.assert_close(s["bert.embeddings.position_embeddings.weight"], expected_pos)
