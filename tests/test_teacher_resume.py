"""The teacher fine-tune: early stopping, resuming a killed run, stale temp folders, and dynamic padding.

A tiny BERT (2 × 16, the packaged tokenizer) stands in for all-MiniLM-L6-v2 where only the training loop is
under test, so each test takes seconds; the padding test runs the real teacher in eval mode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nas.data.batching import bucketed_epoch, trim_padding  # noqa: E402
from nas.data.sample import make_sample_task  # noqa: E402
from nas.data.tokenize import tokenize_task  # noqa: E402
from nas.models import teacher_train  # noqa: E402
from nas.models.teacher import TeacherSettings, load_teacher, load_tokenizer, prepare_teacher, teacher_fingerprint  # noqa: E402
from nas.models.teacher_checkpoint import remove_stale_temp  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 16-wide BERT with the packaged tokenizer, saved as a model folder."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    load_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tensors():
    task = make_sample_task(n_train=256, n_validation=96, n_test=64, seed=0)
    return tokenize_task(task, load_tokenizer(), 32)


def test_early_stopping_stops_when_validation_does_not_improve(tmp_path, tiny_bert, tensors):
    # A rate of 1e-12 leaves the weights as they are, so validation never improves on the first evaluation.
    frozen = TeacherSettings(max_steps=40, batch_size=16, lr=1e-12, eval_every=2, patience=2, threads=1)
    art = prepare_teacher(tensors, frozen, tmp_path, source=tiny_bert, progress=False)
    record = art.fine_tune
    assert record["stopped_early"] and record["step"] == 6  # evaluations at 2 (best), 4, 6: two without a gain
    assert [e["step"] for e in record["evaluations"]] == [2, 4, 6] and record["best_step"] == 2
    assert all(e["sentences_per_s"] > 0 for e in record["evaluations"])


def test_early_stopping_keeps_the_best_evaluation(tmp_path, tiny_bert, tensors):
    learning = TeacherSettings(max_steps=30, batch_size=16, lr=3e-3, warmup_ratio=0.0, eval_every=3, patience=10, threads=1)
    art = prepare_teacher(tensors, learning, tmp_path, source=tiny_bert, progress=False)
    scores = [e["validation_accuracy"] for e in art.fine_tune["evaluations"]]
    assert len(scores) == 10
    # the cached weights are the best evaluation's, whichever step that was, not the last step's
    assert art.validation_accuracy == pytest.approx(max(scores), abs=1e-4)
    assert art.fine_tune["best_accuracy"] == pytest.approx(max(scores), abs=1e-4)


def test_killed_fine_tune_resumes_from_its_checkpoint(tmp_path, tiny_bert, tensors, monkeypatch):
    settings = TeacherSettings(max_steps=12, batch_size=16, lr=1e-3, eval_every=4, patience=5, checkpoint_every=4,
                               bucket_by_length=True, threads=1)
    whole = prepare_teacher(tensors, settings, tmp_path / "whole", source=tiny_bert, progress=False)

    real_step, calls = teacher_train.train_step, []

    def dies_at_step_10(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt("killed")  # what a Ctrl-C (or, for the checkpoint, a kill -9) leaves
        return real_step(*args, **kwargs)

    cache = tmp_path / "resumed"
    monkeypatch.setattr(teacher_train, "train_step", dies_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        prepare_teacher(tensors, settings, cache, source=tiny_bert, progress=False)
    fingerprint = teacher_fingerprint(tensors, settings, tiny_bert)
    partial = cache / f".partial-teacher-{fingerprint}"
    assert (partial / "state.pt").is_file() and not (cache / f"teacher-{fingerprint}").exists()
    assert not list(cache.glob(".tmp-teacher-*"))

    calls.clear()
    resumed = prepare_teacher(tensors, settings, cache, source=tiny_bert, progress=False)
    assert len(calls) == 4  # steps 9-12 only: 1-8 came from the checkpoint
    assert not partial.exists() and not resumed.from_cache
    assert [e["step"] for e in resumed.fine_tune["evaluations"]] == [4, 8, 12]
    assert resumed.fine_tune["best_step"] == whole.fine_tune["best_step"]
    assert torch.allclose(resumed.train_logits, whole.train_logits, atol=1e-5)
    assert resumed.validation_accuracy == whole.validation_accuracy


def test_stale_temp_folders_are_removed(tmp_path):
    dead = tmp_path / ".tmp-teacher-ab12-p999999999-x1"  # no such PID
    alive = tmp_path / f".tmp-teacher-ab12-p{os.getpid()}-x2"
    old, fresh = tmp_path / ".tmp-teacher-ab12-legacy1", tmp_path / ".tmp-teacher-ab12-legacy2"
    for folder in (dead, alive, old, fresh):
        folder.mkdir()
    os.utime(old, (time.time() - 13 * 3600,) * 2)
    assert sorted(remove_stale_temp(tmp_path)) == sorted([dead, old])
    assert alive.exists() and fresh.exists()


def test_fingerprint_covers_early_stopping_but_not_checkpoint_cadence(tensors):
    base = TeacherSettings(max_steps=8, batch_size=16)
    key = teacher_fingerprint(tensors, base)
    assert key == teacher_fingerprint(tensors, base.model_copy(update={"checkpoint_every": 3}))
    assert key != teacher_fingerprint(tensors, base.model_copy(update={"eval_every": 4}))
    assert key != teacher_fingerprint(tensors, base.model_copy(update={"bucket_by_length": True}))


def test_dynamic_padding_gives_the_logits_of_full_padding():
    task = make_sample_task(n_train=40, n_validation=8, n_test=0, seed=3)
    split = tokenize_task(task, load_tokenizer(), 64)["train"]
    torch.manual_seed(0)
    model = load_teacher(2).eval()
    with torch.inference_mode():
        full = model(input_ids=split.input_ids, attention_mask=split.attention_mask).logits  # every row at 64
        trimmed = model(*trim_padding(split.input_ids, split.attention_mask)).logits
    assert trim_padding(split.input_ids, split.attention_mask)[0].shape[1] < 32  # the trim is real
    assert torch.allclose(full, trimmed, atol=1e-4)
    assert torch.allclose(full, teacher_train.predict_logits(model, split, batch_size=8), atol=1e-4)  # length-sorted


def test_bucketed_epoch_sees_every_row_once_in_length_sorted_batches():
    lengths = torch.randint(3, 60, (1000,))
    batches = bucketed_epoch(lengths, 32, torch.Generator().manual_seed(0), bucket_batches=10)
    rows = torch.cat(batches)
    assert len(rows) == len(set(rows.tolist())) and len(rows) > 1000 - 32
    assert all(len(b) == 32 for b in batches)
    spread = torch.tensor([float(lengths[b].max() - lengths[b].min()) for b in batches]).mean()
    random_spread = torch.tensor([float(lengths[b].max() - lengths[b].min()) for b in torch.randperm(1000)[:992].split(32)]).mean()
    assert spread < random_spread / 3  # batches hold similar lengths


def test_length_sorted_scoring_gives_the_logits_of_one_padded_batch():
    from nas.candidate import Candidate
    from nas.models.student import build_student
    from nas.train import predict

    task = make_sample_task(n_train=50, n_validation=8, n_test=0, seed=4)
    split = tokenize_task(task, load_tokenizer(), 64)["train"]
    torch.manual_seed(0)
    student = build_student(Candidate(n_layers=2, hidden_size=64, n_heads=2, ffn_size=128), 2)
    with torch.inference_mode():
        full = student(split.input_ids, split.attention_mask)  # (50, 2), every row padded to 64
    assert torch.allclose(predict(student, split, batch_size=8), full, atol=1e-5)


def test_distillation_can_draw_length_bucketed_batches():
    from nas.train import TrainSettings, train_batches

    split = tokenize_task(make_sample_task(n_train=640, n_validation=8, n_test=0, seed=5), load_tokenizer(), 64)["train"]
    lengths = split.attention_mask.sum(-1)

    def width(settings):  # mean trimmed width of the first epoch's 20 batches
        batches = train_batches(split, settings)
        return sum(int(lengths[next(batches)].max()) for _ in range(20)) / 20

    plain, bucketed = TrainSettings(batch_size=32), TrainSettings(batch_size=32, bucket_by_length=True)
    assert width(bucketed) < width(plain)
    batches = train_batches(split, bucketed)
    epoch = torch.cat([next(batches) for _ in range(20)])  # 640 rows / 32: one epoch sees every row once
    assert sorted(epoch.tolist()) == list(range(640))
