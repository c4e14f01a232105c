"""Pretraining objectives: BERT masking statistics; MLM and contrastive losses go down on real SST-2 text."""

from __future__ import annotations

import pytest
import torch

from nas.candidate import Architecture, BlockSpec, Candidate, PretrainSettings
from nas.models.student import build_student
from nas.pretrain import IGNORE, MASK_ID, PretrainObjective, corpus_ids, evaluate_objective, mask_tokens, pretrain
from nas.train import TrainSettings

ARCH = Architecture(64, (BlockSpec("transformer", heads=2, ffn_size=128), BlockSpec("conv", kernel_size=3, ffn_size=128)),
                    embedding_size=32, vocab_size=3000)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def sst2_tokens(sst2_dir):
    from nas.models.teacher import load_tokenizer

    lines = (sst2_dir / "train.tsv").read_text(encoding="utf-8").splitlines()[1:1601]
    enc = load_tokenizer()([line.split("\t")[0] for line in lines], padding="max_length", truncation=True,
                           max_length=40, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_masking_follows_bert_15_percent_and_80_10_10():
    ids = torch.randint(1000, 5000, (200, 50))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[:, 40:] = 0
    inputs, targets = mask_tokens(ids, mask, torch.arange(1000, 5000), torch.Generator().manual_seed(0))
    chosen = targets != IGNORE
    assert not chosen[:, 40:].any() and not chosen[:, 0].any()  # never padding, never [CLS]
    real = mask.bool().sum() - 2 * 200 + 200  # rows end with [SEP] in the padding region
    assert chosen.sum() / real == pytest.approx(0.15, abs=0.01)
    torch.testing.assert_close(targets[chosen], ids[chosen])
    masked = (inputs[chosen] == MASK_ID).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1 + 0.1 / 4000, abs=0.03)
    assert torch.equal(inputs[~chosen], ids[~chosen])


# MLM starts at ln(3000) ≈ 8.0 nats (uniform over the kept vocabulary); learning even the unigram
# distribution of SST-2 tokens takes it well below 7.5. InfoNCE of dropout views starts small and halves.
@pytest.mark.parametrize("objective, good_enough", [("mlm", lambda before, after: after < before - 0.5),
                                                    ("contrastive", lambda before, after: after < 0.5 * before)])
def test_objective_loss_goes_down_on_real_text(objective, good_enough, sst2_tokens):
    from nas.models.vocab import most_frequent_tokens

    ids, mask = sst2_tokens
    train_ids, train_mask, held_ids, held_mask = ids[:-64], mask[:-64], ids[-64:], mask[-64:]
    torch.manual_seed(0)
    model = build_student(Candidate(ARCH), 2, kept_token_ids=most_frequent_tokens(train_ids, 3000), max_positions=40)
    settings = PretrainSettings(objective, steps=60)
    loss_fn = PretrainObjective(model, settings, corpus_ids(train_ids, train_mask), seed=0)
    before = evaluate_objective(loss_fn, held_ids, held_mask)
    losses = pretrain(model, train_ids, train_mask, settings, TrainSettings(batch_size=32, lr=2e-3), objective=loss_fn)
    after = evaluate_objective(loss_fn, held_ids, held_mask)
    assert len(losses) == 60
    assert good_enough(before, after), (objective, before, after)


def test_contrastive_toward_the_teacher_aligns_embeddings(sst2_tokens):
    from transformers import BertConfig, BertForSequenceClassification

    ids, mask = sst2_tokens
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=96, max_position_embeddings=64)).eval()
    model = build_student(Candidate(ARCH.__class__(64, ARCH.layers)), 2, max_positions=40)
    settings = PretrainSettings("contrastive", steps=40, contrastive_target="teacher")
    loss_fn = PretrainObjective(model, settings, corpus_ids(ids, mask), teacher=teacher, seed=0)
    before = evaluate_objective(loss_fn, ids[-64:], mask[-64:])
    pretrain(model, ids[:-64], mask[:-64], settings, TrainSettings(batch_size=32, lr=1e-3), objective=loss_fn)
    assert evaluate_objective(loss_fn, ids[-64:], mask[-64:]) < 0.9 * before
    with pytest.raises(ValueError, match="teacher"):
        PretrainObjective(model, settings, corpus_ids(ids, mask))


def test_inactive_setting_trains_nothing(sst2_tokens):
    model = build_student(Candidate(ARCH.__class__(64, ARCH.layers)), 2, max_positions=40)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert pretrain(model, *sst2_tokens, PretrainSettings("none", steps=50), TrainSettings()) == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
