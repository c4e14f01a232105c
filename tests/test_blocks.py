"""Blocks, factorised embeddings and vocabulary trimming: shapes, formulas against a counted forward pass."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.candidate import Architecture, BlockSpec, Candidate
from nas.models.blocks import Block, block_class, create_block, example_spec, list_blocks, register_block
from nas.models.embeddings import Embeddings
from nas.models.student import build_student, count_flops, count_params, trim_vocabulary_
from nas.models.vocab import coverage, most_frequent_tokens, token_map_for

# Every registered block type's own example, plus variants that set the non-default settings of the first types.
SPECS = {name: example_spec(name) for name in list_blocks()}
VARIANTS = [
    BlockSpec("transformer", heads=4, ffn_size=96, activation="relu"),
    BlockSpec("conv", kernel_size=5, ffn_size=80),
    BlockSpec("bottleneck", intra_size=24, heads=2, ffn_size=40, n_ffn=3, use_layernorm=False),
]
ALL = [*SPECS.values(), *VARIANTS]
HIDDEN, LENGTH = 32, 10


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on 2 shared cores: more threads only contend
    yield
    torch.set_num_threads(previous)


def test_every_registered_block_declares_what_the_registry_needs():
    for name in list_blocks():
        cls = block_class(name)
        assert cls.block_type == name and set(cls.example) <= set(cls.fields)
        assert SPECS[name].code and SPECS[name].code not in {SPECS[other].code for other in SPECS if other != name}
    with pytest.raises(TypeError, match="must define code, count_params, count_flops, inherit, fields, example, supernet_keys"):
        register_block("half")(type("Half", (Block,), {}))


def _masks(batch=2, length=LENGTH, cut=7):
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, cut:] = 0
    additive = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
    return attention_mask, additive, attention_mask[:, :, None].float()


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.code)
def test_block_shapes_and_gradient_reaches_every_parameter(spec):
    torch.manual_seed(0)
    block = create_block(spec, HIDDEN).train()
    _, additive, token_mask = _masks()
    x = torch.randn(2, LENGTH, HIDDEN, requires_grad=True)
    out, probs = block(x, additive, token_mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if block_class(spec.type).has_attention:
        assert probs.shape == (2, spec.heads, LENGTH, LENGTH)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, spec.heads, LENGTH))
    else:
        assert probs is None
    out.sum().backward()
    assert [n for n, p in block.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.code)
def test_param_and_flop_formulas_match_the_module(spec):
    cls = block_class(spec.type)
    block = create_block(spec, HIDDEN).eval()
    assert cls.count_params(spec, HIDDEN) == sum(p.numel() for p in block.parameters())
    for length in (LENGTH, 17):
        _, additive, token_mask = _masks(batch=1, length=length, cut=length)
        with FlopCounterMode(display=False) as counter:
            block(torch.randn(1, length, HIDDEN), additive, token_mask)
        assert cls.count_flops(spec, HIDDEN, length) == counter.get_total_flops()


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.code)
def test_padding_does_not_change_a_block_at_real_tokens(spec):
    torch.manual_seed(0)
    block = create_block(spec, HIDDEN).eval()
    x = torch.randn(1, LENGTH, HIDDEN)
    _, additive, token_mask = _masks(batch=1, cut=6)
    padded, _ = block(x, additive, token_mask)
    _, additive6, token_mask6 = _masks(batch=1, length=6, cut=6)
    short, _ = block(x[:, :6], additive6, token_mask6)
    torch.testing.assert_close(padded[:, :6], short, atol=1e-5, rtol=1e-5)


def test_whole_model_formulas_for_a_heterogeneous_factorised_trimmed_student():
    arch = Architecture(HIDDEN, tuple(SPECS.values()), embedding_size=8, vocab_size=50)
    kept = list(range(0, 40)) + [100, 101, 102, 103] + list(range(2000, 2006))
    model = build_student(Candidate(arch), num_labels=3, kept_token_ids=kept, max_positions=64)
    assert count_params(arch, 3, max_positions=64) == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 30522, (1, 12))
    with FlopCounterMode(display=False) as counter:
        model(ids, torch.ones_like(ids))
    assert count_flops(arch, 12, num_labels=3) == counter.get_total_flops()


def test_factorised_embedding_shapes_and_size():
    emb = Embeddings(30522, 128, 64, embedding_size=16)
    out = emb(torch.randint(0, 30522, (2, 9)))
    assert out.shape == (2, 9, 128)
    assert emb.word_embeddings.weight.shape == (30522, 16) and emb.projection.weight.shape == (128, 16)
    full = Embeddings.count_params(30522, 128, 64)
    factorised = sum(p.numel() for p in emb.parameters())
    assert factorised == Embeddings.count_params(30522, 128, 64, 16) and factorised < full / 6


def test_most_frequent_tokens_keeps_specials_and_the_commonest_ids():
    ids = torch.tensor([[101, 7, 7, 7, 9, 9, 5, 102, 0]])
    kept = most_frequent_tokens(ids, 8)
    assert kept == sorted([0, 100, 101, 102, 103, 7, 9, 5])
    assert most_frequent_tokens(ids, 6) == [0, 7, 100, 101, 102, 103]
    assert coverage(ids, [7, 9]) == pytest.approx(5 / 9)
    mapping = token_map_for(kept, 30522)
    assert mapping[7] == kept.index(7) and mapping[8] == kept.index(100)  # unknown ids read [UNK]'s row


def test_trimmed_student_gives_the_same_logits_inside_the_kept_vocabulary():
    torch.manual_seed(0)
    arch = Architecture(HIDDEN, (VARIANTS[0], VARIANTS[1]), embedding_size=16)
    model = build_student(Candidate(arch), num_labels=2, max_positions=32)
    corpus = torch.randint(1000, 1200, (40, 12))
    kept = most_frequent_tokens(corpus, 60)
    inside = torch.tensor([[101, *kept[10:20], 102]])  # a sentence made only of kept tokens
    outside = torch.tensor([[101, *kept[10:15], 29999, 102]])
    mask = torch.ones_like(inside)
    before, before_out = model(inside, mask), model(outside, torch.ones_like(outside))
    trim_vocabulary_(model, kept)
    assert model.bert.embeddings.word_embeddings.weight.shape == (60, 16)
    torch.testing.assert_close(model(inside, mask), before)
    # an id outside the kept set now reads [UNK], so the logits change
    assert not torch.allclose(model(outside, torch.ones_like(outside)), before_out)
    unk = outside.clone()
    unk[0, 6] = 100
    torch.testing.assert_close(model(outside, torch.ones_like(outside)), model(unk, torch.ones_like(unk)))


def test_blockspec_rejects_settings_of_another_block_type():
    with pytest.raises(ValueError, match="kernel_size"):
        BlockSpec("transformer", heads=2, ffn_size=64, kernel_size=3)
    with pytest.raises(ValueError, match="odd"):
        BlockSpec("conv", kernel_size=4, ffn_size=64)
    with pytest.raises(ValueError, match="divisible"):
        BlockSpec("bottleneck", intra_size=30, heads=4, ffn_size=64)
