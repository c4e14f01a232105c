"""The MobileNetV2-style inverted residual block: what its registry-driven tests cannot see.

Shapes, formulas, padding, inheritance, pruning, supernet refusal, TVM and the Hugging Face round trip are
covered for it by the tests that iterate ``list_blocks()``; these check its own claims."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from nas.candidate import Architecture, BlockSpec, Candidate
from nas.compress.prune import prune_ffn_neurons_
from nas.models.blocks import create_block
from nas.models.student import build_student

SPEC = BlockSpec("inverted_residual", ffn_size=48, kernel_size=5)


def _masks(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, 1, 1, length), torch.ones(1, length, 1)


def test_a_token_moves_only_its_kernel_neighbourhood():
    torch.manual_seed(0)
    block = create_block(SPEC, 16).eval()
    x = torch.randn(1, 12, 16)
    changed = x.clone()
    changed[0, 6] += 1.0
    delta = (block(changed, *_masks(12))[0] - block(x, *_masks(12))[0]).abs().sum(-1)[0]
    assert (delta[4:9] > 1e-4).all() and (delta[:4] == 0).all() and (delta[9:] == 0).all()  # k = 5: tokens 4..8


def test_inherited_block_is_the_teachers_ffn_exactly():
    """At the teacher's widths inheritance copies its FFN unpermuted; with the centre-tap kernel it starts
    from, the block then computes the teacher's ``output(intermediate(x), x)``."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                        max_position_embeddings=32, num_labels=2)
    teacher = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, so a wrong index would show
        for name, p in teacher.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    student = build_student(Candidate(Architecture(32, (SPEC,))), 2, teacher_state=teacher.state_dict(), teacher_layers=1,
                            vocab_size=200, max_positions=32)
    block, layer = student.bert.encoder.layer[0], teacher.bert.encoder.layer[0]
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x, *_masks(7))[0], layer.output(layer.intermediate(x), x), atol=1e-5, rtol=1e-5)


def test_pruning_an_expanded_channel_removes_its_depthwise_filter_and_nothing_else():
    torch.manual_seed(0)
    model = build_student(Candidate(Architecture(16, (SPEC,))), 2, max_positions=16).eval()
    block = model.bert.encoder.layer[0]
    x = torch.randn(1, 9, 16)
    removed = [0, 5, 17, 47]
    with torch.no_grad():
        reference = create_block(SPEC, 16).eval()
        reference.load_state_dict(block.state_dict())
        reference.output.dense.weight[:, removed] = 0.0  # a channel reaches the output only through its column
        prune_ffn_neurons_(model, {0: removed})
        assert block.depthwise.weight.shape == (44, 1, 5) and block.depthwise.groups == 44
        torch.testing.assert_close(block(x, *_masks(9))[0], reference(x, *_masks(9))[0], atol=1e-6, rtol=1e-6)
