"""The student builder: shapes, export, TVM, Hugging Face round trip, distillation with feature terms."""

from __future__ import annotations

import pytest
import torch

from nas.candidate import Architecture, Candidate
from nas.models.blocks import example_spec, list_blocks
from nas.models.student import StudentForSequenceClassification, build_student, teacher_layer_for
from nas.train import TrainSettings, distil

TINY = Candidate(n_layers=2, hidden_size=64, n_heads=2, ffn_size=128)
ONE_OF_EACH = {name: example_spec(name) for name in list_blocks()}  # every registered block type


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs(batch=2, length=12):
    ids = torch.randint(1000, 2000, (batch, length))
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
    assert missing == []


def test_padding_does_not_change_logits():
    arch = Architecture(32, tuple(ONE_OF_EACH.values()))
    model = build_student(Candidate(arch), num_labels=2)
    ids, mask = _inputs(batch=1, length=12)
    mask[:] = 1
    mask[0, 8:] = 0
    torch.testing.assert_close(model(ids, mask), model(ids[:, :8], mask[:, :8]), atol=1e-5, rtol=1e-5)


def test_save_pretrained_round_trip_of_a_heterogeneous_trimmed_student(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from nas.models.student import register_with_auto_classes

    arch = Architecture(32, tuple(ONE_OF_EACH.values()), embedding_size=8, vocab_size=20)
    kept = [0, 100, 101, 102, 103, *range(1000, 1015)]
    model = build_student(Candidate(arch), num_labels=2, kept_token_ids=kept)
    model.save_pretrained(tmp_path)
    again = StudentForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = _inputs()
    torch.testing.assert_close(again(ids, mask), model(ids, mask))
    assert again.config.arch == arch and (tmp_path / "model.safetensors").is_file()
    register_with_auto_classes()
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(auto(ids, mask), model(ids, mask))


@pytest.mark.parametrize("block_type", list_blocks())
def test_every_block_type_trains_exports_and_compiles_with_tvm(block_type):
    """Build → a few distillation steps → torch.export → TVM Relax (host) → same logits as torch."""
    from nas.data.tokenize import TokenizedSplit
    from nas.hardware.compile import compile_relax
    from nas.hardware.profiles import load_profile

    torch.manual_seed(0)
    arch = Architecture(32, (ONE_OF_EACH[block_type], ONE_OF_EACH[block_type]), embedding_size=16, vocab_size=64)
    ids = torch.randint(1000, 1100, (64, 16))
    split = TokenizedSplit(input_ids=ids, attention_mask=torch.ones_like(ids), labels=(ids[:, 1] % 2))
    from nas.models.vocab import most_frequent_tokens

    model = build_student(Candidate(arch), num_labels=2, kept_token_ids=most_frequent_tokens(ids, 64), max_positions=16)
    before = model(ids[:4], torch.ones_like(ids[:4])).detach()
    losses = distil(model, split, None, TrainSettings(steps=5, batch_size=16, lr=1e-3))
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    example = _inputs(batch=1, length=16)
    assert not torch.allclose(model(ids[:4], torch.ones_like(ids[:4])), before)  # training changed it

    exported = torch.export.export(model, example)
    torch.testing.assert_close(exported.module()(*example), model(*example))
    compiled = compile_relax(model, example, load_profile("host"))
    torch.testing.assert_close(torch.from_numpy(compiled.run(*example)), model(*example).detach(), atol=1e-4, rtol=1e-4)


def test_layer_selection_is_uniform_and_last_aligned():
    assert [teacher_layer_for(i, 2, 6) for i in range(2)] == [2, 5]
    assert [teacher_layer_for(i, 3, 6) for i in range(3)] == [1, 3, 5]
    assert [teacher_layer_for(i, 6, 6) for i in range(6)] == list(range(6))


def test_feature_distillation_adds_hidden_and_attention_terms():
    from transformers import BertConfig, BertForSequenceClassification

    from nas.data.tokenize import TokenizedSplit

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
                                                       intermediate_size=96, max_position_embeddings=32)).eval()
    ids = torch.randint(1000, 1100, (64, 12))
    split = TokenizedSplit(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, 1] % 2)
    with torch.no_grad():
        logits = teacher(input_ids=ids).logits
    arch = Architecture(32, (ONE_OF_EACH["transformer"], ONE_OF_EACH["conv"]))
    settings = TrainSettings(steps=30, batch_size=16, lr=2e-3)

    def run(**weights):
        torch.manual_seed(0)
        model = build_student(Candidate(arch), num_labels=2, max_positions=32)
        return distil(model, split, logits, settings, teacher=teacher, **weights)

    plain = run()
    features = run(hidden_weight=1.0, attention_weight=1.0)
    assert features[0] > plain[0] + 1e-3  # the feature terms are in the loss
    assert sum(features[-5:]) < sum(features[:5])  # and training reduces it
    with pytest.raises(ValueError, match="teacher"):
        distil(build_student(Candidate(arch), 2, max_positions=32), split, logits, settings, hidden_weight=1.0)


@pytest.mark.parametrize("block_type", list_blocks())
def test_neuron_pruned_student_of_every_block_type_survives_save_and_reload(tmp_path, block_type):
    """Neuron pruning shrinks each FFN (a bottleneck's stacked FFNs to different widths in staged pruning);
    the saved config must describe those shapes, or from_pretrained rebuilds the unpruned widths."""
    from nas.compress.pipeline import compress_model
    from nas.compress.prune import ffn_blocks
    from nas.compress.recipe import CompressionRecipe

    spec = ONE_OF_EACH[block_type]
    model = build_student(Candidate(Architecture(32, (spec, spec))), num_labels=2)
    ids, mask = _inputs(batch=4, length=8)
    batches = [{"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}]
    compress_model(model, CompressionRecipe(prune_rate=0.5, prune_structure="neurons"), calibration_batches=batches)
    widths = [m.intermediate.dense.out_features for _, m in ffn_blocks(model)]
    assert widths and max(widths) < spec.ffn_size  # really pruned
    model.save_pretrained(tmp_path)
    again = StudentForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(ids, mask), model.eval()(ids, mask))
    # the architecture itself (candidate key, formulas) tells the pruned widths, through the block's pruned_settings
    per_layer = [max(m.intermediate.dense.out_features for n, m in ffn_blocks(model) if f"layer.{i}." in n + ".") for i in range(2)]
    assert [b.ffn_size for b in again.config.arch.layers] == per_layer
