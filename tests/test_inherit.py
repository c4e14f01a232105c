"""Weight inheritance: exact at full width, importance-ordered when narrower, SVD for factorised tables."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.candidate import Architecture, BlockSpec, Candidate
from nas.models.blocks import example_spec, list_blocks
from nas.models.inherit import head_importance, inherit_from_teacher
from nas.models.student import build_student

TEACHER = dict(vocab_size=300, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=96,
               max_position_embeddings=32)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TEACHER, num_labels=2)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a wrong index would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _ids():
    ids = torch.randint(1, 300, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask


def test_full_width_inheritance_reproduces_the_teacher(teacher):
    candidate = Candidate(n_layers=4, hidden_size=48, n_heads=4, ffn_size=96)
    student = build_student(candidate, 2, teacher_state=teacher.state_dict(), teacher_layers=4, teacher_heads=4,
                            vocab_size=300, max_positions=32)
    ids, mask = _ids()
    with torch.no_grad():
        torch.testing.assert_close(student(ids, mask), teacher(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-4)


def test_narrow_student_keeps_the_most_important_head_and_neurons(teacher):
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    layer = "bert.encoder.layer.3"  # student layer 0 of 1 maps to the teacher's last layer
    state[f"{layer}.attention.self.value.weight"][24:36] *= 10  # make head 2 (rows 24..35) the most important
    assert head_importance(state, 3, 4).argmax() == 2
    state[f"{layer}.intermediate.dense.weight"][[5, 70]] *= 10  # and neurons 5 and 70
    spec = BlockSpec("transformer", heads=1, head_size=12, ffn_size=2)
    student = build_student(Candidate(Architecture(48, (spec,))), 2, teacher_state=state, teacher_layers=4,
                            teacher_heads=4, vocab_size=300, max_positions=32)
    block = student.bert.encoder.layer[0]
    torch.testing.assert_close(block.attention.self.value.weight, state[f"{layer}.attention.self.value.weight"][24:36])
    torch.testing.assert_close(block.intermediate.dense.weight, state[f"{layer}.intermediate.dense.weight"][[5, 70]])
    torch.testing.assert_close(block.output.dense.weight, state[f"{layer}.output.dense.weight"][:, [5, 70]])


def test_narrow_hidden_keeps_the_units_with_the_largest_layernorm_gains(teacher):
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    state["bert.embeddings.LayerNorm.weight"][[3, 40]] = 50.0
    arch = Architecture(8, (BlockSpec("conv", kernel_size=3, ffn_size=16),))
    student = build_student(Candidate(arch), 2, teacher_state=state, teacher_layers=4, vocab_size=300, max_positions=32)
    ln = student.bert.embeddings.LayerNorm.weight
    assert (ln == 50.0).sum() == 2  # both boosted units were kept
    table = state["bert.embeddings.word_embeddings.weight"]
    # the token table columns are the teacher's columns of the kept units, in teacher order
    cols = [int((table[:, :] == student.bert.embeddings.word_embeddings.weight[:, j:j + 1]).all(0).nonzero()[0]) for j in range(8)]
    assert cols == sorted(cols) and 3 in cols and 40 in cols


def test_factorised_table_is_the_best_low_rank_approximation(teacher):
    arch = Architecture(48, (BlockSpec("conv", kernel_size=3, ffn_size=16),), embedding_size=8)
    student = build_student(Candidate(arch), 2, teacher_state=teacher.state_dict(), teacher_layers=4, vocab_size=300, max_positions=32)
    emb = student.bert.embeddings
    approx = emb.word_embeddings.weight @ emb.projection.weight.T  # (V, 48)
    table = teacher.state_dict()["bert.embeddings.word_embeddings.weight"]
    s = torch.linalg.svdvals(table)
    error = torch.linalg.matrix_norm(table - approx) ** 2
    torch.testing.assert_close(error, (s[8:] ** 2).sum(), rtol=1e-3, atol=1e-3)  # Eckart–Young optimum


@pytest.mark.parametrize("block_type", list_blocks())
def test_every_block_type_inherits_something(teacher, block_type):
    """Each registered type copies teacher tensors into its own layer (no type silently inherits nothing)."""
    specs = (BlockSpec("transformer", heads=2, head_size=12, ffn_size=32), example_spec(block_type))
    student = build_student(Candidate(Architecture(32, specs)), 2, vocab_size=300, max_positions=32)
    random_state = {k: v.clone() for k, v in student.state_dict().items()}
    count = inherit_from_teacher(student, teacher.state_dict(), 4, 4)
    changed = {k.split(".")[3] for k, v in student.state_dict().items() if k.startswith("bert.encoder.layer.") and not torch.equal(v, random_state[k])}
    assert changed == {"0", "1"} and count > 14


def test_a_block_type_that_does_not_say_what_it_inherits_cannot_be_registered():
    from nas.models.blocks import Block, register_block

    half = type("NoInherit", (Block,), {"fields": {}, "example": {}, "supernet_keys": None, "code": staticmethod(lambda s: "x"),
                                        "count_params": staticmethod(lambda s, h: 0), "count_flops": staticmethod(lambda s, h, n: 0)})
    with pytest.raises(TypeError, match="must define inherit"):
        register_block("no_inherit")(half)
