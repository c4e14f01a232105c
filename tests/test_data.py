"""Tasks: the generated sample task, file and ``datasets`` loaders, their errors, tokenisation, fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas.data import Split, Task
from nas.data.loaders import TaskConfig, load_task
from nas.data.sample import POSITIVE_WORDS, LABEL_NOISE, make_sample_task
from nas.data.tokenize import TokenizedSplit, task_fingerprint, tokenize_task
from nas.errors import MissingDependencyError, NasUserError

ROWS = [("a fine film", 1), ("a dull film", 0), ("truly great", 1), ("not good", 0), ("lovely", 1), ("awful", 0)]


def _write(path: Path, rows=ROWS, header=("sentence", "label")) -> Path:
    """Write ``rows`` in the format named by ``path``'s suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in rows))
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join([sep.join(header)] + [f"{t}{sep}{y}" for t, y in rows]) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- sample task


def test_sample_task_is_deterministic_and_seed_dependent():
    assert make_sample_task(seed=3) == make_sample_task(seed=3)
    assert task_fingerprint(make_sample_task(seed=3)) == task_fingerprint(make_sample_task(seed=3))
    assert make_sample_task(seed=3).splits["train"].texts != make_sample_task(seed=4).splits["train"].texts


def test_sample_task_is_balanced_held_out_and_noisy():
    task = make_sample_task()
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 2000, "validation": 400, "test": 400}
    for split in task.splits.values():
        assert 0.42 < sum(split.labels) / len(split) < 0.58
    # Sentences are unique across splits, so validation and test are really held out.
    all_texts = [t for s in task.splits.values() for t in s.texts]
    assert len(set(all_texts)) == len(all_texts)
    # Negation and contrast are present.
    train = task.splits["train"]
    assert sum(" not " in t for t in train.texts) > 200 and sum(" but " in t for t in train.texts) > 100
    # On plain one-clause sentences the adjective decides; about LABEL_NOISE of labels disagree with it.
    plain = [
        (t, y) for t, y in zip(train.texts, train.labels, strict=True)
        if t.count(".") == 1 and not any(w in t for w in (" not ", " but ", "although", "however", "though"))
    ]
    assert len(plain) > 500
    flipped = sum((t.rstrip(".").split()[-1] in POSITIVE_WORDS) != bool(y) for t, y in plain)
    assert 0.5 * LABEL_NOISE < flipped / len(plain) < 2 * LABEL_NOISE


def test_sample_task_sizes_keep_held_out_splits_fixed():
    small, large = make_sample_task(n_train=100), make_sample_task(n_train=500)
    assert small.splits["test"] == large.splits["test"]
    assert small.splits["validation"] == large.splits["validation"]


def test_sample_task_is_learnable_but_not_by_bag_of_words():
    """A bag-of-words logistic regression lands clearly above chance and clearly below 100 %."""
    task = make_sample_task()
    vocab = {w: i for i, w in enumerate(sorted({w for t in task.splits["train"].texts for w in t.split()}))}

    def bow(split: Split) -> torch.Tensor:
        x = torch.zeros(len(split), len(vocab))
        for row, text in enumerate(split.texts):
            for word in text.split():
                if word in vocab:
                    x[row, vocab[word]] = 1.0
        return x

    torch.manual_seed(0)
    x_train, y_train = bow(task.splits["train"]), torch.tensor(task.splits["train"].labels)
    linear = torch.nn.Linear(len(vocab), 2)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    validation = task.splits["validation"]
    acc = (linear(bow(validation)).argmax(-1) == torch.tensor(validation.labels)).float().mean().item()
    assert 0.70 < acc < 0.90, acc


# ---------------------------------------------------------------------------------------------- loaders


def test_default_config_is_the_sample_task():
    task = load_task(TaskConfig())
    assert task == make_sample_task()
    assert task.label_names == ["negative", "positive"]


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_reads_file_formats_and_carves_a_stratified_validation(tmp_path, suffix):
    rows = [(f"sentence number {i}", i % 2) for i in range(40)]
    path = _write(tmp_path / f"train{suffix}", rows)
    task = load_task(TaskConfig(source=str(path), validation_fraction=0.25, seed=1))
    train, validation = task.splits["train"], task.splits["validation"]
    assert (len(train), len(validation)) == (30, 10)
    assert sorted(validation.labels) == [0] * 5 + [1] * 5  # stratified: a quarter of each class
    assert sorted(train.texts + validation.texts) == sorted(t for t, _ in rows)
    assert "test" not in task.splits and task.num_labels == 2 and task.name == "train"
    # Same seed, same carve; another seed, another carve.
    assert load_task(TaskConfig(source=str(path), validation_fraction=0.25, seed=1)) == task
    assert load_task(TaskConfig(source=str(path), validation_fraction=0.25, seed=2)) != task


def test_reads_a_folder_with_named_splits_and_keeps_text_verbatim(tmp_path):
    # GLUE TSVs are unquoted: a bare " and the word NA must survive as text.
    _write(tmp_path / "train.tsv", [('he said "wow"', 1), ("NA", 0), ("fine", 1), ("bad", 0)])
    _write(tmp_path / "dev.tsv", [("ok", 1), ("meh", 0)])
    _write(tmp_path / "held.csv", [('"quoted, with comma"', 1)])
    task = load_task(TaskConfig(source=str(tmp_path), validation="dev.tsv", test="held.csv", label_names=["neg", "pos"]))
    assert task.splits["train"].texts == ['he said "wow"', "NA", "fine", "bad"]
    assert task.splits["validation"].labels == [1, 0]
    assert task.splits["test"].texts == ["quoted, with comma"]
    assert task.label_names == ["neg", "pos"]


def test_max_train_examples_subsamples_deterministically(tmp_path):
    path = _write(tmp_path / "t.tsv", [(f"s{i}", i % 3) for i in range(300)])
    spec = TaskConfig(source=str(path), max_train_examples=100, validation_fraction=0.2)
    task = load_task(spec)
    assert len(task.splits["train"]) + len(task.splits["validation"]) == 100
    assert task.num_labels == 3
    assert load_task(spec) == task


def test_validation_size_is_carved_from_the_whole_file_before_the_cap(tmp_path):
    path = _write(tmp_path / "t.tsv", [(f"s{i}", i % 2) for i in range(1000)])
    task = load_task(TaskConfig(source=str(path), validation_size=400, max_train_examples=300))
    validation, train = task.splits["validation"], task.splits["train"]
    assert len(validation) == 400 and sum(validation.labels) == 200  # stratified, not capped by max_train_examples
    assert len(train) == 300 and not set(train.texts) & set(validation.texts)
    with pytest.raises(NasUserError, match="validation_size 1000 is not below the 1000 train rows"):
        load_task(TaskConfig(source=str(path), validation_size=1000))
    with pytest.raises(ValueError, match="validation_size carves"):
        TaskConfig(source=str(path), validation="v.tsv", validation_size=10)


def test_sst2_example_scores_on_5000_sentences(sst2_dir):
    """docs/examples/sst2.yaml's carve: ≥ 5,000 validation sentences (one standard error ≈ 0.5 points at 85 %)."""
    from nas.config import load_campaign_config

    config = load_campaign_config(Path(__file__).resolve().parents[1] / "docs" / "examples" / "sst2.yaml")
    spec = config.task.model_copy(update={"source": str(sst2_dir)})
    task = load_task(spec)
    assert len(task.splits["validation"]) >= 5000
    assert spec.max_train_examples is None  # the example uses the whole train split, less the carve
    assert len(task.splits["train"]) == 67349 - len(task.splits["validation"])


def test_reads_a_slice_of_real_sst2(sst2_dir, tmp_path):
    task = load_task(TaskConfig(name="sst2", source=str(sst2_dir), train="dev.tsv", test="dev.tsv", max_train_examples=300))
    assert len(task.splits["train"]) == 270 and len(task.splits["validation"]) == 30
    assert len(task.splits["test"]) == 872 and sum(task.splits["test"].labels) == 444  # README: 444 positive
    assert task.splits["test"].texts[0].startswith("it 's a charming and often affecting journey")


def test_reads_local_csv_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = _write(tmp_path / "train.csv", [(f"row {i}", i % 2) for i in range(20)])
    test = _write(tmp_path / "test.csv", [("x", 1), ("y", 0)])
    spec = TaskConfig(source="hf:csv", data_files={"train": str(train), "test": str(test)}, validation_fraction=0.2)
    task = load_task(spec)
    assert (len(task.splits["train"]), len(task.splits["validation"]), len(task.splits["test"])) == (16, 4, 2)
    assert task.splits["test"].texts == ["x", "y"] and task.name == "csv"


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["good", "bad", "fine", "poor"], "y": [1, 0, 1, 0]}), path)
    task = load_task(TaskConfig(source=str(path), text_column="text", label_column="y", validation_fraction=0.5))
    assert sorted(task.splits["train"].texts + task.splits["validation"].texts) == ["bad", "fine", "good", "poor"]


# (what to write, config overrides, words the one-sentence message must contain)
BROKEN = {
    "missing file": (None, {"source": "{dir}/nope.tsv"}, ["nope.tsv", "not found"]),
    "missing test file": ("train.tsv", {"test": "absent.tsv"}, ["absent.tsv", "not found"]),
    "missing label column": ("train.tsv", {"label_column": "score"}, ["train.tsv", "'score'", "label_column"]),
    "missing text column": ("train.tsv", {"text_column": "review"}, ["train.tsv", "'review'", "text_column"]),
    "label not an integer": ("words.tsv", {}, ["words.tsv", "line 3", "'label'", "'positive'", "integer"]),
    "negative label": ("negative.tsv", {}, ["negative.tsv", "'label'", "'-1'"]),
    "empty file": ("empty.csv", {}, ["empty.csv", "empty"]),
    "header only": ("header.tsv", {}, ["header.tsv", "no data rows"]),
    "single class": ("single.tsv", {}, ["single.tsv", "'label'", "single class"]),
    "not utf-8": ("latin1.tsv", {}, ["latin1.tsv", "line 2", "UTF-8"]),
    "class gap": ("gap.tsv", {}, ["gap.tsv", "'label'", "[1]"]),
    "unseen test class": ("train.tsv", {"test": "three.tsv"}, ["three.tsv", "'label'", "label 2"]),
    "bad jsonl": ("bad.jsonl", {}, ["bad.jsonl", "line 2", "JSON"]),
    "wrong label_names": ("train.tsv", {"label_names": ["a", "b", "c"]}, ["label_names", "3 names", "2 classes"]),
}


def _write_broken(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if name == "train.tsv":
        _write(path)
    elif name == "words.tsv":
        _write(path, [("good", "1"), ("bad", "positive")])
    elif name == "negative.tsv":
        _write(path, [("good", "1"), ("bad", "-1")])
    elif name == "empty.csv":
        path.write_text("")
    elif name == "header.tsv":
        path.write_text("sentence\tlabel\n")
    elif name == "single.tsv":
        _write(path, [("good", 1), ("great", 1)])
    elif name == "latin1.tsv":
        path.write_bytes("sentence\tlabel\ncaf\u00e9 au lait\t1\n".encode("latin-1"))
    elif name == "gap.tsv":
        _write(path, [("good", 2), ("bad", 0)])
    elif name == "bad.jsonl":
        path.write_text('{"sentence": "a", "label": 1}\n{"sentence": "b", label: 0}\n')
    _write(tmp_path / "three.tsv", [("odd", 2)])
    return path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_data_raises_one_sentence_naming_file_and_column(tmp_path, case):
    filename, overrides, needles = BROKEN[case]
    path = _write_broken(tmp_path, filename) if filename else tmp_path
    fields = {k: (v.format(dir=tmp_path) if isinstance(v, str) else v) for k, v in overrides.items()}
    fields.setdefault("source", str(path))
    with pytest.raises(NasUserError) as info:
        load_task(TaskConfig(**fields))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_unknown_datasets_id_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NasUserError, match="hf:./no-such-dataset"):
        load_task(TaskConfig(source="hf:./no-such-dataset"))


def test_task_config_rejects_unknown_keys_and_misplaced_data_files():
    with pytest.raises(ValueError, match="validaton"):
        TaskConfig(validaton="dev.tsv")
    with pytest.raises(ValueError, match="data_files"):
        TaskConfig(source="x.tsv", data_files={"train": "x.tsv"})
    assert not issubclass(MissingDependencyError, ValueError)  # user errors stay NasUserError, not ValueError


# ---------------------------------------------------------------------------------------------- tokenisation


class _WordTokenizer:
    """A stand-in with the Hugging Face call signature: one id per word, [CLS]=1, [SEP]=2, pad=0."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors, return_token_type_ids):
        assert padding == "max_length" and truncation and return_tensors == "pt"
        rows = []
        for text in texts:
            ids = [1] + [3 + len(w) for w in text.split()][: max_length - 2] + [2]
            rows.append(ids + [0] * (max_length - len(ids)))
        input_ids = torch.tensor(rows)
        return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def test_tokenize_task_pads_and_truncates_every_split():
    task = make_sample_task(n_train=30, n_validation=10, n_test=5)
    tensors = tokenize_task(task, _WordTokenizer(), max_seq_len=8)
    assert set(tensors) == {"train", "validation", "test"}
    for name, split in tensors.items():
        n = len(task.splits[name])
        assert isinstance(split, TokenizedSplit) and len(split) == n
        assert split.input_ids.shape == split.attention_mask.shape == (n, 8)
        assert split.input_ids.dtype == split.attention_mask.dtype == split.labels.dtype == torch.long
        assert split.labels.tolist() == task.splits[name].labels
    # Long contrast sentences are truncated to 8 tokens and end in [SEP].
    assert (tensors["train"].attention_mask.sum(-1) == 8).any()


def test_tokenize_task_rejects_short_sequences():
    with pytest.raises(NasUserError, match="max_seq_len"):
        tokenize_task(make_sample_task(n_train=4, n_validation=2, n_test=0), _WordTokenizer(), max_seq_len=4)


def test_task_fingerprint_sees_texts_labels_and_split_boundaries():
    def task(train_texts, train_labels):
        return Task("t", {"train": Split(train_texts, train_labels), "validation": Split(["c"], [0])}, 2, ["n", "p"])

    base = task_fingerprint(task(["a", "b"], [0, 1]))
    assert base == task_fingerprint(task(["a", "b"], [0, 1]))
    assert len({base, task_fingerprint(task(["a", "b"], [1, 0])), task_fingerprint(task(["ab", ""], [0, 1]))}) == 3
    renamed = Task("other", task(["a", "b"], [0, 1]).splits, 2, ["neg", "pos"])
    assert task_fingerprint(renamed) == base  # the name is a label for humans, not part of the content
