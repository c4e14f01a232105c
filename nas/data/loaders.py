"""Load a :class:`~nas.data.Task` from the bundled generator, local files or the ``datasets`` library.

Every problem with user data (a missing file or column, a label that is not an integer, a single class,
text that is not UTF-8) is found here, at the boundary, and raised as one :class:`NasUserError` sentence
naming the file, the column or value, and the fix.

File formats: ``.tsv`` and ``.csv`` (read with the stdlib ``csv`` module, every cell kept as text so a
sentence such as "NA" is never turned into a missing value), ``.jsonl`` (one JSON object per line) and
``.parquet`` (needs ``pyarrow``). A ``source`` of ``hf:<id>`` goes through ``datasets.load_dataset``.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.data import Split, Task
from nas.data.carve import carve_rows, stratified_carve
from nas.errors import MissingDependencyError, NasUserError

FORMATS = (".tsv", ".csv", ".jsonl", ".parquet")
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


class TaskConfig(BaseModel):
    """Where a task's data comes from and how to read it (the ``task:`` section of a campaign file).

    Example:
        >>> TaskConfig().source  # the bundled, generated sample task
        'sample'
        >>> TaskConfig(name="sst2", source="/data/sst2", train="train.tsv", test="dev.tsv").validation is None
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # shown in logs and reports; default: "sample", the file/folder stem or the hf id
    source: str = "sample"  # "sample", a data file or folder, or "hf:<datasets id>" (e.g. hf:csv with data_files)
    text_column: str = "sentence"
    label_column: str = "label"  # integer class indices 0..num_labels-1
    train: str | None = None  # file (relative to a folder source) or hf split; default train.<ext> / "train"
    validation: str | None = None  # None: carve validation_fraction out of train, stratified by label
    test: str | None = None  # None: test.<ext> in a folder source, the "test" hf split, or no test split
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # share of train carved out when validation is None
    # rows carved (stratified) from the WHOLE train file before max_train_examples caps the rest; overrides
    # validation_fraction. Scoring noise is one standard error sqrt(p(1-p)/n): 5,000 rows at 85 % is 0.5 points.
    validation_size: int | None = Field(None, ge=2)
    max_train_examples: int | None = Field(None, ge=2)  # cap on train rows (before a validation_fraction carve)
    label_names: list[str] | None = None  # one per class; default "0", "1", … (sample: negative, positive)
    data_files: dict[str, str] | None = None  # hf only: passed to datasets.load_dataset, e.g. {train: a.csv}
    seed: int = 0  # seeds carving and subsampling

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.data_files is not None and not self.source.startswith("hf:"):
            raise ValueError("data_files is only read with an 'hf:<id>' source; name files in train/validation/test instead")
        if self.validation_size is not None and self.validation is not None:
            raise ValueError("validation_size carves validation rows out of train; drop it, or drop the 'validation' file")
        return self


def load_task(spec: TaskConfig) -> Task:
    """Load, validate and split the task described by ``spec``.

    Args:
        spec: Where the data is and how to read it.

    Returns:
        A task with ``train``, ``validation`` and, when the source has one, ``test`` splits.

    Raises:
        NasUserError: If a file or column is missing, a label is not an integer in ``0..K-1``, a split is
            empty, train has a single class, a text is not UTF-8 or ``label_names`` has the wrong length.
        MissingDependencyError: If ``.parquet`` or ``hf:`` is used without ``pyarrow``/``datasets``.
    """
    if spec.source == "sample":
        from nas.data.sample import LABEL_NAMES, make_sample_task

        task = make_sample_task(seed=spec.seed)
        raw = {k: (list(v.texts), list(v.labels), f"sample:{k}") for k, v in task.splits.items()}
        label_names = spec.label_names or LABEL_NAMES
    elif spec.source.startswith("hf:"):
        raw = _read_hf(spec)
        label_names = spec.label_names
    else:
        raw = _read_files(spec)
        label_names = spec.label_names
    return _assemble(spec, raw, label_names)


# ---------------------------------------------------------------------------------------------- assembly

_Raw = dict[str, tuple[list[str], list[int], str]]  # split -> (texts, labels, where it came from)


def _assemble(spec: TaskConfig, raw: _Raw, label_names: list[str] | None) -> Task:
    """Cap and carve train, check the label set across splits, and build the :class:`Task`."""
    texts, labels, train_origin = raw["train"]
    if spec.validation_size is not None and "validation" not in raw:
        validation, (texts, labels) = carve_rows(spec, texts, labels, train_origin)
        raw = {**raw, "validation": validation}
    if spec.max_train_examples is not None and len(texts) > spec.max_train_examples:
        # Deterministic subsample that keeps the file's order, so row i of the cache stays row i.
        keep = sorted(random.Random(spec.seed).sample(range(len(texts)), spec.max_train_examples))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise NasUserError(
            f"{train_origin}: column '{spec.label_column}' has the single class {classes[0]} in train; "
            "a classifier needs at least two classes, so check the file or the label column."
        )
    num_labels = classes[-1] + 1
    if classes != list(range(num_labels)):
        absent = sorted(set(range(num_labels)) - set(classes))
        raise NasUserError(
            f"{train_origin}: column '{spec.label_column}' uses labels up to {num_labels - 1} but never {absent} in train; "
            f"renumber the classes 0..{len(classes) - 1}."
        )
    splits: dict[str, Split] = {}
    if "validation" in raw:
        splits["train"] = Split(texts, labels)
        splits["validation"] = Split(*raw["validation"][:2])
    else:
        train_idx, val_idx = stratified_carve(labels, spec.validation_fraction, spec.seed)
        splits["train"] = Split([texts[i] for i in train_idx], [labels[i] for i in train_idx])
        splits["validation"] = Split([texts[i] for i in val_idx], [labels[i] for i in val_idx])
        if not val_idx:  # every class has one row: carving one out would leave train without that class
            raise NasUserError(
                f"{train_origin}: {len(texts)} rows are too few to carve a validation split (each class needs at "
                "least 2 rows); add rows, or give a validation file with 'validation'."
            )
    if "test" in raw:
        splits["test"] = Split(*raw["test"][:2])
    for split_name in ("validation", "test"):
        if split_name in raw:
            bad = sorted({y for y in raw[split_name][1] if y >= num_labels})
            if bad:
                raise NasUserError(
                    f"{raw[split_name][2]}: column '{spec.label_column}' has label {bad[0]}, which train never uses "
                    f"(train has classes 0..{num_labels - 1}); fix the label or add that class to train."
                )
    if label_names is None:
        label_names = [str(i) for i in range(num_labels)]
    if len(label_names) != num_labels:
        raise NasUserError(
            f"task '{_task_name(spec)}': label_names has {len(label_names)} names but the data has {num_labels} classes; "
            f"give exactly {num_labels} names."
        )
    return Task(name=_task_name(spec), splits=splits, num_labels=num_labels, label_names=list(label_names))


def _task_name(spec: TaskConfig) -> str:
    if spec.name:
        return spec.name
    if spec.source == "sample" or spec.source.startswith("hf:"):
        return spec.source.removeprefix("hf:")
    return Path(spec.source).stem


# ---------------------------------------------------------------------------------------------- local files


def _read_files(spec: TaskConfig) -> _Raw:
    """Read the split files of a local file or folder source."""
    source = Path(spec.source).expanduser()
    if not source.exists():
        raise NasUserError(f"{source}: task source not found; give an existing file or folder, 'sample' or 'hf:<id>'.")
    base = source if source.is_dir() else source.parent
    files: dict[str, Path] = {}
    if source.is_file():
        if spec.train is not None:
            raise NasUserError(f"{source}: source is a file, so it is the train split; drop 'train: {spec.train}' or make source a folder.")
        files["train"] = source
    for split_name in ("train", "validation", "test"):
        given = getattr(spec, split_name)
        if given is not None:
            path = Path(given).expanduser()
            files[split_name] = path if path.is_absolute() else base / path
        elif split_name not in files and source.is_dir() and split_name != "validation":
            found = [base / f"{split_name}{ext}" for ext in FORMATS if (base / f"{split_name}{ext}").is_file()]
            if found:
                files[split_name] = found[0]
            elif split_name == "train":
                raise NasUserError(
                    f"{source}: no train file found (looked for train{{{','.join(FORMATS)}}}); set 'train' to the file name."
                )
    return {split_name: _read_file(path, spec) for split_name, path in files.items()}


def _read_file(path: Path, spec: TaskConfig) -> tuple[list[str], list[int], str]:
    """Texts and labels of one data file, validated."""
    if not path.is_file():
        raise NasUserError(f"{path}: file not found; check the path in the task config.")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise NasUserError(f"{path}: unknown file type '{suffix}'; use one of {', '.join(FORMATS)}.")
    if suffix == ".parquet":
        columns, rows = _read_parquet(path)
    else:
        raw = path.read_bytes()
        try:
            content = raw.decode("utf-8-sig")  # -sig: tolerate the byte-order mark some editors write
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise NasUserError(f"{path}: line {line} is not UTF-8 text ({exc.reason}); re-save the file as UTF-8.") from None
        columns, rows = _read_jsonl(path, content) if suffix == ".jsonl" else _read_delimited(path, content, suffix)
    if suffix == ".parquet":
        return _columns_to_split(str(path), columns, rows, spec)
    # Data starts on line 2 under a header; in JSONL (blank lines skipped) the count is of records.
    first_line, word = (2, "line") if suffix in (".tsv", ".csv") else (1, "record")
    return _columns_to_split(str(path), columns, rows, spec, first_row=first_line, row_word=word)


def _read_delimited(path: Path, content: str, suffix: str) -> tuple[list[str], list[list[Any]]]:
    # GLUE's TSV files use no quoting (sentences contain bare " characters), so TSV is read verbatim.
    if suffix == ".tsv":
        reader = csv.reader(io.StringIO(content, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(content, newline=""))
    try:
        table = [row for row in reader if row]
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise NasUserError(
                f"{path}: line {reader.line_num} has a cell longer than {csv.field_size_limit():,} characters, far more "
                f"than any sentence (texts are cut to max_seq_len tokens); shorten it"
                + (", or look for an unclosed quote above it." if suffix == ".csv" else ".")
            ) from None
        raise NasUserError(f"{path}: line {reader.line_num} is not valid {suffix[1:].upper()} ({exc}); fix the quoting.") from None
    if not table:
        raise NasUserError(f"{path}: the file is empty; it needs a header line and at least one row.")
    _check_row_widths(path, table, suffix)
    return table[0], table[1:]


def _check_row_widths(path: Path, table: list[list[str]], suffix: str) -> None:
    """A row with more cells than the header has lost its columns' meaning (a tab or comma inside a sentence)."""
    width = len(table[0])
    for line_no, row in enumerate(table[1:], start=2):
        if len(row) > width:
            sep = "tab" if suffix == ".tsv" else "comma"
            hint = "a sentence holding a tab" if suffix == ".tsv" else "a sentence with a comma that is not in quotes"
            raise NasUserError(
                f"{path}: line {line_no} has {len(row)} {sep}-separated cells but the header has {width} "
                f"({hint}?); fix that row so every row has {width} cells."
            )


def _read_jsonl(path: Path, content: str) -> tuple[list[str], list[list[Any]]]:
    records: list[dict[str, Any]] = []
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NasUserError(f"{path}: line {line_no} is not valid JSON ({exc.msg}); write one JSON object per line.") from None
        if not isinstance(record, dict):
            raise NasUserError(f"{path}: line {line_no} is a JSON {type(record).__name__}, not an object; write one object per line.")
        records.append(record)
    columns = list(dict.fromkeys(k for r in records for k in r))
    return columns, [[r.get(c) for c in columns] for r in records]


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(f"{path}: reading .parquet needs pyarrow; install it with: pip install pyarrow") from None
    import pyarrow

    try:
        table = pq.read_table(path).to_pydict()
    except (pyarrow.ArrowInvalid, OSError) as exc:
        reason = str(exc).split(". ")[0].rsplit(": ", 1)[-1][:120]  # Arrow repeats the path first
        raise NasUserError(f"{path}: not a readable Parquet file ({reason}); "
                           "write it with pandas/pyarrow, or rename it to its real type (.tsv, .csv, .jsonl).") from None
    columns = list(table)
    return columns, [list(row) for row in zip(*table.values(), strict=True)] if columns else []


def _columns_to_split(
    origin: str, columns: list[str], rows: list[list[Any]], spec: TaskConfig, first_row: int = 1, row_word: str = "row"
) -> tuple[list[str], list[int], str]:
    """Pick the text and label columns out of a table and validate every value.

    Args:
        origin: File or dataset split named in error messages.
        columns: Column names in order.
        rows: Row values, one list per row, aligned with ``columns``.
        spec: Names of the text and label columns.
        first_row: Number of ``rows[0]`` in messages (its line in a file, so messages point at that line).
        row_word: "line" for files, "row" for dataset splits.
    """
    for role, column in (("text_column", spec.text_column), ("label_column", spec.label_column)):
        if column not in columns:
            raise NasUserError(
                f"{origin}: no column '{column}' (columns are {', '.join(map(str, columns)) or 'none'}); "
                f"set {role} to one of them."
            )
    if not rows:
        raise NasUserError(f"{origin}: no data rows; the split needs at least one example.")
    text_at, label_at = columns.index(spec.text_column), columns.index(spec.label_column)
    texts: list[str] = []
    labels: list[int] = []
    for offset, row in enumerate(rows):
        where = f"{origin}: {row_word} {first_row + offset}"
        text = row[text_at] if text_at < len(row) else None
        value = row[label_at] if label_at < len(row) else None
        if not isinstance(text, str):
            raise NasUserError(f"{where}: column '{spec.text_column}' is {text!r}, not text; fill in the sentence or drop the row.")
        label = _as_label(value)
        if label is None:
            raise NasUserError(
                f"{where}: column '{spec.label_column}' is {value!r}, not an integer class index; "
                "map the labels to integers 0..num_labels-1."
            )
        texts.append(text)
        labels.append(label)
    if not any(t.strip() for t in texts):
        raise NasUserError(f"{origin}: every value of column '{spec.text_column}' is empty; "
                           "is text_column the column that holds the sentences?")
    return texts, labels, origin


def _as_label(value: Any) -> int | None:
    """``value`` as a non-negative int class index, or None when it is not one."""
    if isinstance(value, bool):  # bool is an int subclass, but True/False is no class index
        return None
    if isinstance(value, int):
        label = value
    elif isinstance(value, float) and value.is_integer():  # parquet/datasets may store ints as floats
        label = int(value)
    elif isinstance(value, str) and _INT_RE.match(value):
        label = int(value)
    else:
        return None
    return label if label >= 0 else None


# ---------------------------------------------------------------------------------------------- datasets


def _read_hf(spec: TaskConfig) -> _Raw:
    """Read splits through ``datasets.load_dataset`` (a hub id, or a builder such as csv with data_files)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError(f"task source '{spec.source}' needs the datasets library; install it with: pip install datasets") from None
    dataset_id = spec.source.removeprefix("hf:")
    try:
        loaded = datasets.load_dataset(dataset_id, data_files=spec.data_files)
    except FileNotFoundError as exc:
        raise NasUserError(f"{spec.source}: {exc}; check the dataset id and data_files paths.") from None
    except (ValueError, ConnectionError) as exc:
        # Offline, an unknown hub id surfaces as a connection or value error from datasets.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasUserError(f"{spec.source}: datasets could not load it ({first_line}); check the id, data_files and network access.") from None
    available = list(loaded)
    raw: _Raw = {}
    for split_name in ("train", "validation", "test"):
        hf_split = getattr(spec, split_name) or (split_name if split_name in available else None)
        if hf_split is None:
            if split_name == "train":
                raise NasUserError(f"{spec.source}: no 'train' split (splits are {', '.join(available)}); set train to one of them.")
            continue
        if hf_split not in available:
            raise NasUserError(f"{spec.source}: no split '{hf_split}' (splits are {', '.join(available)}); set {split_name} to one of them.")
        table, origin = loaded[hf_split], f"{spec.source}[{hf_split}]"
        columns = list(table.column_names)
        if spec.text_column not in columns or spec.label_column not in columns:
            _columns_to_split(origin, columns, [], spec)  # raises the missing-column error
        # Only the two needed columns become Python lists; a hub dataset may carry many more.
        needed = [spec.text_column, spec.label_column]
        rows = [list(r) for r in zip(table[needed[0]], table[needed[1]], strict=True)]
        raw[split_name] = _columns_to_split(origin, needed, rows, spec)
    return raw
